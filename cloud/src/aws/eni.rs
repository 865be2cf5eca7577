//! ENI mode: the VIPs live on `loxi-eni` in the VIP subnet (CIDR = the cloud
//! CIDR block), which must sit in the MASTER's AZ.
//!
//! Promotion, as parallel rounds (each round waits only for what it needs):
//!
//! ```text
//!  R1  Describe{Vpcs, Subnets, NetworkInterfaces, Addresses, RouteTables}   (one parallel round)
//!  R2  stale loxi-eni in the other AZ: Detach(force) -> poll available -> Delete
//!      || AssociateVpcCidrBlock when the block is not yet a VPC CIDR
//!  R3  DeleteSubnet of the stale VIP subnet              (skipped when there is none)
//!  R4  CreateSubnet in this AZ                            (skipped when present)
//!  R5  CreateNetworkInterface (VIPs, instance SGs, tags) || AssociateRouteTable
//!  R6  AttachNetworkInterface || ModifyNetworkInterfaceAttribute(SourceDestCheck=false)
//!      || AssociateAddress(AllowReassociation) per EIP   <- the EIP serves the new MASTER
//!  R7  poll attachment attached -> OS config (wait for the MAC, link up, VIPs, source routing)
//! ```
//!
//! An EIP can be associated with an ENI before the ENI is attached, so the
//! attachment, the source/dest check and the EIP moves all go in one round.
//! Every step checks the described state first and only does what is
//! missing; deletes treat "not found" as done, creates adopt what exists.

use std::{collections::BTreeSet, net::Ipv4Addr};

use futures::future::try_join_all;
use ipnet::Ipv4Net;

use super::{AwsProvider, ENI_NAME, TAG_CLUSTER};
use crate::{CloudError, CloudStatus, Recorder, netconf};

use super::eni_steps::*;
use super::eni_view::*;

/// VIPs must be usable host addresses of the VIP subnet (AWS reserves the
/// first four and the last address of every subnet).
pub fn validate_vips(block: Ipv4Net, vips: &[Ipv4Addr]) -> Result<(), CloudError> {
    if !(16..=28).contains(&block.prefix_len()) {
        return Err(CloudError::invalid(
            "--cloudcidrblock",
            block,
            "a VPC subnet must be between /16 and /28",
        ));
    }
    if block.network() != block.addr() {
        return Err(CloudError::invalid(
            "--cloudcidrblock",
            block,
            format!("not a network address (did you mean {}?)", block.trunc()),
        ));
    }
    let first = u32::from(block.network());
    let last = u32::from(block.broadcast());
    for v in vips {
        let n = u32::from(*v);
        if !block.contains(v) {
            return Err(CloudError::invalid(
                "privateIP",
                v,
                format!("the VIP must lie inside --cloudcidrblock {block}"),
            ));
        }
        if n < first + 4 || n == last {
            return Err(CloudError::invalid(
                "privateIP",
                v,
                format!("AWS reserves the first four and the last address of {block}"),
            ));
        }
    }
    Ok(())
}

fn split(pairs: &[(Ipv4Addr, Ipv4Addr)]) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let vips: BTreeSet<Ipv4Addr> = pairs.iter().map(|(_, v)| *v).collect();
    let eips: BTreeSet<Ipv4Addr> = pairs.iter().map(|(e, _)| *e).collect();
    (vips.into_iter().collect(), eips.into_iter().collect())
}

/// Whether this ENI belongs here: in this AZ and not attached elsewhere.
fn is_local(p: &AwsProvider, e: &EniV) -> bool {
    e.az == p.id.availability_zone
        && e.attach
            .as_ref()
            .is_none_or(|a| a.instance == p.id.instance_id)
}

/// The `--cloudcidrblock` that ENI mode carves the VIP subnet from.
fn cidr_block(p: &AwsProvider) -> Result<Ipv4Net, CloudError> {
    p.opts
        .cidr_block
        .ok_or_else(|| CloudError::invalid("--cloudcidrblock", "(missing)", "ENI mode needs it"))
}

