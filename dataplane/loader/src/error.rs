//! Errors of the dataplane loader.

use std::{net::Ipv4Addr, path::PathBuf};

/// Everything that can go wrong loading, attaching or programming the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A service or conntrack record failed validation; nothing was changed.
    #[error("invalid {field}={value}: {reason}")]
    Invalid {
        /// The offending field (e.g. `sel`, `endpoints[2].weight`).
        field: String,
        /// Its value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The embedded BPF object is empty (built with AYA_BUILD_SKIP=1).
    #[error("the XDP object was not built (AYA_BUILD_SKIP set at build time); rebuild without it")]
    NoObject,
    /// bpffs is missing at the pin directory and could not be mounted.
    #[error("bpffs at {path}: {reason}")]
    Bpffs {
        /// The pin directory.
        path: PathBuf,
        /// Why it could not be prepared.
        reason: String,
    },
    /// Loading the object or the program failed (verifier log included by aya).
    #[error("loading the XDP program: {0}")]
    Load(String),
    /// A map the program should define is missing.
    #[error("map {0} not found in the XDP object")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// Underlying aya error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Pinning or unpinning an object failed.
    #[error("pin {path}: {reason}")]
    Pin {
        /// Pin path.
        path: PathBuf,
        /// Underlying error text.
        reason: String,
    },
    /// Attaching to or detaching from an interface failed.
    #[error("interface {iface}: {reason}")]
    Attach {
        /// Interface name.
        iface: String,
        /// Underlying error text.
        reason: String,
    },
    /// No such service.
    #[error("no service {vip}:{port}/{proto}")]
    ServiceNotFound {
        /// VIP.
        vip: Ipv4Addr,
        /// Port.
        port: u16,
        /// IP protocol number.
        proto: u8,
    },
    /// Every service slot is in use (`max_services`).
    #[error("service table full ({0} services)")]
    ServicesFull(u32),
    /// A map pinned by an earlier run does not match this program's map
    /// (another floatlb version made it); nothing was loaded or changed.
    #[error(
        "pinned map {map} at {path} does not fit this floatlb ({found}; this version needs \
         {expected}): it was made by another floatlb version. Stop that datapath (an agent \
         stopped without --keep-pinned removes it) or delete {pin_dir}, then start again"
    )]
    IncompatiblePin {
        /// Map name.
        map: String,
        /// The pinned map's path.
        path: PathBuf,
        /// What is pinned (type, key and value sizes).
        found: String,
        /// What this program defines.
        expected: String,
        /// The pin directory.
        pin_dir: PathBuf,
    },
    /// BPF_PROG_TEST_RUN failed.
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(String),
}

impl DataplaneError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        reason: &'static str,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map { map, source }
    }
}
