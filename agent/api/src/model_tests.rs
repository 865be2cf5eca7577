use super::*;

const LIMITS: Limits = Limits {
    max_endpoints: 64,
    max_services: 16,
};

const GOOD: &str = r#"{"lbAttr":[{"serviceArguments":{"externalIP":"203.0.113.10",
    "privateIP":"10.10.0.10","port":80,"protocol":"tcp","sel":1,"mode":2,"bgp":false},
    "endpoints":[{"endpointIP":"10.0.1.5","targetPort":8080,"weight":2},
                 {"endpointIP":"10.0.1.6","targetPort":8080,"weight":1,"state":"active"}]}]}"#;

/// kube-loxilb's body for the AWS multi-AZ case, with a probe and source ranges.
const KUBE: &str = r#"{"lbAttr":[{"serviceArguments":{"externalIP":"13.208.10.20","privateIP":"192.168.248.254","port":55002,"protocol":"tcp","sel":0,"mode":2,"BGP":false,"Monitor":true,"inactiveTimeOut":1800,"block":0,"managed":true,"probetype":"http","probeport":8080,"probereq":"/healthz","proberesp":"ok","probeRetries":3,"probeTimeout":10,"name":"default_nginx-lb1:llb-inst0"},"secondaryIPs":[],"allowedSources":[],"endpoints":[{"endpointIP":"192.168.218.101","targetPort":32403,"weight":1,"state":"","counter":""},{"endpointIP":"192.168.228.102","targetPort":32403,"weight":1,"state":"","counter":""}]}]}"#;

