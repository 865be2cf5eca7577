//! The demo's VPC simulator against moto: the VIP is routed (in a router
//! namespace) to whichever node the Elastic IP serves, blackholed while it
//! serves nobody, and each change is recorded once.

use std::time::Duration;

use anyhow::{Result, ensure};
use floatlb_cloud::{CloudProvider, aws::AwsMode};
use floatlb_tests::{
    ec2world::{VIP, World, check, client, cluster_name, test_credentials},
    moto::Moto,
    netns::{Netns, require_root, unique_name},
    vpcsim::{SimNode, VpcSim},
};

fn route(ns: &Netns) -> Result<String> {
    Ok(ns
        .ip(&["route", "show", &format!("{VIP}/32")])?
        .trim()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpc_simulator_routes_the_vip_to_the_eip_owner() -> Result<()> {
    require_root()?;
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("vpcsim"),
    )
    .await?;
    let router = Netns::new(unique_name("vpcsim"))?;
    // Next hops must be on-link for `ip route replace ... via`.
    router.ip(&["link", "add", "vpc", "type", "veth", "peer", "name", "vpc1"])?;
    router.link_up("vpc")?;
    router.link_up("vpc1")?;
    router.addr_add("vpc", "10.0.0.1/16")?;
    let nodes: Vec<SimNode> = (0..2)
        .map(|i| {
            Ok(SimNode {
                name: format!("node{i}"),
                instance_id: w.nodes[i].instance_id.clone(),
                addr: w.nodes[i].private_ip.parse()?,
            })
        })
        .collect::<Result<_>>()?;
    let sim = VpcSim::start(
        w.ec2.clone(),
        w.eip_alloc.clone(),
        router.name().into(),
        VIP,
        nodes,
    )?;
    ensure!(
        route(&router)?.starts_with("blackhole"),
        "{}",
        route(&router)?
    );

    let set = w.eni_set();
    for i in [0usize, 1] {
        let node = w
            .node(i, AwsMode::Eni, &moto.endpoint(), test_credentials())
            .await?;
        check(&node.provider.promote(&set).await)?;
        let ev = sim.wait_owner(i, Duration::from_secs(10)).await?;
        let r = route(&router)?;
        println!(
            "node{i} promoted: simulator routed after {:?} from seeing it: {r}",
            ev.routed.duration_since(ev.seen)
        );
        ensure!(
            r.contains(&format!("via {}", w.nodes[i].private_ip)),
            "route {r}, want via {}",
            w.nodes[i].private_ip
        );
    }
    let events = sim.events();
    // blackhole (start), node0, then possibly "nobody" while node1 rebuilds, node1.
    ensure!(events.first().is_some_and(|e| e.assoc.owner.is_none()));
    ensure!(events.last().is_some_and(|e| e.assoc.owner == Some(1)));
    ensure!(
        events.windows(2).all(|p| p[0].assoc != p[1].assoc),
        "a change was recorded twice: {events:?}"
    );
    let (polls, errors, last) = sim.poll_stats();
    ensure!(errors == 0, "{errors} of {polls} polls failed: {last:?}");
    Ok(())
}
