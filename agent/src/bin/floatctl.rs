//! `floatctl`: loxicmd's role for floatlb. See `agent/src/ctl/mod.rs` for
//! the design and docs/API.md ("floatctl") for the verbs.

use std::process::ExitCode;

use clap::Parser;

#[path = "../ctl/mod.rs"]
mod ctl;

fn main() -> ExitCode {
    let cli = ctl::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    match ctl::run(cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            eprintln!("floatctl: {e}");
            ExitCode::FAILURE
        }
    }
}
