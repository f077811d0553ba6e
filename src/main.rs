/// mimalloc instead of glibc malloc: the request path allocates on the HTTP worker and frees on
/// the store writer (and back), which glibc's arenas handle poorly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs from the ELF `.init_array`, before Rust's runtime makes the first allocation (and with it
/// mimalloc's first arena), so the allocator's options apply from the start.
// Unsafe because the linker places the static; this is the unsafe seam src/memory.rs documents.
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

extern "C" fn configure_allocator() {
    lark_oncall::memory::configure_allocator();
}

fn main() -> std::process::ExitCode {
    lark_oncall::cli::main()
}
