//! Network namespaces for privileged tests, with guaranteed cleanup.
//!
//! Every object that changes the system is a guard whose `Drop` undoes it:
//! [`Netns`] deletes the namespace (and with it every interface inside it),
//! [`NsProcess`] kills and reaps its process, [`BpfMount`] unmounts its bpffs.
//! Drop runs during unwinding too, so a failing assertion still cleans up.
//! Links are only ever created inside namespaces the test created, never on
//! the machine's real interfaces.
//!
//! Code can run inside a namespace in two ways: as a process
//! ([`Netns::spawn`], [`Netns::run`], through `ip netns exec`) or as a Rust
//! closure on a thread that joined the namespace ([`Netns::enter`]). Sockets
//! keep the namespace they were created in, so a listener created by
//! `enter` can then be served from any thread.

use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Fails unless running as root, saying why root is needed.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "this test needs root (network namespaces, XDP, bpffs); run `sudo make test` or `sudo cargo test -p floatlb-tests`"
        );
    }
    Ok(())
}

/// Fails unless every tool is on PATH, naming the Debian package to install.
pub fn require_tools(tools: &[&str]) -> Result<()> {
    for tool in tools {
        if which::which(tool).is_err() {
            let pkg = match *tool {
                "ip" | "bridge" => "iproute2",
                "ipvsadm" => "ipvsadm",
                "iptables" => "iptables",
                "wrk" => "wrk",
                "iperf3" => "iperf3",
                "nginx" => "nginx-light",
                "haproxy" => "haproxy",
                "ethtool" => "ethtool",
                other => other,
            };
            bail!(
                "required tool `{tool}` not found; install it with `apt-get install -y {pkg}` (or run `make setup`)"
            );
        }
    }
    Ok(())
}

/// A name unique to this process and call: `{prefix}{pid}-{n}`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run_checked<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        let argv: Vec<_> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        bail!(
            "`{program} {}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `name` (make it unique with [`unique_name`])
    /// with its loopback up.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        run_checked("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["-n", &self.name];
        argv.extend_from_slice(args);
        let out = run_checked("ip", &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `program args` inside the namespace and returns its stdout;
    /// fails with stderr on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut argv = vec!["netns", "exec", &self.name, program];
        argv.extend_from_slice(args);
        let out = run_checked("ip", &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Spawns a long-running process in the namespace; it is killed on drop.
    /// Its stdout and stderr go to `log` (created or truncated).
    pub fn spawn(&self, program: &str, args: &[&str], log: &Path) -> Result<NsProcess> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot spawn {program} in {}", self.name))?;
        Ok(NsProcess {
            child: Some(child),
            label: format!("{program}@{}", self.name),
            log: log.to_owned(),
        })
    }

    /// Runs `f` on a thread that has joined this namespace, and returns its
    /// result. Sockets created by `f` live in the namespace.
    pub fn enter<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let handle = std::thread::spawn(move || -> Result<R> {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")?;
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward` etc.).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "up"]).map(drop)
    }

    pub fn addr_add(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(drop)
    }

    pub fn route_add(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec!["route", "add"];
        argv.extend_from_slice(args);
        self.ip(&argv).map(drop)
    }

    /// Creates a bridge in this namespace and brings it up.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        self.ip(&["link", "add", name, "type", "bridge"])?;
        self.link_up(name)
    }

    /// Enslaves `dev` to `bridge` and brings it up.
    pub fn set_master(&self, dev: &str, bridge: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "master", bridge])?;
        self.link_up(dev)
    }

    /// Turns TX checksum offload off: XDP sees packets before any offload
    /// would complete their checksums, so on veth it must be off.
    pub fn disable_tx_offload(&self, dev: &str) -> Result<()> {
        self.run("ethtool", &["-K", dev, "tx", "off"]).map(drop)
    }

    /// Attaches a pinned XDP program to `dev` in native mode (`ip link set
    /// dev DEV xdpdrv pinned PATH`). On the peer of a veth whose program
    /// answers with XDP_TX, an XDP program is what makes the frames arrive:
    /// on the 6.18 test kernel GRO alone is enough for XDP_REDIRECT but not
    /// for XDP_TX. Removed when the namespace goes.
    pub fn attach_pinned_xdp(&self, dev: &str, prog: &Path) -> Result<()> {
        let prog = prog.to_string_lossy();
        self.ip(&["link", "set", "dev", dev, "xdpdrv", "pinned", &prog])
            .map(drop)
    }

    /// Turns GRO on. A veth only runs NAPI (needed to receive frames sent by
    /// XDP_TX/XDP_REDIRECT from its peer) with GRO on or an XDP program.
    pub fn enable_gro(&self, dev: &str) -> Result<()> {
        self.run("ethtool", &["-K", dev, "gro", "on"]).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_checked("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// Creates a veth pair with one end `a` in `ns_a` and the other `b` in
/// `ns_b`, both up, with TX checksum offload off on both ends. Deleting
/// either namespace deletes the pair.
pub fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<()> {
    ns_a.ip(&[
        "link", "add", a, "type", "veth", "peer", "name", b, "netns", &ns_b.name,
    ])?;
    for (ns, dev) in [(ns_a, a), (ns_b, b)] {
        ns.disable_tx_offload(dev)?;
        ns.link_up(dev)?;
    }
    Ok(())
}

/// A process running in a namespace; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Option<Child>,
    label: String,
    log: PathBuf,
}

impl NsProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Has the process exited? Returns its status if so.
    pub fn try_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} already reaped", self.label),
        }
    }

    /// Polls until the log contains `needle`. Fails if the process exits
    /// first or the deadline passes, with the log in the message.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return Ok(start.elapsed());
            }
            if let Some(status) = self.try_status()? {
                bail!(
                    "{} exited ({status}) before logging {needle:?}; log:\n{}",
                    self.label,
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.label,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits (bounded) for the exit; returns the status.
    pub fn stop(&mut self, sig: Signal, timeout: Duration) -> Result<std::process::ExitStatus> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} already reaped", self.label))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("kill {} {sig}", self.label))?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not exit within {timeout:?} after {sig}; log:\n{}",
                    self.label,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A bpffs mounted on a fresh directory outside /sys, so pins survive the
/// `/sys` remount that `ip netns exec` does and outlive an agent restart.
/// Unmounted (dropping every pin) and removed on drop.
#[derive(Debug)]
pub struct BpfMount {
    dir: PathBuf,
}

impl BpfMount {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let d = dir.to_string_lossy().into_owned();
        run_checked("mount", &["-t", "bpf", "bpf", &d])?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let d = self.dir.to_string_lossy().into_owned();
        if let Err(e) = run_checked("umount", &[&d]) {
            eprintln!("cleanup: {e:#}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    dir: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 10 ms until it returns `Some`, or fails after `timeout`.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
