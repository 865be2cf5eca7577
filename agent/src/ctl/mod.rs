//! floatctl: loxicmd's role for floatlb, a client of the agent's REST API.
//!
//! ```text
//!  argv --clap--> cli::Cli --run()--> client::Client --HTTP(S)--> agent /netlox/v1/...
//!                                          |
//!              stdout <--render (table)-- wire types of floatlb_api <-- JSON answer
//!                     <--serde (-o json)--'
//! ```
//!
//! - One verb is one or more blocking requests, in order; nothing runs in
//!   the background. Answers are decoded with `floatlb_api`'s wire types
//!   (the same ones the agent encodes with), so a table can only show what
//!   the API says, and `-o json` prints the decoded answer re-indented, in
//!   loxilb's field names.
//! - Any failure is a [`CtlError`]: the binary prints it on stderr and exits
//!   1 (clap's usage errors exit 2). An error from the agent carries its
//!   `message` and `result`; a transport error names the method and URL.
//! - Modules: [`cli`] the command line, [`client`] HTTP/TLS/token, [`lb`]
//!   rule building and rule files, [`render`] the tables.

pub mod cli;
pub mod client;
pub mod lb;
pub mod render;

use std::io::Write;

use floatlb_api::{
    command::{StatusReport, TransitionList},
    wire::{BfdBody, BfdList, CiStateList, ConntrackList, EndpointList, LbList, SuccessBody},
};
use serde::{Serialize, de::DeserializeOwned};

use cli::{Cli, CreateWhat, DeleteLb, DeleteWhat, GetWhat, Output, SetBfd, SetWhat, Verb};
use client::{Client, ClientError, ClientOptions, segment};

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    File(#[from] lb::FileError),
    /// `apply` stopped at a rule the agent refused.
    #[error(
        "{entry} {rule}: {source} ({applied} rule(s) before it applied; nothing after it sent)"
    )]
    Apply {
        entry: String,
        rule: String,
        applied: usize,
        #[source]
        source: Box<ClientError>,
    },
    #[error("writing the output: {0}")]
    Stdout(#[source] std::io::Error),
}

/// Runs the verb of `cli`, writing its output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    if let Verb::Completion { shell } = cli.verb {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "floatctl", out);
        return Ok(());
    }
    let client = Client::new(&ClientOptions {
        api: cli.api.clone(),
        token: cli.token.clone(),
        token_file: cli.token_file.clone(),
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
        timeout: std::time::Duration::from_secs(cli.timeout),
    })?;
    let text = match cli.verb {
        Verb::Get { what } => get(&client, what, cli.output)?,
        Verb::Create {
            what: CreateWhat::Lb(c),
        } => {
            let entry = lb::entry_from(&c);
            let body = serde_json::to_vec(&entry).map_err(encode_err)?;
            let done = client.post("/config/loadbalancer", &body)?;
            changed(
                &done,
                cli.output,
                &format!("created lb {}", lb::describe(&entry)),
            )?
        }
        Verb::Delete {
            what: DeleteWhat::Lb(d),
        } => delete(&client, &d, cli.output)?,
        Verb::Set {
            what: SetWhat::Bfd(b),
        } => set_bfd(&client, &b, cli.output)?,
        Verb::Apply { file } => apply(&client, &file, cli.output)?,
        Verb::Save { file } => {
            let list: LbList = client.get("/config/loadbalancer/all")?.decode()?;
            lb::write_rules(&file, &list)?;
            let n = list.lb_attr.len();
            match cli.output {
                Output::Json => json(&serde_json::json!({
                    "file": file.display().to_string(),
                    "rules": n,
                })),
                _ => format!("saved {n} lb rule(s) to {}\n", file.display()),
            }
        }
        Verb::Completion { .. } => String::new(),
    };
    out.write_all(text.as_bytes()).map_err(CtlError::Stdout)
}

fn encode_err(e: serde_json::Error) -> CtlError {
    CtlError::Stdout(std::io::Error::other(e))
}

