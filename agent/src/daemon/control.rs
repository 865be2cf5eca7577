//! Executing API commands in the owner task (parse, then execute: the
//! router has already turned each request into a valid [`Command`]).
//!
//! A change is applied to the datapath first (a datapath refusal answers
//! at once and changes nothing), then recorded in the state store, and
//! the request is answered only once the store reports the record durable
//! ([`Event::Persisted`](crate::events::Event::Persisted)); until then the
//! reply waits in `pending`. Should the write fail, the change is undone
//! (datapath and memory) and the request answered 503: the node never
//! runs, nor acknowledges, what a restart would not restore.
//!
//! Service identity is kube-loxilb's: (externalIP, port, protocol). An
//! identical re-POST is answered 200 without a write (once every earlier
//! change is durable). Deleting an unknown rule answers 404 `not-exists`.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use floatlb_api::{
    Command, CommandError, Endpoint, Reply, Request, Service, ServiceKey,
    command::{
        BfdStatus, CiRole, CiStateRequest, FloatingStatus, HaMode, StatusReport, TransitionList,
        TransitionRecord as WireTransition,
    },
    wire::{BfdList, BfdSession, CiStateEntry, CiStateList, ConntrackEntry, ConntrackList},
};
use tokio::sync::oneshot;

use super::{Daemon, Datapath};
use crate::{
    ha::{machine::Role, records::TransitionRecord},
    store::{BfdTimers, Change, Persisted},
};

/// Most flows `GET /config/conntrack/all` lists (the table can hold a
/// million; a bigger answer belongs in metrics, not one JSON body).
pub const MAX_CONNTRACK_LISTED: usize = 10_000;

/// The HA instance kube-loxilb names (`--setRoles`, rule names `...:llb-inst0`).
pub const INSTANCE: &str = "llb-inst0";

type ReplyTx = oneshot::Sender<Result<Reply, CommandError>>;

/// How to take back a change whose write failed.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Nothing was changed (a no-op waiting for earlier writes).
    Nothing,
    /// Put back the service `key` as it was (`None`: it did not exist).
    Service(ServiceKey, Option<Box<Service>>),
    /// Put back the whole service list.
    Services(Vec<Service>),
    /// Put back the assigned role.
    Role(Role),
    /// Put back the BFD timers.
    Bfd(Duration, u8),
}

/// A request waiting for its change to become durable.
#[derive(Debug)]
pub(crate) struct Pending {
    ticket: u64,
    reply: ReplyTx,
    undo: Undo,
}

/// The owner's side of the state store.
#[derive(Default)]
pub(crate) struct Durability {
    store: Option<crate::store::Store>,
    /// Last ticket submitted, and last known durable.
    submitted: u64,
    durable: u64,
    pending: VecDeque<Pending>,
}

impl Durability {
    pub(crate) fn new(store: Option<crate::store::Store>) -> Self {
        Self {
            store,
            ..Self::default()
        }
    }

    /// Queues `change`; the reply waits for it. Without a store (tests,
    /// `--state-dir` unset) the change is durable at once.
    pub(crate) fn record(&mut self, change: Option<Change>, reply: ReplyTx, undo: Undo) {
        let Some(store) = &self.store else {
            let _ = reply.send(Ok(Reply::Done));
            return;
        };
        if let Some(change) = change {
            self.submitted += 1;
            if !store.submit(self.submitted, change) {
                let _ = reply.send(Err(CommandError::Unavailable(
                    "the state store has stopped".into(),
                )));
                return;
            }
        }
        if self.submitted == self.durable {
            let _ = reply.send(Ok(Reply::Done));
        } else {
            self.pending.push_back(Pending {
                ticket: self.submitted,
                reply,
                undo,
            });
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(s) = self.store.as_mut() {
            s.finish();
        }
    }
}

/// The store's key of a service.
pub fn key_string(k: &ServiceKey) -> String {
    format!("{}:{}/{}", k.external_ip, k.port, k.protocol.as_str())
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Init => CiRole::NotDefined.as_str(),
        Role::Backup => CiRole::Backup.as_str(),
        Role::Master => CiRole::Master.as_str(),
        Role::Fault => CiRole::Fault.as_str(),
    }
}

fn wire_transition(r: &TransitionRecord) -> WireTransition {
    WireTransition {
        seq: r.seq,
        at_unix_us: r.at_unix_us,
        old: role_name(r.old).into(),
        new: role_name(r.new).into(),
        reason: r.reason.clone(),
        cloud: r.cloud.as_ref().and_then(|c| serde_json::to_value(c).ok()),
        report: r.report.as_ref().and_then(|c| serde_json::to_value(c).ok()),
    }
}

