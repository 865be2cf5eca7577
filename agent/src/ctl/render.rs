//! Tables as loxicmd prints them.
//!
//! loxicmd draws markdown-style tables: `|` on the left and right and between
//! columns, a `|---|` line under the header, no top or bottom border,
//! headers in capitals and centred, numbers right-aligned and text
//! left-aligned. comfy-table's `ASCII_MARKDOWN` preset draws exactly that;
//! content is never wrapped to the terminal, so the output is the same in a
//! pipe, a terminal or a test. Column sets follow loxicmd's for the loxilb
//! resources (`-o wide` adds columns), with floatlb's private IP and allowed
//! sources in the wide load-balancer table, and tables of floatlb's own for
//! `status` and `transitions`. Each function takes the decoded wire type of
//! `floatlb_api` and returns the text to print.

use std::{
    net::Ipv4Addr,
    time::{Duration, UNIX_EPOCH},
};

use comfy_table::{Cell, CellAlignment, Table, presets::ASCII_MARKDOWN};
use floatlb_api::{
    command::{StatusReport, TransitionList},
    wire::{BfdList, CiStateList, ConntrackList, EndpointList, LbEntry, LbList},
};

/// A loxicmd table of `headers` and `rows`; numeric cells are right-aligned.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN);
    t.set_header(
        headers
            .iter()
            .map(|h| Cell::new(h).set_alignment(CellAlignment::Center)),
    );
    for row in rows {
        t.add_row(row.into_iter().map(|v| {
            let numeric = !v.is_empty() && v.parse::<f64>().is_ok();
            let align = if numeric {
                CellAlignment::Right
            } else {
                CellAlignment::Left
            };
            Cell::new(v).set_alignment(align)
        }));
    }
    format!("{t}\n")
}

/// loxilb's names for `sel` (as loxicmd prints them).
pub fn sel_name(sel: i64) -> String {
    match sel {
        0 => "rr".into(),
        1 => "hash".into(),
        2 => "priority".into(),
        3 => "persist".into(),
        4 => "lc".into(),
        other => other.to_string(),
    }
}

/// loxilb's names for `mode` (as loxicmd prints them).
pub fn mode_name(mode: i64) -> String {
    match mode {
        0 => "default".into(),
        1 => "onearm".into(),
        2 => "fullnat".into(),
        3 => "dsr".into(),
        4 => "fullproxy".into(),
        5 => "hostonearm".into(),
        other => other.to_string(),
    }
}

fn on_off(b: bool) -> String {
    if b { "On" } else { "Off" }.into()
}

