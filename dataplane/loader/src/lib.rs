//! Userspace loader for the floatlb XDP datapath.

/// The compiled XDP object, built by build.rs.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floatlb-xdp"));
