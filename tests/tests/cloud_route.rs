//! Route mode against moto: VIP/32 routes in two route tables and one EIP.

use anyhow::{Result, ensure};
use floatlb_cloud::{CloudProvider, aws::AwsMode};
use floatlb_tests::{
    ec2world::{World, check, client, cluster_name, test_credentials},
    moto::Moto,
};

#[tokio::test]
async fn cloud_route_failover_a_b_a_and_fifty() -> Result<()> {
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("route"),
    )
    .await?;
    let set = w.route_set();
    let nodes = [
        w.node(0, AwsMode::Route, &moto.endpoint(), test_credentials())
            .await?,
        w.node(1, AwsMode::Route, &moto.endpoint(), test_credentials())
            .await?,
    ];
    for n in &nodes {
        check(&n.provider.reconcile(&set).await)?;
    }
    let baseline = w.census().await?;
    for (step, i) in [0usize, 1, 0].into_iter().enumerate() {
        let r = nodes[i].provider.promote(&set).await;
        check(&r)?;
        w.assert_route_master(i).await?;
        ensure!(nodes[i].provider.status(&set).await?.is_master);
        ensure!(!nodes[1 - i].provider.status(&set).await?.is_master);
        let eip = r.critical_path("ec2:", Some("ec2:AssociateAddress"), 1.0, 0.2);
        let all = r.critical_path("ec2:", None, 1.0, 0.2);
        println!(
            "route mode, promotion {step} (node {i}): EC2 calls={} | serial calls before the EIP serves: {} = {:.1} s modelled | whole chain: {} serial = {:.1} s modelled | measured on moto {:.1} ms",
            r.calls.len(),
            eip.calls.len(),
            eip.modelled_s,
            all.calls.len(),
            all.modelled_s,
            r.duration_us as f64 / 1000.0
        );
        // Allocation ids were resolved at reconcile: one parallel round.
        ensure!(
            all.calls.len() == 1,
            "route-mode promotion is not one round: {:?}",
            all.calls
        );
    }
    let start = std::time::Instant::now();
    for k in 0..50 {
        check(&nodes[k % 2].provider.promote(&set).await)?;
    }
    println!(
        "route mode: 50 alternating failovers on moto took {:?}",
        start.elapsed()
    );
    w.assert_route_master(1).await?;
    let end = w.census().await?;
    println!("route mode census after reconcile {baseline:?}, after 50 failovers {end:?}");
    // One VIP route per table, nothing else.
    ensure!(
        end.routes == baseline.routes + w.route_tables.len(),
        "{baseline:?} -> {end:?}"
    );
    ensure!(
        end.subnets == baseline.subnets
            && end.enis == baseline.enis
            && end.addresses == baseline.addresses
    );
    Ok(())
}

#[tokio::test]
async fn cloud_route_rejects_unknown_route_table() -> Result<()> {
    let moto = Moto::start().await?;
    let mut w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("rtbad"),
    )
    .await?;
    w.route_tables.push("rtb-0000000000000dead".into());
    let n = w
        .node(0, AwsMode::Route, &moto.endpoint(), test_credentials())
        .await?;
    let r = n.provider.reconcile(&w.route_set()).await;
    ensure!(!r.ok);
    let err = r.error.unwrap_or_default();
    ensure!(
        err.contains("--cloud-route-tables") && err.contains("rtb-0000000000000dead"),
        "{err}"
    );
    println!("unknown route table: {err}");
    Ok(())
}
