//! Faults between the provider and moto: throttling, 500s and delays are
//! retried until the provider converges; a fatal error right after any step
//! aborts the promotion, and re-running it converges.

use std::time::Duration;

use anyhow::{Result, ensure};
use floatlb_cloud::{CallOutcome, CloudProvider, aws::AwsMode};
use floatlb_tests::{
    ec2world::{World, check, client, cluster_name, test_credentials},
    faultproxy::{Fault, FaultProxy},
    moto::Moto,
};

#[tokio::test]
async fn cloud_faults_transient_errors_are_retried_until_converged() -> Result<()> {
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("flt"),
    )
    .await?;
    let proxy = FaultProxy::start(moto.addr()).await?;
    let set = w.eni_set();
    let a = w
        .node(0, AwsMode::Eni, &proxy.endpoint, test_credentials())
        .await?;
    let b = w
        .node(1, AwsMode::Eni, &proxy.endpoint, test_credentials())
        .await?;
    check(&a.provider.promote(&set).await)?;

    proxy.inject("DetachNetworkInterface", Fault::Throttle, 2);
    proxy.inject("CreateSubnet", Fault::ServerError, 2);
    proxy.inject("CreateNetworkInterface", Fault::Throttle, 1);
    proxy.inject("AssociateAddress", Fault::ServerError, 1);
    proxy.inject(
        "DescribeNetworkInterfaces",
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    let r = b.provider.promote(&set).await;
    check(&r)?;
    w.assert_eni_master(1).await?;
    for action in [
        "DetachNetworkInterface",
        "CreateSubnet",
        "CreateNetworkInterface",
        "AssociateAddress",
    ] {
        ensure!(
            proxy.injected(action) > 0,
            "no fault was injected on {action}"
        );
    }
    let retried: Vec<_> = r
        .calls
        .iter()
        .filter_map(|c| match &c.outcome {
            CallOutcome::Retried(code) => Some(format!("{} ({code})", c.call)),
            _ => None,
        })
        .collect();
    println!(
        "faults: promotion converged after {} retries in {:.0} ms: {retried:?}",
        r.retries(),
        r.duration_us as f64 / 1000.0
    );
    ensure!(
        r.retries() == 6,
        "expected 6 retried attempts, got {}: {retried:?}",
        r.retries()
    );
    Ok(())
}

#[tokio::test]
async fn cloud_faults_fatal_errors_fail_fast() -> Result<()> {
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("ff"),
    )
    .await?;
    let proxy = FaultProxy::start(moto.addr()).await?;
    let a = w
        .node(0, AwsMode::Eni, &proxy.endpoint, test_credentials())
        .await?;
    proxy.inject("CreateSubnet", Fault::AbortAfter, 1);
    let r = a.provider.promote(&w.eni_set()).await;
    ensure!(!r.ok, "an invalid-parameter error must fail the promotion");
    ensure!(proxy.seen("CreateSubnet") == 1, "a fatal error was retried");
    let err = r.error.unwrap_or_default();
    ensure!(
        err.contains("ec2:CreateSubnet") && err.contains("InvalidParameterValue"),
        "{err}"
    );
    println!("fatal error, reported once without retry: {err}");
    Ok(())
}

/// Every mutating step of a cross-AZ takeover, aborted right after it took effect.
#[tokio::test]
async fn cloud_faults_abort_after_each_step_then_rerun_converges() -> Result<()> {
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("abort"),
    )
    .await?;
    let proxy = FaultProxy::start(moto.addr()).await?;
    let set = w.eni_set();
    let nodes = [
        w.node(0, AwsMode::Eni, &proxy.endpoint, test_credentials())
            .await?,
        w.node(1, AwsMode::Eni, &proxy.endpoint, test_credentials())
            .await?,
    ];
    check(&nodes[0].provider.promote(&set).await)?;
    let baseline = w.census().await?;
    let steps = [
        "DetachNetworkInterface",
        "DisassociateRouteTable",
        "DeleteNetworkInterface",
        "DeleteSubnet",
        "CreateSubnet",
        "CreateNetworkInterface",
        "AssociateRouteTable",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "AssociateAddress",
    ];
    let mut master = 0;
    for step in steps {
        let next = 1 - master;
        proxy.clear();
        proxy.inject(step, Fault::AbortAfter, 1);
        let r = nodes[next].provider.promote(&set).await;
        ensure!(proxy.injected(step) == 1, "step {step} was never reached");
        ensure!(!r.ok, "promotion aborted at {step} reported success");
        proxy.clear();
        let r = nodes[next].provider.promote(&set).await;
        check(&r)?;
        w.assert_eni_master(next).await?;
        println!(
            "abort after {step}: re-run converged with {} EC2 calls",
            r.calls.len()
        );
        master = next;
    }
    let end = w.census().await?;
    ensure!(
        end == baseline,
        "leak after aborted runs: {baseline:?} -> {end:?}"
    );
    Ok(())
}
