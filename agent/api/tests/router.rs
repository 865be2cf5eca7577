//! The router, against a fake owner task: request -> typed command for every
//! path, reply -> answer, and the wire rules (errors, limits, auth).

mod common;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use axum::http::{Method, StatusCode};
use common::{Answered, call, default_answer, harness, harness_with, taken};
use floatlb_api::{
    Command, CommandError, Endpoint, LbConfig, NatMode, ProbeType, Protocol, Reply, Selection,
    ServiceKey,
    command::{CiRole, CiStateRequest, HaMode, StatusReport, TransitionList, TransitionRecord},
    wire::{CiStateEntry, CiStateList, LbList},
};

const LB: &str = "/netlox/v1/config/loadbalancer";

/// kube-loxilb's body for the AWS multi-AZ case, byte for byte.
const AWS: &str = r#"{"serviceArguments":{"externalIP":"13.208.10.20","privateIP":"192.168.248.254","port":55002,"protocol":"tcp","sel":0,"mode":2,"BGP":false,"Monitor":false,"inactiveTimeOut":1800,"block":0,"managed":true,"probetype":"","probeport":0,"probereq":"","proberesp":"","name":"default_nginx-lb1:llb-inst0"},"secondaryIPs":[],"allowedSources":[],"endpoints":[{"endpointIP":"192.168.218.101","targetPort":32403,"weight":1,"state":"","counter":""},{"endpointIP":"192.168.228.102","targetPort":32403,"weight":1,"state":"","counter":""}]}"#;

fn aws_key() -> ServiceKey {
    ServiceKey {
        external_ip: Ipv4Addr::new(13, 208, 10, 20),
        port: 55002,
        protocol: Protocol::Tcp,
    }
}

fn aws_endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            ip: Ipv4Addr::new(192, 168, 218, 101),
            port: 32403,
            weight: 1,
        },
        Endpoint {
            ip: Ipv4Addr::new(192, 168, 228, 102),
            port: 32403,
            weight: 1,
        },
    ]
}

