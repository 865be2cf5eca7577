//! The API's users against a live agent (XDP datapath, BFD, state dir):
//! `floatctl`, every verb in table and JSON form, checked by traffic where
//! a verb changes what the datapath forwards; and schemathesis fuzzing the
//! served OpenAPI document, bounded in time, for 5xx answers and answers
//! the document does not describe.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use floatlb_tests::{
    apiclient::API_PORT,
    apilab::{ApiLab, EIP, EP_PORT, PORT, floatctl_binary},
    netns::poll_until,
    topology::{CLIENT_IP, LB_CLIENT_IP, VIP, endpoint_ip},
};
use serde_json::Value;

const TOKEN: &str = "s3cret-api-token";

/// One floatctl run inside the LB namespace.
struct Ctl<'a> {
    lab: &'a ApiLab,
    bin: PathBuf,
    token_file: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self, what: &str) -> Result<String> {
        ensure!(
            self.code == 0,
            "floatctl {what} exited {}: {}{}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self.stdout)
    }

    fn json(self, what: &str) -> Result<Value> {
        let out = self.ok(what)?;
        serde_json::from_str(&out).with_context(|| format!("floatctl {what} -o json: {out}"))
    }
}

impl Ctl<'_> {
    fn run_with(&self, token_file: &Path, args: &[&str]) -> Result<Run> {
        let url = format!("http://127.0.0.1:{API_PORT}");
        let out: Output = self
            .lab
            .topo
            .lb
            .command(&self.bin)
            .args(["--api", &url, "--token-file"])
            .arg(token_file)
            .args(args)
            .env_remove("FLOATCTL_API")
            .env_remove("FLOATCTL_TOKEN")
            .output()
            .context("run floatctl")?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn run(&self, args: &[&str]) -> Result<Run> {
        self.run_with(&self.token_file, args)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[test]
fn floatctl_drives_a_live_agent_every_verb_in_table_and_json_form() -> Result<()> {
    let mut lab = ApiLab::new("fctl", 2)?;
    let token_file = lab.dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    // BFD towards the client, which never answers: the agent has a session
    // to list and to `set bfd` on, and elects itself once it times out.
    let ka = format!("{CLIENT_IP}:{LB_CLIENT_IP}");
    lab.start(&[
        "--api-token-file",
        &token_file.to_string_lossy(),
        "--ka",
        &ka,
    ])?;
    let ctl = Ctl {
        lab: &lab,
        bin: floatctl_binary()?,
        token_file: token_file.clone(),
    };
    let mut api = lab.api();
    api.token = Some(TOKEN.into());
    api.wait_up(Duration::from_secs(10))?;
    let t0 = Instant::now();
    poll_until(
        "MASTER with a silent BFD peer",
        Duration::from_secs(20),
        || {
            let v = ctl
                .run(&["get", "ha", "-o", "json"])
                .ok()?
                .json("get ha")
                .ok()?;
            (v["Attr"][0]["state"].as_str() == Some("MASTER")).then_some(())
        },
    )?;
    println!(
        "MASTER {} ms after the API came up",
        t0.elapsed().as_millis()
    );

    // Create as an operator would, then check it by traffic.
    let endpoints = format!("{}:{EP_PORT},{}:{EP_PORT}", endpoint_ip(0), endpoint_ip(1));
    let created = ctl
        .run(&[
            "create",
            "lb",
            &format!("--external-ip={EIP}"),
            &format!("--private-ip={VIP}"),
            &format!("--port={PORT}"),
            &format!("--endpoints={endpoints}"),
            "--name=default_web:llb-inst0",
        ])?
        .ok("create lb")?;
    ensure!(
        created.starts_with(&format!("created lb {EIP}:{PORT}/tcp")),
        "{created}"
    );
    let udp = ctl
        .run(&[
            "create",
            "lb",
            &format!("--external-ip={EIP}"),
            &format!("--private-ip={VIP}"),
            &format!("--port={PORT}"),
            "--protocol=udp",
            &format!("--endpoints={}:{EP_PORT}", endpoint_ip(1)),
            "-o",
            "json",
        ])?
        .json("create lb udp")?;
    ensure!(udp["result"] == "Success", "{udp}");
    let (tcp, udp) = lab.answering(16)?;
    ensure!(
        tcp.len() == 2 && udp.len() == 1,
        "after create: tcp {tcp:?} udp {udp:?}"
    );

    // Every get, in table, wide and JSON form. The cells are the live
    // agent's own: the rule just made, a flow just forwarded, its role.
    let cases: [(&str, &str, String, &str); 7] = [
        ("ha", "INSTANCE", "MASTER".into(), "Attr"),
        ("bfd", "INSTANCE", CLIENT_IP.to_string(), "Attr"),
        ("lb", "EXTERNAL IP", EIP.into(), "lbAttr"),
        ("ct", "DESTINATION IP", VIP.to_string(), "ctAttr"),
        ("ep", "HOST", endpoint_ip(0).to_string(), "Attr"),
        ("status", "ROLE", "MASTER".into(), "role"),
        ("transitions", "TIME", "MASTER".into(), "transitions"),
    ];
    for (what, header, cell, key) in &cases {
        let table = ctl.run(&["get", what])?.ok(what)?;
        ensure!(
            first_line(&table).contains(header),
            "get {what}: header {header:?} missing:\n{table}"
        );
        ensure!(
            table.contains(cell.as_str()),
            "get {what}: no {cell}:\n{table}"
        );
        let wide = ctl.run(&["get", what, "-o", "wide"])?.ok(what)?;
        ensure!(wide.contains(cell.as_str()), "get {what} -o wide:\n{wide}");
        let json = ctl.run(&["get", what, "-o", "json"])?.json(what)?;
        ensure!(
            json.get(key).is_some() || json.is_array(),
            "get {what} -o json has no {key:?}: {json}"
        );
        println!("get {what}: {} lines", table.lines().count());
    }
    let lb = ctl.run(&["get", "lb", "-o", "json"])?.json("get lb")?;
    ensure!(lb["lbAttr"].as_array().map(Vec::len) == Some(2), "{lb}");

    // set bfd reaches the live session.
    let set = ctl
        .run(&["set", "bfd", "--interval-us=200000", "--multiplier=4"])?
        .ok("set bfd")?;
    println!("set bfd: {}", set.trim());
    let bfd = ctl.run(&["get", "bfd", "-o", "json"])?.json("get bfd")?;
    ensure!(
        bfd["Attr"][0]["interval"] == 200_000 && bfd["Attr"][0]["retryCount"] == 4,
        "set bfd not applied: {bfd}"
    );

    // save, delete --all (the VIP goes dead), apply the saved file back.
    let saved = lab.dir.join("saved.json");
    ctl.run(&["save", "-f", &saved.to_string_lossy()])?
        .ok("save")?;
    ensure!(ctl.run(&["delete", "lb", "--all"])?.ok("delete --all")? == "deleted every lb rule\n");
    ensure!(lab.vip_dead()?, "the VIP still answers after delete --all");
    ctl.run(&["apply", "-f", &saved.to_string_lossy()])?
        .ok("apply")?;
    let (tcp, udp) = lab.answering(16)?;
    ensure!(
        tcp.len() == 2 && udp.len() == 1,
        "after apply: {tcp:?} {udp:?}"
    );

    // delete by key and by name; a second delete fails with the agent's 404.
    let del = [
        "delete",
        "lb",
        &format!("--external-ip={EIP}"),
        &format!("--port={PORT}"),
        "--protocol=udp",
    ];
    ctl.run(&del)?.ok("delete udp")?;
    let again = ctl.run(&del)?;
    ensure!(
        again.code != 0 && again.stderr.contains("404") && again.stderr.contains("not"),
        "second delete: exit {} {}",
        again.code,
        again.stderr
    );
    ctl.run(&["delete", "lb", "--name=default_web:llb-inst0"])?
        .ok("delete by name")?;
    ensure!(lab.vip_dead()?, "the VIP still answers after the deletes");

    // A bad token: non-zero, the agent's 401, nothing changed.
    let bad = lab.dir.join("bad-token");
    std::fs::write(&bad, "wrong")?;
    let refused = ctl.run_with(&bad, &["delete", "lb", "--all"])?;
    ensure!(
        refused.code != 0 && refused.stderr.contains("401"),
        "bad token: exit {} {}",
        refused.code,
        refused.stderr
    );

    let completion = ctl.run(&["completion", "bash"])?.ok("completion")?;
    ensure!(completion.contains("floatctl"), "completion bash");
    lab.kill()?;
    Ok(())
}

/// schemathesis from setup's venv (`scripts/setup.sh` installs it).
fn schemathesis() -> Result<PathBuf> {
    let bin = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/floatlb-schemathesis/bin/schemathesis"));
    if !bin.is_file() {
        bail!(
            "{} not found: run scripts/setup.sh (it creates the venv with `pip install schemathesis`), or set SCHEMATHESIS",
            bin.display()
        );
    }
    Ok(bin)
}

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() -> Result<()> {
    let st = schemathesis()?;
    let mut lab = ApiLab::new("fst", 1)?;
    lab.start(&[])?;
    let api = lab.api();
    api.wait_up(Duration::from_secs(10))?;
    let base = format!("http://127.0.0.1:{API_PORT}");
    let t0 = Instant::now();
    let out = lab
        .topo
        .lb
        .command(&st)
        .args([
            "run",
            &format!("{base}/netlox/v1/openapi.json"),
            "--url",
            &base,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-time",
            "60",
            // One worker: schemathesis's generator parses Python source
            // with `ast`, which CPython 3.11 does not do safely from two
            // threads at once (a SystemError inside schemathesis, not an
            // answer of ours).
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
            "--no-color",
        ])
        .env("HOME", lab.dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(lab.dir.path())
        .output()
        .context("run schemathesis")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    println!("schemathesis took {} s", t0.elapsed().as_secs());
    ensure!(
        out.status.success(),
        "schemathesis found answers outside the document or server errors (exit {:?})",
        out.status.code()
    );
    ensure!(
        t0.elapsed() < Duration::from_secs(120),
        "the fuzz run is bounded to 2 minutes"
    );
    // The agent is still up and consistent after the fuzzing.
    ensure!(api.get("")?.status == 200, "the agent stopped answering");
    ensure!(lab.pid().is_some(), "agent gone");
    let log = lab.log();
    ensure!(!log.contains("panicked"), "the agent panicked:\n{log}");
    lab.kill()?;
    Ok(())
}
