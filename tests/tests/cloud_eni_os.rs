//! ENI mode with the OS step (needs root). Everything runs inside a fresh
//! network namespace: moto, the IMDS stand-in and the provider. When the
//! provider has created `loxi-eni`, the test plays the hypervisor and
//! hot-plugs an interface (a veth) with the ENI's MAC; the provider must find it,
//! bring it up, add the VIP and the source route.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_ec2::types::Filter;
use floatlb_cloud::{CloudProvider, aws::AwsMode};
use floatlb_tests::{
    ec2world::{VIP, World, check, client, cluster_name, test_credentials},
    moto::Moto,
    netns,
};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn cloud_eni_os_step_configures_the_hotplugged_interface() -> Result<()> {
    netns::require_root()?;
    netns::require_tools(&["ip"])?;
    let ns = Netns(format!("flgo{}", std::process::id()));
    ip(&["netns", "add", &ns.0])?;
    ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
    let path = format!("/run/netns/{}", ns.0);
    let nsname = ns.0.clone();
    // This thread (and every process and thread it starts) lives in the namespace.
    std::thread::spawn(move || -> Result<()> {
        nix::sched::setns(
            std::fs::File::open(&path)?,
            nix::sched::CloneFlags::CLONE_NEWNET,
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(run(nsname))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("test thread panicked"))?
}

async fn run(ns: String) -> Result<()> {
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("os"),
    )
    .await?;
    let set = w.eni_set();
    let imds = floatlb_tests::imds::ImdsServer::start(&w.nodes[0]).await?;
    let mut opts = w.options(AwsMode::Eni, &moto.endpoint(), &imds, test_credentials());
    opts.os_config = true;
    let provider = floatlb_cloud::aws::AwsProvider::connect(opts).await?;
    let ifname = format!("fle{}", std::process::id());

    // The "hypervisor": once loxi-eni exists, plug in a NIC with its MAC.
    let ec2 = w.ec2.clone();
    let ifc = ifname.clone();
    let hotplug = async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = ec2
                .describe_network_interfaces()
                .filters(
                    Filter::builder()
                        .name("tag:Name")
                        .values("loxi-eni")
                        .build(),
                )
                .send()
                .await?;
            if let Some(mac) = out
                .network_interfaces()
                .first()
                .and_then(|n| n.mac_address())
            {
                let mac = mac.to_string();
                let peer = format!("{ifc}p");
                let st = tokio::process::Command::new("ip")
                    .args([
                        "link", "add", &ifc, "address", &mac, "type", "veth", "peer", "name", &peer,
                    ])
                    .status()
                    .await?;
                ensure!(st.success(), "could not create the stand-in NIC");
                return anyhow::Ok(mac);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "loxi-eni never appeared"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (report, mac) = tokio::join!(provider.promote(&set), hotplug);
    let mac = mac?;
    check(&report)?;
    w.assert_eni_master(0).await?;
    let os_calls: Vec<String> = report
        .calls
        .iter()
        .filter(|c| !c.call.starts_with("ec2:"))
        .map(|c| {
            format!(
                "{} {} ({:.1} ms)",
                c.call,
                c.target,
                c.duration_us as f64 / 1000.0
            )
        })
        .collect();
    println!("ENI OS step: {os_calls:#?}");

    let link = ip(&["-n", &ns, "-o", "link", "show", "dev", &ifname])?;
    ensure!(link.contains(&mac), "wrong interface: {link}");
    ensure!(
        link.contains(",UP") || link.contains("<UP") || link.contains("UP,"),
        "interface not up: {link}"
    );
    let addrs = ip(&["-n", &ns, "-o", "addr", "show", "dev", &ifname])?;
    ensure!(addrs.contains(&format!("{VIP}/24")), "VIP missing: {addrs}");
    let rules = ip(&["-n", &ns, "rule", "show"])?;
    ensure!(
        rules.contains(&format!("from {VIP} lookup 1001")),
        "no source rule: {rules}"
    );
    let routes = ip(&["-n", &ns, "route", "show", "table", "1001"])?;
    ensure!(
        routes.contains("default via 10.0.100.1") && routes.contains(&ifname),
        "table 1001: {routes}"
    );

    // Promote again: no change, and the OS step is idempotent.
    check(&provider.promote(&set).await)?;
    // Demote: the VIP leaves the host.
    let r = provider.demote(&set).await;
    check(&r)?;
    let addrs = ip(&["-n", &ns, "-o", "addr", "show", "dev", &ifname]).context("after demote")?;
    ensure!(
        !addrs.contains(&VIP.to_string()),
        "VIP still on the host: {addrs}"
    );
    Ok(())
}
