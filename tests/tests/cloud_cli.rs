//! `floatlb cloud promote|demote|reconcile|status` against moto, configured
//! only through the standard SDK settings (AWS_ENDPOINT_URL,
//! AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_ACCESS_KEY_ID...).

use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use floatlb_tests::{
    agent::floatlb_binary,
    ec2world::{VIP_BLOCK, World, client, cluster_name, test_credentials},
    imds::ImdsServer,
    moto::{Moto, free_port},
};

struct Cli {
    config: std::path::PathBuf,
    /// An empty file: no profile, no shared credentials.
    empty: std::path::PathBuf,
    cluster: String,
    endpoint: String,
}

impl Cli {
    fn run(&self, action: &str, imds: &str, creds: bool) -> Result<Output> {
        let mut cmd = Command::new(floatlb_binary()?);
        cmd.args(["cloud", action, "--config"])
            .arg(&self.config)
            .args([
                "--cloud",
                "aws",
                "--cloudcidrblock",
                VIP_BLOCK,
                "--no-os-config",
            ])
            .args(["--cloud-cluster-name", &self.cluster, "--json"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
            .env("AWS_CONFIG_FILE", &self.empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.empty);
        if creds {
            cmd.env("AWS_ACCESS_KEY_ID", "AKIATESTFLOATLB00001")
                .env("AWS_SECRET_ACCESS_KEY", "secret");
        }
        Ok(cmd.output()?)
    }
}

fn json(out: &Output) -> Result<serde_json::Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_cli_promote_status_demote_and_clear_errors() -> Result<()> {
    let moto = Moto::start().await?;
    let w = World::build(
        client(&moto.endpoint(), test_credentials()),
        &cluster_name("cli"),
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("floatlb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = w.write_service_config(&dir)?;
    let empty = dir.join("empty");
    std::fs::write(&empty, "")?;
    let cli = Cli {
        config,
        empty,
        cluster: w.cluster.clone(),
        endpoint: moto.endpoint(),
    };
    let a = ImdsServer::start(&w.nodes[0]).await?;
    let b = ImdsServer::start(&w.nodes[1]).await?;

    let out = cli.run("promote", &a.endpoint, true)?;
    let v = json(&out)?;
    ensure!(out.status.code() == Some(0), "promote A: {v}");
    ensure!(v["as_asked"] == true && v["report"]["ok"] == true && v["status"]["is_master"] == true);
    ensure!(!v["report"]["calls"].as_array().context("calls")?.is_empty());
    w.assert_eni_master(0).await?;

    let out = cli.run("status", &b.endpoint, true)?;
    ensure!(
        out.status.code() == Some(1),
        "status on the BACKUP must exit 1: {}",
        json(&out)?
    );

    let out = cli.run("promote", &b.endpoint, true)?;
    ensure!(out.status.code() == Some(0), "promote B: {}", json(&out)?);
    w.assert_eni_master(1).await?;
    let out = cli.run("status", &b.endpoint, true)?;
    ensure!(out.status.code() == Some(0));
    let out = cli.run("reconcile", &a.endpoint, true)?;
    ensure!(out.status.code() == Some(0), "reconcile A: {}", json(&out)?);
    let out = cli.run("demote", &b.endpoint, true)?;
    let v = json(&out)?;
    ensure!(
        out.status.code() == Some(0) && v["status"]["holds_any"] == false,
        "demote B: {v}"
    );

    // No IMDS: one clear line, non-zero exit.
    let dead = format!("http://127.0.0.1:{}", free_port()?);
    let out = cli.run("status", &dead, true)?;
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    println!("missing IMDS -> {err}");
    ensure!(out.status.code() == Some(2), "exit {:?}", out.status.code());
    ensure!(err.lines().count() == 1, "want one line, got: {err}");
    ensure!(
        err.contains("IMDSv2") && err.contains("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
        "{err}"
    );

    // No credentials anywhere: one clear line, non-zero exit.
    let out = cli.run("status", &a.endpoint, false)?;
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    println!("missing credentials -> {err}");
    ensure!(out.status.code() == Some(2), "exit {:?}", out.status.code());
    ensure!(err.lines().count() == 1, "want one line, got: {err}");
    ensure!(
        err.contains("no AWS credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    let _ = test_credentials();
    Ok(())
}
