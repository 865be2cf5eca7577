//! Running the real `floatlb` binary inside a test namespace.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use crate::netns::{Netns, NsProcess};

/// Log line the daemon prints once services are synced, interfaces attached
/// and the datapath is active.
pub const READY_LINE: &str = "floatlb running";

/// The built `floatlb` binary: `$FLOATLB_BIN`, else the one built with the
/// same profile as the running test (`target/<profile>/floatlb`, beside this
/// executable's `deps/`), so a stale binary of another profile is never used.
/// Fails with a message saying how to build it.
pub fn floatlb_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FLOATLB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|dir| {
            if dir.ends_with("deps") {
                dir.parent()
            } else {
                Some(dir)
            }
        })
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("floatlb");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build -p floatlb-agent` (add --release for release runs; `make test` does this), or set FLOATLB_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// One endpoint of a test service.
#[derive(Debug, Clone, Copy)]
pub struct TestEndpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub weight: u8,
}

/// One service in a test configuration.
#[derive(Debug, Clone)]
pub struct TestService {
    pub vip: Ipv4Addr,
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: &'static str,
    pub sel: u8,
    pub endpoints: Vec<TestEndpoint>,
}

/// Writes a loxilb-format load-balancer list (fullnat, privateIP = VIP).
pub fn write_config(path: &Path, services: &[TestService]) -> Result<()> {
    let entries: Vec<String> = services
        .iter()
        .map(|s| {
            let eps: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| {
                    format!(
                        r#"{{"endpointIP":"{}","targetPort":{},"weight":{}}}"#,
                        e.ip, e.port, e.weight
                    )
                })
                .collect();
            format!(
                r#"{{"serviceArguments":{{"externalIP":"{vip}","privateIP":"{vip}","port":{},"protocol":"{}","sel":{},"mode":2}},"endpoints":[{}]}}"#,
                s.port,
                s.protocol,
                s.sel,
                eps.join(","),
                vip = s.vip
            )
        })
        .collect();
    std::fs::write(path, format!(r#"{{"lbAttr":[{}]}}"#, entries.join(",")))?;
    Ok(())
}

/// A running `floatlb` daemon.
pub struct Agent {
    pub process: NsProcess,
}

impl Agent {
    /// Starts `floatlb --config CONFIG --iface ... --pin-dir PIN
    /// --fib-lookup-iface lo EXTRA...` in
    /// `ns` and waits until it reports it is running.
    pub fn start(
        ns: &Netns,
        config: &Path,
        ifaces: &[&str],
        pin_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Result<(Self, Duration)> {
        let mut process = Self::spawn(ns, config, ifaces, pin_dir, extra, log)?;
        let ready = process.wait_for_log(READY_LINE, Duration::from_secs(20))?;
        Ok((Self { process }, ready))
    }

    /// The process `start` runs, returned at once (for tests that act while
    /// the agent is still starting).
    pub fn spawn(
        ns: &Netns,
        config: &Path,
        ifaces: &[&str],
        pin_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Result<NsProcess> {
        let bin = floatlb_binary()?;
        let bin = bin.to_string_lossy().into_owned();
        let config = config.to_string_lossy().into_owned();
        let pin = pin_dir.to_string_lossy().into_owned();
        // Each agent's API state next to its log, never the host's
        // /var/lib/floatlb.
        let state = log.with_extension("state").to_string_lossy().into_owned();
        // The topologies keep ip_forward=0 with forwarding on lo only.
        let mut args: Vec<&str> = vec![
            "--config",
            &config,
            "--state-dir",
            &state,
            "--pin-dir",
            &pin,
            "--fib-lookup-iface",
            "lo",
        ];
        for i in ifaces {
            args.extend_from_slice(&["--iface", i]);
        }
        args.extend_from_slice(extra);
        ns.spawn(&bin, &args, log)
    }

    /// SIGTERM and wait for a clean exit (status 0).
    pub fn stop(mut self) -> Result<()> {
        let status = self
            .process
            .stop(Signal::SIGTERM, Duration::from_secs(10))?;
        if !status.success() {
            bail!(
                "floatlb exited with {status} after SIGTERM; log:\n{}",
                self.process.log()
            );
        }
        Ok(())
    }

    /// SIGHUP: re-read the configuration.
    pub fn reload(&self) -> Result<()> {
        let pid = self
            .process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("agent not running"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            Signal::SIGHUP,
        )?;
        Ok(())
    }
}