fn json<T: Serialize>(v: &T) -> String {
    // Plain data types: serializing cannot fail.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Decodes `path` as `T`, then prints it as JSON or through `table`.
fn show<T: DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    output: Output,
    table: fn(&T, bool) -> String,
) -> Result<String, CtlError> {
    let value: T = client.get(path)?.decode()?;
    Ok(match output {
        Output::Json => json(&value),
        Output::Table => table(&value, false),
        Output::Wide => table(&value, true),
    })
}

fn get(client: &Client, what: GetWhat, output: Output) -> Result<String, CtlError> {
    match what {
        GetWhat::Ha => show::<CiStateList>(client, "/config/cistate/all", output, render::ha),
        GetWhat::Bfd => show::<BfdList>(client, "/config/bfd/all", output, render::bfd),
        GetWhat::Lb => show::<LbList>(client, "/config/loadbalancer/all", output, render::lb),
        GetWhat::Ct => show::<ConntrackList>(client, "/config/conntrack/all", output, render::ct),
        GetWhat::Ep => show::<EndpointList>(client, "/config/endpoint/all", output, render::ep),
        GetWhat::Status => show::<StatusReport>(client, "/status", output, render::status),
        GetWhat::Transitions => {
            show::<TransitionList>(client, "/ha/transitions", output, render::transitions)
        }
    }
}

/// The output of a change the agent accepted: its JSON answer, or `line`.
fn changed(answer: &client::Answer, output: Output, line: &str) -> Result<String, CtlError> {
    let body: SuccessBody = answer.decode()?;
    Ok(match output {
        Output::Json => json(&body),
        _ => format!("{line}\n"),
    })
}

fn delete(client: &Client, d: &DeleteLb, output: Output) -> Result<String, CtlError> {
    let (path, what) = if d.all {
        (
            "/config/loadbalancer/all".to_string(),
            "every lb rule".to_string(),
        )
    } else if let Some(name) = &d.name {
        (
            format!("/config/loadbalancer/name/{}", segment(name)),
            format!("lb {name}"),
        )
    } else {
        // clap makes --external-ip and --port required together here.
        let ip = d.external_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let port = d.port.unwrap_or_default();
        let proto = d.protocol.as_str();
        (
            format!(
                "/config/loadbalancer/externalipaddress/{}/port/{port}/protocol/{proto}",
                segment(&ip)
            ),
            format!("lb {ip}:{port}/{proto}"),
        )
    };
    let done = client.delete(&path)?;
    changed(&done, output, &format!("deleted {what}"))
}

fn set_bfd(client: &Client, b: &SetBfd, output: Output) -> Result<String, CtlError> {
    let body = BfdBody {
        remote_ip: b.remote_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        interval: Some(b.interval_us.into()),
        retry_count: Some(b.multiplier.into()),
        ..BfdBody::default()
    };
    let body = serde_json::to_vec(&body).map_err(encode_err)?;
    let done = client.post("/config/bfd", &body)?;
    changed(
        &done,
        output,
        &format!(
            "set bfd interval {} us, multiplier {}",
            b.interval_us, b.multiplier
        ),
    )
}

fn apply(client: &Client, file: &std::path::Path, output: Output) -> Result<String, CtlError> {
    let list = lb::read_rules(file)?;
    let mut lines = String::new();
    let mut results = Vec::new();
    for (i, entry) in list.lb_attr.iter().enumerate() {
        let rule = lb::describe(entry);
        let body = serde_json::to_vec(entry).map_err(encode_err)?;
        let sent = client
            .post("/config/loadbalancer", &body)
            .and_then(|a| a.decode::<SuccessBody>());
        match sent {
            Ok(done) => {
                lines.push_str(&format!("applied lbAttr[{i}] {rule}\n"));
                results.push(serde_json::json!({
                    "entry": format!("lbAttr[{i}]"),
                    "rule": rule,
                    "result": done.result,
                }));
            }
            Err(source) => {
                return Err(CtlError::Apply {
                    entry: format!("{}: lbAttr[{i}]", file.display()),
                    rule,
                    applied: i,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(match output {
        Output::Json => json(&results),
        _ => lines,
    })
}
