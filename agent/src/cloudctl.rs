//! `floatlb cloud promote|demote|reconcile|status|dry-run|preflight`: runs this node's
//! cloud provider once and prints the report, for runbooks and tests.
//! `dry-run` (AWS only) sends every write of a failover with `DryRun=true`
//! and prints one row per call: allowed, denied (naming the action),
//! skipped (with why) or inconclusive (EC2's answer).
//!
//! The floating set comes from the load-balancer list: each service's
//! `externalIP` is an Elastic IP's public address and its `privateIP` the
//! private VIP (on bare metal only the VIP, [`Service::vip`], matters).

use std::{net::IpAddr, time::Duration};

use floatlb_cloud::{
    CloudError, CloudProvider, CloudStatus, FloatingIp, FloatingSet, NoneProvider,
    TransitionReport,
    aws::{
        AwsMode, AwsOptions, AwsProvider,
        dryrun::{DryRunReport, Verdict},
    },
    garp::{GarpOptions, GarpProvider},
};

use crate::{
    cli::{CloudAction, CloudArgs, CloudCommand, CloudKind, CloudMode},
    config::{ConfigError, LbConfig, Service},
};

#[derive(Debug, thiserror::Error)]
pub enum CloudCtlError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("invalid {flag} = {value}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// The floating set of a service list: the EIP (when the service has a
/// separate private VIP) and the VIP.
pub fn floating_set(services: &[Service]) -> FloatingSet {
    FloatingSet::new(services.iter().map(floating_ip))
}

/// The floating address one service uses: its VIP, and the Elastic IP
/// (`externalIP`) that maps to it when a private VIP is set.
pub fn floating_ip(s: &Service) -> FloatingIp {
    FloatingIp {
        eip: s.private_ip.map(|_| s.external_ip),
        vip: IpAddr::V4(s.vip()),
    }
}

/// Builds the provider the flags select.
pub async fn build_provider(args: &CloudArgs) -> Result<Box<dyn CloudProvider>, CloudCtlError> {
    match args.cloud {
        CloudKind::None => Ok(Box::new(NoneProvider)),
        CloudKind::Garp => {
            let iface = args.garp_iface.clone().ok_or_else(|| CloudCtlError::Flag {
                flag: "--garp-iface",
                value: "(missing)".into(),
                reason: "--cloud=garp needs the interface that carries the VIPs (the daemon \
                         defaults it to the only --iface; give it with several)"
                    .into(),
            })?;
            let mut o = GarpOptions::new(iface);
            o.count = args.garp_count;
            o.span = Duration::from_millis(args.garp_span_ms);
            Ok(Box::new(GarpProvider::new(o)))
        }
        CloudKind::Aws => Ok(Box::new(build_aws(args).await?)),
    }
}

/// Builds the AWS provider the flags select.
pub async fn build_aws(args: &CloudArgs) -> Result<AwsProvider, CloudCtlError> {
    let mode = match args.cloud_mode {
        CloudMode::Eni => AwsMode::Eni,
        CloudMode::Route => AwsMode::Route,
    };
    let mut o = AwsOptions::new(mode, args.cloud_cluster_name.clone());
    o.cidr_block = args
        .cloudcidrblock
        .as_deref()
        .map(|b| {
            b.parse().map_err(|e| CloudCtlError::Flag {
                flag: "--cloudcidrblock",
                value: b.into(),
                reason: format!("not an IPv4 CIDR block: {e}"),
            })
        })
        .transpose()?;
    o.route_tables = args.cloud_route_tables.clone();
    o.os_config = !args.no_os_config;
    Ok(AwsProvider::connect(o).await?)
}

/// What one run produced.
#[derive(Debug, serde::Serialize)]
pub struct CloudRun {
    pub action: &'static str,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<TransitionReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CloudStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<crate::cloud_preflight::Preflight>,
    /// True when the cloud state is what was asked (the exit status).
    pub as_asked: bool,
}

/// Runs the command. The cloud state is read back after promote/demote.
pub async fn run(cmd: &CloudCommand) -> Result<CloudRun, CloudCtlError> {
    let set = match &cmd.config {
        Some(path) => floating_set(&LbConfig::load(path, &crate::config::file_limits())?.services),
        None if cmd.action == CloudAction::Preflight => FloatingSet::default(),
        None => {
            return Err(CloudCtlError::Flag {
                flag: "--config",
                value: "(missing)".into(),
                reason: "the load-balancer list names the floating addresses to act on".into(),
            });
        }
    };
    if cmd.action == CloudAction::Preflight {
        let o = crate::cloud_preflight::PreflightOptions {
            peer: cmd.cluster,
            sync_port: cmd.sync_port,
            bfd_port: cmd.bfd_port,
            ifaces: cmd.iface.clone(),
            max_clock_skew: Duration::from_millis(cmd.max_clock_skew_ms),
            timeout: Duration::from_millis(cmd.probe_timeout_ms),
        };
        let pf = crate::cloud_preflight::run(&cmd.cloud, &set, &o).await;
        return Ok(CloudRun {
            action: "preflight",
            provider: format!("{:?}", cmd.cloud.cloud).to_lowercase(),
            report: None,
            status: None,
            dry_run: None,
            as_asked: pf.ok,
            preflight: Some(pf),
        });
    }
    if cmd.action == CloudAction::DryRun {
        if cmd.cloud.cloud != CloudKind::Aws {
            return Err(CloudCtlError::Flag {
                flag: "--cloud",
                value: format!("{:?}", cmd.cloud.cloud).to_lowercase(),
                reason: "dry-run checks EC2 permissions: it needs --cloud=aws".into(),
            });
        }
        let aws = build_aws(&cmd.cloud).await?;
        let report = aws.dry_run(&set).await?;
        return Ok(CloudRun {
            action: "dry-run",
            provider: report.provider.clone(),
            report: None,
            status: None,
            as_asked: report.all_allowed(),
            dry_run: Some(report),
            preflight: None,
        });
    }
    let provider = build_provider(&cmd.cloud).await?;
    let name = provider.name().to_string();
    let (action, report) = match cmd.action {
        CloudAction::Promote => ("promote", Some(provider.promote(&set).await)),
        CloudAction::Demote => ("demote", Some(provider.demote(&set).await)),
        CloudAction::Reconcile => ("reconcile", Some(provider.reconcile(&set).await)),
        CloudAction::Status | CloudAction::DryRun | CloudAction::Preflight => ("status", None),
    };
    let status = provider.status(&set).await?;
    let ok = report.as_ref().is_none_or(|r| r.ok);
    let as_asked = ok
        && match cmd.action {
            CloudAction::Promote
            | CloudAction::Status
            | CloudAction::DryRun
            | CloudAction::Preflight => status.is_master,
            CloudAction::Demote => !status.holds_any,
            CloudAction::Reconcile => true,
        };
    Ok(CloudRun {
        action,
        provider: name,
        report,
        status: Some(status),
        dry_run: None,
        preflight: None,
        as_asked,
    })
}

/// The dry run as a table: one row per call, then the verdict.
fn render_dry_run(out: &mut String, d: &DryRunReport) {
    let verdict = |v: Verdict| match v {
        Verdict::Allowed => "allowed",
        Verdict::Denied => "DENIED",
        Verdict::Skipped => "skipped",
        Verdict::Inconclusive => "INCONCLUSIVE",
    };
    let w_action = d
        .checks
        .iter()
        .map(|c| c.action.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w_target = d
        .checks
        .iter()
        .map(|c| c.target.len())
        .max()
        .unwrap_or(6)
        .clamp(6, 60);
    out.push_str(&format!(
        "dry run via {}: every EC2 write of a failover with DryRun=true\n",
        d.provider
    ));
    out.push_str(&format!(
        "  {:<w_action$}  {:<w_target$}  {:<12}  detail\n",
        "action", "target", "verdict"
    ));
    for c in &d.checks {
        out.push_str(&format!(
            "  {:<w_action$}  {:<w_target$}  {:<12}  {}\n",
            c.action,
            c.target,
            verdict(c.verdict),
            c.detail
        ));
    }
    let denied: Vec<&str> = d.denied().iter().map(|c| c.action.as_str()).collect();
    let unsure = d.with(Verdict::Inconclusive).len();
    if denied.is_empty() && unsure == 0 {
        out.push_str("result: every probed call is allowed\n");
    } else {
        if !denied.is_empty() {
            out.push_str(&format!(
                "result: DENIED {}: grant them to this node's role (see iam/policy.json, iam/README.md)\n",
                denied.join(", ")
            ));
        }
        if unsure > 0 {
            out.push_str(&format!(
                "result: {unsure} call(s) inconclusive: EC2 answered neither DryRunOperation nor UnauthorizedOperation\n"
            ));
        }
    }
}

/// Human-readable rendering: one line per call, then the status.
pub fn render(run: &CloudRun) -> String {
    let mut out = String::new();
    if let Some(p) = &run.preflight {
        out.push_str(&crate::cloud_preflight::render(p));
    }
    if let Some(d) = &run.dry_run {
        render_dry_run(&mut out, d);
    }
    if let Some(r) = &run.report {
        out.push_str(&format!(
            "{} via {}: {} in {:.1} ms ({} calls, {} retried)\n",
            run.action,
            run.provider,
            if r.ok { "ok" } else { "FAILED" },
            r.duration_us as f64 / 1000.0,
            r.calls.len(),
            r.retries()
        ));
        for c in &r.calls {
            out.push_str(&format!(
                "  +{:>9.1} ms {:>8.1} ms  {:<40} {:<30} {:?}\n",
                c.start_us as f64 / 1000.0,
                c.duration_us as f64 / 1000.0,
                c.call,
                c.target,
                c.outcome
            ));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("error: {e}\n"));
        }
    }
    if let Some(s) = &run.status {
        out.push_str(&format!(
            "status ({}): {}\n",
            s.provider,
            if s.is_master {
                "MASTER (holds every floating address)"
            } else if s.holds_any {
                "holds some floating addresses"
            } else {
                "holds nothing"
            }
        ));
        for f in &s.facts {
            out.push_str(&format!("  {f}\n"));
        }
        for m in &s.missing {
            out.push_str(&format!("  missing: {m}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floating_set_pairs_eip_with_private_vip() {
        let cfg = LbConfig::parse(
            r#"{"lbAttr":[
              {"serviceArguments":{"externalIP":"203.0.113.10","privateIP":"10.0.100.10","port":80,"mode":2},"endpoints":[{"endpointIP":"10.0.1.5","targetPort":80,"weight":1}]},
              {"serviceArguments":{"externalIP":"203.0.113.10","privateIP":"10.0.100.10","port":443,"mode":2},"endpoints":[{"endpointIP":"10.0.1.5","targetPort":80,"weight":1}]},
              {"serviceArguments":{"externalIP":"192.0.2.7","port":53,"protocol":"udp","mode":2},"endpoints":[{"endpointIP":"10.0.1.5","targetPort":80,"weight":1}]}]}"#,
            false,
            "test",
            &crate::config::file_limits(),
        )
        .unwrap();
        let set = floating_set(&cfg.services);
        assert_eq!(
            set.entries(),
            &[
                FloatingIp {
                    eip: None,
                    vip: "192.0.2.7".parse().unwrap()
                },
                FloatingIp {
                    eip: Some("203.0.113.10".parse().unwrap()),
                    vip: "10.0.100.10".parse().unwrap()
                },
            ]
        );
    }
}
