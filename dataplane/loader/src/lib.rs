//! Userspace loader for the floatlb XDP datapath.
//!
//! [`Dataplane::open`] loads the embedded XDP object and pins every map under
//! `<pin_dir>/maps/<NAME>`. When those pins already exist (the agent was
//! restarted) the maps are re-opened instead, so services, conntrack and
//! counters survive. Each attachment is a bpf_link pinned at
//! `<pin_dir>/links/<iface>@native` (or `@generic`); it keeps the program
//! attached while no agent runs. Attaching again after a restart atomically
//! swaps the newly loaded program into the existing link (`BPF_LINK_UPDATE`),
//! so traffic is never interrupted. The program is also pinned at
//! `<pin_dir>/prog`.
//!
//! Endpoint sets are swapped atomically: each service owns two endpoint-set
//! slots (and two Maglev tables); an update writes the idle slot and then
//! flips the service's `generation` with a single update of the
//! non-preallocated service map element, which the kernel replaces under RCU.

mod batch;
mod bpffs;
mod conntrack;
mod error;
mod flow_sync;
mod iface;
pub mod maglev;
mod services;
mod spec;
mod stats;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, RingBuf, xdp::DevMapHash},
    programs::{
        TestRun as _, TestRunOptions, Xdp,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpMode as AyaXdpMode},
    },
};
pub use conntrack::ConntrackSweeper;
pub use error::DataplaneError;
use floatlb_common::{Config, MAX_ENDPOINTS, NeighEvent};
pub use flow_sync::{FlowReportReader, FlowSyncTable, pinned_conntrack_dump};
pub use iface::{XdpPass, attach_xdp_pass};
pub use services::read_pinned_drops;
pub use spec::{
    Counters, CtRecord, DropCounters, EndpointSpec, FlowKey, PROTO_TCP, PROTO_UDP, PacketCount,
    ServiceCounters, ServiceKeySpec, ServiceSpec, TcpState,
};
pub use stats::{CtCensus, DatapathStats, EndpointStats, ServiceStats, StatsReader};

/// The compiled XDP object, built by build.rs.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floatlb-xdp"));

/// Name of the load-balancer program in the object.
pub const PROG_FLOATLB: &str = "floatlb_xdp";
/// Name of the MAC-swap baseline program (benchmarks only).
pub const PROG_BASELINE: &str = "xdp_macswap_baseline";
/// Name of the pass-all program (see [`attach_xdp_pass`]).
pub const PROG_PASS: &str = "xdp_pass";

pub(crate) const M_CONFIG: &str = "FLB_CONFIG";
pub(crate) const M_SERVICES: &str = "FLB_SERVICES";
pub(crate) const M_EPSETS: &str = "FLB_EPSETS";
pub(crate) const M_MAGLEV: &str = "FLB_MAGLEV";
pub(crate) const M_CT: &str = "FLB_CT";
pub(crate) const M_EP_STATS: &str = "FLB_EP_STATS";
pub(crate) const M_DROPS: &str = "FLB_DROPS";
pub(crate) const M_RR: &str = "FLB_RR";
pub(crate) const M_VIPS: &str = "FLB_VIPS";
pub(crate) const M_NEIGH_RB: &str = "FLB_NEIGH_RB";
pub(crate) const M_NEIGH_SEEN: &str = "FLB_NEIGH_SEEN";
pub(crate) const M_DEVMAP: &str = "FLB_DEVMAP";
pub(crate) const M_NH_CACHE: &str = "FLB_NH_CACHE";
pub(crate) const M_IFMAC: &str = "FLB_IFMAC";
pub(crate) const M_FLOWS: &str = "FLB_FLOWS";
pub(crate) const M_FLOW_RB: &str = "FLB_FLOW_RB";
pub(crate) const M_FLOW_LOST: &str = "FLB_FLOW_LOST";
pub(crate) const MAP_NAMES: [&str; 17] = [
    M_CONFIG,
    M_SERVICES,
    M_EPSETS,
    M_MAGLEV,
    M_CT,
    M_EP_STATS,
    M_DROPS,
    M_RR,
    M_VIPS,
    M_NEIGH_RB,
    M_NEIGH_SEEN,
    M_DEVMAP,
    M_NH_CACHE,
    M_IFMAC,
    M_FLOWS,
    M_FLOW_RB,
    M_FLOW_LOST,
];

