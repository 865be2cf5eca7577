//! floatctl against a live HTTP server: the API crate's real router and
//! server (`floatlb_api::router` + `floatlb_api::serve` on 127.0.0.1:0),
//! with a fake owner task that keeps services in memory and answers the
//! rest from canned state. Every verb runs the real binary, in table and
//! JSON form, and is checked by exit code, output, and the command the owner
//! received. (A test against the real agent needs root and XDP; it lives
//! with the end-to-end tests.)

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command as Process,
    sync::{Arc, Mutex},
};

use floatlb_api::{
    ApiState, ApiToken, Command, CommandError, LbConfig, Limits, Reply, Request, Service, TlsFiles,
    command::{BfdStatus, FloatingStatus, HaMode, StatusReport, TransitionList, TransitionRecord},
    router, serve,
    wire::{
        BfdList, BfdSession, CiStateEntry, CiStateList, ConntrackEntry, ConntrackList,
        EndpointList, EndpointState,
    },
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const LIMITS: Limits = Limits {
    max_endpoints: 64,
    max_services: 1024,
};

/// What the fake owner holds.
#[derive(Default)]
struct State {
    services: Vec<Service>,
    /// Refuse a new service beyond this many (the agent's `--max-services`).
    max_services: Option<usize>,
    seen: Vec<Command>,
}

fn canned_ha() -> CiStateList {
    CiStateList {
        attr: vec![CiStateEntry {
            instance: "llb-inst0".into(),
            state: "MASTER".into(),
            sync: None,
            vip: "0.0.0.0".into(),
        }],
    }
}

fn canned_bfd() -> BfdList {
    BfdList {
        attr: vec![BfdSession {
            instance: "llb-inst0".into(),
            remote_ip: "10.0.1.2".into(),
            source_ip: "10.0.1.1".into(),
            port: 3784,
            interval: 200_000,
            retry_count: 3,
            state: "BFDUp".into(),
        }],
    }
}

fn canned_ct() -> ConntrackList {
    ConntrackList {
        ct_attr: vec![ConntrackEntry {
            destination_ip: "13.208.10.20".into(),
            source_ip: "198.51.100.7".into(),
            destination_port: 55002,
            source_port: 40000,
            protocol: "tcp".into(),
            conntrack_state: "est".into(),
            ident: String::new(),
            conntrack_act: "fdnat-192.168.218.101,32403".into(),
            packets: 12,
            bytes: 3456,
            serv_name: "default_nginx-lb1:llb-inst0".into(),
        }],
    }
}

fn canned_ep() -> EndpointList {
    EndpointList {
        attr: vec![EndpointState {
            host_name: "192.168.218.101".into(),
            name: "192.168.218.101_tcp_32403".into(),
            probe_type: "tcp".into(),
            probe_duration: 60,
            probe_port: 32403,
            curr_state: "active".into(),
            ..EndpointState::default()
        }],
    }
}

fn canned_transition() -> TransitionRecord {
    TransitionRecord {
        seq: 4,
        at_unix_us: 1_764_633_600_000_000,
        old: "BACKUP".into(),
        new: "MASTER".into(),
        reason: "peer-down".into(),
        cloud: Some(json!({"eip": "i-0abc"})),
        report: Some(json!({"moved": ["13.208.10.20"], "ms": 812})),
    }
}

fn canned_status() -> StatusReport {
    StatusReport {
        role: "MASTER".into(),
        self_id: 1,
        peer: Some("10.0.1.2".into()),
        mode: HaMode::Ka,
        bfd: Some(BfdStatus {
            state: "Up".into(),
            remote_state: "Up".into(),
            diag: "NoDiagnostic".into(),
            interval_us: 200_000,
            multiplier: 3,
            since_unix_us: 1_764_633_600_000_000,
        }),
        floating: vec![FloatingStatus {
            address: "13.208.10.20".into(),
            kind: "eip".into(),
            owner_per_cloud: Some("i-0abc".into()),
            held: true,
        }],
        last_transition: Some(canned_transition()),
        version: "9.9.9-test".into(),
    }
}

/// The fake owner: services in memory, everything else canned.
fn answer(st: &mut State, cmd: &Command) -> Result<Reply, CommandError> {
    st.seen.push(cmd.clone());
    Ok(match cmd {
        Command::UpsertService(svc) => {
            let key = svc.key();
            match st.services.iter().position(|s| s.key() == key) {
                Some(i) => st.services[i] = (**svc).clone(),
                None => {
                    if st.max_services.is_some_and(|m| st.services.len() >= m) {
                        return Err(CommandError::Limit(format!(
                            "capacity insufficient: at most {} services (--max-services)",
                            st.services.len()
                        )));
                    }
                    st.services.push((**svc).clone());
                }
            }
            Reply::Done
        }
        Command::DeleteService(key) => {
            let before = st.services.len();
            st.services.retain(|s| s.key() != *key);
            if st.services.len() == before {
                return Err(CommandError::NotFound(format!("lbrule {key}")));
            }
            Reply::Done
        }
        Command::DeleteServiceByName(name) => {
            let before = st.services.len();
            st.services.retain(|s| s.name.as_deref() != Some(name));
            if st.services.len() == before {
                return Err(CommandError::NotFound(format!("lbrule named {name:?}")));
            }
            Reply::Done
        }
        Command::DeleteAllServices => {
            st.services.clear();
            Reply::Done
        }
        Command::ListServices => Reply::Services(
            LbConfig {
                services: st.services.clone(),
            }
            .to_wire(),
        ),
        Command::ListCiState => Reply::CiState(canned_ha()),
        Command::ListBfd => Reply::Bfd(canned_bfd()),
        Command::ListConntrack => Reply::Conntrack(canned_ct()),
        Command::ListEndpoints => Reply::Endpoints(canned_ep()),
        Command::Status => Reply::Status(Box::new(canned_status())),
        Command::Transitions => Reply::Transitions(TransitionList {
            transitions: vec![canned_transition()],
        }),
        _ => Reply::Done,
    })
}

/// A live API server on 127.0.0.1 in a thread of its own.
struct Server {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(token: Option<&str>, tls: Option<TlsFiles>) -> Self {
        Self::with_state(State::default(), token, tls)
    }

    fn with_state(state: State, token: Option<&str>, tls: Option<TlsFiles>) -> Self {
        let https = tls.is_some();
        let state = Arc::new(Mutex::new(state));
        let owner_state = state.clone();
        let token = token.and_then(ApiToken::new);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = mpsc::channel::<Request>(8);
                tokio::spawn(async move {
                    while let Some(req) = rx.recv().await {
                        let out = answer(&mut owner_state.lock().unwrap(), &req.cmd);
                        let _ = req.reply.send(out);
                    }
                });
                let app = router(ApiState::new(tx, token, LIMITS, "9.9.9-test"));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, app, tls, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        let scheme = if https { "https" } else { "http" };
        Self {
            url: format!("{scheme}://{addr}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Command> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    fn run(&self, args: &[&str]) -> Run {
        floatctl(&[&["--api", &self.url], args].concat())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "floatctl failed: {}", self.stderr);
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    fn failed(&self) -> &str {
        assert_eq!(
            self.code, 1,
            "expected a failure, got {}: {}",
            self.code, self.stdout
        );
        assert!(self.stdout.is_empty(), "output on failure: {}", self.stdout);
        &self.stderr
    }
}

fn floatctl(args: &[&str]) -> Run {
    let out = Process::new(env!("CARGO_BIN_EXE_floatctl"))
        .args(args)
        .env_remove("FLOATCTL_API")
        .env_remove("FLOATCTL_TOKEN")
        .env_remove("FLOATCTL_TOKEN_FILE")
        .output()
        .expect("run floatctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A directory removed when the test ends (pass or fail).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("floatctl-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[test]
fn every_get_in_table_and_json_form() {
    let server = Server::start(None, None);
    // The canned resources: table header, a cell, and JSON equal to what the
    // API answered.
    let cases: [(&str, Value, &str, &str); 6] = [
        (
            "ha",
            json!(canned_ha()),
            "|  INSTANCE | HASTATE |",
            "| llb-inst0 | MASTER  |",
        ),
        (
            "bfd",
            json!(canned_bfd()),
            "|  INSTANCE | REMOTE IP | SESSION STATE |",
            "| BFDUp ",
        ),
        (
            "ct",
            json!(canned_ct()),
            "| DESTINATION IP |",
            "| fdnat-192.168.218.101,32403 |",
        ),
        (
            "ep",
            json!(canned_ep()),
            "|       HOST      |",
            "| 192.168.218.101_tcp_32403 |",
        ),
        (
            "status",
            json!(canned_status()),
            "|  ROLE  | SELF |",
            "| MASTER |    1 | 10.0.1.2 | ka   | Up  |",
        ),
        (
            "transitions",
            json!({"transitions": [canned_transition()]}),
            "| SEQ |",
            "|   4 | 2025-12-02T00:00:00Z | BACKUP | MASTER | peer-down |",
        ),
    ];
    for (what, want_json, header, cell) in cases {
        let table = server.run(&["get", what]).ok().to_string();
        assert!(
            first_line(&table).starts_with(header),
            "get {what}:\n{table}"
        );
        assert!(table.contains(cell), "get {what}:\n{table}");
        let wide = server.run(&["get", what, "-o", "wide"]).ok().to_string();
        assert!(
            first_line(&wide).len() > first_line(&table).len(),
            "get {what} -o wide adds columns:\n{wide}"
        );
        assert_eq!(
            server.run(&["-o", "json", "get", what]).json(),
            want_json,
            "get {what} -o json"
        );
    }
    let status = server
        .run(&["get", "status", "-o", "wide"])
        .ok()
        .to_string();
    assert!(
        status.contains("| 13.208.10.20     | eip  | yes  | i-0abc        |"),
        "{status}"
    );
    assert!(
        status.contains("last transition: #4 BACKUP -> MASTER"),
        "{status}"
    );
    let wide = server
        .run(&["get", "transitions", "-o", "wide"])
        .ok()
        .to_string();
    assert!(
        wide.contains(r#"{"moved":["13.208.10.20"],"ms":812}"#),
        "{wide}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 6 * 3 + 2, "one GET per run: {seen:?}");
    assert_eq!(
        seen[..3],
        [
            Command::ListCiState,
            Command::ListCiState,
            Command::ListCiState
        ]
    );
}

fn lb_rules(server: &Server) -> Vec<Value> {
    let list = server.run(&["get", "lb", "-o", "json"]).json();
    list["lbAttr"].as_array().cloned().unwrap_or_default()
}

#[test]
fn create_get_and_delete_lb() {
    let server = Server::start(None, None);
    let create = [
        "create",
        "lb",
        "--external-ip=13.208.10.20",
        "--private-ip=192.168.248.254",
        "--port=55002",
        "--endpoints=192.168.218.101:32403,192.168.228.102:32403:2",
        "--name=default_nginx-lb1:llb-inst0",
    ];
    assert_eq!(
        server.run(&create).ok(),
        "created lb 13.208.10.20:55002/tcp (default_nginx-lb1:llb-inst0)\n"
    );
    let Command::UpsertService(svc) = &server.seen()[0] else {
        panic!("not an upsert");
    };
    assert_eq!(svc.private_ip, Some("192.168.248.254".parse().unwrap()));
    assert_eq!(svc.inactive_timeout, Some(1800));
    assert_eq!(svc.endpoints.len(), 2);
    assert_eq!(svc.endpoints[1].weight, 2);
    assert_eq!(svc.managed, Some(false));

    // JSON form: the agent's own answer.
    let udp = [
        "create",
        "lb",
        "--external-ip=13.208.10.21",
        "--port=53",
        "--protocol=udp",
        "--sel=hash",
        "--mode=onearm",
        "--endpoints=10.0.0.9:5353",
        "-o",
        "json",
    ];
    assert_eq!(server.run(&udp).json(), json!({"result": "Success"}));

    let table = server.run(&["get", "lb"]).ok().to_string();
    assert_eq!(
        table,
        "\
|  EXTERNAL IP |  PORT | PROTOCOL |             NAME            | BLOCK | SELECT |   MODE  | # OF ENDPOINTS | MONITOR |
|--------------|-------|----------|-----------------------------|-------|--------|---------|----------------|---------|
| 13.208.10.20 | 55002 | tcp      | default_nginx-lb1:llb-inst0 |     0 | rr     | fullnat |              2 | Off     |
| 13.208.10.21 |    53 | udp      |                             |     0 | hash   | onearm  |              1 | Off     |
"
    );
    let wide = server.run(&["get", "lb", "-o", "wide"]).ok().to_string();
    assert!(
        wide.contains("|              |                 |       |          |                             |        |         |                 | 192.168.228.102 |       32403 |      2 | -     |          |"),
        "{wide}"
    );
    let rules = lb_rules(&server);
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["serviceArguments"]["privateIP"], "192.168.248.254");

    // Delete by key, then the same again: the agent's 404 and its words.
    let del = [
        "delete",
        "lb",
        "--external-ip=13.208.10.21",
        "--port=53",
        "--protocol=udp",
    ];
    assert_eq!(server.run(&del).ok(), "deleted lb 13.208.10.21:53/udp\n");
    let again = server.run(&del);
    let err = again.failed();
    assert!(
        err.contains("DELETE ")
            && err.contains(
                "/netlox/v1/config/loadbalancer/externalipaddress/13.208.10.21/port/53/protocol/udp"
            )
            && err.contains("404 Not Found")
            && err.contains("lbrule 13.208.10.21:53/udp does not exist")
            && err.contains("not-exists error"),
        "{err}"
    );
    // By name (with a ':' in it), then --all.
    let by_name = server.run(&[
        "delete",
        "lb",
        "--name=default_nginx-lb1:llb-inst0",
        "-o",
        "json",
    ]);
    assert_eq!(by_name.json(), json!({"result": "Success"}));
    assert!(lb_rules(&server).is_empty());
    assert!(
        server
            .run(&["delete", "lb", "--name=nope"])
            .failed()
            .contains("does not exist")
    );
    assert_eq!(
        server.run(&["delete", "lb", "--all"]).ok(),
        "deleted every lb rule\n"
    );
    let seen = server.seen();
    assert!(seen.contains(&Command::DeleteServiceByName(
        "default_nginx-lb1:llb-inst0".into()
    )));
    assert_eq!(seen.last(), Some(&Command::DeleteAllServices));
}

#[test]
fn the_agents_400_is_shown_with_field_and_value() {
    let server = Server::start(None, None);
    // 0.0.0.0 passes clap (it is an IPv4 address); the agent names the field.
    let run = server.run(&[
        "create",
        "lb",
        "--external-ip=1.2.3.4",
        "--port=80",
        "--endpoints=0.0.0.0:80",
    ]);
    let err = run.failed();
    assert!(
        err.contains("400 Bad Request") && err.contains("endpoints[0].endpointIP"),
        "{err}"
    );
    assert!(server.seen().is_empty(), "nothing reached the owner");
}

#[test]
fn set_bfd_sends_interval_and_multiplier() {
    let server = Server::start(None, None);
    assert_eq!(
        server
            .run(&["set", "bfd", "--interval-us=300000", "--multiplier=5"])
            .ok(),
        "set bfd interval 300000 us, multiplier 5\n"
    );
    let json = server.run(&[
        "set",
        "bfd",
        "--interval-us=100000",
        "--multiplier=3",
        "--remote-ip=10.0.1.2",
        "-o",
        "json",
    ]);
    assert_eq!(json.json(), json!({"result": "Success"}));
    assert_eq!(
        server.seen(),
        [
            Command::SetBfd {
                remote_ip: None,
                interval_us: 300_000,
                multiplier: 5
            },
            Command::SetBfd {
                remote_ip: Some("10.0.1.2".parse().unwrap()),
                interval_us: 100_000,
                multiplier: 3
            },
        ]
    );
}

const TWO_RULES_YAML: &str = "\
lbAttr:
  - serviceArguments:
      externalIP: 13.208.10.20
      privateIP: 192.168.248.254
      port: 80
      protocol: tcp
      mode: 2
      BGP: false
      Monitor: false
      name: web
    endpoints:
      - {endpointIP: 192.168.218.101, targetPort: 30080, weight: 1}
  - serviceArguments: {externalIP: 13.208.10.20, privateIP: 192.168.248.254, port: 53, protocol: udp, sel: 1, mode: 2}
    endpoints:
      - {endpointIP: 192.168.218.101, targetPort: 30053}
      - {endpointIP: 192.168.228.102, targetPort: 30053, weight: 3}
";

#[test]
fn apply_then_save_round_trips() {
    let dir = temp_dir("apply");
    let yaml = write(&dir, "rules.yaml", TWO_RULES_YAML);
    let server = Server::start(None, None);
    assert_eq!(
        server.run(&["apply", "-f", yaml.to_str().unwrap()]).ok(),
        "applied lbAttr[0] 13.208.10.20:80/tcp (web)\napplied lbAttr[1] 13.208.10.20:53/udp\n"
    );
    let saved = dir.join("saved.json");
    assert_eq!(
        server.run(&["save", "-f", saved.to_str().unwrap()]).ok(),
        format!("saved 2 lb rule(s) to {}\n", saved.display())
    );
    // The saved file is the agent's list, and the agent's --config reads it.
    let text = std::fs::read_to_string(&saved).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file, server.run(&["get", "lb", "-o", "json"]).json());
    let config = LbConfig::load(&saved, &LIMITS).unwrap();
    assert_eq!(config.services, server.state.lock().unwrap().services);

    // apply -f of the saved file on a fresh agent gives the same rules.
    let fresh = Server::start(None, None);
    let applied = fresh
        .run(&["apply", "-f", saved.to_str().unwrap(), "-o", "json"])
        .json();
    assert_eq!(applied[1]["entry"], "lbAttr[1]");
    assert_eq!(applied[1]["result"], "Success");
    assert_eq!(fresh.state.lock().unwrap().services, config.services);
    let saved_json = fresh.run(&[
        "save",
        "-f",
        dir.join("again.json").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(saved_json.json()["rules"], 2);
    assert_eq!(
        std::fs::read_to_string(dir.join("again.json")).unwrap(),
        text
    );
}

#[test]
fn apply_stops_at_the_first_refused_rule_and_names_it() {
    let dir = temp_dir("apply-stop");
    let yaml = write(&dir, "rules.yaml", TWO_RULES_YAML);
    let server = Server::with_state(
        State {
            max_services: Some(1),
            ..State::default()
        },
        None,
        None,
    );
    let run = server.run(&["apply", "-f", yaml.to_str().unwrap()]);
    let err = run.failed();
    assert!(
        err.contains("rules.yaml: lbAttr[1] 13.208.10.20:53/udp")
            && err.contains("403 Forbidden: capacity insufficient")
            && err.contains("1 rule(s) before it applied"),
        "{err}"
    );
    assert_eq!(server.state.lock().unwrap().services.len(), 1);

    // A file that fails validation sends nothing at all.
    let bad = write(
        &dir,
        "bad.json",
        r#"{"lbAttr":[
            {"serviceArguments":{"externalIP":"1.2.3.4","port":80,"mode":2},
             "endpoints":[{"endpointIP":"10.0.0.1","targetPort":80}]},
            {"serviceArguments":{"externalIP":"1.2.3.5","port":80,"mode":7},
             "endpoints":[{"endpointIP":"10.0.0.1","targetPort":80}]}]}"#,
    );
    server.seen();
    let err = server
        .run(&["apply", "-f", bad.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(
        err.contains("bad.json") && err.contains("lbAttr[1].serviceArguments.mode = 7"),
        "{err}"
    );
    assert!(server.seen().is_empty(), "a bad file must send nothing");
}

#[test]
fn token_is_sent_raw_and_a_401_is_an_error() {
    let server = Server::start(Some("s3cret-token"), None);
    let err = server.run(&["get", "ha"]).failed().to_string();
    assert!(
        err.contains("401 Unauthorized") && err.contains("Authorization"),
        "{err}"
    );
    let err = server
        .run(&["get", "ha", "--token", "wrong"])
        .failed()
        .to_string();
    assert!(err.contains("401"), "{err}");
    assert!(
        server
            .run(&["get", "ha", "--token", "s3cret-token"])
            .ok()
            .contains("MASTER")
    );
    let dir = temp_dir("token");
    let file = write(&dir, "token", "s3cret-token\n");
    assert!(
        server
            .run(&["get", "ha", "--token-file", file.to_str().unwrap()])
            .ok()
            .contains("MASTER")
    );
    let empty = write(&dir, "empty", "\n");
    let err = server
        .run(&["get", "ha", "--token-file", empty.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(err.contains("token file") && err.contains("empty"), "{err}");
}

#[test]
fn transport_errors_name_the_url() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = floatctl(&["--api", &url, "get", "lb"]);
    let err = run.failed();
    assert!(
        err.contains(&format!("GET {url}/netlox/v1/config/loadbalancer/all"))
            && err.contains("connection refused"),
        "{err}"
    );
    let err = floatctl(&["--api", "127.0.0.1:11111", "get", "lb"])
        .failed()
        .to_string();
    assert!(err.contains("expected an http:// or https:// URL"), "{err}");
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = floatctl(&["completion", shell]);
        let text = out.ok();
        assert!(
            text.contains("floatctl") && text.contains("transitions"),
            "{shell}: {text}"
        );
    }
}

/// A CA, a server certificate for 127.0.0.1, a client certificate, and a
/// second CA nobody uses.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server: TlsFiles,
}

fn make_pki(tag: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = temp_dir(tag);
    let new_ca = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let ca = new_ca();
    let other = new_ca();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["floatctl".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let ca_path = write(&dir, "ca.pem", &ca.pem());
    Pki {
        other_ca: write(&dir, "other-ca.pem", &other.pem()),
        client_cert: write(&dir, "client.pem", &client.pem()),
        client_key: write(&dir, "client.key", &client_key.serialize_pem()),
        server: TlsFiles {
            cert: write(&dir, "server.pem", &server.pem()),
            key: write(&dir, "server.key", &server_key.serialize_pem()),
            client_ca: Some(ca_path.clone()),
        },
        ca: ca_path,
        _dir: dir,
    }
}

#[test]
fn https_and_mutual_tls() {
    let pki = make_pki("tls");
    let ca = pki.ca.to_str().unwrap();
    let (cert, key) = (
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );

    // TLS without client certificates.
    let tls = Server::start(
        None,
        Some(TlsFiles {
            client_ca: None,
            ..pki.server.clone()
        }),
    );
    assert!(tls.run(&["get", "ha", "--ca", ca]).ok().contains("MASTER"));
    let err = tls
        .run(&["get", "ha", "--ca", pki.other_ca.to_str().unwrap()])
        .failed()
        .to_string();
    assert!(
        err.contains(&tls.url) && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let err = tls.run(&["get", "ha"]).failed().to_string();
    assert!(
        err.contains(&tls.url),
        "web PKI roots do not know our CA: {err}"
    );

    // Mutual TLS.
    let mtls = Server::start(None, Some(pki.server.clone()));
    assert!(
        mtls.run(&["get", "ha", "--ca", ca, "--cert", cert, "--key", key])
            .ok()
            .contains("MASTER")
    );
    assert_eq!(
        mtls.run(&[
            "get", "ha", "--ca", ca, "--cert", cert, "--key", key, "-o", "json"
        ])
        .json(),
        json!(canned_ha())
    );
    let err = mtls.run(&["get", "ha", "--ca", ca]).failed().to_string();
    assert!(
        err.contains(&mtls.url) && err.contains("CertificateRequired") && err.contains("--cert"),
        "no client certificate: {err}"
    );
    // A key that is not the certificate's: an error naming the files, not a panic.
    let err = mtls
        .run(&[
            "get",
            "ha",
            "--ca",
            ca,
            "--cert",
            cert,
            "--key",
            pki.server.key.to_str().unwrap(),
        ])
        .failed()
        .to_string();
    assert!(
        err.contains("client certificate and key") && err.contains("client.pem"),
        "{err}"
    );
    let err = mtls
        .run(&["get", "ha", "--ca", "/nonexistent/ca.pem"])
        .failed()
        .to_string();
    assert!(err.contains("CA certificate /nonexistent/ca.pem"), "{err}");
}

/// What floatctl puts on the wire, seen by a bare TCP listener: the token
/// raw in `Authorization` (no `Bearer`), and kube-loxilb's content type.
#[test]
fn requests_carry_the_raw_token_and_json_content_type() {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let body = r#"{"Attr":[]}"#;
        let mut conn = conn;
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    let run = floatctl(&["--api", &url, "--token", "tok-123", "get", "ha"]);
    assert_eq!(run.ok(), "| INSTANCE | HASTATE |\n|----------|---------|\n");
    let head = peer.join().unwrap();
    assert_eq!(head[0], "GET /netlox/v1/config/cistate/all HTTP/1.1");
    let header = |name: &str| {
        head.iter()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("tok-123"),
        "{head:?}"
    );
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/json"),
        "{head:?}"
    );
}