fn parse(text: &str) -> Result<LbConfig, ConfigError> {
    LbConfig::parse(text, false, "t.json", &LIMITS)
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

fn with(args: &str, eps: &str) -> String {
    format!(r#"{{"lbAttr":[{{"serviceArguments":{{{args}}},"endpoints":[{eps}]}}]}}"#)
}

const ARGS: &str = r#""externalIP":"203.0.113.10","port":80,"protocol":"tcp","sel":0,"mode":2"#;
const EP: &str = r#"{"endpointIP":"10.0.1.5","targetPort":8080,"weight":1}"#;

#[test]
fn parses_loxilb_list_and_ignores_unknown_fields() {
    let cfg = parse(GOOD).unwrap();
    let s = &cfg.services[0];
    assert_eq!(s.external_ip, Ipv4Addr::new(203, 0, 113, 10));
    assert_eq!(s.snat_ip(), Ipv4Addr::new(10, 10, 0, 10));
    assert_eq!(s.sel, Selection::Maglev);
    assert_eq!(s.mode, NatMode::FullNat);
    assert_eq!(s.endpoints.len(), 2);
    assert_eq!(s.endpoints[0].weight, 2);
}

#[test]
fn kube_loxilb_body_keeps_probe_and_sources() {
    let cfg = parse(KUBE).unwrap();
    let s = &cfg.services[0];
    assert_eq!(s.name.as_deref(), Some("default_nginx-lb1:llb-inst0"));
    assert!(s.allowed_sources.is_empty());
    // Source ranges parse (a bad prefix is named) but are refused: the
    // datapath does not enforce them yet, and accepting them would open
    // what the Service restricts.
    let sources = KUBE.replace(
        r#""allowedSources":[]"#,
        r#""allowedSources":[{"prefix":"10.0.0.0/8"},{"prefix":"198.51.100.7"}]"#,
    );
    let e = parse(&sources).unwrap_err().to_string();
    assert!(
        e.contains("not supported: lbAttr[0].allowedSources = [10.0.0.0/8, ...]"),
        "{e}"
    );
    assert_eq!(
        s.probe,
        ProbeSpec {
            monitor: true,
            probe_type: Some(ProbeType::Http),
            port: 8080,
            request: "/healthz".into(),
            response: "ok".into(),
            retries: 3,
            timeout: 10,
        }
    );
    assert_eq!(s.managed, Some(true));
    assert_eq!(
        s.key(),
        ServiceKey {
            external_ip: Ipv4Addr::new(13, 208, 10, 20),
            port: 55002,
            protocol: Protocol::Tcp
        }
    );
}

#[test]
fn round_trips_through_wire_form() {
    for text in [GOOD, KUBE] {
        let cfg = parse(text).unwrap();
        let json = serde_json::to_string(&cfg.to_wire()).unwrap();
        assert_eq!(parse(&json).unwrap(), cfg, "{json}");
        let yaml = serde_norway::to_string(&cfg.to_wire()).unwrap();
        assert_eq!(
            LbConfig::parse(&yaml, true, "t.yaml", &LIMITS).unwrap(),
            cfg,
            "{yaml}"
        );
    }
}

#[test]
fn yaml_of_the_same_shape_is_accepted() {
    let yaml = "lbAttr:\n- serviceArguments: {externalIP: 192.0.2.1, port: 53, protocol: udp, sel: 3, mode: 1, Monitor: true}\n  endpoints:\n  - {endpointIP: 10.0.0.9, targetPort: 5353, weight: 1}\n";
    let cfg = LbConfig::parse(yaml, true, "t.yaml", &LIMITS).unwrap();
    assert_eq!(cfg.services[0].protocol, Protocol::Udp);
    assert!(cfg.services[0].probe.monitor);
    assert_eq!(cfg.services[0].snat_ip(), Ipv4Addr::new(192, 0, 2, 1));
}

#[test]
fn every_bad_field_is_named_with_its_value() {
    let cases: &[(String, &str)] = &[
        (
            with(&ARGS.replace("203.0.113.10", "nope"), EP),
            "invalid lbAttr[0].serviceArguments.externalIP = \"nope\"",
        ),
        (
            with(&format!("{ARGS},\"privateIP\":\"10.1\""), EP),
            "invalid lbAttr[0].serviceArguments.privateIP = \"10.1\"",
        ),
        (
            with(&ARGS.replace("\"port\":80", "\"port\":70000"), EP),
            "invalid lbAttr[0].serviceArguments.port = 70000",
        ),
        (
            with(&ARGS.replace("\"port\":80", "\"port\":\"80\""), EP),
            "invalid lbAttr[0].serviceArguments.port = \"80\"",
        ),
        (
            with(&ARGS.replace("\"tcp\"", "\"gre\""), EP),
            "invalid lbAttr[0].serviceArguments.protocol = \"gre\"",
        ),
        (
            with(&format!("{ARGS},\"inactiveTimeOut\":-4"), EP),
            "invalid lbAttr[0].serviceArguments.inactiveTimeOut = -4",
        ),
        (
            with(&format!("{ARGS},\"probetype\":\"icmp6\""), EP),
            "invalid lbAttr[0].serviceArguments.probetype = \"icmp6\"",
        ),
        (
            with(&format!("{ARGS},\"probeport\":65536"), EP),
            "invalid lbAttr[0].serviceArguments.probeport = 65536",
        ),
        (
            with(&format!("{ARGS},\"probeRetries\":-1"), EP),
            "invalid lbAttr[0].serviceArguments.probeRetries = -1",
        ),
        (
            with(&format!("{ARGS},\"probeTimeout\":-1"), EP),
            "invalid lbAttr[0].serviceArguments.probeTimeout = -1",
        ),
        (with(ARGS, ""), "invalid lbAttr[0].endpoints = []"),
        (
            with(ARGS, &EP.replace("10.0.1.5", "10.0.1.256")),
            "invalid lbAttr[0].endpoints[0].endpointIP = \"10.0.1.256\"",
        ),
        (
            with(ARGS, &EP.replace("10.0.1.5", "224.0.0.1")),
            "invalid lbAttr[0].endpoints[0].endpointIP = \"224.0.0.1\"",
        ),
        (
            with(ARGS, &EP.replace("8080", "0")),
            "invalid lbAttr[0].endpoints[0].targetPort = 0",
        ),
        (
            with(ARGS, &EP.replace("\"weight\":1", "\"weight\":0")),
            "invalid lbAttr[0].endpoints[0].weight = 0",
        ),
        (
            with(ARGS, &EP.replace("\"weight\":1", "\"weight\":256")),
            "invalid lbAttr[0].endpoints[0].weight = 256",
        ),
        (
            with(ARGS, &format!("{EP},{EP}")),
            "invalid lbAttr[0].endpoints[1] = 10.0.1.5:8080",
        ),
        (
            format!(
                r#"{{"lbAttr":[{{"serviceArguments":{{{ARGS}}},"allowedSources":[{{"prefix":"10.0.0.0/33"}}],"endpoints":[{EP}]}}]}}"#
            ),
            "invalid lbAttr[0].allowedSources[0].prefix = \"10.0.0.0/33\"",
        ),
        (
            with(&format!("{ARGS},\"oper\":1"), EP),
            "invalid lbAttr[0].serviceArguments.oper = 1",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with(want),
            "error {got:?} should start with {want:?}"
        );
    }
}

#[test]
fn what_floatlb_does_not_do_is_refused_by_name() {
    let cases: &[(String, &str)] = &[
        (
            with(&ARGS.replace("\"mode\":2", "\"mode\":3"), EP),
            "serviceArguments.mode = 3",
        ),
        (
            with(&ARGS.replace("\"mode\":2", "\"mode\":0"), EP),
            "serviceArguments.mode = 0",
        ),
        (
            with(&ARGS.replace("\"sel\":0", "\"sel\":4"), EP),
            "serviceArguments.sel = 4",
        ),
        (
            with(&ARGS.replace("\"tcp\"", "\"sctp\""), EP),
            "serviceArguments.protocol = \"sctp\"",
        ),
        (
            with(&format!("{ARGS},\"portMax\":90"), EP),
            "serviceArguments.portMax = 90",
        ),
        (
            with(&format!("{ARGS},\"BGP\":true"), EP),
            "serviceArguments.bgp = true",
        ),
        (
            with(&format!("{ARGS},\"oper\":3"), EP),
            "serviceArguments.oper = 3",
        ),
        (
            with(&format!("{ARGS},\"proxyprotocolv2\":true"), EP),
            "serviceArguments.proxyprotocolv2 = true",
        ),
        (
            with(&format!("{ARGS},\"egress\":true"), EP),
            "serviceArguments.egress = true",
        ),
        (
            with(&format!("{ARGS},\"snat\":true"), EP),
            "serviceArguments.snat = true",
        ),
        (
            with(&format!("{ARGS},\"security\":1"), EP),
            "serviceArguments.security = 1",
        ),
        (
            with(&format!("{ARGS},\"host\":\"a.example\""), EP),
            "serviceArguments.host = \"a.example\"",
        ),
        (
            with(&format!("{ARGS},\"block\":7"), EP),
            "serviceArguments.block = 7",
        ),
        (
            with(&ARGS.replace("203.0.113.10", "2001:db8::1"), EP),
            "serviceArguments.externalIP = \"2001:db8::1\"",
        ),
        (
            format!(
                r#"{{"lbAttr":[{{"serviceArguments":{{{ARGS}}},"secondaryIPs":[{{"secondaryIP":"203.0.113.11"}}],"endpoints":[{EP}]}}]}}"#
            ),
            "lbAttr[0].secondaryIPs[0].secondaryIP = \"203.0.113.11\"",
        ),
        (
            format!(
                r#"{{"lbAttr":[{{"serviceArguments":{{{ARGS}}},"allowedSources":[{{"prefix":"2001:db8::/32"}}],"endpoints":[{EP}]}}]}}"#
            ),
            "lbAttr[0].allowedSources[0].prefix = \"2001:db8::/32\"",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with("not supported: ") && got.contains(want),
            "error {got:?} should be 'not supported' and contain {want:?}"
        );
    }
}

#[test]
fn limits_come_from_the_caller() {
    let eps: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"endpointIP":"10.0.0.{}","targetPort":80,"weight":1}}"#,
                i + 1
            )
        })
        .collect();
    let text = with(ARGS, &eps.join(","));
    let small = Limits {
        max_endpoints: 4,
        max_services: 16,
    };
    let e = LbConfig::parse(&text, false, "t", &small)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lbAttr[0].endpoints = 5 entries: at most 4"),
        "{e}"
    );
    assert!(parse(&text).is_ok());
    let one = format!(r#"{{"serviceArguments":{{{ARGS}}},"endpoints":[{EP}]}}"#);
    let two = one.replace("\"port\":80", "\"port\":81");
    let text = format!(r#"{{"lbAttr":[{one},{two}]}}"#);
    let tiny = Limits {
        max_endpoints: 4,
        max_services: 1,
    };
    let e = LbConfig::parse(&text, false, "t", &tiny)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lbAttr = 2 entries: at most 1 services"), "{e}");
}

#[test]
fn duplicate_service_is_rejected() {
    let one = format!(r#"{{"serviceArguments":{{{ARGS}}},"endpoints":[{EP}]}}"#);
    let text = format!(r#"{{"lbAttr":[{one},{one}]}}"#);
    assert!(err(&text).contains("lbAttr[1].serviceArguments = 203.0.113.10:80/tcp"));
    // Two external IPs mapping to one private VIP collide too.
    let a = one.replace("\"port\"", "\"privateIP\":\"10.9.9.9\",\"port\"");
    let b = a.replace("203.0.113.10", "203.0.113.11");
    let e = err(&format!(r#"{{"lbAttr":[{a},{b}]}}"#));
    assert!(e.contains("duplicate service (VIP, port, protocol)"), "{e}");
}

#[test]
fn syntax_errors_name_the_file() {
    assert!(err("{").starts_with("t.json: not valid JSON"));
    let e = LbConfig::load(Path::new("/nonexistent/floatlb.json"), &LIMITS).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/floatlb.json"));
}
