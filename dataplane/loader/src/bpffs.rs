//! Making sure the pin directory lives on a bpffs, and that maps pinned
//! there by an earlier run fit this program.
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

/// Checks every map already pinned under `maps_dir` against the program's
/// definition in `object` (type, key size, value size). aya reuses a pinned
/// map as it finds it, so a map left by another floatlb version would
/// otherwise reach the verifier (an opaque rejection) or, worse, be used
/// with another layout. Capacities may differ: a pinned map keeps the size
/// it was created with.
pub(crate) fn check_pinned_layout(
    object: &[u8],
    pin_dir: &Path,
    maps_dir: &Path,
    names: &[&str],
) -> Result<(), DataplaneError> {
    let obj = aya_obj::Object::parse(object)
        .map_err(|e| DataplaneError::Load(format!("parsing the XDP object: {e}")))?;
    for name in names {
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let want = obj
            .maps
            .get(*name)
            .ok_or_else(|| DataplaneError::Load(format!("map {name} not in the XDP object")))?;
        let pinned = aya::maps::MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let want_type = aya_obj::generated::bpf_map_type::try_from(want.map_type())
            .ok()
            .and_then(|t| aya::maps::MapType::try_from(t).ok());
        let found_type = pinned.map_type().ok();
        let layout = |t: Option<aya::maps::MapType>, k: u32, v: u32| {
            let t = t.map_or_else(|| "unknown".to_string(), |t| format!("{t:?}"));
            format!("{t} map, key {k} bytes, value {v} bytes")
        };
        if want_type != found_type
            || want.key_size() != pinned.key_size()
            || want.value_size() != pinned.value_size()
        {
            return Err(DataplaneError::IncompatiblePin {
                map: (*name).to_string(),
                path,
                found: layout(found_type, pinned.key_size(), pinned.value_size()),
                expected: layout(want_type, want.key_size(), want.value_size()),
                pin_dir: pin_dir.to_path_buf(),
            });
        }
    }
    Ok(())
}
