//! ENI mode against moto: a two-AZ VPC, two nodes, one EIP.

use anyhow::{Result, ensure};
use floatlb_cloud::{CloudProvider, aws::AwsMode};
use floatlb_tests::{
    ec2world::{World, check, client, cluster_name, test_credentials},
    moto::Moto,
};

const MUTATING_S: f64 = 1.0;
const DESCRIBE_S: f64 = 0.2;

async fn world(test: &str) -> Result<(Moto, World)> {
    let moto = Moto::start().await?;
    let world = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name(test),
    )
    .await?;
    Ok((moto, world))
}

fn print_chain(label: &str, r: &floatlb_cloud::TransitionReport) {
    let eip = r.critical_path("ec2:", Some("ec2:AssociateAddress"), MUTATING_S, DESCRIBE_S);
    let all = r.critical_path("ec2:", None, MUTATING_S, DESCRIBE_S);
    println!(
        "{label}: EC2 calls total={} | serial calls before the EIP serves: {} ({} mutating + {} describe) = {:.1} s modelled | whole chain: {} serial calls = {:.1} s modelled | measured on moto {:.1} ms",
        r.calls
            .iter()
            .filter(|c| c.call.starts_with("ec2:"))
            .count(),
        eip.calls.len(),
        eip.mutating,
        eip.describes,
        eip.modelled_s,
        all.calls.len(),
        all.modelled_s,
        r.duration_us as f64 / 1000.0
    );
    println!(
        "{label}: critical path to the EIP: {}",
        eip.calls.join(" -> ")
    );
}

#[tokio::test]
async fn cloud_eni_identity_matches_moto_instances() -> Result<()> {
    let (moto, w) = world("ident").await?;
    for i in 0..2 {
        let node = w
            .node(i, AwsMode::Eni, &moto.endpoint(), test_credentials())
            .await?;
        let id = node.provider.discover().await?;
        let want = &w.nodes[i];
        // And moto agrees that this instance has this ENI, subnet, AZ and SGs.
        let d = w
            .ec2
            .describe_instances()
            .instance_ids(&id.instance_id)
            .send()
            .await?;
        let inst = d
            .reservations()
            .first()
            .and_then(|r| r.instances().first())
            .expect("instance");
        ensure!(id.instance_id == want.instance_id);
        ensure!(id.availability_zone == want.az && id.region == "us-east-1");
        ensure!(
            inst.placement().and_then(|p| p.availability_zone())
                == Some(id.availability_zone.as_str())
        );
        ensure!(inst.subnet_id() == Some(id.subnet_id.as_str()));
        ensure!(inst.vpc_id() == Some(id.vpc_id.as_str()));
        let nic = inst.network_interfaces().first().expect("nic");
        ensure!(nic.network_interface_id() == Some(id.primary_eni.as_str()));
        ensure!(nic.mac_address() == Some(id.mac.as_str()));
        ensure!(inst.private_ip_address().map(|s| s.parse().unwrap()) == id.private_ip);
        let sgs: Vec<&str> = inst
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect();
        ensure!(
            sgs == id
                .security_groups
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            "{sgs:?} vs {:?}",
            id.security_groups
        );
        println!(
            "node {i}: IMDS identity matches moto instance {}",
            id.instance_id
        );
    }
    Ok(())
}

#[tokio::test]
async fn cloud_eni_failover_a_b_a() -> Result<()> {
    let (moto, w) = world("aba").await?;
    let set = w.eni_set();
    let a = w
        .node(0, AwsMode::Eni, &moto.endpoint(), test_credentials())
        .await?;
    let b = w
        .node(1, AwsMode::Eni, &moto.endpoint(), test_credentials())
        .await?;

    let r = a.provider.promote(&set).await;
    check(&r)?;
    print_chain("ENI mode, first promotion (nothing to tear down)", &r);
    w.assert_eni_master(0).await?;
    ensure!(a.provider.status(&set).await?.is_master);
    ensure!(!b.provider.status(&set).await?.is_master);

    // A "dies": its loxi-eni stays attached. B takes over across AZs.
    let r = b.provider.promote(&set).await;
    check(&r)?;
    print_chain(
        "ENI mode, failover to the other AZ (stale loxi-eni attached)",
        &r,
    );
    w.assert_eni_master(1).await?;
    let st = b.provider.status(&set).await?;
    ensure!(st.is_master, "status: {:?}", st.missing);

    let r = a.provider.promote(&set).await;
    check(&r)?;
    w.assert_eni_master(0).await?;

    // Promoting the master again changes nothing: only reads.
    let r = a.provider.promote(&set).await;
    check(&r)?;
    let mutating = r.calls.iter().filter(|c| c.mutating).count();
    print_chain("ENI mode, re-promotion of the master", &r);
    ensure!(
        mutating == 0,
        "re-promotion made {mutating} mutating calls: {:#?}",
        r.calls
    );
    w.assert_eni_master(0).await?;
    Ok(())
}

