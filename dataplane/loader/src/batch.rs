//! Whole-table reads and bulk writes of the conntrack map with the kernel's
//! batch commands (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`, Linux
//! 5.6+), which aya 0.14 does not wrap.
//!
//! A bulk resync moves a million flows: two million entries to read on the
//! MASTER and two million to write on the BACKUP. Element by element that is
//! three syscalls per entry read (aya's iterator: next key, then lookup) and
//! one per entry written; in batches of `CHUNK` it is one syscall per chunk,
//! and what remains is the kernel's own work per element.
//!
//! Semantics (kernel/bpf/hashtab.c, `__htab_map_lookup_and_delete_batch`):
//! the cursor (`in_batch`/`out_batch`) is an opaque bucket index, a batch
//! never splits a bucket, and the walk ends with `ENOENT` (the last chunk may
//! still carry elements). A bucket holding more elements than the buffer
//! answers `ENOSPC`; the buffer is then doubled. An LRU entry evicted during
//! the walk is simply not returned. A kernel without the commands answers
//! `EINVAL` (or `ENOTSUPP`): callers fall back to element-wise access.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::maps::{Map, MapError};
use aya::sys::SyscallError;
use floatlb_common::{CtValue, FlowKeyRaw};

use crate::{DataplaneError, M_CT};

/// Elements per syscall.
const CHUNK: usize = 4096;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C, align(8))]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch command failed.
pub(crate) enum BatchError {
    /// The kernel does not offer the command for this map: use the
    /// element-wise path.
    Unsupported,
    Failed(DataplaneError),
}

fn fd_of(m: &Map) -> Option<BorrowedFd<'_>> {
    match m {
        Map::HashMap(d) | Map::LruHashMap(d) => Some(d.fd().as_fd()),
        _ => None,
    }
}

fn syscall_error(call: &'static str, io_error: std::io::Error) -> BatchError {
    let unsupported = matches!(
        io_error.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(524 /* ENOTSUPP */)
    );
    if unsupported {
        BatchError::Unsupported
    } else {
        BatchError::Failed(DataplaneError::Map {
            map: M_CT,
            source: MapError::SyscallError(SyscallError { call, io_error }),
        })
    }
}

/// Runs one batch command; the kernel updates `attr.count` (and the cursor).
fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a live, writable `bpf_attr` prefix of the size
    // passed; every pointer in it refers to a buffer of at least `count`
    // elements of the map's key and value sizes, owned by the caller for
    // the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every entry of the conntrack map `m`, in chunks of `CHUNK`.
pub(crate) fn lookup_all(m: &Map) -> Result<Vec<(FlowKeyRaw, CtValue)>, BatchError> {
    let fd = fd_of(m).ok_or(BatchError::Unsupported)?;
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    let mut keys = vec![FlowKeyRaw::default(); chunk];
    let mut vals = vec![CtValue::default(); chunk];
    let mut cursor: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut cursor as *mut u32 as u64
            },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(chunk);
        let done = match r {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                // One bucket holds more than the buffer: grow it and retry
                // from the same cursor.
                chunk *= 2;
                keys.resize(chunk, FlowKeyRaw::default());
                vals.resize(chunk, CtValue::default());
                continue;
            }
            Err(e) => return Err(syscall_error("bpf_map_lookup_batch", e)),
        };
        out.extend(keys[..n].iter().copied().zip(vals[..n].iter().copied()));
        if done {
            return Ok(out);
        }
        cursor = next;
        first = false;
    }
}

/// Writes `entries` (in order, `BPF_ANY`) into the map `m`, in chunks of
/// `CHUNK`. On a failure the entries before the failing one are written.
pub(crate) fn update(m: &Map, entries: &[(FlowKeyRaw, CtValue)]) -> Result<(), BatchError> {
    let fd = fd_of(m).ok_or(BatchError::Unsupported)?;
    let mut keys = Vec::with_capacity(CHUNK.min(entries.len()));
    let mut vals = Vec::with_capacity(CHUNK.min(entries.len()));
    for part in entries.chunks(CHUNK) {
        keys.clear();
        vals.clear();
        keys.extend(part.iter().map(|(k, _)| *k));
        vals.extend(part.iter().map(|(_, v)| *v));
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: vals.as_ptr() as u64,
            count: part.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)
            .map_err(|e| syscall_error("bpf_map_update_batch", e))?;
    }
    Ok(())
}