fn dp_refused(e: impl std::fmt::Display) -> CommandError {
    CommandError::Unavailable(format!("the datapath refused the change: {e}"))
}

impl<D: Datapath> Daemon<D> {
    /// One API request: answer it now, or queue its reply behind the write.
    pub(crate) async fn on_api(&mut self, req: Request) {
        let Request { cmd, reply } = req;
        match cmd {
            Command::UpsertService(svc) => self.upsert(*svc, reply),
            Command::AttachEndpoints { key, endpoints } => {
                self.change_endpoints(key, endpoints, true, reply)
            }
            Command::DetachEndpoints { key, endpoints } => {
                self.change_endpoints(key, endpoints, false, reply)
            }
            Command::DeleteService(key) => self.delete(key, reply),
            Command::DeleteServiceByName(name) => {
                let key = self
                    .services
                    .iter()
                    .find(|s| s.name.as_deref() == Some(name.as_str()))
                    .map(Service::key);
                match key {
                    Some(k) => self.delete(k, reply),
                    None => {
                        let _ = reply.send(Err(CommandError::NotFound(format!("lbrule {name}"))));
                    }
                }
            }
            Command::DeleteAllServices => self.delete_all(reply),
            Command::SetCiState(req) => self.set_cistate(req, reply),
            Command::SetBfd {
                remote_ip,
                interval_us,
                multiplier,
            } => {
                let r = self.set_bfd(remote_ip, interval_us, multiplier).await;
                match r {
                    Ok(undo) => {
                        let change = Change::SetBfd {
                            timers: BfdTimers {
                                interval_us,
                                multiplier,
                            },
                        };
                        self.durability.record(Some(change), reply, undo);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            read => {
                let _ = reply.send(self.read(read));
            }
        }
    }

    fn read(&mut self, cmd: Command) -> Result<Reply, CommandError> {
        Ok(match cmd {
            Command::ListServices => Reply::Services(floatlb_api::wire::LbList {
                lb_attr: self.services.iter().map(Service::to_wire).collect(),
            }),
            Command::ListCiState => Reply::CiState(CiStateList {
                attr: vec![CiStateEntry {
                    instance: INSTANCE.into(),
                    state: self.role_name().into(),
                    sync: None,
                    vip: Ipv4Addr::UNSPECIFIED.to_string(),
                }],
            }),
            Command::ListBfd => Reply::Bfd(self.bfd_list()),
            Command::ListConntrack => Reply::Conntrack(self.conntrack_list()?),
            Command::ListEndpoints => Reply::Endpoints(self.endpoint_list()),
            Command::Status => Reply::Status(Box::new(self.status())),
            Command::Health(q) => return self.health(q),
            Command::Transitions => Reply::Transitions(TransitionList {
                transitions: self
                    .ha
                    .as_ref()
                    .map(|h| h.records().transitions().map(wire_transition).collect())
                    .unwrap_or_default(),
            }),
            other => {
                return Err(CommandError::Conflict(format!(
                    "internal: {other:?} is not a read"
                )));
            }
        })
    }

    /// The role as loxilb names it: a node without HA always forwards.
    pub(crate) fn role_name(&self) -> &'static str {
        match &self.ha {
            Some(h) => role_name(h.role()),
            None => CiRole::Master.as_str(),
        }
    }

    fn upsert(&mut self, svc: Service, reply: ReplyTx) {
        let key = svc.key();
        let at = self.services.iter().position(|s| s.key() == key);
        if at.is_some_and(|i| self.services[i] == svc) {
            // Identical: nothing to apply or write.
            self.durability.record(None, reply, Undo::Nothing);
            return;
        }
        let vip_key = (svc.vip(), svc.port, svc.protocol);
        if let Some(other) = self
            .services
            .iter()
            .find(|s| s.key() != key && (s.vip(), s.port, s.protocol) == vip_key)
        {
            let _ = reply.send(Err(CommandError::Conflict(format!(
                "{}:{}/{} is already served by the rule for externalIP {}",
                svc.vip(),
                svc.port,
                svc.protocol.as_str(),
                other.external_ip
            ))));
            return;
        }
        if at.is_none() && self.services.len() >= self.limits.max_services {
            let _ = reply.send(Err(CommandError::Limit(format!(
                "--max-services {} reached: delete a rule first",
                self.limits.max_services
            ))));
            return;
        }
        if let Err(e) = self.dp.upsert_service(&self.dp_view(&svc)) {
            let _ = reply.send(Err(dp_refused(e)));
            return;
        }
        let previous = match at {
            Some(i) => Some(Box::new(std::mem::replace(
                &mut self.services[i],
                svc.clone(),
            ))),
            None => {
                self.services.push(svc.clone());
                None
            }
        };
        self.service_changed(previous.as_deref(), Some(&svc));
        let change = Change::put_service(key_string(&key), &svc.to_wire());
        self.durability
            .record(Some(change), reply, Undo::Service(key, previous));
    }

    fn change_endpoints(
        &mut self,
        key: ServiceKey,
        endpoints: Vec<Endpoint>,
        attach: bool,
        reply: ReplyTx,
    ) {
        let Some(cur) = self.services.iter().find(|s| s.key() == key) else {
            let _ = reply.send(Err(CommandError::NotFound(format!(
                "lbrule {}",
                key_string(&key)
            ))));
            return;
        };
        let mut svc = cur.clone();
        if attach {
            for e in endpoints {
                match svc
                    .endpoints
                    .iter_mut()
                    .find(|x| (x.ip, x.port) == (e.ip, e.port))
                {
                    Some(x) => *x = e,
                    None => svc.endpoints.push(e),
                }
            }
        } else {
            svc.endpoints
                .retain(|x| !endpoints.iter().any(|e| (e.ip, e.port) == (x.ip, x.port)));
        }
        if svc.endpoints.is_empty() {
            let _ = reply.send(Err(CommandError::invalid(
                "endpoints",
                "[]",
                "detaching them all would leave the service with no endpoint; delete the rule instead",
            )));
            return;
        }
        if svc.endpoints.len() > self.limits.max_endpoints {
            let _ = reply.send(Err(CommandError::invalid(
                "endpoints",
                format!("{} entries", svc.endpoints.len()),
                format!(
                    "at most {} endpoints per service",
                    self.limits.max_endpoints
                ),
            )));
            return;
        }
        self.upsert(svc, reply);
    }

    fn delete(&mut self, key: ServiceKey, reply: ReplyTx) {
        let Some(i) = self.services.iter().position(|s| s.key() == key) else {
            let _ = reply.send(Err(CommandError::NotFound(format!(
                "lbrule {}",
                key_string(&key)
            ))));
            return;
        };
        if let Err(e) = self.dp.remove_service(&self.services[i]) {
            let _ = reply.send(Err(dp_refused(e)));
            return;
        }
        let old = self.services.remove(i);
        self.service_changed(Some(&old), None);
        let change = Change::DeleteService {
            key: key_string(&key),
        };
        self.durability
            .record(Some(change), reply, Undo::Service(key, Some(Box::new(old))));
    }

    fn delete_all(&mut self, reply: ReplyTx) {
        if let Err(e) = self.dp.sync_services(&[]) {
            let _ = reply.send(Err(dp_refused(e)));
            return;
        }
        let old = std::mem::take(&mut self.services);
        self.floating_changed();
        self.probe_resync();
        self.durability
            .record(Some(Change::DeleteAllServices), reply, Undo::Services(old));
    }

    /// After one service changed: the floating set (only when a pair
    /// appeared or went: recomputing it is linear in the services) and the
    /// next hops of new endpoints.
    fn service_changed(&mut self, old: Option<&Service>, new: Option<&Service>) {
        let pair = crate::cloudctl::floating_ip;
        let gone = old
            .map(pair)
            .filter(|p| !self.services.iter().any(|s| pair(s) == *p));
        let came = new
            .map(pair)
            .filter(|p| self.services.iter().filter(|s| pair(s) == *p).count() == 1);
        if gone.is_some() || came.is_some() {
            self.floating_changed();
        }
        if let Some(key) = new.or(old).map(Service::key) {
            let svc = new.cloned();
            self.probe_service(key, svc.as_ref());
        }
        if let Some(n) = new {
            let fresh: Vec<Ipv4Addr> = n
                .endpoints
                .iter()
                .map(|e| e.ip)
                .filter(|ip| !self.next_hops.contains_key(ip))
                .collect();
            if !fresh.is_empty() {
                self.neigh_queue.extend(fresh);
            }
        }
    }

    fn set_cistate(&mut self, req: CiStateRequest, reply: ReplyTx) {
        if req.instance != INSTANCE {
            let _ = reply.send(Err(CommandError::Unsupported {
                field: "instance".into(),
                value: format!("{:?}", req.instance),
                reason: format!("floatlb runs one HA instance, {INSTANCE}"),
            }));
            return;
        }
        let role = match req.state {
            CiRole::Master => Role::Master,
            CiRole::Backup => Role::Backup,
            other => {
                let _ = reply.send(Err(CommandError::invalid(
                    "state",
                    other.as_str(),
                    "only MASTER and BACKUP can be assigned",
                )));
                return;
            }
        };
        let Some(h) = self.ha.as_mut() else {
            let _ = reply.send(Err(CommandError::Conflict(
                "this node has no peer and no cloud provider (no --ka, --cloud=none): it is always active"
                    .into(),
            )));
            return;
        };
        let before = h.assigned_role().unwrap_or(Role::Backup);
        match h.assign(role) {
            Ok(cmds) => {
                self.apply_ha(cmds);
                let change = Change::SetCiState {
                    state: req.state.as_str().into(),
                };
                self.durability
                    .record(Some(change), reply, Undo::Role(before));
            }
            Err(e) => {
                let _ = reply.send(Err(CommandError::Conflict(e.to_string())));
            }
        }
    }

    async fn set_bfd(
        &mut self,
        remote_ip: Option<Ipv4Addr>,
        interval_us: u32,
        multiplier: u8,
    ) -> Result<Undo, CommandError> {
        let Some(h) = self.ha.as_mut() else {
            return Err(CommandError::Conflict(
                "no BFD session: start the agent with --ka".into(),
            ));
        };
        let Some(session) = h.bfd_session().cloned() else {
            return Err(CommandError::Conflict(
                "no BFD session: roles are assigned by cistate (no --ka)".into(),
            ));
        };
        if let Some(ip) = remote_ip
            && IpAddr::V4(ip) != session.peer
        {
            return Err(CommandError::NotFound(format!("bfd session to {ip}")));
        }
        let interval = Duration::from_micros(u64::from(interval_us));
        h.set_bfd_timers(interval, multiplier)
            .await
            .map_err(|e| CommandError::invalid("interval", interval_us, e.to_string()))?;
        Ok(Undo::Bfd(session.desired_min_tx, session.detect_mult))
    }

    /// The store reports writes up to `p.upto`: answer, or undo and refuse.
    pub(crate) async fn on_persisted(&mut self, p: Persisted) {
        let d = &mut self.durability;
        d.durable = d.durable.max(p.upto);
        let mut done = Vec::new();
        while d.pending.front().is_some_and(|x| x.ticket <= p.upto) {
            done.extend(d.pending.pop_front());
        }
        match p.result {
            Ok(()) => {
                for x in done {
                    let _ = x.reply.send(Ok(Reply::Done));
                }
            }
            Err(why) => {
                for x in done.into_iter().rev() {
                    self.undo(x.undo).await;
                    let _ = x.reply.send(Err(CommandError::Unavailable(format!(
                        "the change could not be made durable and was undone: {why}"
                    ))));
                }
            }
        }
    }

    async fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Service(key, previous) => {
                let at = self.services.iter().position(|s| s.key() == key);
                let res = match (&previous, at) {
                    (Some(p), _) => self.dp.upsert_service(&self.dp_view(p)),
                    (None, Some(i)) => self.dp.remove_service(&self.services[i]),
                    (None, None) => Ok(()),
                };
                if let Err(error) = res {
                    tracing::error!(%error, "cannot undo a change in the datapath");
                }
                match (previous, at) {
                    (Some(p), Some(i)) => self.services[i] = *p,
                    (Some(p), None) => self.services.push(*p),
                    (None, Some(i)) => {
                        self.services.remove(i);
                    }
                    (None, None) => {}
                }
                self.floating_changed();
                self.probe_resync();
            }
            Undo::Services(old) => {
                if let Err(error) = self.dp.sync_services(&old) {
                    tracing::error!(%error, "cannot undo a change in the datapath");
                }
                self.services = old;
                self.floating_changed();
                self.probe_resync();
            }
            Undo::Role(role) => {
                if let Some(h) = self.ha.as_mut()
                    && let Ok(cmds) = h.assign(role)
                {
                    self.apply_ha(cmds);
                }
            }
            Undo::Bfd(interval, mult) => {
                if let Some(h) = self.ha.as_mut()
                    && let Err(error) = h.set_bfd_timers(interval, mult).await
                {
                    tracing::error!(%error, "cannot undo a BFD timer change");
                }
            }
        }
    }