#[tokio::test]
async fn cloud_eni_demote_then_peer_promotes() -> Result<()> {
    let (moto, w) = world("demote").await?;
    let set = w.eni_set();
    let a = w
        .node(0, AwsMode::Eni, &moto.endpoint(), test_credentials())
        .await?;
    let b = w
        .node(1, AwsMode::Eni, &moto.endpoint(), test_credentials())
        .await?;
    check(&a.provider.promote(&set).await)?;
    let before = w.census().await?;
    let r = a.provider.demote(&set).await;
    check(&r)?;
    let st = a.provider.status(&set).await?;
    ensure!(!st.holds_any && !st.is_master, "after demote: {st:?}");
    let after = w.census().await?;
    ensure!(
        after.subnets == before.subnets - 1 && after.enis == before.enis - 1,
        "{before:?} -> {after:?}"
    );
    ensure!(
        w.address().await?.association_id().is_none(),
        "EIP still associated after demote"
    );
    // A graceful handover leaves nothing to tear down for the peer.
    let r = b.provider.promote(&set).await;
    check(&r)?;
    print_chain("ENI mode, promotion after the peer's graceful demote", &r);
    ensure!(r.count("ec2:DetachNetworkInterface") == 0 && r.count("ec2:DeleteSubnet") == 0);
    w.assert_eni_master(1).await?;
    Ok(())
}

#[tokio::test]
async fn cloud_eni_fifty_failovers_leak_nothing() -> Result<()> {
    let (moto, w) = world("fifty").await?;
    let set = w.eni_set();
    let nodes = [
        w.node(0, AwsMode::Eni, &moto.endpoint(), test_credentials())
            .await?,
        w.node(1, AwsMode::Eni, &moto.endpoint(), test_credentials())
            .await?,
    ];
    let baseline = w.census().await?;
    let start = std::time::Instant::now();
    for k in 0..50 {
        let r = nodes[k % 2].provider.promote(&set).await;
        check(&r)?;
    }
    println!(
        "ENI mode: 50 alternating failovers on moto took {:?}",
        start.elapsed()
    );
    w.assert_eni_master(1).await?;
    let end = w.census().await?;
    println!("ENI mode census before {baseline:?}, after 50 failovers {end:?}");
    // Exactly one VIP subnet and one loxi-eni more than the empty VPC, and its one association.
    ensure!(
        end.subnets == baseline.subnets + 1,
        "subnets {baseline:?} -> {end:?}"
    );
    ensure!(
        end.enis == baseline.enis + 1,
        "enis {baseline:?} -> {end:?}"
    );
    ensure!(
        end.addresses == baseline.addresses,
        "addresses {baseline:?} -> {end:?}"
    );
    ensure!(
        end.routes == baseline.routes,
        "routes {baseline:?} -> {end:?}"
    );
    ensure!(
        end.rtb_associations == baseline.rtb_associations + 1,
        "associations {baseline:?} -> {end:?}"
    );
    Ok(())
}

#[tokio::test]
async fn cloud_eni_ownership_peer_state_and_lease() -> Result<()> {
    use floatlb_cloud::Holder;
    let (moto, w) = world("own").await?;
    let set = w.eni_set();
    let a = w
        .node(0, AwsMode::Eni, &moto.endpoint(), test_credentials())
        .await?;
    let b = w
        .node(1, AwsMode::Eni, &moto.endpoint(), test_credentials())
        .await?;
    let o = b.provider.ownership(&set).await?;
    ensure!(
        o.owner == Holder::Nobody && o.peer_running == Some(true) && o.lease.is_none(),
        "{o:?}"
    );
    check(&a.provider.promote(&set).await)?;
    a.provider
        .renew_lease(&set, std::time::Duration::from_secs(10))
        .await?;
    let from_b = b.provider.ownership(&set).await?;
    let lease = from_b.lease.expect("lease");
    ensure!(
        from_b.owner == Holder::Peer && lease.holder == Holder::Peer,
        "{from_b:?}"
    );
    ensure!(
        lease.remaining > std::time::Duration::from_secs(5),
        "{lease:?}"
    );
    let from_a = a.provider.ownership(&set).await?;
    ensure!(
        from_a.owner == Holder::Us && from_a.lease.map(|l| l.holder) == Some(Holder::Us),
        "{from_a:?}"
    );
    // A's instance stops: B sees it.
    w.ec2
        .stop_instances()
        .instance_ids(&w.nodes[0].instance_id)
        .send()
        .await?;
    let o = b.provider.ownership(&set).await?;
    ensure!(o.peer_running == Some(false), "{o:?}");
    println!("ownership as seen by B: {o:?}");
    Ok(())
}