/// XDP verdicts, as returned by [`Dataplane::prog_test_run`].
pub mod xdp_action {
    /// Program error.
    pub const ABORTED: u32 = 0;
    /// Dropped.
    pub const DROP: u32 = 1;
    /// Passed to the network stack.
    pub const PASS: u32 = 2;
    /// Sent back out of the ingress interface.
    pub const TX: u32 = 3;
    /// Redirected to another interface.
    pub const REDIRECT: u32 = 4;
}

/// Conntrack timeouts by state, seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    /// TCP, SYN seen without a reply.
    pub syn_secs: u32,
    /// TCP established (a service's `idle_timeout_secs` overrides it).
    pub established_secs: u32,
    /// TCP after a FIN.
    pub fin_secs: u32,
    /// TCP after a reset.
    pub closed_secs: u32,
    /// UDP (a service's `idle_timeout_secs` overrides it).
    pub udp_secs: u32,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self {
            syn_secs: 30,
            established_secs: 3600,
            fin_secs: 30,
            closed_secs: 10,
            udp_secs: 120,
        }
    }
}

/// How to open the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneOptions {
    /// bpffs directory for the pinned program, links and maps.
    pub pin_dir: PathBuf,
    /// Capacity of the service map (used only when the maps are created).
    pub max_services: u32,
    /// Capacity of the conntrack map, in entries (two per flow).
    pub max_conntrack: u32,
    /// Conntrack timeouts applied by [`Dataplane::expire_conntrack`].
    pub timeouts: CtTimeouts,
    /// How long a flow reuses its cached next hop before a new FIB lookup.
    pub nexthop_cache: Duration,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from("/sys/fs/bpf/floatlb"),
            max_services: 16 * 1024,
            max_conntrack: 1 << 20,
            timeouts: CtTimeouts::default(),
            nexthop_cache: Duration::from_secs(1),
        }
    }
}

/// Requested attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
    /// Native, falling back to generic when the driver refuses.
    Auto,
}

/// Mode an interface ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachedMode {
    /// Driver mode.
    Native,
    /// Generic (skb) mode.
    Generic,
}

