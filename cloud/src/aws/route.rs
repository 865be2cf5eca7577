//! Route mode: the VIPs lie outside the VPC CIDR. Each given route table
//! sends VIP/32 to the MASTER's primary ENI, and each EIP is associated with
//! the MASTER's primary private IP. No subnet or ENI churn: every call is
//! independent of the others, so promotion is one parallel round:
//!
//! ```text
//!  R1  ReplaceRoute(rtb_i, VIP_j/32 -> eni)  (CreateRoute when absent)   for all i, j
//!      || AssociateAddress(EIP_k -> primary private IP, AllowReassociation) for all k
//!      || ModifyNetworkInterfaceAttribute(SourceDestCheck=false)
//! ```
//!
//! The EIPs' allocation ids are looked up once (at `reconcile`, or on the
//! first promotion) and cached: they never change.

use std::net::{IpAddr, Ipv4Addr};

use aws_sdk_ec2::types::AttributeBooleanValue;
use futures::future::try_join_all;

use super::AwsProvider;
use crate::{CloudError, CloudStatus, Recorder, netconf};

fn private_ip(p: &AwsProvider) -> Result<Ipv4Addr, CloudError> {
    p.id.private_ip.ok_or_else(|| {
        CloudError::invalid(
            "local-ipv4",
            "(missing)",
            "IMDS did not report this instance's private IPv4",
        )
    })
}

/// "There is no such route": EC2 answers ReplaceRoute on a missing route
/// with InvalidParameterValue ("... Use CreateRoute instead") or InvalidRoute.NotFound.
fn route_missing(e: &CloudError) -> bool {
    e.code() == Some("InvalidRoute.NotFound")
        || (e.code() == Some("InvalidParameterValue")
            && e.api_message().is_some_and(|m| m.contains("no route")))
}

async fn point_route(
    p: &AwsProvider,
    rec: &Recorder,
    rtb: &str,
    vip: Ipv4Addr,
) -> Result<(), CloudError> {
    let dest = format!("{vip}/32");
    let target = format!("{rtb} {dest}");
    let replace = || {
        p.ec2
            .client
            .replace_route()
            .route_table_id(rtb)
            .destination_cidr_block(&dest)
            .network_interface_id(&p.id.primary_eni)
            .send()
    };
    let create = || {
        p.ec2
            .client
            .create_route()
            .route_table_id(rtb)
            .destination_cidr_block(&dest)
            .network_interface_id(&p.id.primary_eni)
            .send()
    };
    let key = (rtb.to_string(), vip);
    let exists = p
        .routes_seen
        .lock()
        .unwrap_or_else(|x| x.into_inner())
        .contains(&key);
    let mut use_replace = exists;
    // At most three tries: a route that appears or vanishes in between flips the call.
    for _ in 0..3 {
        let r = if use_replace {
            p.ec2
                .call(rec, "ec2:ReplaceRoute", &target, true, replace)
                .await
                .map(|_| ())
        } else {
            p.ec2
                .call(rec, "ec2:CreateRoute", &target, true, create)
                .await
                .map(|_| ())
        };
        match r {
            Ok(()) => {
                p.routes_seen
                    .lock()
                    .unwrap_or_else(|x| x.into_inner())
                    .insert(key);
                return Ok(());
            }
            Err(e) if use_replace && route_missing(&e) => use_replace = false,
            Err(e) if !use_replace && e.code() == Some("RouteAlreadyExists") => use_replace = true,
            Err(e) => return Err(e),
        }
    }
    Err(CloudError::Api {
        call: "ec2:ReplaceRoute".into(),
        class: crate::ErrorClass::Fatal,
        code: None,
        message: format!("{target}: the route kept appearing and vanishing"),
    })
}

pub(crate) async fn promote(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let me = private_ip(p)?;
    let eips: Vec<Ipv4Addr> = pairs.iter().map(|(e, _)| *e).collect();
    let allocs = p.allocation_ids(rec, &eips).await?;
    let mut vips: Vec<Ipv4Addr> = pairs.iter().map(|(_, v)| *v).collect();
    vips.sort();
    vips.dedup();
    let routes = p
        .opts
        .route_tables
        .iter()
        .flat_map(|rtb| vips.iter().map(move |v| point_route(p, rec, rtb, *v)));
    let eip_moves = allocs.iter().map(|(eip, alloc)| async move {
        p.ec2
            .call(rec, "ec2:AssociateAddress", &eip.to_string(), true, || {
                p.ec2
                    .client
                    .associate_address()
                    .allocation_id(alloc)
                    .network_interface_id(&p.id.primary_eni)
                    .private_ip_address(me.to_string())
                    .allow_reassociation(true)
                    .send()
            })
            .await
            .map(|_| ())
    });
    let src_dst = p.ec2.call(
        rec,
        "ec2:ModifyNetworkInterfaceAttribute",
        &p.id.primary_eni,
        true,
        || {
            p.ec2
                .client
                .modify_network_interface_attribute()
                .network_interface_id(&p.id.primary_eni)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send()
        },
    );
    tokio::try_join!(try_join_all(routes), try_join_all(eip_moves), src_dst)?;
    if p.opts.os_config {
        let handle = netconf::connect().await?;
        let mac = netconf::parse_mac(&p.id.mac)?;
        let link = netconf::wait_link_by_mac(&handle, rec, mac, p.ec2.policy.poll_timeout).await?;
        for v in &vips {
            netconf::add_address(&handle, rec, &link, IpAddr::V4(*v), 32).await?;
        }
    }
    Ok(())
}

