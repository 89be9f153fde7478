//! The `offer-engine` binary: parse the command line, hand over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: the checkout path allocates and frees
/// small objects at a high rate across the HTTP worker and the log writer
/// (glibc's malloc, free and their arena locks were about 10% of the
/// server's CPU under load; see the README's Performance section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    offer_engine::cli::run(offer_engine::cli::Cli::parse())
}
