//! Connection sync in the agent: the `--sync*` flags, and the adapters
//! between the datapath's conntrack ([`floatlb_dataplane::FlowSyncTable`],
//! [`floatlb_dataplane::FlowReportReader`]) and the sync threads
//! ([`floatlb_sync`]). The owner task only starts the service, flips it
//! between MASTER and BACKUP with the datapath, and turns its
//! [`floatlb_sync::SyncEvent`]s into HA inputs (`Event::Sync`); everything
//! else runs on the service's own threads. Design: docs/SYNC.md.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use floatlb_dataplane::{
    CtRecord, Dataplane, DataplaneError, FlowKey as DpKey, FlowReportReader, FlowSyncTable,
    TcpState as DpState, monotonic_ns,
};
use floatlb_sync::{
    FlowKey, FlowRecord, FlowReports, FlowTable, SyncConfig, SyncKey, SyncService, TcpState,
};

use crate::events::{Event, EventTx};

/// `--sync`: whether the pair syncs connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    Off,
    On,
}

/// Connection sync with the peer (docs/SYNC.md).
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Sync connection state to the peer, so established TCP and UDP flows
    /// survive a failover and a failback (`on` needs `--sync-key-file` and
    /// a peer from `--ka` or `--cluster`).
    #[arg(long = "sync", value_enum, default_value_t = SyncMode::Off)]
    pub mode: SyncMode,
    /// Address the sync listener binds (loxilb's port).
    #[arg(long, default_value = "0.0.0.0:22222")]
    pub sync_listen: SocketAddr,
    /// TCP port of the peer's sync listener.
    #[arg(long, default_value_t = 22222)]
    pub sync_peer_port: u16,
    /// File holding the pre-shared key that authenticates every sync frame
    /// (HMAC-SHA256; at least 16 bytes, the same on both nodes).
    #[arg(long)]
    pub sync_key_file: Option<PathBuf>,
    /// Changes queued for the peer before an overflow turns into a bulk
    /// resync (bounds memory when the peer is slow or gone).
    #[arg(long, default_value_t = 65536)]
    pub sync_queue: usize,
    /// Seconds between bulk resyncs that refresh the peer's copies (synced
    /// entries age on the peer like local ones between refreshes).
    #[arg(long, default_value_t = 60)]
    pub sync_refresh_secs: u64,
}