    fn bfd_list(&self) -> BfdList {
        let Some(h) = &self.ha else {
            return BfdList::default();
        };
        let Some(s) = h.bfd_session() else {
            return BfdList::default();
        };
        let state = h
            .records()
            .bfd_last()
            .map(|b| format!("BFD{:?}", b.new))
            .unwrap_or_else(|| "BFDDown".into());
        BfdList {
            attr: vec![BfdSession {
                instance: INSTANCE.into(),
                remote_ip: s.peer.to_string(),
                source_ip: s.local.to_string(),
                port: s.peer_port,
                interval: s.desired_min_tx.as_micros() as u64,
                retry_count: s.detect_mult,
                state,
            }],
        }
    }

    fn conntrack_list(&self) -> Result<ConntrackList, CommandError> {
        let flows = self
            .dp
            .conntrack_dump()
            .map_err(|e| CommandError::Unavailable(format!("conntrack: {e}")))?;
        let ct_attr = flows
            .iter()
            .take(MAX_CONNTRACK_LISTED)
            .map(|f| {
                let serv_name = self
                    .services
                    .iter()
                    .find(|s| {
                        s.vip() == f.client.dst
                            && s.port == f.client.dport
                            && s.protocol.ip_proto() == f.client.proto
                    })
                    .map(|s| s.name.clone().unwrap_or_else(|| key_string(&s.key())))
                    .unwrap_or_default();
                ConntrackEntry {
                    destination_ip: f.client.dst.to_string(),
                    source_ip: f.client.src.to_string(),
                    destination_port: f.client.dport,
                    source_port: f.client.sport,
                    protocol: match f.client.proto {
                        6 => "tcp".into(),
                        17 => "udp".into(),
                        p => p.to_string(),
                    },
                    conntrack_state: format!("{:?}", f.tcp_state).to_lowercase(),
                    ident: format!("{}:{}", f.nat_src.0, f.nat_src.1),
                    conntrack_act: format!("fdnat-{}:{}", f.nat_dst.0, f.nat_dst.1),
                    packets: f.packets,
                    bytes: f.bytes,
                    serv_name,
                }
            })
            .collect();
        Ok(ConntrackList { ct_attr })
    }