impl AttachedMode {
    fn suffix(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// Which program [`Dataplane::prog_test_run`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestProgram {
    /// The load balancer.
    Floatlb,
    /// The MAC-swap XDP_TX baseline.
    MacSwapBaseline,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// XDP verdict (see [`xdp_action`]).
    pub action: u32,
    /// The packet after the program ran.
    pub packet: Vec<u8>,
    /// Kernel-measured run time (average over `repeat`).
    pub duration: Duration,
}

/// The loaded (or re-opened) datapath.
pub struct Dataplane {
    ebpf: Ebpf,
    opts: DataplaneOptions,
    neigh_rb: RingBuf<MapData>,
    /// Service ids in use (mirrors the service map).
    used_ids: std::collections::BTreeSet<u32>,
    /// No id below this is free: where the search for a free id starts, so
    /// adding N services costs O(N), not O(N²).
    free_hint: u32,
    /// Services per VIP (network byte order; mirrors the service map), so
    /// removing a service knows whether its VIP is still served without
    /// reading the whole map.
    vip_refs: std::collections::HashMap<u32, u32>,
    /// Held for every read-modify-write of `FLB_CONFIG`, which a
    /// [`ConntrackSweeper`] on another thread also updates.
    config_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// UDP endpoints removed from their service whose flows the next sweep
    /// flushes (shared with every [`ConntrackSweeper`]).
    retired: conntrack::Retired,
    /// Flows counted by the last sweep (shared with sweepers and readers).
    census: stats::Census,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.opts.pin_dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn load_err(e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Load(e.to_string())
}

fn pin_err(path: &Path, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Pin {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

pub(crate) fn attach_err(iface: &str, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Attach {
        iface: iface.to_string(),
        reason: e.to_string(),
    }
}

/// Read-modify-write of element 0 of the config map `m` under `lock`, the
/// config lock the datapath shares with its sweepers.
pub(crate) fn modify_config_map(
    lock: &std::sync::Mutex<()>,
    m: &mut Map,
    f: impl FnOnce(&mut Config),
) -> Result<(), DataplaneError> {
    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut a: Array<&mut MapData, Config> =
        Array::try_from(m).map_err(DataplaneError::map(M_CONFIG))?;
    let mut cfg = a.get(&0, 0).map_err(DataplaneError::map(M_CONFIG))?;
    f(&mut cfg);
    a.set(0, cfg, 0).map_err(DataplaneError::map(M_CONFIG))
}

/// A new flow-cache generation (never 0): see `Config::ct_gen`.
pub(crate) fn bump_gen(cfg: &mut Config) {
    cfg.ct_gen = cfg.ct_gen.wrapping_add(1).max(1);
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Dataplane {
    /// Load the program and create the maps, or re-open the pinned maps when
    /// they exist (agent restart: conntrack, services and counters are kept,
    /// and attached interfaces keep forwarding). Mounts bpffs if missing.
    pub fn open(opts: &DataplaneOptions) -> Result<Self, DataplaneError> {
        if XDP_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        if opts.max_services == 0 {
            return Err(DataplaneError::invalid(
                "max_services",
                0,
                "must be positive",
            ));
        }
        if opts.max_conntrack < 2 {
            return Err(DataplaneError::invalid(
                "max_conntrack",
                opts.max_conntrack,
                "must be at least 2",
            ));
        }
        bpffs::ensure(&opts.pin_dir)?;
        let maps_dir = opts.pin_dir.join("maps");
        let links_dir = opts.pin_dir.join("links");
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|e| pin_err(d, e))?;
        }
        let fresh = !maps_dir.join(M_CONFIG).exists();
        bpffs::check_pinned_layout(XDP_OBJECT, &opts.pin_dir, &maps_dir, &MAP_NAMES)?;
        let ms = opts.max_services;
        let mut loader = EbpfLoader::new();
        for name in MAP_NAMES {
            loader.map_pin_path(name, maps_dir.join(name));
        }
        loader
            .map_max_entries(M_SERVICES, ms)
            .map_max_entries(M_EPSETS, ms.saturating_mul(2))
            .map_max_entries(M_MAGLEV, ms.saturating_mul(2))
            .map_max_entries(M_CT, opts.max_conntrack)
            .map_max_entries(M_EP_STATS, ms.saturating_mul(MAX_ENDPOINTS as u32))
            .map_max_entries(M_RR, ms)
            .map_max_entries(M_VIPS, ms);
        let mut ebpf = loader.load(XDP_OBJECT).map_err(load_err)?;
        for name in [PROG_FLOATLB, PROG_BASELINE] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| load_err(format!("program {name} missing from the object")))?
                .try_into()
                .map_err(load_err)?;
            prog.load().map_err(|e| load_err(format!("{name}: {e}")))?;
        }
        let prog_pin = opts.pin_dir.join("prog");
        if prog_pin.exists() {
            std::fs::remove_file(&prog_pin).map_err(|e| pin_err(&prog_pin, e))?;
        }
        Self::xdp_prog(&mut ebpf, PROG_FLOATLB)?
            .pin(&prog_pin)
            .map_err(|e| pin_err(&prog_pin, e))?;

        let neigh_map = ebpf
            .take_map(M_NEIGH_RB)
            .ok_or(DataplaneError::MissingMap(M_NEIGH_RB))?;
        let neigh_rb = RingBuf::try_from(neigh_map).map_err(DataplaneError::map(M_NEIGH_RB))?;
        let mut dp = Self {
            ebpf,
            opts: opts.clone(),
            neigh_rb,
            used_ids: Default::default(),
            free_hint: 0,
            vip_refs: Default::default(),
            config_lock: Default::default(),
            retired: Default::default(),
            census: Default::default(),
        };
        let nh_max_age_ns = opts.nexthop_cache.as_nanos().min(u128::from(u64::MAX)) as u64;
        dp.modify_config(|cfg| {
            if fresh {
                // A standalone node forwards; an HA agent sets BACKUP explicitly.
                cfg.active = 1;
            }
            cfg.nh_max_age_ns = nh_max_age_ns;
            // A new generation: nothing cached before this open is trusted.
            cfg.ct_gen = cfg.ct_gen.wrapping_add(1).max(1);
        })?;
        (dp.used_ids, dp.vip_refs) = dp.load_used_ids()?;
        tracing::info!(pin_dir = %opts.pin_dir.display(), fresh, services = dp.used_ids.len(), "datapath opened");
        Ok(dp)
    }

