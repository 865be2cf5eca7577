//! Interop with FRR 8.4 `bfdd`: FRR runs in one network namespace, our BFD
//! manager in another, joined by a veth pair. Checks that the session comes
//! Up, that timer changes from either side go through Poll/Final, and that
//! killing FRR is detected within the Detection Time.
//!
//! Needs root and `/usr/lib/frr/bfdd` (Debian: `apt-get install frr`).

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use floatlb_agent::bfd::manager::{BfdManager, ManagerConfig};
use floatlb_agent::bfd::packet::{Diag, State};
use floatlb_agent::bfd::session::SessionConfig;

const BFDD: &str = "/usr/lib/frr/bfdd";
const FRR_IP: &str = "10.77.0.1";
const OUR_IP: &str = "10.77.0.2";

/// Namespaces, veth, bfdd and temp dir; all removed on drop, even on failure.
struct Lab {
    frr_ns: String,
    our_ns: String,
    dir: PathBuf,
    bfdd: Option<Child>,
}

fn run(args: &[&str]) -> Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| format!("{args:?}"))?;
    ensure!(st.success(), "{args:?} failed: {st}");
    Ok(())
}

impl Lab {
    fn new() -> Result<Lab> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("floatlb-bfd-frr-{pid}"));
        let lab = Lab {
            frr_ns: format!("flbfrr{pid}a"),
            our_ns: format!("flbfrr{pid}b"),
            dir,
            bfdd: None,
        };
        std::fs::create_dir_all(&lab.dir)?;
        // bfdd drops to the frr user and must create its sockets here.
        run(&["chmod", "777", lab.dir.to_str().unwrap()])?;
        let (a, b) = (lab.frr_ns.clone(), lab.our_ns.clone());
        let (va, vb) = (format!("vfr{pid}a"), format!("vfr{pid}b"));
        run(&["ip", "netns", "add", &a])?;
        run(&["ip", "netns", "add", &b])?;
        run(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ])?;
        run(&["ip", "link", "set", &va, "netns", &a])?;
        run(&["ip", "link", "set", &vb, "netns", &b])?;
        run(&[
            "ip",
            "-n",
            &a,
            "addr",
            "add",
            &format!("{FRR_IP}/30"),
            "dev",
            &va,
        ])?;
        run(&[
            "ip",
            "-n",
            &b,
            "addr",
            "add",
            &format!("{OUR_IP}/30"),
            "dev",
            &vb,
        ])?;
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn start_bfdd(&mut self) -> Result<()> {
        let conf = self.dir.join("bfdd.conf");
        std::fs::write(
            &conf,
            format!(
                "bfd\n peer {OUR_IP} local-address {FRR_IP}\n  receive-interval 50\n  \
                 transmit-interval 50\n  detect-multiplier 3\n !\n!\n"
            ),
        )?;
        let d = self.dir.to_str().unwrap();
        let log = File::create(self.dir.join("bfdd.out"))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.frr_ns,
                BFDD,
                "-f",
                conf.to_str().unwrap(),
            ])
            .args(["--vty_socket", d, "-P", "0", "--log", "stdout"])
            .args([
                "-i",
                &format!("{d}/bfdd.pid"),
                "--bfdctl",
                &format!("{d}/bfdd.sock"),
            ])
            .args(["-z", &format!("{d}/zserv.api")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn bfdd")?;
        self.bfdd = Some(child);
        // vtysh works once bfdd has created its vty socket.
        let vty = self.dir.join("bfdd.vty");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vty.exists() {
            if let Some(st) = self.bfdd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("bfdd exited with {st}:\n{}", self.bfdd_log());
            }
            ensure!(
                Instant::now() < deadline,
                "bfdd made no vty socket:\n{}",
                self.bfdd_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn bfdd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bfdd.out")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.bfdd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.frr_ns, &self.our_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs vtysh against our bfdd's socket directory.
async fn vtysh(dir: &Path, cmds: &[&str]) -> Result<String> {
    let mut c = tokio::process::Command::new("vtysh");
    c.arg("--vty_socket").arg(dir);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.stdin(Stdio::null()).output().await.context("run vtysh")?;
    ensure!(
        out.status.success(),
        "vtysh {cmds:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn frr_peer(dir: &Path) -> Result<serde_json::Value> {
    let out = vtysh(dir, &["show bfd peers json"]).await?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("json: {out}"))?;
    v.as_array()
        .and_then(|a| a.first().cloned())
        .with_context(|| format!("no peer in {out}"))
}

/// Runs `fut` while keeping the manager's protocol engine going.
async fn with_bfd<T>(mgr: &mut BfdManager, fut: impl Future<Output = T>) -> T {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = mgr.step() => {}
        }
    }
}

/// Keeps the engine going until `cond` holds, polling FRR every 100 ms.
async fn wait_frr(
    mgr: &mut BfdManager,
    dir: &Path,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let peer = with_bfd(mgr, frr_peer(dir)).await?;
        if cond(&peer) {
            return Ok(peer);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for FRR: {what}; last: {peer}");
        }
        with_bfd(mgr, tokio::time::sleep(Duration::from_millis(100))).await;
    }
}

