//! Golden tables: what a person sees for each `get`.

use floatlb_api::{
    command::{BfdStatus, FloatingStatus, HaMode, StatusReport, TransitionList, TransitionRecord},
    wire::{
        AllowedSource, BfdList, BfdSession, CiStateEntry, CiStateList, ConntrackEntry,
        ConntrackList, EndpointList, EndpointState, LbEndpoint, LbEntry, LbList, LbServiceArgs,
    },
};

use super::*;

fn endpoint(ip: &str, port: i64, weight: i64) -> LbEndpoint {
    LbEndpoint {
        endpoint_ip: ip.into(),
        target_port: port,
        weight,
        state: None,
        counter: None,
    }
}

/// Two rules, given out of order (tables sort by address, port, protocol).
pub(crate) fn lbs() -> LbList {
    LbList {
        lb_attr: vec![
            LbEntry {
                service_arguments: LbServiceArgs {
                    external_ip: "13.208.10.20".into(),
                    private_ip: Some("192.168.248.254".into()),
                    port: 55002,
                    protocol: "tcp".into(),
                    sel: 0,
                    mode: 2,
                    name: Some("default_nginx-lb1:llb-inst0".into()),
                    ..LbServiceArgs::default()
                },
                allowed_sources: vec![AllowedSource {
                    prefix: "10.0.0.0/8".into(),
                }],
                endpoints: vec![
                    endpoint("192.168.218.101", 32403, 1),
                    endpoint("192.168.228.102", 32403, 2),
                ],
                ..LbEntry::default()
            },
            LbEntry {
                service_arguments: LbServiceArgs {
                    external_ip: "9.9.9.9".into(),
                    port: 53,
                    protocol: "udp".into(),
                    sel: 1,
                    mode: 1,
                    monitor: true,
                    ..LbServiceArgs::default()
                },
                endpoints: vec![LbEndpoint {
                    state: Some("active".into()),
                    counter: Some("10:1200".into()),
                    ..endpoint("10.0.0.5", 5353, 1)
                }],
                ..LbEntry::default()
            },
        ],
    }
}

#[test]
fn lb_table_is_loxicmds() {
    assert_eq!(
        lb(&lbs(), false),
        "\
|  EXTERNAL IP |  PORT | PROTOCOL |             NAME            | BLOCK | SELECT |   MODE  | # OF ENDPOINTS | MONITOR |
|--------------|-------|----------|-----------------------------|-------|--------|---------|----------------|---------|
| 9.9.9.9      |    53 | udp      |                             |     0 | hash   | onearm  |              1 | On      |
| 13.208.10.20 | 55002 | tcp      | default_nginx-lb1:llb-inst0 |     0 | rr     | fullnat |              2 | Off     |
"
    );
}

#[test]
fn lb_wide_has_a_row_per_endpoint() {
    assert_eq!(
        lb(&lbs(), true),
        "\
|  EXTERNAL IP |    PRIVATE IP   |  PORT | PROTOCOL |             NAME            | SELECT |   MODE  | ALLOWED SOURCES |   ENDPOINT IP   | TARGET PORT | WEIGHT |  STATE | COUNTERS |
|--------------|-----------------|-------|----------|-----------------------------|--------|---------|-----------------|-----------------|-------------|--------|--------|----------|
| 9.9.9.9      |                 |    53 | udp      |                             | hash   | onearm  | any             | 10.0.0.5        |        5353 |      1 | active | 10:1200  |
| 13.208.10.20 | 192.168.248.254 | 55002 | tcp      | default_nginx-lb1:llb-inst0 | rr     | fullnat | 10.0.0.0/8      | 192.168.218.101 |       32403 |      1 | -      |          |
|              |                 |       |          |                             |        |         |                 | 192.168.228.102 |       32403 |      2 | -      |          |
"
    );
}

#[test]
fn an_empty_list_still_shows_the_header() {
    assert_eq!(
        lb(&LbList::default(), false),
        "\
| EXTERNAL IP | PORT | PROTOCOL | NAME | BLOCK | SELECT | MODE | # OF ENDPOINTS | MONITOR |
|-------------|------|----------|------|-------|--------|------|----------------|---------|
"
    );
}

pub(crate) fn ha_list() -> CiStateList {
    CiStateList {
        attr: vec![CiStateEntry {
            instance: "llb-inst0".into(),
            state: "MASTER".into(),
            sync: None,
            vip: "0.0.0.0".into(),
        }],
    }
}

#[test]
fn ha_tables() {
    assert_eq!(
        ha(&ha_list(), false),
        "\
|  INSTANCE | HASTATE |
|-----------|---------|
| llb-inst0 | MASTER  |
"
    );
    assert_eq!(
        ha(&ha_list(), true),
        "\
|  INSTANCE | HASTATE |   VIP   | SYNC |
|-----------|---------|---------|------|
| llb-inst0 | MASTER  | 0.0.0.0 | -    |
"
    );
}

