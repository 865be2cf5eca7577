//! Locating the `floatlb` binary the integration tests run.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// `target/<profile>/floatlb`, next to this test executable's `deps/` dir.
pub fn floatlb_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let bin = profile_dir.join("floatlb");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build -p floatlb-agent` (add --release for release test runs; `make test` does)",
            bin.display()
        );
    }
    Ok(bin)
}
