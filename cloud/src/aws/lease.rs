//! Split-brain inputs for the HA machine: who the EIP points at, whether
//! the peer instance runs, and a lease tag on the EIP.
//!
//! The lease is the tag `floatlb:lease = <instance-id>/<expiry unix ms>` on
//! the set's first Elastic IP, written by the MASTER. Expiry uses the
//! writer's wall clock, so the two nodes' clocks must agree to well within
//! the lease (NTP/chrony, as on every EC2 instance by default).

use std::{
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_sdk_ec2::types::{Filter, Tag};

use super::{AwsProvider, TAG_CLUSTER, TAG_LEASE};
use crate::{CloudError, Holder, Lease, Ownership, Recorder, report::Action};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn holder(p: &AwsProvider, instance: Option<&str>) -> Holder {
    match instance {
        None | Some("") => Holder::Nobody,
        Some(i) if i == p.id.instance_id => Holder::Us,
        Some(_) => Holder::Peer,
    }
}

/// Parses `<instance-id>/<expiry unix ms>`.
pub(crate) fn parse_lease(value: &str) -> Option<(String, u64)> {
    let (inst, ms) = value.rsplit_once('/')?;
    Some((inst.to_string(), ms.parse().ok()?))
}

pub(crate) async fn ownership(
    p: &AwsProvider,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<Ownership, CloudError> {
    let rec = Recorder::new(Action::Reconcile, "aws-ownership");
    let Some((eip, _)) = pairs.first() else {
        return Ok(Ownership::unknown());
    };
    let eip_filter = Filter::builder()
        .name("public-ip")
        .values(eip.to_string())
        .build();
    let inst_filters = [
        Filter::builder()
            .name("vpc-id")
            .values(&p.id.vpc_id)
            .build(),
        Filter::builder()
            .name(format!("tag:{TAG_CLUSTER}"))
            .values(&p.opts.cluster)
            .build(),
    ];
    let eip_label = eip.to_string();
    let (addrs, insts) = tokio::try_join!(
        p.ec2
            .call(&rec, "ec2:DescribeAddresses", &eip_label, false, || {
                p.ec2
                    .client
                    .describe_addresses()
                    .filters(eip_filter.clone())
                    .send()
            }),
        p.ec2.call(
            &rec,
            "ec2:DescribeInstances",
            &p.opts.cluster,
            false,
            || {
                p.ec2
                    .client
                    .describe_instances()
                    .set_filters(Some(inst_filters.to_vec()))
                    .send()
            }
        ),
    )?;
    let addr = addrs.addresses().first().ok_or_else(|| {
        CloudError::invalid("externalIP", eip, "no Elastic IP with this public address")
    })?;
    // EC2 reports the instance behind an ENI association; when it does not
    // (some implementations), the ENI's attachment tells.
    let owner = match (addr.instance_id(), addr.network_interface_id()) {
        (Some(i), _) if !i.is_empty() => holder(p, Some(i)),
        (_, Some(eni)) if !eni.is_empty() => {
            let out = p
                .ec2
                .call(&rec, "ec2:DescribeNetworkInterfaces", eni, false, || {
                    p.ec2
                        .client
                        .describe_network_interfaces()
                        .network_interface_ids(eni)
                        .send()
                })
                .await?;
            let inst = out
                .network_interfaces()
                .first()
                .and_then(|n| n.attachment())
                .and_then(|a| a.instance_id());
            holder(p, inst)
        }
        _ => Holder::Nobody,
    };
    let peers: Vec<bool> = insts
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.instance_id() != Some(p.id.instance_id.as_str()))
        .map(|i| {
            i.state()
                .and_then(|s| s.name())
                .is_some_and(|n| n.as_str() == "running")
        })
        .collect();
    // One peer: its state. None visible, or several: cannot tell.
    let peer_running = match peers.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let lease = addr
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_LEASE))
        .and_then(|t| parse_lease(t.value()?))
        .map(|(inst, expires)| Lease {
            holder: holder(p, Some(&inst)),
            expires_unix_ms: expires,
            remaining: Duration::from_millis(expires.saturating_sub(now_ms())),
        });
    Ok(Ownership {
        owner,
        peer_running,
        lease,
    })
}

pub(crate) async fn renew(
    p: &AwsProvider,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
    ttl: Duration,
) -> Result<(), CloudError> {
    let rec = Recorder::new(Action::Reconcile, "aws-lease");
    let Some((eip, _)) = pairs.first() else {
        return Ok(());
    };
    let allocs = p.allocation_ids(&rec, &[*eip]).await?;
    let alloc = allocs.get(eip).cloned().unwrap_or_default();
    let value = format!("{}/{}", p.id.instance_id, now_ms() + ttl.as_millis() as u64);
    let tag = Tag::builder().key(TAG_LEASE).value(&value).build();
    p.ec2
        .call(&rec, "ec2:CreateTags", &alloc, true, || {
            p.ec2
                .client
                .create_tags()
                .resources(&alloc)
                .tags(tag.clone())
                .send()
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values() {
        assert_eq!(
            parse_lease("i-0abc/1700000000000"),
            Some(("i-0abc".into(), 1_700_000_000_000))
        );
        assert_eq!(parse_lease("i-0abc"), None);
        assert_eq!(parse_lease("i-0abc/soon"), None);
    }
}