    fn xdp_prog<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DataplaneError> {
        ebpf.program_mut(name)
            .ok_or_else(|| load_err(format!("program {name} missing")))?
            .try_into()
            .map_err(load_err)
    }

    pub(crate) fn map_ref(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    pub(crate) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    pub(crate) fn config(&self) -> Result<Config, DataplaneError> {
        let a: Array<&MapData, Config> =
            Array::try_from(self.map_ref(M_CONFIG)?).map_err(DataplaneError::map(M_CONFIG))?;
        a.get(&0, 0).map_err(DataplaneError::map(M_CONFIG))
    }

    /// Read-modify-write of `FLB_CONFIG` under the config lock.
    fn modify_config(&mut self, f: impl FnOnce(&mut Config)) -> Result<(), DataplaneError> {
        let lock = self.config_lock.clone();
        modify_config_map(&lock, self.map_mut(M_CONFIG)?, f)
    }

    /// The options this datapath was opened with.
    pub fn options(&self) -> &DataplaneOptions {
        &self.opts
    }

    /// When inactive (BACKUP), every packet is passed to the stack untouched.
    pub fn set_active(&mut self, active: bool) -> Result<(), DataplaneError> {
        self.modify_config(|cfg| cfg.active = u32::from(active))
    }

    /// Invalidate every CPU's flow cache at once (see `Config::ct_gen`):
    /// called after any change to conntrack entries or next hops, so no
    /// packet is forwarded with a rewrite or next hop userspace removed.
    pub(crate) fn bump_flow_cache_gen(&mut self) -> Result<(), DataplaneError> {
        self.modify_config(bump_gen)
    }

    /// Whether the datapath is load-balancing (MASTER).
    pub fn is_active(&self) -> Result<bool, DataplaneError> {
        Ok(self.config()?.active != 0)
    }

    /// Use `iface` as the input device of the program's FIB lookups instead
    /// of the ingress interface (None restores the default). The kernel
    /// refuses lookups whose input device has forwarding disabled; a host that
    /// keeps `net.ipv4.ip_forward=0` (so that only XDP forwards) sets
    /// `net.ipv4.conf.lo.forwarding=1` and passes `Some("lo")`.
    pub fn set_fib_lookup_iface(&mut self, iface: Option<&str>) -> Result<(), DataplaneError> {
        let ifindex = match iface {
            Some(name) => nix::net::if_::if_nametoindex(name).map_err(|e| attach_err(name, e))?,
            None => 0,
        };
        self.modify_config(|cfg| cfg.fib_ifindex = ifindex)
    }

    fn links_dir(&self) -> PathBuf {
        self.opts.pin_dir.join("links")
    }

    /// Pinned link of `iface`, if any, with its mode.
    fn find_link(&self, iface: &str) -> Option<(PathBuf, AttachedMode)> {
        [AttachedMode::Native, AttachedMode::Generic]
            .into_iter()
            .find_map(|m| {
                let p = self.links_dir().join(format!("{iface}@{}", m.suffix()));
                p.exists().then_some((p, m))
            })
    }

    /// Interfaces with a pinned attachment, with their mode.
    pub fn attached(&self) -> Vec<(String, AttachedMode)> {
        let Ok(rd) = std::fs::read_dir(self.links_dir()) else {
            return Vec::new();
        };
        let mut v: Vec<_> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (iface, mode) = name.rsplit_once('@')?;
                let mode = match mode {
                    "native" => AttachedMode::Native,
                    "generic" => AttachedMode::Generic,
                    _ => return None,
                };
                Some((iface.to_string(), mode))
            })
            .collect();
        v.sort();
        v
    }