async fn scenario(lab: &mut Lab) -> Result<()> {
    let dir = lab.dir.clone();
    let peer: IpAddr = FRR_IP.parse()?;
    let mut mgr = BfdManager::bind(&ManagerConfig {
        ipv6: None,
        ..ManagerConfig::default()
    })?;
    let mut changes = mgr.subscribe();
    mgr.add_session(SessionConfig {
        peer,
        local: OUR_IP.parse()?,
        peer_port: 3784,
        desired_min_tx: Duration::from_millis(50),
        required_min_rx: Duration::from_millis(50),
        detect_mult: 3,
        auth: None,
    })?;

    // 1. The session comes Up on both sides.
    let t = Instant::now();
    wait_frr(&mut mgr, &dir, "status up", |p| p["status"] == "up").await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while mgr.session(peer).unwrap().state != State::Up {
        ensure!(Instant::now() < deadline, "our side never came Up");
        with_bfd(&mut mgr, tokio::time::sleep(Duration::from_millis(10))).await;
    }
    println!("FRR interop: session Up after {:?}", t.elapsed());

    // 2a. Our timer change reaches FRR through a Poll/Final exchange.
    mgr.set_timers(
        peer,
        Duration::from_millis(100),
        Duration::from_millis(20),
        3,
    )?;
    assert!(
        mgr.session(peer).unwrap().poll_pending,
        "a Poll Sequence starts"
    );
    let p = wait_frr(&mut mgr, &dir, "our new timers", |p| {
        p["remote-transmit-interval"] == 100 && p["remote-receive-interval"] == 20
    })
    .await?;
    ensure!(p["status"] == "up", "FRR stayed up through the change: {p}");
    let info = mgr.session(peer).unwrap();
    ensure!(!info.poll_pending, "FRR's Final ended our Poll Sequence");
    ensure!(
        info.tx_interval_us == Some(100_000),
        "we now send every 100 ms: {info:?}"
    );
    println!("FRR interop: our Poll for 100 ms tx / 20 ms rx acknowledged by FRR's Final");

    // 2b. FRR's timer change reaches us through its Poll and our Final.
    let peer_cmd = format!("peer {OUR_IP} local-address {FRR_IP}");
    with_bfd(
        &mut mgr,
        vtysh(
            &dir,
            &[
                "configure terminal",
                "bfd",
                &peer_cmd,
                "transmit-interval 30",
            ],
        ),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mgr.session(peer).unwrap().detection_time_us != 90_000 {
        ensure!(
            Instant::now() < deadline,
            "detection time never became 3 x 30 ms: {:?}",
            mgr.session(peer)
        );
        with_bfd(&mut mgr, tokio::time::sleep(Duration::from_millis(20))).await;
    }
    wait_frr(&mut mgr, &dir, "FRR sending every 30 ms", |p| {
        p["transmit-interval"] == 30
    })
    .await?;
    ensure!(mgr.session(peer).unwrap().state == State::Up);
    println!("FRR interop: FRR's Poll for 30 ms tx answered; our detection time is 90 ms");
    while changes.try_recv().is_ok() {}

    // 3. Killing FRR is detected within the Detection Time.
    let detection = Duration::from_micros(mgr.session(peer).unwrap().detection_time_us);
    let mut child = lab.bfdd.take().context("bfdd not running")?;
    let killed = Instant::now();
    child.kill()?;
    let down = with_bfd(&mut mgr, async {
        loop {
            match changes.recv().await {
                Some(sc) if sc.new == State::Down => return Some(sc),
                Some(_) => {}
                None => return None,
            }
        }
    });
    let down = tokio::time::timeout(Duration::from_secs(5), down)
        .await
        .context("no Down within 5 s of killing FRR")?
        .context("state channel closed")?;
    let _ = child.wait();
    let measured = down.at_mono - killed;
    println!(
        "FRR interop: bfdd SIGKILL detected after {:.1} ms (detection time {} ms, diag {:?})",
        measured.as_secs_f64() * 1e3,
        detection.as_millis(),
        down.diag
    );
    ensure!(
        down.diag == Diag::ControlDetectionExpired,
        "diag {:?}",
        down.diag
    );
    // The last packet arrived before the kill, so Down comes at most one
    // Detection Time after it; 20 ms covers scheduling on a busy 2-core box.
    ensure!(
        measured <= detection + Duration::from_millis(20),
        "detected after {measured:?}, detection time {detection:?}"
    );
    Ok(())
}

#[test]
fn frr_bfdd_interop_up_poll_final_and_detection() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces)"
    );
    ensure!(
        Path::new(BFDD).exists(),
        "{BFDD} is missing: install FRR 8.4 with `apt-get install frr` (or run `make setup`)"
    );
    ensure!(
        which("vtysh"),
        "vtysh is missing: install FRR with `apt-get install frr` (or run `make setup`)"
    );
    let mut lab = Lab::new()?;
    lab.start_bfdd()?;
    let our_ns = lab.our_ns.clone();
    // Our manager runs on a thread that has entered our namespace, so its
    // sockets live there; nothing else in the test process is affected.
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            let ns = File::open(format!("/run/netns/{our_ns}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(scenario(&mut lab))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("scenario thread panicked"))?
    });
    if res.is_err() {
        eprintln!("bfdd output:\n{}", lab.bfdd_log());
    }
    res
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}