pub(crate) async fn promote(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let block = cidr_block(p)?;
    let (vips, eips) = split(pairs);
    validate_vips(block, &vips)?;
    if vips.is_empty() {
        return Ok(());
    }
    let view = describe_view(p, rec, block, &eips).await?;
    if let Some(s) = view.subnets.iter().find(|s| !s.ours) {
        return Err(CloudError::Foreign {
            resource: format!("subnet {} ({block})", s.id),
            why: format!("it is not tagged {TAG_CLUSTER}={}", p.opts.cluster),
        });
    }
    // Keep one local ENI (prefer the attached one); everything else goes.
    let mut local: Vec<&EniV> = view.enis.iter().filter(|e| is_local(p, e)).collect();
    local.sort_by_key(|e| e.attach.is_none());
    let keeper = local.first().copied().cloned();
    let stale: Vec<&EniV> = view
        .enis
        .iter()
        .filter(|e| keeper.as_ref().is_none_or(|k| k.id != e.id))
        .collect();
    let my_subnet = view
        .subnets
        .iter()
        .find(|s| s.az == p.id.availability_zone)
        .map(|s| s.id.clone());
    let stale_subnets: Vec<&SubnetV> = view
        .subnets
        .iter()
        .filter(|s| s.az != p.id.availability_zone)
        .collect();

    // R2: tear down stale ENIs and the stale subnet's route-table
    // association, make the block a VPC CIDR.
    let stale_assocs = stale_subnets
        .iter()
        .filter_map(|s| view.assoc.get(&s.id))
        .map(|(assoc, _)| disassociate_rtb(p, rec, assoc));
    tokio::try_join!(
        try_join_all(stale.iter().map(|e| remove_eni(p, rec, e))),
        try_join_all(stale_assocs),
        ensure_vpc_cidr(p, rec, &view, block),
    )?;
    // R3: stale subnets.
    try_join_all(stale_subnets.iter().map(|s| delete_subnet(p, rec, &s.id))).await?;
    // R4: our subnet.
    let subnet = match my_subnet {
        Some(s) => s,
        None => create_subnet(p, rec, block).await?,
    };
    // R5: our ENI, and egress for its subnet.
    let (eni, ()) = tokio::try_join!(
        async {
            match keeper {
                Some(k) => {
                    let missing: Vec<String> = vips
                        .iter()
                        .filter(|v| !k.ips.contains(v))
                        .map(|v| v.to_string())
                        .collect();
                    if !missing.is_empty() {
                        p.ec2
                            .call(rec, "ec2:AssignPrivateIpAddresses", &k.id, true, || {
                                p.ec2
                                    .client
                                    .assign_private_ip_addresses()
                                    .network_interface_id(&k.id)
                                    .set_private_ip_addresses(Some(missing.clone()))
                                    .send()
                            })
                            .await?;
                    }
                    Ok(k)
                }
                None => create_eni(p, rec, &subnet, &vips).await,
            }
        },
        ensure_rtb(p, rec, &view, &subnet),
    )?;
    // R6: attach, source/dest check off, EIPs -> VIPs (all independent).
    let attached_here = eni
        .attach
        .as_ref()
        .is_some_and(|a| a.instance == p.id.instance_id);
    let eip_moves = pairs.iter().filter_map(|(eip, vip)| {
        let a = view.addrs.get(eip)?;
        let done = a.eni.as_deref() == Some(eni.id.as_str()) && a.private_ip == Some(*vip);
        (!done).then(|| associate_eip(p, rec, &a.allocation_id, &eni.id, *vip))
    });
    tokio::try_join!(
        async {
            if attached_here {
                return Ok(());
            }
            match p
                .ec2
                .call(rec, "ec2:AttachNetworkInterface", &eni.id, true, || {
                    p.ec2
                        .client
                        .attach_network_interface()
                        .network_interface_id(&eni.id)
                        .instance_id(&p.id.instance_id)
                        .device_index(p.opts.device_index)
                        .send()
                })
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        },
        async {
            if eni.src_dst {
                disable_src_dst(p, rec, &eni.id).await
            } else {
                Ok(())
            }
        },
        try_join_all(eip_moves),
    )?;
    // R7: attachment visible, then the OS.
    let eni_now = p
        .ec2
        .poll(&format!("attachment of {}", eni.id), "attached", || async {
            if attached_here && eni.attach.as_ref().is_some_and(|a| a.status == "attached") {
                return Ok(Some(eni.clone()));
            }
            Ok(describe_eni(p, rec, &eni.id).await?.filter(|n| {
                n.attach
                    .as_ref()
                    .is_some_and(|a| a.instance == p.id.instance_id && a.status == "attached")
            }))
        })
        .await?;
    if p.opts.os_config {
        configure_os(p, rec, &eni_now, block, &vips).await?;
    }
    Ok(())
}