    fn status(&self) -> StatusReport {
        let version = env!("CARGO_PKG_VERSION").to_string();
        let Some(h) = &self.ha else {
            return StatusReport {
                role: CiRole::Master.as_str().into(),
                self_id: 0,
                peer: None,
                mode: HaMode::Standalone,
                bfd: None,
                floating: Vec::new(),
                last_transition: None,
                version,
            };
        };
        let master = h.role() == Role::Master;
        let owner = h
            .last_verdict()
            .map(|v| format!("{:?}", v.owner).to_lowercase());
        let mut floating = Vec::new();
        for e in h.floating().entries() {
            if let Some(eip) = e.eip {
                floating.push(FloatingStatus {
                    address: eip.to_string(),
                    kind: "eip".into(),
                    owner_per_cloud: owner.clone(),
                    held: master,
                });
            }
            floating.push(FloatingStatus {
                address: e.vip.to_string(),
                kind: "vip".into(),
                owner_per_cloud: None,
                held: master,
            });
        }
        let bfd = h.bfd_session().map(|s| {
            let last = h.records().bfd_last();
            BfdStatus {
                state: last
                    .map(|b| format!("{:?}", b.new))
                    .unwrap_or_else(|| "Down".into()),
                remote_state: last
                    .map(|b| format!("{:?}", b.remote_state))
                    .unwrap_or_else(|| "Down".into()),
                diag: last.map(|b| format!("{:?}", b.diag)).unwrap_or_default(),
                interval_us: s.desired_min_tx.as_micros() as u32,
                multiplier: s.detect_mult,
                since_unix_us: last.map(|b| b.at_unix_us).unwrap_or(0),
            }
        });
        StatusReport {
            role: role_name(h.role()).into(),
            self_id: u32::from(h.records().self_id()),
            peer: self.opts.peer.map(|p| p.to_string()),
            mode: if h.is_assigned() {
                HaMode::Cistate
            } else {
                HaMode::Ka
            },
            bfd,
            floating,
            last_transition: h.records().transitions().next_back().map(wire_transition),
            version,
        }
    }
}
