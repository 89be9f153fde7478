//! The `offer-engine` binary: parse the command line, hand over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    offer_engine::cli::run(offer_engine::cli::Cli::parse())
}