fn opt(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// Microseconds since the epoch as RFC 3339 UTC, to the second.
pub fn time_us(us: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// `get ha`.
pub fn ha(list: &CiStateList, wide: bool) -> String {
    let rows = list
        .attr
        .iter()
        .map(|e| {
            let mut row = vec![e.instance.clone(), e.state.clone()];
            if wide {
                row.push(e.vip.clone());
                row.push(e.sync.map_or_else(|| "-".into(), |s| s.to_string()));
            }
            row
        })
        .collect();
    if wide {
        table(&["INSTANCE", "HASTATE", "VIP", "SYNC"], rows)
    } else {
        table(&["INSTANCE", "HASTATE"], rows)
    }
}

/// `get bfd`.
pub fn bfd(list: &BfdList, wide: bool) -> String {
    let rows = list
        .attr
        .iter()
        .map(|s| {
            if wide {
                vec![
                    s.instance.clone(),
                    s.remote_ip.clone(),
                    s.source_ip.clone(),
                    s.port.to_string(),
                    format!("{} us", s.interval),
                    s.retry_count.to_string(),
                    s.state.clone(),
                ]
            } else {
                vec![s.instance.clone(), s.remote_ip.clone(), s.state.clone()]
            }
        })
        .collect();
    if wide {
        table(
            &[
                "INSTANCE",
                "REMOTE IP",
                "SOURCE IP",
                "PORT",
                "INTERVAL",
                "RETRY COUNT",
                "SESSION STATE",
            ],
            rows,
        )
    } else {
        table(&["INSTANCE", "REMOTE IP", "SESSION STATE"], rows)
    }
}

/// Sort key of a rule: external IP (as an address), port, protocol.
fn lb_key(e: &LbEntry) -> (Option<Ipv4Addr>, String, i64, String) {
    let a = &e.service_arguments;
    (
        a.external_ip.parse().ok(),
        a.external_ip.clone(),
        a.port,
        a.protocol.clone(),
    )
}

/// `get lb`: one row per rule; `-o wide`: one row per endpoint.
pub fn lb(list: &LbList, wide: bool) -> String {
    let mut rules: Vec<&LbEntry> = list.lb_attr.iter().collect();
    rules.sort_by_key(|e| lb_key(e));
    let mut rows = Vec::new();
    for rule in rules {
        let a = &rule.service_arguments;
        let name = a.name.clone().unwrap_or_default();
        if !wide {
            rows.push(vec![
                a.external_ip.clone(),
                a.port.to_string(),
                a.protocol.clone(),
                name,
                a.block.to_string(),
                sel_name(a.sel),
                mode_name(a.mode),
                rule.endpoints.len().to_string(),
                on_off(a.monitor),
            ]);
            continue;
        }
        let sources = rule
            .allowed_sources
            .iter()
            .map(|s| s.prefix.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let head = vec![
            a.external_ip.clone(),
            a.private_ip.clone().unwrap_or_default(),
            a.port.to_string(),
            a.protocol.clone(),
            name,
            sel_name(a.sel),
            mode_name(a.mode),
            if sources.is_empty() {
                "any".into()
            } else {
                sources
            },
        ];
        let blank = vec![String::new(); head.len()];
        if rule.endpoints.is_empty() {
            let mut row = head.clone();
            row.extend(std::iter::repeat_n(String::new(), 5));
            rows.push(row);
        }
        for (i, ep) in rule.endpoints.iter().enumerate() {
            let mut row = if i == 0 { head.clone() } else { blank.clone() };
            row.extend([
                ep.endpoint_ip.clone(),
                ep.target_port.to_string(),
                ep.weight.to_string(),
                if a.monitor {
                    opt(ep.state.as_deref())
                } else {
                    "-".into()
                },
                ep.counter.clone().unwrap_or_default(),
            ]);
            rows.push(row);
        }
    }
    if wide {
        table(
            &[
                "EXTERNAL IP",
                "PRIVATE IP",
                "PORT",
                "PROTOCOL",
                "NAME",
                "SELECT",
                "MODE",
                "ALLOWED SOURCES",
                "ENDPOINT IP",
                "TARGET PORT",
                "WEIGHT",
                "STATE",
                "COUNTERS",
            ],
            rows,
        )
    } else {
        table(
            &[
                "EXTERNAL IP",
                "PORT",
                "PROTOCOL",
                "NAME",
                "BLOCK",
                "SELECT",
                "MODE",
                "# OF ENDPOINTS",
                "MONITOR",
            ],
            rows,
        )
    }
}

/// `get ct`.
pub fn ct(list: &ConntrackList, wide: bool) -> String {
    let rows = list
        .ct_attr
        .iter()
        .map(|c| {
            let mut row = vec![
                c.destination_ip.clone(),
                c.source_ip.clone(),
                c.destination_port.to_string(),
                c.source_port.to_string(),
                c.protocol.clone(),
                c.conntrack_state.clone(),
                c.conntrack_act.clone(),
                c.packets.to_string(),
                c.bytes.to_string(),
            ];
            if wide {
                row.push(c.serv_name.clone());
                row.push(c.ident.clone());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "DESTINATION IP",
        "SOURCE IP",
        "DESTINATION PORT",
        "SOURCE PORT",
        "PROTOCOL",
        "STATE",
        "ACT",
        "PACKETS",
        "BYTES",
    ];
    if wide {
        headers.extend(["SERVICE NAME", "IDENT"]);
    }
    table(&headers, rows)
}

/// When a probe ended (ms since the epoch), in UTC; empty for never.
fn probe_time(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `get ep`.
pub fn ep(list: &EndpointList, wide: bool) -> String {
    let rows = list
        .attr
        .iter()
        .map(|e| {
            let mut row = vec![
                e.host_name.clone(),
                e.name.clone(),
                e.probe_type.clone(),
                e.probe_port.to_string(),
                e.probe_duration.to_string(),
                e.inactive_retries.to_string(),
                e.min_delay.clone(),
                e.avg_delay.clone(),
                e.max_delay.clone(),
                e.curr_state.clone(),
                e.last_probe.clone(),
                probe_time(e.last_probe_time),
            ];
            if wide {
                row.push(e.probe_req.clone());
                row.push(e.probe_resp.clone());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "HOST",
        "NAME",
        "PTYPE",
        "PORT",
        "DURATION",
        "RETRIES",
        "MINDELAY",
        "AVGDELAY",
        "MAXDELAY",
        "STATE",
        "LAST PROBE",
        "AT",
    ];
    if wide {
        headers.extend(["PROBE REQ", "PROBE RESP"]);
    }
    table(&headers, rows)
}

/// `get status`: the node, its floating addresses, and the last transition.
pub fn status(s: &StatusReport, wide: bool) -> String {
    let mode = serde_json::to_value(s.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let peer = opt(s.peer.as_deref());
    let bfd = s.bfd.as_ref();
    let mut headers = vec!["ROLE", "SELF", "PEER", "MODE", "BFD"];
    let mut row = vec![
        s.role.clone(),
        s.self_id.to_string(),
        peer,
        mode,
        bfd.map_or_else(|| "-".into(), |b| b.state.clone()),
    ];
    if wide {
        headers.extend([
            "REMOTE BFD",
            "DIAG",
            "INTERVAL",
            "MULTIPLIER",
            "BFD SINCE",
            "VERSION",
        ]);
        match bfd {
            Some(b) => row.extend([
                b.remote_state.clone(),
                b.diag.clone(),
                format!("{} us", b.interval_us),
                b.multiplier.to_string(),
                time_us(b.since_unix_us),
            ]),
            None => row.extend(std::iter::repeat_n("-".to_string(), 5)),
        }
        row.push(s.version.clone());
    }
    let mut out = table(&headers, vec![row]);
    let floating = s
        .floating
        .iter()
        .map(|f| {
            vec![
                f.address.clone(),
                f.kind.clone(),
                if f.held { "yes" } else { "no" }.into(),
                opt(f.owner_per_cloud.as_deref()),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["FLOATING ADDRESS", "KIND", "HELD", "OWNER (CLOUD)"],
        floating,
    ));
    out.push('\n');
    match &s.last_transition {
        Some(t) => out.push_str(&format!(
            "last transition: #{} {} -> {} at {} ({})\n",
            t.seq,
            t.old,
            t.new,
            time_us(t.at_unix_us),
            t.reason
        )),
        None => out.push_str("last transition: none\n"),
    }
    out
}

fn compact(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `get transitions`; `-o wide` adds the cloud state and report as JSON.
pub fn transitions(list: &TransitionList, wide: bool) -> String {
    let rows = list
        .transitions
        .iter()
        .map(|t| {
            let mut row = vec![
                t.seq.to_string(),
                time_us(t.at_unix_us),
                t.old.clone(),
                t.new.clone(),
                t.reason.clone(),
            ];
            if wide {
                row.push(compact(t.cloud.as_ref()));
                row.push(compact(t.report.as_ref()));
            }
            row
        })
        .collect();
    let mut headers = vec!["SEQ", "TIME", "OLD", "NEW", "REASON"];
    if wide {
        headers.extend(["CLOUD", "REPORT"]);
    }
    table(&headers, rows)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
