//! The allocator's hold on memory. mimalloc (the global allocator of the binary) keeps freed
//! memory for reuse and returns it to the OS only later, on some later allocation; an idle
//! appliance makes none, so memory it will not need again — the 19 MiB argon2 buffer of the
//! first start's password hash above all — stayed resident for minutes. These calls make it
//! give that memory back. In a process whose global allocator is another (the tests), they
//! touch only mimalloc's own empty heaps.
//!
//! The crate's one unsafe seam (with `src/main.rs`'s `.init_array` hook): mimalloc's Rust crate
//! exposes neither call, so they are declared from its C API here.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long};

// Links the mimalloc library, also into binaries that use another global allocator.
use mimalloc as _;

// mimalloc v3's C API (option numbers from its `mimalloc.h`, `mi_option_e`).
unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_collect(force: bool);
}

const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

/// Call before the first allocation, while no other thread exists (mimalloc's options are not
/// thread-safe): the binary runs it from `.init_array`. Arenas are then committed as they are
/// used rather than all at once when reserved, which left several MiB more resident at idle.
pub fn configure_allocator() {
    // SAFETY: plain option store in mimalloc's option table, single-threaded here.
    unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// Returns the memory freed so far to the OS now, instead of after the purge delay on some
/// later allocation.
pub fn release_freed() {
    // SAFETY: mi_collect has no preconditions; with `force` it purges freed memory at once.
    unsafe { mi_collect(true) }
}