/// Routes stay until the new MASTER replaces them (removing them would only
/// black-hole the VIPs sooner); the VIPs leave this host.
pub(crate) async fn demote(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    if p.opts.os_config {
        let handle = netconf::connect().await?;
        let mac = netconf::parse_mac(&p.id.mac)?;
        let links = netconf::links(&handle).await?;
        if let Some(link) = links.iter().find(|l| l.mac == Some(mac)) {
            for (_, v) in pairs {
                netconf::del_address(&handle, rec, link, IpAddr::V4(*v)).await?;
            }
        }
    }
    Ok(())
}

/// Resolves (and caches) the EIPs and checks that every route table exists.
pub(crate) async fn reconcile(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let eips: Vec<Ipv4Addr> = pairs.iter().map(|(e, _)| *e).collect();
    let (_, tables) = tokio::try_join!(p.allocation_ids(rec, &eips), describe_tables(p, rec))?;
    let mut seen = p.routes_seen.lock().unwrap_or_else(|x| x.into_inner());
    for rtb in &p.opts.route_tables {
        let Some(t) = tables
            .iter()
            .find(|t| t.route_table_id() == Some(rtb.as_str()))
        else {
            return Err(CloudError::invalid(
                "--cloud-route-tables",
                rtb,
                format!("no such route table in {}", p.id.vpc_id),
            ));
        };
        for (_, vip) in pairs {
            let dest = format!("{vip}/32");
            if t.routes()
                .iter()
                .any(|r| r.destination_cidr_block() == Some(dest.as_str()))
            {
                seen.insert((rtb.clone(), *vip));
            }
        }
    }
    Ok(())
}

pub(crate) async fn describe_tables(
    p: &AwsProvider,
    rec: &Recorder,
) -> Result<Vec<aws_sdk_ec2::types::RouteTable>, CloudError> {
    let f = AwsProvider::filter("vpc-id", [p.id.vpc_id.clone()]);
    let out = p
        .ec2
        .call(rec, "ec2:DescribeRouteTables", &p.id.vpc_id, false, || {
            p.ec2
                .client
                .describe_route_tables()
                .filters(f.clone())
                .send()
        })
        .await?;
    Ok(out.route_tables().to_vec())
}

pub(crate) async fn status(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<CloudStatus, CloudError> {
    let me = private_ip(p)?;
    let eips: Vec<Ipv4Addr> = pairs.iter().map(|(e, _)| *e).collect();
    let (tables, addrs) = tokio::try_join!(
        describe_tables(p, rec),
        super::eni_view::describe_addresses(p, rec, &eips)
    )?;
    let mut facts = Vec::new();
    let mut missing = Vec::new();
    let mut holds_any = false;
    for rtb in &p.opts.route_tables {
        let table = tables
            .iter()
            .find(|t| t.route_table_id() == Some(rtb.as_str()));
        for (_, vip) in pairs {
            let dest = format!("{vip}/32");
            let target = table.and_then(|t| {
                t.routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some(dest.as_str()))
                    .map(|r| r.network_interface_id().unwrap_or("-").to_string())
            });
            facts.push(format!(
                "{rtb}: {dest} -> {}",
                target.as_deref().unwrap_or("(none)")
            ));
            if target.as_deref() == Some(p.id.primary_eni.as_str()) {
                holds_any = true;
            } else {
                missing.push(format!(
                    "{rtb}: {dest} does not point at {}",
                    p.id.primary_eni
                ));
            }
        }
    }
    for (eip, _) in pairs {
        let a = addrs.get(eip);
        facts.push(format!(
            "EIP {eip} -> {:?}",
            a.map(|a| (a.eni.clone(), a.private_ip))
        ));
        let here = a.is_some_and(|a| {
            a.eni.as_deref() == Some(p.id.primary_eni.as_str()) && a.private_ip == Some(me)
        });
        holds_any |= here;
        if !here {
            missing.push(format!(
                "EIP {eip} does not point at {me} on {}",
                p.id.primary_eni
            ));
        }
    }
    Ok(CloudStatus {
        provider: "aws-route".into(),
        is_master: missing.is_empty(),
        holds_any,
        facts,
        missing,
    })
}
