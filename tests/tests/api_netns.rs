//! The REST API end to end, as kube-loxilb drives it: services created,
//! updated and deleted with kube-loxilb's exact bodies, each step checked
//! by traffic through the XDP datapath; state that survives a SIGKILL.
//!
//! Topology (`floatlb_tests::topology`): client, LB (XDP, `ip_forward=0`),
//! three endpoints answering with their id. The agent starts with no
//! `--config`: everything comes through the API.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use floatlb_tests::{
    apiclient::kube_loxilb_body,
    apilab::{ApiLab, EIP, EP_PORT, PORT, lab_body as body},
    topology::{VIP, endpoint_ip},
};

fn ids(v: &[u8]) -> BTreeSet<u8> {
    v.iter().copied().collect()
}

#[test]
fn kube_loxilb_bodies_create_update_and_delete_services_checked_by_traffic() -> Result<()> {
    let mut lab = ApiLab::new("fapi", 3)?;
    lab.start(&[])?;
    let api = lab.api();
    let up = api.wait_up(Duration::from_secs(10))?;
    println!("API up {} ms after the ready line", up.as_millis());

    // Create TCP and UDP with kube-loxilb's exact bodies.
    for proto in ["tcp", "udp"] {
        let a = api.post("/config/loadbalancer", &body(proto, &[0, 1]))?;
        ensure!(a.is_success(), "create {proto}: {a:?}");
        // An identical re-POST: 200, or 409 "exists" (both success to kube-loxilb).
        let again = api.post("/config/loadbalancer", &body(proto, &[0, 1]))?;
        ensure!(
            again.is_success() || (again.status == 409 && again.body.contains("exist")),
            "re-POST {proto}: {again:?}"
        );
    }
    let (tcp, udp) = lab.answering(24)?;
    println!("created: tcp endpoints {tcp:?}, udp endpoints {udp:?}");
    ensure!(
        tcp == ids(&[0, 1]) && udp == ids(&[0, 1]),
        "both endpoints serve"
    );

    // The fullnat source is the private VIP (conntrack shows the SNAT).
    let ct = api.get("/config/conntrack/all")?;
    ensure!(
        ct.content_type.as_deref() == Some("application/json"),
        "{ct:?}"
    );
    let flows = ct.json()?["ctAttr"].as_array().cloned().unwrap_or_default();
    ensure!(!flows.is_empty(), "no flows listed: {}", ct.body);
    for f in &flows {
        let ident = f["ident"].as_str().unwrap_or("");
        ensure!(
            ident.starts_with(&format!("{VIP}:")),
            "flow not source-NATed to privateIP {VIP}: {f}"
        );
    }

    // Update in place: add endpoint 2.
    for proto in ["tcp", "udp"] {
        ensure!(
            api.post("/config/loadbalancer", &body(proto, &[0, 1, 2]))?
                .is_success()
        );
    }
    let (tcp, udp) = lab.answering(36)?;
    println!("endpoint added: tcp {tcp:?}, udp {udp:?}");
    ensure!(
        tcp == ids(&[0, 1, 2]) && udp == ids(&[0, 1, 2]),
        "endpoint 2 serves"
    );

    // Update in place: remove endpoint 0; new flows never reach it.
    for proto in ["tcp", "udp"] {
        ensure!(
            api.post("/config/loadbalancer", &body(proto, &[1, 2]))?
                .is_success()
        );
    }
    let (tcp, udp) = lab.answering(30)?;
    println!("endpoint removed: tcp {tcp:?}, udp {udp:?}");
    ensure!(
        tcp == ids(&[1, 2]),
        "tcp still reaches a removed endpoint: {tcp:?}"
    );
    ensure!(
        udp == ids(&[1, 2]),
        "udp still reaches a removed endpoint: {udp:?}"
    );

    // GET all is a valid config file: the same services, in lbAttr form.
    let all = api.get("/config/loadbalancer/all")?.json()?;
    let list = all["lbAttr"].as_array().context("lbAttr")?;
    ensure!(list.len() == 2, "{all}");
    let file = lab.dir.join("dump.json");
    std::fs::write(&file, all.to_string())?;

    // Delete as kube-loxilb does: its path, its query, the create body.
    for proto in ["tcp", "udp"] {
        let path = format!(
            "/config/loadbalancer/externalipaddress/{EIP}/port/{PORT}/protocol/{proto}?bgp=false&block=0"
        );
        let a = api.call("DELETE", &path, Some(&body(proto, &[1, 2])))?;
        ensure!(a.is_success(), "delete {proto}: {a:?}");
        let again = api.call("DELETE", &path, Some(&body(proto, &[1, 2])))?;
        ensure!(
            again.status == 404 && again.body.contains("not-exists"),
            "{again:?}"
        );
    }
    ensure!(lab.vip_dead()?, "the VIP still answers after the delete");
    let all = api.get("/config/loadbalancer/all")?.json()?;
    ensure!(
        all["lbAttr"].as_array().is_some_and(|l| l.is_empty()),
        "{all}"
    );

    // The dump, fed back as --config, brings the services back.
    lab.kill()?;
    lab.start(&["--config", &file.to_string_lossy()])?;
    let (tcp, _) = lab.answering(12)?;
    ensure!(tcp == ids(&[1, 2]), "dump round trip: {tcp:?}");
    lab.kill()?;
    Ok(())
}

#[test]
fn a_sigkill_loses_nothing_that_was_acknowledged() -> Result<()> {
    let mut lab = ApiLab::new("fapk", 3)?;
    lab.start(&[])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    ensure!(
        api.post("/config/loadbalancer", &body("tcp", &[0, 2]))?
            .is_success()
    );
    ensure!(
        api.post("/config/loadbalancer", &body("udp", &[1]))?
            .is_success()
    );
    // 1000 more services (other ports), acknowledged one by one.
    let t0 = Instant::now();
    for i in 0..1000u16 {
        let eps = [(endpoint_ip(usize::from(i % 3)), EP_PORT)];
        let b = kube_loxilb_body(EIP, &VIP.to_string(), 1000 + i, "tcp", "bulk", &eps);
        let a = api.post("/config/loadbalancer", &b)?;
        ensure!(a.is_success(), "service {i}: {a:?}");
    }
    println!(
        "1000 services acknowledged in {} ms",
        t0.elapsed().as_millis()
    );
    let before = api.get("/config/loadbalancer/all")?.json()?;
    // No grace: whatever was acknowledged must be on disk now.
    lab.kill()?;
    let t1 = Instant::now();
    lab.start(&[])?;
    api.wait_up(Duration::from_secs(20))?;
    println!(
        "restarted with 1002 services in {} ms",
        t1.elapsed().as_millis()
    );
    let after = api.get("/config/loadbalancer/all")?.json()?;
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v["lbAttr"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| e["serviceArguments"].to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(
        keys(&before).len() == 1002,
        "before: {}",
        keys(&before).len()
    );
    ensure!(
        keys(&before) == keys(&after),
        "services differ after the restart"
    );
    let (tcp, udp) = lab.answering(16)?;
    ensure!(
        tcp == ids(&[0, 2]) && udp == ids(&[1]),
        "tcp {tcp:?} udp {udp:?}"
    );
    lab.kill()?;
    Ok(())
}
