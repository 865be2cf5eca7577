//! Shared `#[repr(C)]` types between the XDP program and userspace.
#![no_std]
