fn main() -> std::process::ExitCode {
    lark_oncall::cli::main()
}