/// Why sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncSetupError {
    #[error("--sync on needs --sync-key-file (a pre-shared key of at least 16 bytes)")]
    NoKey,
    #[error("--sync on needs the peer's address: --ka PEER:SRC or --cluster PEER")]
    NoPeer,
    #[error(transparent)]
    Key(#[from] floatlb_sync::packet::KeyError),
    #[error("sync datapath: {0}")]
    Datapath(#[from] DataplaneError),
    #[error(transparent)]
    Start(#[from] floatlb_sync::StartError),
}

impl SyncArgs {
    pub fn on(&self) -> bool {
        self.mode == SyncMode::On
    }
}

/// Starts sync when `--sync on`: splits the SNAT range by `self_id`, turns
/// the datapath's flow reports on and starts the threads, which report to
/// `events`. Off: makes sure reports are off and the whole range is used.
pub fn start(
    args: &SyncArgs,
    self_id: u8,
    peer: Option<IpAddr>,
    dp: &mut Dataplane,
    events: EventTx,
) -> Result<Option<SyncService>, SyncSetupError> {
    if !args.on() {
        dp.set_flow_sync(false, 0)?;
        return Ok(None);
    }
    let path = args.sync_key_file.as_ref().ok_or(SyncSetupError::NoKey)?;
    let key = SyncKey::from_file(path)?;
    let peer = peer.ok_or(SyncSetupError::NoPeer)?;
    let cfg = SyncConfig {
        node: self_id,
        listen: args.sync_listen,
        peer: SocketAddr::new(peer, args.sync_peer_port),
        key,
        queue_capacity: args.sync_queue.max(1),
        refresh: Duration::from_secs(args.sync_refresh_secs.max(1)),
    };
    let svc = service(
        cfg,
        dp,
        Arc::new(move |e| {
            let _ = events.send(Event::Sync(e));
        }),
    )?;
    tracing::info!(listen = %args.sync_listen, %peer, port = args.sync_peer_port,
        snat_part = self_id.min(1) + 1, "connection sync on");
    Ok(Some(svc))
}

/// Turns the datapath's flow reports on, takes node `cfg.node`'s half of
/// the SNAT range and starts the sync threads on `dp`'s conntrack, which
/// report to `notify` (the agent's [`start`]; benchmarks and tests).
pub fn service(
    cfg: SyncConfig,
    dp: &mut Dataplane,
    notify: floatlb_sync::Notify,
) -> Result<SyncService, SyncSetupError> {
    dp.set_flow_sync(true, cfg.node.min(1) + 1)?;
    Ok(SyncService::start(
        cfg,
        DpTable(dp.flow_sync_table()?),
        DpTable(dp.flow_sync_table()?),
        DpReports(dp.flow_reports()?),
        notify,
    )?)
}

/// The HA input a sync event stands for: a confirmed resync gates the
/// failback, the peer's stream holds a preferred BACKUP's claim.
pub fn ha_input(e: floatlb_sync::SyncEvent) -> Option<crate::ha::machine::Input> {
    use crate::ha::machine::Input;
    match e {
        floatlb_sync::SyncEvent::PeerResynced { .. } => Some(Input::PeerSyncDone),
        floatlb_sync::SyncEvent::PeerStreaming(on) => Some(Input::PeerStreaming(on)),
        floatlb_sync::SyncEvent::Connected(on) => Some(Input::SyncConnected(on)),
        floatlb_sync::SyncEvent::ResyncReceived { .. } => None,
    }
}

fn state_to_wire(s: DpState) -> TcpState {
    match s {
        DpState::Syn => TcpState::Syn,
        DpState::Established => TcpState::Established,
        DpState::Fin => TcpState::Fin,
        DpState::Closed => TcpState::Closed,
    }
}

fn state_from_wire(s: TcpState) -> DpState {
    match s {
        TcpState::Syn => DpState::Syn,
        TcpState::Established => DpState::Established,
        TcpState::Fin => DpState::Fin,
        TcpState::Closed => DpState::Closed,
    }
}

/// A datapath record as a sync record, its age taken at `now_ns`.
pub fn to_wire(r: &CtRecord, now_ns: u64) -> FlowRecord {
    FlowRecord {
        key: key_to_wire(&r.client),
        state: state_to_wire(r.tcp_state),
        snat: r.nat_src.0,
        endpoint: r.nat_dst.0,
        snat_port: r.nat_src.1,
        endpoint_port: r.nat_dst.1,
        idle_ms: u32::try_from(now_ns.saturating_sub(r.last_seen_ns) / 1_000_000)
            .unwrap_or(u32::MAX),
    }
}

/// A datapath client tuple as a sync key (a removed flow).
pub fn key_to_wire(k: &DpKey) -> FlowKey {
    FlowKey {
        proto: k.proto,
        client: k.src,
        vip: k.dst,
        client_port: k.sport,
        vip_port: k.dport,
    }
}

fn key_from_wire(k: &FlowKey) -> DpKey {
    DpKey {
        src: k.client,
        dst: k.vip,
        sport: k.client_port,
        dport: k.vip_port,
        proto: k.proto,
    }
}

/// A sync record as a datapath record: last seen `idle_ms` before `now_ns`
/// on this node's clock, so it ages here as it would have on the peer.
pub fn from_wire(r: &FlowRecord, now_ns: u64) -> CtRecord {
    CtRecord {
        client: key_from_wire(&r.key),
        nat_src: (r.snat, r.snat_port),
        nat_dst: (r.endpoint, r.endpoint_port),
        tcp_state: state_from_wire(r.state),
        packets: 0,
        bytes: 0,
        last_seen_ns: now_ns.saturating_sub(u64::from(r.idle_ms) * 1_000_000),
    }
}

struct DpTable(FlowSyncTable);

impl FlowTable for DpTable {
    type Error = DataplaneError;

    fn dump(&mut self) -> Result<Vec<FlowRecord>, DataplaneError> {
        let now = monotonic_ns();
        Ok(self.0.dump()?.iter().map(|r| to_wire(r, now)).collect())
    }

    fn upsert(&mut self, recs: &[FlowRecord]) -> Result<(), DataplaneError> {
        let now = monotonic_ns();
        let recs: Vec<CtRecord> = recs.iter().map(|r| from_wire(r, now)).collect();
        self.0.insert(&recs)
    }

    fn delete(&mut self, keys: &[FlowKey]) -> Result<(), DataplaneError> {
        let keys: Vec<DpKey> = keys.iter().map(key_from_wire).collect();
        self.0.delete(&keys)
    }
}

struct DpReports(FlowReportReader);

impl FlowReports for DpReports {
    fn wait(&mut self, timeout: Duration) -> Vec<FlowRecord> {
        let recs = self.0.wait(timeout);
        let now = monotonic_ns();
        recs.iter().map(|r| to_wire(r, now)).collect()
    }

    fn lost(&mut self) -> u64 {
        self.0.lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_record_keeps_its_mapping_and_age_through_the_wire_types() {
        let r = CtRecord {
            client: DpKey {
                src: Ipv4Addr::new(10, 1, 0, 2),
                dst: Ipv4Addr::new(10, 1, 0, 100),
                sport: 40000,
                dport: 80,
                proto: 6,
            },
            nat_src: (Ipv4Addr::new(10, 1, 0, 100), 17000),
            nat_dst: (Ipv4Addr::new(10, 1, 0, 21), 8080),
            tcp_state: DpState::Fin,
            packets: 0,
            bytes: 0,
            last_seen_ns: 5_000_000_000,
        };
        let w = to_wire(&r, 5_250_000_000);
        assert_eq!(w.idle_ms, 250);
        // Installed on a node whose clock reads 9 s: last seen 250 ms ago.
        let back = from_wire(&w, 9_000_000_000);
        assert_eq!(back.last_seen_ns, 8_750_000_000);
        assert_eq!(
            CtRecord {
                last_seen_ns: r.last_seen_ns,
                ..back
            },
            r
        );
    }
}