async fn configure_os(
    p: &AwsProvider,
    rec: &Recorder,
    eni: &EniV,
    block: Ipv4Net,
    vips: &[Ipv4Addr],
) -> Result<(), CloudError> {
    let handle = netconf::connect().await?;
    let mac = netconf::parse_mac(&eni.mac)?;
    let link = netconf::wait_link_by_mac(&handle, rec, mac, p.ec2.policy.poll_timeout).await?;
    netconf::set_up(&handle, rec, &link).await?;
    let gateway = Ipv4Addr::from(u32::from(block.network()) + 1);
    let table = 1000 + p.opts.device_index as u32;
    for v in vips {
        netconf::add_address(&handle, rec, &link, (*v).into(), block.prefix_len()).await?;
        netconf::source_route(&handle, rec, &link, *v, gateway, table).await?;
    }
    Ok(())
}

pub(crate) async fn demote(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let block = cidr_block(p)?;
    let (vips, eips) = split(pairs);
    let (enis, addrs, subnets, (_, assoc)) = tokio::try_join!(
        describe_enis(p, rec),
        describe_addresses(p, rec, &eips),
        describe_subnets(p, rec, block),
        describe_route_tables(p, rec),
    )?;
    let mine = my_enis(p, &enis);
    remove_host_vips(p, rec, &mine, &vips).await?;
    disassociate_from(p, rec, &addrs, &mine).await?;
    let my_subnets: Vec<&SubnetV> = subnets
        .iter()
        .filter(|s| s.ours && s.az == p.id.availability_zone)
        .collect();
    let assocs = my_subnets
        .iter()
        .filter_map(|s| assoc.get(&s.id))
        .map(|(a, _)| disassociate_rtb(p, rec, a));
    tokio::try_join!(
        try_join_all(mine.iter().map(|e| remove_eni(p, rec, e))),
        try_join_all(assocs)
    )?;
    try_join_all(my_subnets.iter().map(|s| delete_subnet(p, rec, &s.id))).await?;
    Ok(())
}

/// Gives up only `pairs` (they left the floating set) while the rest keep
/// serving: their EIPs are disassociated from this node's VIP interface
/// and the VIPs leave the host. The interface, the subnet and the other
/// pairs stay; the private addresses stay assigned to the interface until
/// the next demote removes it (unassigning them would need a permission
/// the policy does not grant for so little gain).
pub(crate) async fn release(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let (vips, eips) = split(pairs);
    let (enis, addrs) = tokio::try_join!(describe_enis(p, rec), describe_addresses(p, rec, &eips))?;
    let mine = my_enis(p, &enis);
    remove_host_vips(p, rec, &mine, &vips).await?;
    disassociate_from(p, rec, &addrs, &mine).await
}

/// The VIP interfaces that are this node's: attached to it, or left
/// unattached in its AZ.
fn my_enis<'a>(p: &AwsProvider, enis: &'a [EniV]) -> Vec<&'a EniV> {
    enis.iter()
        .filter(|e| {
            e.attach
                .as_ref()
                .is_some_and(|a| a.instance == p.id.instance_id)
                || (e.az == p.id.availability_zone && e.attach.is_none())
        })
        .collect()
}

/// Removes `vips` from the host links of `mine` (with OS configuration on).
async fn remove_host_vips(
    p: &AwsProvider,
    rec: &Recorder,
    mine: &[&EniV],
    vips: &[Ipv4Addr],
) -> Result<(), CloudError> {
    if !p.opts.os_config {
        return Ok(());
    }
    let handle = netconf::connect().await?;
    let links = netconf::links(&handle).await?;
    for e in mine {
        let mac = netconf::parse_mac(&e.mac)?;
        if let Some(link) = links.iter().find(|l| l.mac == Some(mac)) {
            for v in vips {
                netconf::del_address(&handle, rec, link, (*v).into()).await?;
            }
        }
    }
    Ok(())
}

/// Disassociates the described EIPs that point at one of `mine`.
async fn disassociate_from(
    p: &AwsProvider,
    rec: &Recorder,
    addrs: &std::collections::HashMap<Ipv4Addr, AddrV>,
    mine: &[&EniV],
) -> Result<(), CloudError> {
    let disassociate = addrs.values().filter_map(|a| {
        let eni = a.eni.as_deref()?;
        let assoc = a.association_id.as_deref()?;
        mine.iter().any(|m| m.id == eni).then_some(async move {
            match p
                .ec2
                .call(rec, "ec2:DisassociateAddress", assoc, true, || {
                    p.ec2
                        .client
                        .disassociate_address()
                        .association_id(assoc)
                        .send()
                })
                .await
            {
                Err(e) if !e.is_not_found() => Err(e),
                _ => Ok(()),
            }
        })
    });
    try_join_all(disassociate).await?;
    Ok(())
}

