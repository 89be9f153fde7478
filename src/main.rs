//! The `offer-engine` binary: parse the command line, hand over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: the checkout path allocates and frees
/// small objects at a high rate across the HTTP worker and the log writer
/// (glibc's malloc and free were about 9% of the server's CPU under load;
/// with mimalloc 4%, and 11-13% more offers a second; README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3; the Rust
/// bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> anyhow::Result<()> {
    // Give freed memory back to the OS at once. mimalloc's default delay
    // purges lazily, on later allocations of the same thread, so what the
    // member loader and the first snapshot freed stayed resident: 1.78 GiB
    // at 10 million members instead of under 1 GiB. Immediate purging kept
    // the throughput gain (alternating rounds, docs/performance.md). An explicit
    // MIMALLOC_PURGE_DELAY in the environment wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in main, before any other thread exists
        // (mi_option_set is not thread safe); it only sets an option value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    offer_engine::cli::run(offer_engine::cli::Cli::parse())
}
