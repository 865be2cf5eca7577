//! The demo's kube-loxilb side: services created through each node's REST
//! API with kube-loxilb's exact bodies (it programs every `--loxiURL`),
//! and `floatctl get ha` / `get lb` tables read from a node, as an
//! operator checks a pair before and after a failover.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};

use crate::{
    apiclient::{ApiClient, kube_loxilb_body},
    apilab::floatctl_binary,
    netns::Netns,
};

/// One service as kube-loxilb sends it: `protocol` on `port` of the
/// Elastic IP (`externalIP`) and the VIP (`privateIP`).
#[derive(Debug, Clone)]
pub struct DemoService {
    pub name: String,
    pub eip: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: &'static str,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl DemoService {
    fn body(&self) -> String {
        kube_loxilb_body(
            &self.eip.to_string(),
            &self.vip.to_string(),
            self.port,
            self.protocol,
            &self.name,
            &self.endpoints,
        )
    }
}

/// POSTs every service to every node's API (on loopback in its namespace,
/// as kube-loxilb reaches each node on port 11111) and checks kube-loxilb's
/// success answer. Returns one line per POST for the demo's output.
pub fn program(nodes: &[(&str, &Netns)], services: &[DemoService]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (label, ns) in nodes {
        let api = ApiClient::local(ns);
        api.wait_up(std::time::Duration::from_secs(10))
            .with_context(|| format!("{label}'s API"))?;
        for s in services {
            let t = std::time::Instant::now();
            let a = api.post("/config/loadbalancer", &s.body())?;
            ensure!(
                a.is_success(),
                "{label}: POST /config/loadbalancer {} {}:{}: {} {}",
                s.protocol,
                s.eip,
                s.port,
                a.status,
                a.body
            );
            lines.push(format!(
                "POST /netlox/v1/config/loadbalancer to {label}: {} {}:{} (privateIP {}) -> {} {} in {:.1} ms",
                s.protocol,
                s.eip,
                s.port,
                s.vip,
                a.status,
                a.body.trim(),
                t.elapsed().as_secs_f64() * 1e3
            ));
        }
    }
    Ok(lines)
}

/// `floatctl get WHAT` run in `ns` against the node's API: the table text.
pub fn floatctl_get(ns: &Netns, what: &str) -> Result<String> {
    let out = ns
        .command(floatctl_binary()?)
        .args(["get", what])
        .output()
        .context("run floatctl")?;
    ensure!(
        out.status.success(),
        "floatctl get {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `floatctl get ha` and `get lb` of a node, indented under a heading.
pub fn tables(label: &str, ns: &Netns) -> String {
    let mut out = String::new();
    for what in ["ha", "lb"] {
        out.push_str(&format!("  {label}$ floatctl get {what}\n"));
        match floatctl_get(ns, what) {
            Ok(t) => {
                for l in t.lines() {
                    out.push_str(&format!("    {l}\n"));
                }
            }
            Err(e) => out.push_str(&format!("    ({e:#})\n")),
        }
    }
    out
}