pub(crate) async fn reconcile(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let (_, eips) = split(pairs);
    let (enis, _) = tokio::try_join!(describe_enis(p, rec), describe_addresses(p, rec, &eips))?;
    // Half-built ENIs in our AZ (created, never attached) are ours to remove;
    // ENIs in the other AZ are the peer's business.
    let mut attached = enis.iter().filter(|e| {
        e.attach
            .as_ref()
            .is_some_and(|a| a.instance == p.id.instance_id)
    });
    let adopt = attached.next();
    let extra = attached.map(|e| e.id.clone());
    let orphans = enis
        .iter()
        .filter(|e| e.az == p.id.availability_zone && e.attach.is_none())
        .map(|e| e.id.clone());
    let remove: BTreeSet<String> = extra.chain(orphans).collect();
    if let Some(a) = adopt {
        tracing::info!(eni = %a.id, "reconcile: adopting the VIP interface attached to this node");
    }
    let doomed: Vec<&EniV> = enis.iter().filter(|e| remove.contains(&e.id)).collect();
    try_join_all(doomed.iter().map(|e| remove_eni(p, rec, e))).await?;
    Ok(())
}

pub(crate) async fn status(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<CloudStatus, CloudError> {
    let block = cidr_block(p)?;
    let (vips, eips) = split(pairs);
    let view = describe_view(p, rec, block, &eips).await?;
    let mut facts = Vec::new();
    let mut missing = Vec::new();
    let az = &p.id.availability_zone;
    for s in &view.subnets {
        facts.push(format!("VIP subnet {} {block} in {}", s.id, s.az));
    }
    match view.subnets.iter().filter(|s| &s.az == az).count() {
        1 => {}
        n => missing.push(format!("{n} VIP subnets in {az}, want 1")),
    }
    if view.subnets.iter().any(|s| &s.az != az) {
        missing.push("a VIP subnet exists in another AZ".into());
    }
    for e in &view.enis {
        facts.push(format!(
            "{ENI_NAME} {} ({}) in {} attached to {} ({}), ips {:?}, source/dest check {}",
            e.id,
            e.status,
            e.az,
            e.attach
                .as_ref()
                .map(|a| a.instance.as_str())
                .unwrap_or("nothing"),
            e.attach.as_ref().map(|a| a.status.as_str()).unwrap_or("-"),
            e.ips,
            e.src_dst
        ));
    }
    let mine: Vec<&EniV> = view
        .enis
        .iter()
        .filter(|e| {
            e.attach
                .as_ref()
                .is_some_and(|a| a.instance == p.id.instance_id)
        })
        .collect();
    if view.enis.len() != 1 || mine.len() != 1 {
        missing.push(format!(
            "{} {ENI_NAME} in the VPC, {} attached here; want exactly one, attached here",
            view.enis.len(),
            mine.len()
        ));
    }
    if let Some(e) = mine.first() {
        if e.src_dst {
            missing.push(format!("source/dest check is on for {}", e.id));
        }
        for v in &vips {
            if !e.ips.contains(v) {
                missing.push(format!("{} does not carry VIP {v}", e.id));
            }
        }
    }
    let mut holds_eip = false;
    for (eip, vip) in pairs {
        let a = view.addrs.get(eip);
        let target = a.map(|a| (a.eni.clone(), a.private_ip));
        facts.push(format!("EIP {eip} -> {:?}", target));
        let here = a.is_some_and(|a| {
            mine.first()
                .is_some_and(|m| a.eni.as_deref() == Some(m.id.as_str()))
        });
        holds_eip |= here;
        if !(here && a.is_some_and(|a| a.private_ip == Some(*vip))) {
            missing.push(format!(
                "EIP {eip} does not point at VIP {vip} on this node"
            ));
        }
    }
    Ok(CloudStatus {
        provider: "aws-eni".into(),
        is_master: missing.is_empty(),
        holds_any: !mine.is_empty() || holds_eip,
        facts,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_validation_names_the_problem() {
        let block: Ipv4Net = "10.0.100.0/24".parse().unwrap();
        assert!(validate_vips(block, &["10.0.100.10".parse().unwrap()]).is_ok());
        let e = validate_vips(block, &["10.0.101.10".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("inside --cloudcidrblock"), "{e}");
        let e = validate_vips(block, &["10.0.100.2".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("reserves"), "{e}");
        let e = validate_vips(block, &["10.0.100.255".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("reserves"), "{e}");
        let e = validate_vips("10.0.100.0/30".parse().unwrap(), &[]).unwrap_err();
        assert!(e.to_string().contains("/28"), "{e}");
        let e = validate_vips("10.0.100.5/24".parse().unwrap(), &[]).unwrap_err();
        assert!(e.to_string().contains("10.0.100.0/24"), "{e}");
    }
}