pub(crate) fn bfd_list() -> BfdList {
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

#[test]
fn bfd_tables() {
    assert_eq!(
        bfd(&bfd_list(), false),
        "\
|  INSTANCE | REMOTE IP | SESSION STATE |
|-----------|-----------|---------------|
| llb-inst0 | 10.0.1.2  | BFDUp         |
"
    );
    assert_eq!(
        bfd(&bfd_list(), true),
        "\
|  INSTANCE | REMOTE IP | SOURCE IP | PORT |  INTERVAL | RETRY COUNT | SESSION STATE |
|-----------|-----------|-----------|------|-----------|-------------|---------------|
| llb-inst0 | 10.0.1.2  | 10.0.1.1  | 3784 | 200000 us |           3 | BFDUp         |
"
    );
}

pub(crate) fn ct_list() -> ConntrackList {
    ConntrackList {
        ct_attr: vec![ConntrackEntry {
            destination_ip: "13.208.10.20".into(),
            source_ip: "198.51.100.7".into(),
            destination_port: 55002,
            source_port: 40000,
            protocol: "tcp".into(),
            conntrack_state: "est".into(),
            ident: "".into(),
            conntrack_act: "fdnat-192.168.218.101,32403".into(),
            packets: 12,
            bytes: 3456,
            serv_name: "default_nginx-lb1:llb-inst0".into(),
        }],
    }
}

#[test]
fn ct_tables() {
    assert_eq!(
        ct(&ct_list(), false),
        "\
| DESTINATION IP |   SOURCE IP  | DESTINATION PORT | SOURCE PORT | PROTOCOL | STATE |             ACT             | PACKETS | BYTES |
|----------------|--------------|------------------|-------------|----------|-------|-----------------------------|---------|-------|
| 13.208.10.20   | 198.51.100.7 |            55002 |       40000 | tcp      | est   | fdnat-192.168.218.101,32403 |      12 |  3456 |
"
    );
    let wide = ct(&ct_list(), true);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("|         SERVICE NAME        | IDENT |"),
        "{wide}"
    );
    assert!(
        wide.contains("| default_nginx-lb1:llb-inst0 |       |"),
        "{wide}"
    );
}

pub(crate) fn ep_list() -> EndpointList {
    EndpointList {
        attr: vec![EndpointState {
            host_name: "192.168.218.101".into(),
            name: "192.168.218.101_tcp_32403".into(),
            inactive_retries: 0,
            probe_type: "tcp".into(),
            probe_req: "".into(),
            probe_resp: "".into(),
            probe_duration: 60,
            probe_port: 32403,
            min_delay: "".into(),
            avg_delay: "".into(),
            max_delay: "".into(),
            curr_state: "active".into(),
            last_probe: "ok".into(),
            last_probe_time: 1_764_633_600_000,
        }],
    }
}

#[test]
fn ep_tables() {
    assert_eq!(
        ep(&ep_list(), false),
        "\
|       HOST      |            NAME           | PTYPE |  PORT | DURATION | RETRIES | MINDELAY | AVGDELAY | MAXDELAY |  STATE | LAST PROBE |          AT          |
|-----------------|---------------------------|-------|-------|----------|---------|----------|----------|----------|--------|------------|----------------------|
| 192.168.218.101 | 192.168.218.101_tcp_32403 | tcp   | 32403 |       60 |       0 |          |          |          | active | ok         | 2025-12-02T00:00:00Z |
"
    );
    let wide = ep(&ep_list(), true);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("| PROBE REQ | PROBE RESP |"),
        "{wide}"
    );
}

fn transition(seq: u64) -> TransitionRecord {
    TransitionRecord {
        seq,
        at_unix_us: 1_764_633_600_000_000 + seq * 1_000_000,
        old: "BACKUP".into(),
        new: "MASTER".into(),
        reason: "peer down".into(),
        cloud: Some(serde_json::json!({"eip": "i-0abc"})),
        report: None,
    }
}

pub(crate) fn status_report() -> StatusReport {
    StatusReport {
        role: "MASTER".into(),
        self_id: 0,
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
        last_transition: Some(transition(3)),
        version: "0.1.0".into(),
    }
}

#[test]
fn status_table() {
    assert_eq!(
        status(&status_report(), false),
        "\
|  ROLE  | SELF |   PEER   | MODE | BFD |
|--------|------|----------|------|-----|
| MASTER |    0 | 10.0.1.2 | ka   | Up  |

| FLOATING ADDRESS | KIND | HELD | OWNER (CLOUD) |
|------------------|------|------|---------------|
| 13.208.10.20     | eip  | yes  | i-0abc        |

last transition: #3 BACKUP -> MASTER at 2025-12-02T00:00:03Z (peer down)
"
    );
    let wide = status(&status_report(), true);
    assert!(
        wide.contains("| Up         | NoDiagnostic | 200000 us |          3 | 2025-12-02T00:00:00Z | 0.1.0   |"),
        "{wide}"
    );
    let alone = StatusReport {
        peer: None,
        bfd: None,
        mode: HaMode::Standalone,
        floating: vec![],
        last_transition: None,
        ..status_report()
    };
    let text = status(&alone, false);
    assert!(
        text.contains("| MASTER |    0 | -    | standalone | -   |"),
        "{text}"
    );
    assert!(text.ends_with("last transition: none\n"), "{text}");
}

#[test]
fn transitions_tables() {
    let list = TransitionList {
        transitions: vec![transition(1), transition(2)],
    };
    assert_eq!(
        transitions(&list, false),
        "\
| SEQ |         TIME         |   OLD  |   NEW  |   REASON  |
|-----|----------------------|--------|--------|-----------|
|   1 | 2025-12-02T00:00:01Z | BACKUP | MASTER | peer down |
|   2 | 2025-12-02T00:00:02Z | BACKUP | MASTER | peer down |
"
    );
    let wide = transitions(&list, true);
    assert!(wide.contains(r#"| {"eip":"i-0abc"} | -      |"#), "{wide}");
}

#[test]
fn codes_have_loxicmds_names() {
    assert_eq!(
        (0..=5).map(sel_name).collect::<Vec<_>>(),
        ["rr", "hash", "priority", "persist", "lc", "5"]
    );
    assert_eq!(
        (0..=6).map(mode_name).collect::<Vec<_>>(),
        [
            "default",
            "onearm",
            "fullnat",
            "dsr",
            "fullproxy",
            "hostonearm",
            "6"
        ]
    );
}