    /// Attach to `iface` (idempotent). An existing pinned link is kept and
    /// atomically switched to this process's program; otherwise a new link
    /// is created (native first for `Auto`) and pinned.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<AttachedMode, DataplaneError> {
        let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|e| attach_err(iface, e))?;
        if let Some((path, attached)) = self.find_link(iface) {
            match self.update_link(&path) {
                Ok(()) => {
                    self.devmap_add(ifindex)?;
                    self.record_interface_mac(iface, ifindex)?;
                    tracing::info!(
                        iface,
                        mode = attached.suffix(),
                        "kept existing XDP link, program updated"
                    );
                    return Ok(attached);
                }
                Err(e) => {
                    tracing::warn!(iface, error = %e, "stale XDP link pin, attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let tries: &[(AyaXdpMode, AttachedMode)] = match mode {
            XdpMode::Native => &[(AyaXdpMode::Driver, AttachedMode::Native)],
            XdpMode::Generic => &[(AyaXdpMode::Skb, AttachedMode::Generic)],
            XdpMode::Auto => &[
                (AyaXdpMode::Driver, AttachedMode::Native),
                (AyaXdpMode::Skb, AttachedMode::Generic),
            ],
        };
        let links_dir = self.links_dir();
        let mut last = String::new();
        for (aya_mode, attached) in tries {
            let prog = Self::xdp_prog(&mut self.ebpf, PROG_FLOATLB)?;
            match prog.attach(iface, *aya_mode) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(|e| attach_err(iface, e))?;
                    let fd_link = FdLink::try_from(link).map_err(|e| {
                        attach_err(
                            iface,
                            format!("kernel without bpf_link for XDP, cannot pin: {e}"),
                        )
                    })?;
                    let path = links_dir.join(format!("{iface}@{}", attached.suffix()));
                    self.record_interface_mac(iface, ifindex)?;
                    fd_link.pin(&path).map_err(|e| pin_err(&path, e))?;
                    self.devmap_add(ifindex)?;
                    tracing::info!(iface, mode = attached.suffix(), "XDP attached");
                    return Ok(*attached);
                }
                Err(e) => {
                    tracing::debug!(iface, mode = attached.suffix(), error = %e, "attach failed");
                    last = format!("{} mode: {e}", attached.suffix());
                }
            }
        }
        Err(attach_err(iface, last))
    }

    fn update_link(&mut self, path: &Path) -> Result<(), DataplaneError> {
        let pinned = PinnedLink::from_pin(path).map_err(|e| pin_err(path, e))?;
        let fd_link = pinned.unpin().map_err(|e| pin_err(path, e))?;
        let xdp_link = XdpLink::try_from(fd_link).map_err(|e| pin_err(path, e))?;
        let prog = Self::xdp_prog(&mut self.ebpf, PROG_FLOATLB)?;
        let id = prog
            .attach_to_link(xdp_link)
            .map_err(|e| pin_err(path, e))?;
        let link = prog.take_link(id).map_err(|e| pin_err(path, e))?;
        let fd_link = FdLink::try_from(link).map_err(|e| pin_err(path, e))?;
        fd_link.pin(path).map_err(|e| pin_err(path, e))?;
        Ok(())
    }

    fn devmap_add(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let mut dm: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map_mut(M_DEVMAP)?).map_err(DataplaneError::map(M_DEVMAP))?;
        dm.insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::Attach {
                iface: format!("ifindex {ifindex}"),
                reason: format!("devmap insert: {e}"),
            })
    }

    /// Detach from `iface` and remove its pin (no-op when not attached).
    pub fn detach(&mut self, iface: &str) -> Result<(), DataplaneError> {
        let Some((path, _)) = self.find_link(iface) else {
            return Ok(());
        };
        Self::drop_link(&path)?;
        if let Ok(ifindex) = nix::net::if_::if_nametoindex(iface)
            && let Ok(mut dm) = DevMapHash::<&mut MapData>::try_from(self.map_mut(M_DEVMAP)?)
        {
            let _ = dm.remove(ifindex);
        }
        if let Ok(ifindex) = nix::net::if_::if_nametoindex(iface) {
            self.set_interface_mac(ifindex, None)?;
        }
        tracing::info!(iface, "XDP detached");
        Ok(())
    }

    fn drop_link(path: &Path) -> Result<(), DataplaneError> {
        match PinnedLink::from_pin(path) {
            // Dropping the last reference releases the link, which detaches it.
            Ok(pinned) => drop(pinned.unpin().map_err(|e| pin_err(path, e))?),
            Err(_) => std::fs::remove_file(path).map_err(|e| pin_err(path, e))?,
        }
        Ok(())
    }

    /// Detach everything and remove all pins (clean shutdown).
    pub fn unload(self) -> Result<(), DataplaneError> {
        let links_dir = self.links_dir();
        for (iface, mode) in self.attached() {
            Self::drop_link(&links_dir.join(format!("{iface}@{}", mode.suffix())))?;
        }
        let pin_dir = self.opts.pin_dir.clone();
        let maps_dir = pin_dir.join("maps");
        for name in MAP_NAMES {
            let p = maps_dir.join(name);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| pin_err(&p, e))?;
            }
        }
        let prog = pin_dir.join("prog");
        if prog.exists() {
            std::fs::remove_file(&prog).map_err(|e| pin_err(&prog, e))?;
        }
        let _ = std::fs::remove_dir(&links_dir);
        let _ = std::fs::remove_dir(&maps_dir);
        drop(self);
        bpffs::remove_dir(&pin_dir);
        tracing::info!(pin_dir = %pin_dir.display(), "datapath unloaded");
        Ok(())
    }

    /// Leave everything attached and pinned (agent restart).
    pub fn release(self) {
        tracing::info!(pin_dir = %self.opts.pin_dir.display(), "datapath released, pins kept");
    }

    /// Forget every cached next hop (per destination); call after neighbour
    /// or route changes. Per-flow copies expire within `nexthop_cache`.
    pub fn invalidate_nexthops(&mut self) -> Result<(), DataplaneError> {
        let mut m: aya::maps::HashMap<&mut MapData, u32, floatlb_common::NhEntry> =
            aya::maps::HashMap::try_from(self.map_mut(M_NH_CACHE)?)
                .map_err(DataplaneError::map(M_NH_CACHE))?;
        let keys: Vec<u32> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = m.remove(&k);
        }
        self.bump_flow_cache_gen()
    }

    /// Next hops the program found without a neighbour entry, drained from
    /// the ring buffer (deduplicated, in order of first report). The program
    /// reports each next hop at most every 100 ms while packets need it.
    pub fn take_unresolved_neighbours(&mut self) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        while let Some(item) = self.neigh_rb.next() {
            if item.len() >= std::mem::size_of::<NeighEvent>() {
                let nexthop = u32::from_ne_bytes([item[0], item[1], item[2], item[3]]);
                let ip = spec::ip_from_raw(nexthop);
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        out
    }

    /// Run one of the programs on `packet` with BPF_PROG_TEST_RUN.
    /// `ingress_ifindex` must name an interface of the calling thread's
    /// network namespace (FIB lookups also happen there); None uses loopback.
    pub fn prog_test_run(
        &self,
        program: TestProgram,
        packet: &[u8],
        ingress_ifindex: Option<u32>,
        repeat: u32,
    ) -> Result<TestRunOutput, DataplaneError> {
        let name = match program {
            TestProgram::Floatlb => PROG_FLOATLB,
            TestProgram::MacSwapBaseline => PROG_BASELINE,
        };
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| DataplaneError::TestRun(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| DataplaneError::TestRun(format!("{e}")))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [
            0,
            packet.len() as u32,
            0,
            ingress_ifindex.unwrap_or(0),
            0,
            0,
        ];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; packet.len() + 256];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: ingress_ifindex.map(|_| ctx.as_slice()),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::TestRun(format!("{e}")))?;
        out.truncate(res.data_size_out as usize);
        Ok(TestRunOutput {
            action: res.return_value,
            packet: out,
            duration: res.duration,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dataplane_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Dataplane>();
    }
}