fn upserted(cmd: &Command) -> &floatlb_api::Service {
    match cmd {
        Command::UpsertService(s) => s,
        other => panic!("expected UpsertService, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_loxilb_aws_body_becomes_one_upsert() {
    let h = harness();
    let a = call(&h.app, Method::POST, LB, Some(AWS), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, serde_json::json!({"result": "Success"}));
    let cmds = taken(&h);
    assert_eq!(cmds.len(), 1);
    let s = upserted(&cmds[0]);
    assert_eq!(s.key(), aws_key());
    assert_eq!(s.private_ip, Some(Ipv4Addr::new(192, 168, 248, 254)));
    assert_eq!((s.sel, s.mode), (Selection::RoundRobin, NatMode::FullNat));
    assert_eq!(s.inactive_timeout, Some(1800));
    assert_eq!(s.name.as_deref(), Some("default_nginx-lb1:llb-inst0"));
    assert_eq!(s.managed, Some(true));
    assert!(s.allowed_sources.is_empty() && !s.probe.monitor);
    assert_eq!(s.endpoints, aws_endpoints());
}

#[tokio::test]
async fn udp_body_and_field_casing_variants_give_the_same_service() {
    let h = harness();
    let udp = AWS.replace("\"tcp\"", "\"udp\"");
    let variants = [
        udp.clone(),
        udp.replace("\"BGP\"", "\"bgp\"")
            .replace("\"Monitor\"", "\"monitor\""),
        udp.replace("\"externalIP\"", "\"EXTERNALIP\"")
            .replace("\"serviceArguments\"", "\"ServiceArguments\"")
            .replace("\"endpointIP\"", "\"EndpointIp\"")
            .replace("\"inactiveTimeOut\"", "\"inactivetimeout\""),
    ];
    let mut services = Vec::new();
    for body in &variants {
        let a = call(&h.app, Method::POST, LB, Some(body), None).await;
        assert_eq!(a.status, StatusCode::OK, "{body}: {}", a.body);
        services.push(upserted(&taken(&h)[0]).clone());
    }
    assert_eq!(services[0].protocol, Protocol::Udp);
    assert_eq!(services[0].inactive_timeout, Some(1800));
    assert!(services.iter().all(|s| *s == services[0]));
    // Monitor in kube-loxilb's casing reaches the stored probe spec.
    let monitored = AWS
        .replace("\"Monitor\":false", "\"Monitor\":true")
        .replace("\"probetype\":\"\"", "\"probetype\":\"tcp\"")
        .replace("\"probeport\":0", "\"probeport\":32403");
    call(&h.app, Method::POST, LB, Some(&monitored), None).await;
    let s = upserted(&taken(&h)[0]).clone();
    assert!(s.probe.monitor);
    assert_eq!(
        (s.probe.probe_type, s.probe.port),
        (Some(ProbeType::Tcp), 32403)
    );
}

#[tokio::test]
async fn oper_1_and_2_attach_and_detach_endpoints() {
    let h = harness();
    for (oper, want) in [
        (
            1,
            Command::AttachEndpoints {
                key: aws_key(),
                endpoints: aws_endpoints(),
            },
        ),
        (
            2,
            Command::DetachEndpoints {
                key: aws_key(),
                endpoints: aws_endpoints(),
            },
        ),
    ] {
        let body = AWS.replace("\"name\"", &format!("\"oper\":{oper},\"name\""));
        let a = call(&h.app, Method::POST, LB, Some(&body), None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(taken(&h), vec![want]);
    }
}

#[tokio::test]
async fn every_path_becomes_its_command() {
    let h = harness();
    let base = "/netlox/v1";
    let cases: Vec<(Method, String, Option<String>, Command)> = vec![
        (
            Method::GET,
            format!("{LB}/all"),
            None,
            Command::ListServices,
        ),
        (
            Method::DELETE,
            format!("{LB}/all"),
            None,
            Command::DeleteAllServices,
        ),
        (
            Method::DELETE,
            format!(
                "{LB}/externalipaddress/13.208.10.20/port/55002/protocol/tcp?bgp=false&block=0"
            ),
            Some(AWS.to_string()),
            Command::DeleteService(aws_key()),
        ),
        (
            Method::DELETE,
            format!("{LB}/externalipaddress/13.208.10.20/port/55002/protocol/UDP"),
            None,
            Command::DeleteService(ServiceKey {
                protocol: Protocol::Udp,
                ..aws_key()
            }),
        ),
        (
            Method::DELETE,
            format!("{LB}/name/default_nginx-lb1:llb-inst0"),
            None,
            Command::DeleteServiceByName("default_nginx-lb1:llb-inst0".into()),
        ),
        (
            Method::GET,
            format!("{base}/config/cistate/all"),
            None,
            Command::ListCiState,
        ),
        (
            Method::POST,
            format!("{base}/config/cistate"),
            Some(r#"{"instance":"llb-inst0","state":"MASTER","vip":"0.0.0.0"}"#.into()),
            Command::SetCiState(CiStateRequest {
                instance: "llb-inst0".into(),
                state: CiRole::Master,
                vip: Ipv4Addr::UNSPECIFIED,
            }),
        ),
        (
            Method::POST,
            format!("{base}/config/cistate"),
            Some(r#"{"Instance":"llb-inst0","STATE":"BACKUP","Vip":"0.0.0.0"}"#.into()),
            Command::SetCiState(CiStateRequest {
                instance: "llb-inst0".into(),
                state: CiRole::Backup,
                vip: Ipv4Addr::UNSPECIFIED,
            }),
        ),
        (
            Method::GET,
            format!("{base}/config/bfd/all"),
            None,
            Command::ListBfd,
        ),
        (
            Method::POST,
            format!("{base}/config/bfd"),
            Some(
                r#"{"instance":"default","remoteIp":"10.0.0.2","interval":200000,"retryCount":5}"#
                    .into(),
            ),
            Command::SetBfd {
                remote_ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
                interval_us: 200_000,
                multiplier: 5,
            },
        ),
        (
            Method::POST,
            format!("{base}/config/bfd"),
            Some(r#"{"INTERVAL":100000,"retrycount":3}"#.into()),
            Command::SetBfd {
                remote_ip: None,
                interval_us: 100_000,
                multiplier: 3,
            },
        ),
        (
            Method::GET,
            format!("{base}/config/conntrack/all"),
            None,
            Command::ListConntrack,
        ),
        (
            Method::GET,
            format!("{base}/config/endpoint/all"),
            None,
            Command::ListEndpoints,
        ),
    ];
    for (method, uri, body, want) in cases {
        let a = call(&h.app, method.clone(), &uri, body.as_deref(), None).await;
        assert_eq!(a.status, StatusCode::OK, "{method} {uri}: {}", a.body);
        assert_eq!(taken(&h), vec![want], "{method} {uri}");
    }
}

#[tokio::test]
async fn list_replies_are_answered_in_loxilb_shape() {
    let services = LbConfig::parse(
        &format!(r#"{{"lbAttr":[{AWS}]}}"#),
        false,
        "t",
        &common::LIMITS,
    )
    .unwrap();
    let listed = services.to_wire();
    let record = TransitionRecord {
        seq: 3,
        at_unix_us: 1_700_000_000_000_000,
        old: "BACKUP".into(),
        new: "MASTER".into(),
        reason: "cistate".into(),
        cloud: None,
        report: Some(serde_json::json!({"ok": true})),
    };
    let answer = move |cmd: &Command| -> Result<Reply, CommandError> {
        Ok(match cmd {
            Command::ListServices => Reply::Services(listed.clone()),
            Command::ListCiState => Reply::CiState(CiStateList {
                attr: vec![CiStateEntry {
                    instance: "llb-inst0".into(),
                    state: "MASTER".into(),
                    sync: None,
                    vip: "0.0.0.0".into(),
                }],
            }),
            Command::Status => Reply::Status(Box::new(StatusReport {
                role: "MASTER".into(),
                self_id: 0,
                peer: Some("10.0.0.2".into()),
                mode: HaMode::Cistate,
                bfd: None,
                floating: vec![],
                last_transition: Some(record.clone()),
                version: "9.9.9-test".into(),
            })),
            Command::Transitions => Reply::Transitions(TransitionList {
                transitions: vec![record.clone()],
            }),
            other => return default_answer(other),
        })
    };
    let h = harness_with(Arc::new(answer), None, Duration::from_secs(10));
    let a = call(&h.app, Method::GET, &format!("{LB}/all"), None, None).await;
    let back: LbList = serde_json::from_value(a.body.clone()).unwrap();
    assert_eq!(
        LbConfig::from_wire(&back, &common::LIMITS).unwrap(),
        services
    );
    // The dump re-POSTs to the same service.
    let entry = serde_json::to_string(&a.body["lbAttr"][0]).unwrap();
    call(&h.app, Method::POST, LB, Some(&entry), None).await;
    let cmds = taken(&h);
    assert_eq!(upserted(&cmds[1]), &services.services[0]);

    let a = call(
        &h.app,
        Method::GET,
        "/netlox/v1/config/cistate/all",
        None,
        None,
    )
    .await;
    assert_eq!(
        a.body,
        serde_json::json!({"Attr":[{"instance":"llb-inst0","state":"MASTER","sync":null,"vip":"0.0.0.0"}]})
    );
    let a = call(&h.app, Method::GET, "/netlox/v1/status", None, None).await;
    assert_eq!(a.body["mode"], "cistate");
    assert_eq!(a.body["last_transition"]["seq"], 3);
    let a = call(&h.app, Method::GET, "/netlox/v1/ha/transitions", None, None).await;
    assert_eq!(a.body["transitions"][0]["report"]["ok"], true);
    let a = call(&h.app, Method::GET, "/netlox/v1/version", None, None).await;
    assert_eq!(a.body["version"], "9.9.9-test");
    let a = call(&h.app, Method::GET, "/netlox/v1", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        taken(&h),
        vec![Command::ListCiState, Command::Status, Command::Transitions]
    );
}

#[tokio::test]
async fn command_errors_map_to_loxilb_codes_and_results() {
    let cases: Vec<(CommandError, StatusCode, &str)> = vec![
        (
            CommandError::Exists("lbrule 13.208.10.20:55002/tcp".into()),
            StatusCode::CONFLICT,
            "exists",
        ),
        (
            CommandError::NotFound("lbrule 13.208.10.20:55002/tcp".into()),
            StatusCode::NOT_FOUND,
            "not-exists",
        ),
        (
            CommandError::Limit("--max-services 1024 reached".into()),
            StatusCode::FORBIDDEN,
            "--max-services 1024 reached",
        ),
        (
            CommandError::Conflict("--ka elects roles".into()),
            StatusCode::CONFLICT,
            "--ka elects roles",
        ),
        (
            CommandError::Unavailable("shutting down".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        ),
    ];
    for (err, status, result) in cases {
        let e = err.clone();
        let h = harness_with(
            Arc::new(move |_: &Command| Err(e.clone())),
            None,
            Duration::from_secs(10),
        );
        let uri = if status == StatusCode::NOT_FOUND {
            format!("{LB}/externalipaddress/13.208.10.20/port/55002/protocol/tcp")
        } else {
            LB.to_string()
        };
        let method = if status == StatusCode::NOT_FOUND {
            Method::DELETE
        } else {
            Method::POST
        };
        let a = call(&h.app, method, &uri, Some(AWS), None).await;
        assert_eq!(a.status, status, "{err:?}");
        assert!(a.text("result").contains(result), "{err:?}: {}", a.body);
    }
    // A delete of an sctp rule: none can exist, so 404 without asking the agent.
    let h = harness();
    let a = call(
        &h.app,
        Method::DELETE,
        &format!("{LB}/externalipaddress/1.2.3.4/port/80/protocol/sctp"),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.text("result").contains("not-exists"));
    assert!(taken(&h).is_empty());
}

/// One case per validation rule: a 400 naming the field and the value, and
/// nothing sent to the agent.
#[tokio::test]
async fn every_bad_request_is_a_400_naming_field_and_value_and_changes_nothing() {
    let h = harness();
    let ep = r#"{"endpointIP":"10.0.0.1","targetPort":80,"weight":1}"#;
    let body = |args: &str, eps: &str| {
        format!(
            r#"{{"serviceArguments":{{"externalIP":"203.0.113.10","port":80,"protocol":"tcp","sel":0,"mode":2{args}}},"endpoints":[{eps}]}}"#
        )
    };
    let many: Vec<String> = (1..=65)
        .map(|i| format!(r#"{{"endpointIP":"10.0.1.{i}","targetPort":80,"weight":1}}"#))
        .collect();
    let cases: Vec<(String, &str)> = vec![
        (
            body("", ep).replace("203.0.113.10", "nope"),
            "invalid serviceArguments.externalIP = \"nope\"",
        ),
        (
            body(r#","privateIP":"10.1""#, ep),
            "invalid serviceArguments.privateIP = \"10.1\"",
        ),
        (
            body("", ep).replace("\"port\":80", "\"port\":0"),
            "invalid serviceArguments.port = 0",
        ),
        (
            body("", ep).replace("\"port\":80", "\"port\":\"80\""),
            "invalid serviceArguments.port = \"80\"",
        ),
        (
            body("", ep).replace("\"tcp\"", "\"gre\""),
            "invalid serviceArguments.protocol = \"gre\"",
        ),
        (
            body(r#","inactiveTimeOut":-1"#, ep),
            "invalid serviceArguments.inactiveTimeOut = -1",
        ),
        (
            body(r#","probetype":"smtp""#, ep),
            "invalid serviceArguments.probetype = \"smtp\"",
        ),
        (
            body(r#","probeport":70000"#, ep),
            "invalid serviceArguments.probeport = 70000",
        ),
        (
            body(r#","probeRetries":-2"#, ep),
            "invalid serviceArguments.probeRetries = -2",
        ),
        (
            body(r#","probeTimeout":-2"#, ep),
            "invalid serviceArguments.probeTimeout = -2",
        ),
        (body("", ""), "invalid endpoints = []"),
        (body("", &many.join(",")), "invalid endpoints = 65 entries"),
        (
            body("", &ep.replace("10.0.0.1", "10.0.0")),
            "invalid endpoints[0].endpointIP = \"10.0.0\"",
        ),
        (
            body("", &ep.replace("\"targetPort\":80", "\"targetPort\":65536")),
            "invalid endpoints[0].targetPort = 65536",
        ),
        (
            body("", &ep.replace("\"weight\":1", "\"weight\":0")),
            "invalid endpoints[0].weight = 0",
        ),
        (
            body("", &format!("{ep},{ep}")),
            "invalid endpoints[1] = 10.0.0.1:80",
        ),
        (
            body("", ep).replace(
                "\"endpoints\"",
                r#""allowedSources":[{"prefix":"10.0.0.0/40"}],"endpoints""#,
            ),
            "invalid allowedSources[0].prefix = \"10.0.0.0/40\"",
        ),
        (
            body(r#","bgp":false,"BGP":false"#, ep),
            "invalid serviceArguments.bgp",
        ),
        (
            "{\"serviceArguments\":".into(),
            "invalid body: not valid JSON",
        ),
        ("[1,2]".into(), "invalid body: not valid JSON"),
    ];
    for (text, want) in cases {
        let a = call(&h.app, Method::POST, LB, Some(&text), None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{text}");
        assert!(a.text("message").starts_with(want), "{text}: {}", a.body);
        assert!(a.text("result").starts_with(want), "{text}: {}", a.body);
    }
    let other: Vec<(Method, &str, Option<&str>, &str)> = vec![
        (
            Method::POST,
            "/netlox/v1/config/cistate",
            Some(r#"{"instance":"llb-inst0","state":"LEADER","vip":"0.0.0.0"}"#),
            "invalid state = \"LEADER\"",
        ),
        (
            Method::POST,
            "/netlox/v1/config/cistate",
            Some(r#"{"state":"MASTER","vip":"1.2.3"}"#),
            "invalid vip = \"1.2.3\"",
        ),
        (
            Method::POST,
            "/netlox/v1/config/bfd",
            Some(r#"{"interval":0,"retryCount":3}"#),
            "invalid interval = 0",
        ),
        (
            Method::POST,
            "/netlox/v1/config/bfd",
            Some(r#"{"interval":100000,"retryCount":256}"#),
            "invalid retryCount = 256",
        ),
        (
            Method::POST,
            "/netlox/v1/config/bfd",
            Some(r#"{"retryCount":3}"#),
            "invalid interval = (missing)",
        ),
        (
            Method::POST,
            "/netlox/v1/config/bfd",
            Some(r#"{"remoteIp":"x","interval":1,"retryCount":3}"#),
            "invalid remoteIp = \"x\"",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3/port/80/protocol/tcp",
            None,
            "invalid ip_address = \"1.2.3\"",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3.4/port/0/protocol/tcp",
            None,
            "invalid port = 0",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3.4/port/http/protocol/tcp",
            None,
            "invalid port = \"http\"",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3.4/port/80/protocol/gre",
            None,
            "invalid proto = \"gre\"",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3.4/port/80/protocol/tcp?bgp=maybe",
            None,
            "invalid bgp = \"maybe\"",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3.4/port/80/protocol/tcp?block=-1",
            None,
            "invalid block = \"-1\"",
        ),
        (
            Method::DELETE,
            "/netlox/v1/config/loadbalancer/externalipaddress/1.2.3.4/port/80/protocol/tcp",
            Some("{not json"),
            "invalid body: not valid JSON",
        ),
    ];
    for (method, uri, body, want) in other {
        let a = call(&h.app, method.clone(), uri, body, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {uri}");
        assert!(
            a.text("message").starts_with(want),
            "{method} {uri}: {}",
            a.body
        );
    }
    assert!(taken(&h).is_empty(), "a rejected request reached the agent");
}

#[tokio::test]
async fn unsupported_features_are_refused_by_name() {
    let h = harness();
    let cases = [
        ("\"mode\":2", "\"mode\":0", "serviceArguments.mode = 0"),
        ("\"mode\":2", "\"mode\":3", "serviceArguments.mode = 3"),
        ("\"sel\":0", "\"sel\":4", "serviceArguments.sel = 4"),
        (
            "\"BGP\":false",
            "\"BGP\":true",
            "serviceArguments.bgp = true",
        ),
        (
            "\"tcp\"",
            "\"sctp\"",
            "serviceArguments.protocol = \"sctp\"",
        ),
        ("\"block\":0", "\"block\":1", "serviceArguments.block = 1"),
        (
            "\"name\"",
            "\"oper\":3,\"name\"",
            "serviceArguments.oper = 3",
        ),
        (
            "\"name\"",
            "\"portMax\":55010,\"name\"",
            "serviceArguments.portMax = 55010",
        ),
        (
            "\"name\"",
            "\"security\":1,\"name\"",
            "serviceArguments.security = 1",
        ),
        (
            "\"name\"",
            "\"host\":\"a.example\",\"name\"",
            "serviceArguments.host = \"a.example\"",
        ),
        (
            "\"name\"",
            "\"proxyprotocolv2\":true,\"name\"",
            "serviceArguments.proxyprotocolv2 = true",
        ),
        (
            "\"name\"",
            "\"egress\":true,\"name\"",
            "serviceArguments.egress = true",
        ),
        (
            "\"name\"",
            "\"snat\":true,\"name\"",
            "serviceArguments.snat = true",
        ),
        (
            "\"secondaryIPs\":[]",
            "\"secondaryIPs\":[{\"secondaryIP\":\"13.208.10.21\"}]",
            "secondaryIPs[0].secondaryIP = \"13.208.10.21\"",
        ),
        (
            "\"13.208.10.20\"",
            "\"2001:db8::1\"",
            "serviceArguments.externalIP = \"2001:db8::1\"",
        ),
    ];
    for (from, to, want) in cases {
        let body = AWS.replacen(from, to, 1);
        assert_ne!(body, AWS, "{from}");
        let a = call(&h.app, Method::POST, LB, Some(&body), None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{to}");
        let msg = a.text("message");
        assert!(
            msg.starts_with("not supported: ") && msg.contains(want),
            "{to}: {}",
            a.body
        );
    }
    let a = call(
        &h.app,
        Method::POST,
        "/netlox/v1/config/bfd",
        Some(r#"{"sourceIp":"10.0.0.1","interval":100000,"retryCount":3}"#),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.text("message")
            .starts_with("not supported: sourceIp = \"10.0.0.1\""),
        "{}",
        a.body
    );
    assert!(taken(&h).is_empty());
}

#[tokio::test]
async fn oversized_body_is_413_and_malformed_paths_are_404_in_loxilb_shape() {
    let h = harness();
    let mut big = AWS.replace("\"name\"", "\"probereq\":\"PAD\",\"name\"");
    big = big.replace("PAD", &"x".repeat(1 << 20));
    let a = call(&h.app, Method::POST, LB, Some(&big), None).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.text("message").contains("1048576"), "{}", a.body);
    let a = call(&h.app, Method::GET, "/netlox/v1/config/nothing", None, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.text("message").contains("/netlox/v1/config/nothing"));
    let a = call(&h.app, Method::PUT, LB, Some(AWS), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(taken(&h).is_empty());
}

#[tokio::test]
async fn token_is_required_raw_or_bearer_except_for_liveness() {
    let h = harness_with(
        Arc::new(default_answer),
        Some("s3cret"),
        Duration::from_secs(10),
    );
    let all = format!("{LB}/all");
    for auth in [
        None,
        Some("wrong"),
        Some("Bearer wrong"),
        Some("s3cre"),
        Some("Basic s3cret"),
    ] {
        for (m, uri) in [
            (Method::GET, all.as_str()),
            (Method::GET, "/netlox/v1/version"),
            (Method::GET, "/netlox/v1/openapi.json"),
            (Method::POST, LB),
        ] {
            let a = call(&h.app, m.clone(), uri, Some(AWS), auth).await;
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{m} {uri} with {auth:?}"
            );
        }
    }
    assert!(taken(&h).is_empty());
    for auth in ["s3cret", "Bearer s3cret"] {
        let a = call(&h.app, Method::POST, LB, Some(AWS), Some(auth)).await;
        assert_eq!(a.status, StatusCode::OK, "{auth}");
    }
    assert_eq!(taken(&h).len(), 2);
    let a = call(&h.app, Method::GET, "/netlox/v1", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn a_gone_owner_is_503() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let app = floatlb_api::router(floatlb_api::ApiState::new(tx, None, common::LIMITS, "t"));
    let a: Answered = call(&app, Method::GET, &format!("{LB}/all"), None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let a = call(&app, Method::POST, LB, Some(AWS), None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn a_request_the_owner_never_answers_times_out_with_503() {
    // The owner receives the command but never replies (keeps the sender).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<floatlb_api::Request>(1);
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(r) = rx.recv().await {
            held.push(r);
        }
    });
    let mut state = floatlb_api::ApiState::new(tx, None, common::LIMITS, "t");
    state.request_timeout = Duration::from_secs(2);
    let app = floatlb_api::router(state);
    let a = tokio::time::timeout(
        Duration::from_secs(60),
        call(&app, Method::POST, LB, Some(AWS), None),
    )
    .await
    .expect("the router itself must answer within its timeout");
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.text("message").contains("more than 2 s"), "{}", a.body);
    keep.abort();
}
