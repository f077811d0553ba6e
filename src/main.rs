/// mimalloc instead of glibc malloc: the request path allocates on the HTTP worker and frees on
/// the store writer (and back), which glibc's arenas handle poorly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lark_oncall::cli::main()
}
