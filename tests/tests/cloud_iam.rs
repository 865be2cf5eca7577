//! The same flows with moto enforcing IAM, the node's credentials limited to
//! iam/policy.json; and proof that enforcement is real.

use anyhow::{Context, Result, ensure};
use aws_credential_types::Credentials;
use floatlb_cloud::{CloudProvider, aws::AwsMode};
use floatlb_tests::{
    ec2world::{World, check, client, cluster_name},
    moto::{Moto, xml_field},
};

/// IAM calls made before authentication starts (see `bootstrap`).
const NO_AUTH_CALLS: &str = "6";

const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

fn policy_for(cluster: &str) -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../iam/policy.json");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    ensure!(
        !text.contains(r#""Action": "*""#),
        "iam/policy.json grants every action"
    );
    Ok(text.replace(
        r#"/floatlb:cluster": "floatlb""#,
        &format!(r#"/floatlb:cluster": "{cluster}""#),
    ))
}

async fn user(moto: &Moto, name: &str, policy: &str) -> Result<Credentials> {
    moto.raw_query(
        "iam",
        &[
            ("Action", "CreateUser"),
            ("Version", "2010-05-08"),
            ("UserName", name),
        ],
    )
    .await?;
    moto.raw_query(
        "iam",
        &[
            ("Action", "PutUserPolicy"),
            ("Version", "2010-05-08"),
            ("UserName", name),
            ("PolicyName", "floatlb"),
            ("PolicyDocument", policy),
        ],
    )
    .await?;
    let xml = moto
        .raw_query(
            "iam",
            &[
                ("Action", "CreateAccessKey"),
                ("Version", "2010-05-08"),
                ("UserName", name),
            ],
        )
        .await?;
    let id = xml_field(&xml, "AccessKeyId").context("AccessKeyId")?;
    let secret = xml_field(&xml, "SecretAccessKey").context("SecretAccessKey")?;
    Ok(Credentials::new(id, secret, None, None, "moto-iam"))
}

/// Six unauthenticated IAM calls: an admin (builds the VPC) and the node
/// (exactly iam/policy.json).
async fn bootstrap(moto: &Moto, cluster: &str) -> Result<(Credentials, Credentials)> {
    let policy = policy_for(cluster)?;
    let admin = user(moto, "admin", ADMIN_POLICY).await?;
    let node = user(moto, "floatlb-node", &policy).await?;
    Ok((admin, node))
}

#[tokio::test]
async fn cloud_iam_policy_allows_both_modes_and_nothing_else() -> Result<()> {
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", NO_AUTH_CALLS)]).await?;
    let cluster = cluster_name("iam");
    let (admin, node_creds) = bootstrap(&moto, &cluster).await?;
    let w = World::build(client(&moto.endpoint(), admin.clone()), &cluster)
        .await
        .context("building the VPC with the admin's keys")?;

    // ENI mode, A -> B -> A, with the node's policy only.
    let set = w.eni_set();
    let a = w
        .node(0, AwsMode::Eni, &moto.endpoint(), node_creds.clone())
        .await?;
    let b = w
        .node(1, AwsMode::Eni, &moto.endpoint(), node_creds.clone())
        .await?;
    for (n, i) in [(&a, 0), (&b, 1), (&a, 0)] {
        check(&n.provider.promote(&set).await)?;
        w.assert_eni_master(i).await?;
    }
    check(&a.provider.demote(&set).await)?;
    check(&b.provider.promote(&set).await)?;
    w.assert_eni_master(1).await?;
    check(&b.provider.reconcile(&set).await)?;
    b.provider
        .renew_lease(&set, std::time::Duration::from_secs(30))
        .await?;
    let o = a.provider.ownership(&set).await?;
    ensure!(
        o.owner == floatlb_cloud::Holder::Peer && o.peer_running == Some(true),
        "{o:?}"
    );
    println!("IAM: ENI mode promote/demote/reconcile pass with iam/policy.json only");

    // Route mode, A -> B -> A.
    let rset = w.route_set();
    let ra = w
        .node(0, AwsMode::Route, &moto.endpoint(), node_creds.clone())
        .await?;
    let rb = w
        .node(1, AwsMode::Route, &moto.endpoint(), node_creds.clone())
        .await?;
    check(&ra.provider.reconcile(&rset).await)?;
    check(&rb.provider.reconcile(&rset).await)?;
    for (n, i) in [(&ra, 0), (&rb, 1), (&ra, 0)] {
        check(&n.provider.promote(&rset).await)?;
        w.assert_route_master(i).await?;
    }
    println!("IAM: route mode reconcile/promote pass with iam/policy.json only");

    // Outside the policy: denied.
    let node_ec2 = client(&moto.endpoint(), node_creds.clone());
    let err = node_ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .expect_err("CreateVpc is outside iam/policy.json and must be denied");
    let text = format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&err));
    ensure!(
        text.contains("AccessDenied") || text.contains("UnauthorizedOperation"),
        "{text}"
    );
    let short: String = text.chars().take(160).collect();
    println!("IAM: ec2:CreateVpc with the node's credentials is denied: {short}");
    let err = node_ec2
        .terminate_instances()
        .instance_ids(&w.nodes[1].instance_id)
        .send()
        .await
        .expect_err("TerminateInstances is outside iam/policy.json");
    let text = format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&err));
    ensure!(
        text.contains("AccessDenied") || text.contains("UnauthorizedOperation"),
        "{text}"
    );
    // And an unknown key is refused outright (the no-auth window is closed).
    let stranger = client(
        &moto.endpoint(),
        Credentials::new("AKIAUNKNOWNKEY000000", "x", None, None, "x"),
    );
    ensure!(
        stranger.describe_vpcs().send().await.is_err(),
        "an unknown access key was accepted"
    );
    Ok(())
}

#[tokio::test]
async fn cloud_iam_missing_permission_fails_fast_with_what_and_why() -> Result<()> {
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]).await?;
    let cluster = cluster_name("iamdeny");
    let policy = policy_for(&cluster)?;
    let without = policy.replace("\"ec2:CreateSubnet\",", "");
    ensure!(
        without != policy,
        "iam/policy.json has no ec2:CreateSubnet to remove"
    );
    let admin = user(&moto, "admin", ADMIN_POLICY).await?;
    let limited = user(&moto, "limited", &without).await?;
    let w = World::build(client(&moto.endpoint(), admin), &cluster)
        .await
        .context("building the VPC with the admin's keys")?;
    let a = w.node(0, AwsMode::Eni, &moto.endpoint(), limited).await?;
    let r = a.provider.promote(&w.eni_set()).await;
    ensure!(!r.ok, "promotion without ec2:CreateSubnet succeeded");
    let err = r.error.clone().unwrap_or_default();
    println!("IAM: missing permission: {err}");
    ensure!(
        err.contains("ec2:CreateSubnet")
            && err.contains("denied")
            && err.contains("iam/policy.json"),
        "{err}"
    );
    ensure!(
        r.count("ec2:CreateSubnet") == 1,
        "a denied call was retried: {:#?}",
        r.calls
    );
    ensure!(r.retries() == 0);
    Ok(())
}
