//! Making sure the pin directory lives on a bpffs.
//!
//! `ip netns exec` remounts /sys, so inside it /sys/fs/bpf is an empty sysfs
//! directory. `ensure` accepts a pin directory that already is on bpffs,
//! creates it inside a bpffs, or mounts a bpffs: at the pin directory itself
//! when it can be created on an ordinary filesystem, or at /sys/fs/bpf when
//! the pin directory is below it.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::DataplaneError;

fn is_bpffs(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

fn err(path: &Path, reason: impl ToString) -> DataplaneError {
    DataplaneError::Bpffs {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn mount_bpffs(at: &Path) -> Result<(), DataplaneError> {
    tracing::info!(path = %at.display(), "mounting bpffs");
    mount(Some("bpf"), at, Some("bpf"), MsFlags::empty(), None::<&str>)
        .map_err(|e| err(at, format!("mount -t bpf: {e}")))
}

/// Make `dir` an existing directory on bpffs.
pub(crate) fn ensure(dir: &Path) -> Result<(), DataplaneError> {
    if dir.exists() && is_bpffs(dir) {
        return Ok(());
    }
    let ancestor: PathBuf = dir
        .ancestors()
        .find(|a| a.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if is_bpffs(&ancestor) {
        return std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("mkdir: {e}")));
    }
    let sys_bpf = Path::new("/sys/fs/bpf");
    if dir.starts_with(sys_bpf) && dir != sys_bpf {
        // Below /sys/fs/bpf, which is not a bpffs here: mount the standard one.
        if !sys_bpf.exists() {
            return Err(err(dir, "/sys/fs/bpf does not exist (is sysfs mounted?)"));
        }
        mount_bpffs(sys_bpf)?;
        return std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("mkdir: {e}")));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("mkdir: {e}")))?;
    if !is_bpffs(dir) {
        mount_bpffs(dir)?;
    }
    Ok(())
}

/// If `dir` is itself a bpffs mount point (its parent is not bpffs) and holds
/// nothing of ours, unmount it; then remove the directory. Best effort.
pub(crate) fn remove_dir(dir: &Path) {
    let own_mount = is_bpffs(dir) && dir.parent().is_some_and(|p| !is_bpffs(p));
    // A fresh bpffs mount holds the kernel's own `maps.debug`/`progs.debug`.
    let empty = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .all(|e| matches!(e.file_name().to_str(), Some("maps.debug" | "progs.debug")))
        })
        .unwrap_or(false);
    if own_mount
        && empty
        && let Err(e) = umount2(dir, MntFlags::MNT_DETACH)
    {
        tracing::warn!(path = %dir.display(), error = %e, "umount bpffs");
    }
    let _ = std::fs::remove_dir(dir);
}
