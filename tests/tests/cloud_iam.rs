//! The same flows with moto enforcing IAM, the node's credentials limited to
//! iam/policy.json; proof that enforcement is real; and `floatlb cloud
//! dry-run` against the enforcing moto.
//!
//! moto checks the action name only: it ignores conditions and evaluates
//! every EC2 call against the resource `*`, so a statement scoped to ARNs
//! never matches here. These tests prove that the policy names every action;
//! tests/tests/iam_policy_eval.rs proves its resources and conditions.

use anyhow::{Context, Result, ensure};
use aws_credential_types::Credentials;
use floatlb_cloud::aws::dryrun::Verdict;
use floatlb_cloud::{CloudProvider, aws::AwsMode};
use floatlb_tests::{
    agent::floatlb_binary,
    ec2world::{VIP_BLOCK, World, check, client, cluster_name},
    faultproxy::{Fault, FaultProxy},
    iam_eval::render,
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
    // The node user must exist before the admin builds the VPC, so its id is
    // not known yet; moto never matches the VPC-ARN statements anyway.
    render(
        &text,
        &[
            ("cluster_name", cluster),
            ("vpc_id", "vpc-00000000"),
            ("partition", "aws"),
        ],
    )
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

/// The calls on which moto ignores DryRun (it would create or change the
/// resource): the fault proxy answers their DryRun requests itself. The
/// others (interfaces, addresses, tags) reach moto, which checks IAM first.
const DRY_RUN_IGNORED_BY_MOTO: &[&str] = &[
    "CreateSubnet",
    "DeleteSubnet",
    "AssociateVpcCidrBlock",
    "AssociateRouteTable",
    "ReplaceRouteTableAssociation",
    "DisassociateRouteTable",
    "AssignPrivateIpAddresses",
    "CreateRoute",
    "ReplaceRoute",
];

/// The dry-run lab: moto enforcing IAM, the VPC built with an admin's keys,
/// node A MASTER in ENI mode (so every write of B's failover has a
/// target), and the fault proxy answering the DryRun requests moto would
/// execute. Keys: the node's role (`iam/policy.json`) and one without
/// `ec2:AssociateAddress`.
struct DryRunLab {
    moto: Moto,
    cluster: String,
    node_creds: Credentials,
    limited: Credentials,
    w: World,
    proxy: FaultProxy,
    _a: floatlb_tests::ec2world::Node,
}

async fn dry_run_lab(tag: &str) -> Result<DryRunLab> {
    // 9 unauthenticated calls: admin, node, and a node without AssociateAddress.
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "9")]).await?;
    let cluster = cluster_name(tag);
    let policy = policy_for(&cluster)?;
    let without = policy.replace("\"ec2:AssociateAddress\",", "");
    ensure!(
        without != policy,
        "iam/policy.json has no ec2:AssociateAddress to remove"
    );
    let admin = user(&moto, "admin", ADMIN_POLICY).await?;
    let node_creds = user(&moto, "floatlb-node", &policy).await?;
    let limited = user(&moto, "limited", &without).await?;
    let w = World::build(client(&moto.endpoint(), admin), &cluster)
        .await
        .context("building the VPC with the admin's keys")?;
    let proxy = FaultProxy::start(moto.addr()).await?;
    for a in DRY_RUN_IGNORED_BY_MOTO {
        proxy.inject(a, Fault::DryRunAnswer, u32::MAX);
    }
    let a = w
        .node(0, AwsMode::Eni, &moto.endpoint(), node_creds.clone())
        .await?;
    check(&a.provider.promote(&w.eni_set()).await)?;
    Ok(DryRunLab {
        moto,
        cluster,
        node_creds,
        limited,
        w,
        proxy,
        _a: a,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_iam_dry_run_names_the_missing_permission_and_changes_nothing() -> Result<()> {
    let DryRunLab {
        moto: _moto,
        cluster,
        node_creds,
        limited,
        w,
        proxy,
        _a,
    } = dry_run_lab("dryrun").await?;
    let before = w.census().await?;
    let eip_before = w.address().await?;

    let b = w
        .node(1, AwsMode::Eni, &proxy.endpoint, node_creds.clone())
        .await?;
    let r = b.provider.dry_run(&w.eni_set()).await?;
    for c in &r.checks {
        println!("dry-run ENI: {:<38} {:?} {}", c.action, c.verdict, c.detail);
    }
    ensure!(r.all_allowed(), "full policy, ENI mode: {r:#?}");
    let allowed: Vec<&str> = r
        .with(Verdict::Allowed)
        .iter()
        .map(|c| c.action.as_str())
        .collect();
    for want in [
        "ec2:DetachNetworkInterface",
        "ec2:DeleteNetworkInterface",
        "ec2:DeleteSubnet",
        "ec2:CreateSubnet",
        "ec2:CreateNetworkInterface",
        "ec2:AttachNetworkInterface",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:AssociateAddress",
        "ec2:DisassociateAddress",
        "ec2:CreateTags",
    ] {
        ensure!(allowed.contains(&want), "{want} not probed: {allowed:?}");
    }
    // The interface/address/tag probes were answered by moto itself.
    for a in [
        "AttachNetworkInterface",
        "AssociateAddress",
        "CreateTags",
        "CreateNetworkInterface",
    ] {
        ensure!(
            proxy.seen(a) >= 1 && proxy.injected(a) == 0,
            "{a} did not reach moto"
        );
    }

    // Route mode.
    let rb = w
        .node(1, AwsMode::Route, &proxy.endpoint, node_creds.clone())
        .await?;
    let r = rb.provider.dry_run(&w.route_set()).await?;
    for c in &r.checks {
        println!(
            "dry-run route: {:<38} {:?} {}",
            c.action, c.verdict, c.detail
        );
    }
    ensure!(r.all_allowed(), "full policy, route mode: {r:#?}");
    ensure!(
        r.with(Verdict::Allowed)
            .iter()
            .any(|c| c.action == "ec2:CreateRoute")
    );

    // One permission missing: that action, and only it, is denied.
    let lb = w
        .node(1, AwsMode::Eni, &proxy.endpoint, limited.clone())
        .await?;
    let r = lb.provider.dry_run(&w.eni_set()).await?;
    let denied: Vec<&str> = r.denied().iter().map(|c| c.action.as_str()).collect();
    println!("dry-run without ec2:AssociateAddress: denied {denied:?}");
    ensure!(denied == ["ec2:AssociateAddress"], "{r:#?}");

    // The command: exit 1 and the denied action named, as a table and as JSON.
    let dir = std::env::temp_dir().join(format!("floatlb-dryrun-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = w.write_service_config(&dir)?;
    let empty = dir.join("empty");
    std::fs::write(&empty, "")?;
    let run = |json: bool| -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(floatlb_binary()?);
        cmd.args(["cloud", "dry-run", "--config"])
            .arg(&config)
            .args([
                "--cloud",
                "aws",
                "--cloudcidrblock",
                VIP_BLOCK,
                "--no-os-config",
            ])
            .args(["--cloud-cluster-name", &cluster])
            .args(json.then_some("--json"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &proxy.endpoint)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &lb.imds.endpoint)
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env("AWS_ACCESS_KEY_ID", limited.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", limited.secret_access_key());
        Ok(cmd.output()?)
    };
    let out = run(false)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("floatlb cloud dry-run (limited role):\n{text}");
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {text} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.lines()
            .any(|l| l.contains("ec2:AssociateAddress") && l.contains("DENIED"))
            && text.contains("result: DENIED ec2:AssociateAddress"),
        "{text}"
    );
    let out = run(true)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).to_string())?;
    ensure!(
        out.status.code() == Some(1) && v["as_asked"] == false,
        "{v}"
    );
    let checks = v["dry_run"]["checks"].as_array().context("checks")?;
    ensure!(
        checks
            .iter()
            .any(|c| c["action"] == "ec2:AssociateAddress" && c["verdict"] == "denied"),
        "{v}"
    );
    std::fs::remove_dir_all(&dir)?;

    // Nothing changed: same subnets, interfaces, routes; the EIP still on A.
    ensure!(w.census().await? == before, "a dry run changed the VPC");
    let eip_after = w.address().await?;
    ensure!(
        eip_after.network_interface_id() == eip_before.network_interface_id(),
        "a dry run moved the EIP"
    );
    w.assert_eni_master(0).await?;
    Ok(())
}

/// `floatlb cloud preflight` as an operator runs it on node B before its
/// first failover: against the enforcing moto (through the fault proxy,
/// which answers the DryRun requests moto would execute), with the peer's
/// ports on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_preflight_names_each_thing_that_would_break_a_failover() -> Result<()> {
    let DryRunLab {
        moto: _moto,
        cluster,
        node_creds,
        limited,
        w,
        proxy,
        _a,
    } = dry_run_lab("preflight").await?;
    let b = w
        .node(1, AwsMode::Eni, &proxy.endpoint, node_creds.clone())
        .await?;
    let before = w.census().await?;

    // The peer: a sync listener, and a BFD port nothing listens on.
    let sync = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sync_port = sync.local_addr()?.port().to_string();
    let bfd_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    let dir = std::env::temp_dir().join(format!("floatlb-preflight-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = w.write_service_config(&dir)?;
    let empty = dir.join("empty");
    std::fs::write(&empty, "")?;
    // (exit code, stdout, stdout + stderr)
    let run =
        |creds: &Credentials, imds: &str, json: bool| -> Result<(Option<i32>, String, String)> {
            let mut cmd = std::process::Command::new(floatlb_binary()?);
            cmd.args(["cloud", "preflight", "--config"])
                .arg(&config)
                .args(["--cloud", "aws", "--cloudcidrblock", VIP_BLOCK])
                .args(["--cloud-cluster-name", &cluster])
                .args(["--cluster", "127.0.0.1", "--sync-port", &sync_port])
                .args(["--bfd-port", &bfd_port, "--iface", "lo"])
                .args(["--probe-timeout-ms", "1000"])
                .args(json.then_some("--json"))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("AWS_ENDPOINT_URL", &proxy.endpoint)
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
                .env("AWS_CONFIG_FILE", &empty)
                .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
                .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
                .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key());
            let out = cmd.output()?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
            Ok((out.status.code(), stdout, text))
        };
    let row = |text: &str, check: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(check))
            .unwrap_or("")
            .to_string()
    };

    // A role without AssociateAddress, and source/dest check still on.
    let (code, _, text) = run(&limited, &b.imds.endpoint, false)?;
    println!("floatlb cloud preflight (limited role, src/dst check on):\n{text}");
    ensure!(code == Some(1), "exit {code:?}");
    ensure!(row(&text, "IMDSv2").contains(" ok "), "{text}");
    ensure!(
        row(&text, "region / AZ").contains(&format!("us-east-1 / {}", w.nodes[1].az)),
        "{text}"
    );
    let denied = row(&text, "permission ec2:AssociateAddress");
    ensure!(
        denied.contains("FAIL") && denied.contains("DENIED"),
        "{text}"
    );
    ensure!(
        row(&text, "permission ec2:CreateNetworkInterface").contains(" ok "),
        "{text}"
    );
    let sdc = row(&text, "source/dest check");
    ensure!(
        sdc.contains("FAIL") && sdc.contains(&w.nodes[1].eni),
        "{text}"
    );
    ensure!(row(&text, "clock").contains(" ok "), "{text}");
    ensure!(row(&text, "peer sync").contains(" ok "), "{text}");
    ensure!(
        row(&text, "peer BFD").contains(" ok ") && row(&text, "peer BFD").contains("unreachable"),
        "{text}"
    );
    ensure!(row(&text, "native XDP lo").contains("WARN"), "{text}");
    ensure!(
        text.contains("preflight: FAILED permission ec2:AssociateAddress, source/dest check"),
        "{text}"
    );

    // The operator fixes both: the full role, source/dest check off.
    w.ec2
        .modify_network_interface_attribute()
        .network_interface_id(&w.nodes[1].eni)
        .source_dest_check(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(false)
                .build(),
        )
        .send()
        .await?;
    let (code, stdout, text) = run(&node_creds, &b.imds.endpoint, true)?;
    let v: serde_json::Value = serde_json::from_str(&stdout).with_context(|| text.clone())?;
    let failed: Vec<&serde_json::Value> = v["preflight"]["checks"]
        .as_array()
        .context("checks")?
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    println!("preflight after the fixes: exit {code:?}, failed {failed:?}");
    ensure!(
        code == Some(0) && failed.is_empty() && v["preflight"]["ok"] == true,
        "{text}"
    );

    // No IMDS (a hop limit of 1 inside a container, say): named, exit 1.
    let (code, _, text) = run(&node_creds, "http://127.0.0.1:9", false)?;
    ensure!(
        code == Some(1) && row(&text, "IMDSv2").contains("FAIL"),
        "{text}"
    );
    drop(sync);
    std::fs::remove_dir_all(&dir)?;
    ensure!(w.census().await? == before, "a preflight changed the VPC");
    Ok(())
}
