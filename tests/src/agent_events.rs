//! What a running `floatlb` agent reports about its HA: the JSON event
//! lines it prints (`bfd_state`, `ha_transition`, `ha_cloud`), read back
//! from its log for the demo's timeline.

use std::time::{Duration, Instant, SystemTime};

use floatlb_cloud::TransitionReport;

use crate::{netns::NsProcess, timeline::Timeline};

/// Microseconds since the Unix epoch.
pub fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What an agent printed about itself (one JSON object per line with an
/// `event` field: `bfd_state`, `ha_transition`, `ha_cloud`) since `since_us`.
#[derive(Debug, Default)]
pub struct AgentEvents {
    pub lines: Vec<(i64, String)>,
    /// First BFD Down after `since_us`.
    pub bfd_down: Option<i64>,
    /// First transition to MASTER after `since_us`.
    pub master: Option<i64>,
    /// Its reason (e.g. `claim (LeaseNotRenewed)`).
    pub master_reason: Option<String>,
    /// The report of the first promotion done after `since_us`.
    pub promote: Option<TransitionReport>,
}

impl AgentEvents {
    pub fn parse(log: &str, since_us: i64) -> Self {
        let mut ev = Self::default();
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
                continue;
            };
            let at = v["at_unix_us"].as_i64();
            match v["event"].as_str() {
                Some("bfd_state") => {
                    let Some(at) = at.filter(|&t| t >= since_us) else {
                        continue;
                    };
                    let new = v["new"].as_str().unwrap_or("?");
                    if new == "Down" && ev.bfd_down.is_none() {
                        ev.bfd_down = Some(at);
                    }
                    ev.lines.push((
                        at,
                        format!(
                            "BFD session {} -> {new} (diag {}, peer state {})",
                            v["old"].as_str().unwrap_or("?"),
                            v["diag"],
                            v["remote_state"].as_str().unwrap_or("?")
                        ),
                    ));
                }
                Some("ha_transition") => {
                    let Some(at) = at.filter(|&t| t >= since_us) else {
                        continue;
                    };
                    let new = v["new"].as_str().unwrap_or("?");
                    if new == "Master" && ev.master.is_none() {
                        ev.master = Some(at);
                        ev.master_reason = v["reason"].as_str().map(str::to_string);
                    }
                    ev.lines.push((
                        at,
                        format!(
                            "state {} -> {new}: {} (cloud verdict: {})",
                            v["old"].as_str().unwrap_or("?"),
                            v["reason"].as_str().unwrap_or("?"),
                            v["cloud"]
                        ),
                    ));
                }
                Some("ha_cloud") if v["job"]["promote"].is_object() || v["job"] == "promote" => {
                    if let Ok(r) = serde_json::from_value::<TransitionReport>(v["report"].clone())
                        && (r.started_unix_ms as i64) * 1000 >= since_us - 1000
                        && ev.promote.is_none()
                    {
                        ev.promote = Some(r);
                    }
                }
                _ => {}
            }
        }
        ev
    }

    pub fn add_to(&self, tl: &mut Timeline, who: &str) {
        for (at, text) in &self.lines {
            tl.at_unix_us(*at, format!("{who}: {text}"));
        }
    }
}

/// Waits (at most 15 s) until neither agent has logged a BFD state change
/// for `want`; returns how long BFD has been steady.
pub async fn wait_bfd_quiet(agents: &[Option<NsProcess>; 2], want: Duration) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let last = agents
            .iter()
            .flatten()
            .flat_map(|a| {
                a.log()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
                    .filter(|v| v["event"] == "bfd_state")
                    .filter_map(|v| v["at_unix_us"].as_i64())
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0);
        let quiet =
            Duration::from_micros(u64::try_from(unix_us(SystemTime::now()) - last).unwrap_or(0));
        if quiet >= want || Instant::now() > deadline {
            return quiet;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
