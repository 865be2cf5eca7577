//! ENI mode, reading: one parallel round of Describe calls that gives the
//! whole picture (VPC CIDRs, VIP subnets, `loxi-eni`s, EIPs, route tables),
//! filtered on this cluster's tags.

use std::{collections::HashMap, net::Ipv4Addr};

use aws_sdk_ec2::types::NetworkInterface;
use ipnet::Ipv4Net;

use super::{AwsProvider, ENI_NAME, ROLE_ENI, TAG_CLUSTER, TAG_ROLE};
use crate::{CloudError, Recorder};

/// A VIP subnet as described.
#[derive(Debug, Clone)]
pub(crate) struct SubnetV {
    pub id: String,
    pub az: String,
    pub ours: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AttachV {
    pub id: String,
    pub instance: String,
    pub status: String,
}

/// A VIP ENI as described.
#[derive(Debug, Clone)]
pub(crate) struct EniV {
    pub id: String,
    pub subnet: String,
    pub az: String,
    pub status: String,
    pub attach: Option<AttachV>,
    pub ips: Vec<Ipv4Addr>,
    pub src_dst: bool,
    pub mac: String,
}

/// An Elastic IP as described.
#[derive(Debug, Clone)]
pub(crate) struct AddrV {
    pub allocation_id: String,
    pub association_id: Option<String>,
    pub eni: Option<String>,
    pub private_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Default)]
pub(crate) struct View {
    pub vpc_cidrs: Vec<(Ipv4Net, String)>,
    pub subnets: Vec<SubnetV>,
    pub enis: Vec<EniV>,
    pub addrs: HashMap<Ipv4Addr, AddrV>,
    /// Route table of the instance's own subnet (explicit, else the main one).
    pub instance_rtb: Option<(String, bool)>,
    /// subnet id -> (association id, route table id), explicit associations only.
    pub assoc: HashMap<String, (String, String)>,
}

pub(crate) fn eni_view(n: &NetworkInterface) -> EniV {
    EniV {
        id: n.network_interface_id().unwrap_or_default().to_string(),
        subnet: n.subnet_id().unwrap_or_default().to_string(),
        az: n.availability_zone().unwrap_or_default().to_string(),
        status: n
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        attach: n.attachment().and_then(|a| {
            let status = a
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            (status != "detached").then(|| AttachV {
                id: a.attachment_id().unwrap_or_default().to_string(),
                instance: a.instance_id().unwrap_or_default().to_string(),
                status,
            })
        }),
        ips: n
            .private_ip_addresses()
            .iter()
            .filter_map(|p| p.private_ip_address()?.parse().ok())
            .collect(),
        src_dst: n.source_dest_check().unwrap_or(true),
        mac: n.mac_address().unwrap_or_default().to_string(),
    }
}

pub(crate) async fn describe_addresses(
    p: &AwsProvider,
    rec: &Recorder,
    eips: &[Ipv4Addr],
) -> Result<HashMap<Ipv4Addr, AddrV>, CloudError> {
    if eips.is_empty() {
        return Ok(HashMap::new());
    }
    let f = AwsProvider::filter("public-ip", eips.iter().map(|e| e.to_string()));
    let out = p
        .ec2
        .call(rec, "ec2:DescribeAddresses", "eips", false, || {
            p.ec2.client.describe_addresses().filters(f.clone()).send()
        })
        .await?;
    let mut m = HashMap::new();
    for a in out.addresses() {
        let (Some(ip), Some(alloc)) = (
            a.public_ip().and_then(|s| s.parse().ok()),
            a.allocation_id(),
        ) else {
            continue;
        };
        m.insert(
            ip,
            AddrV {
                allocation_id: alloc.to_string(),
                association_id: a.association_id().map(str::to_string),
                eni: a.network_interface_id().map(str::to_string),
                private_ip: a.private_ip_address().and_then(|s| s.parse().ok()),
            },
        );
    }
    for e in eips {
        if !m.contains_key(e) {
            return Err(CloudError::invalid(
                "externalIP",
                e,
                "no Elastic IP with this public address in this account and region",
            ));
        }
    }
    let mut cache = p.alloc_cache.lock().unwrap_or_else(|x| x.into_inner());
    for (ip, a) in &m {
        cache.insert(*ip, a.allocation_id.clone());
    }
    Ok(m)
}

pub(crate) async fn describe_enis(
    p: &AwsProvider,
    rec: &Recorder,
) -> Result<Vec<EniV>, CloudError> {
    let filters = [
        AwsProvider::filter("vpc-id", [p.id.vpc_id.clone()]),
        p.cluster_filter(),
        AwsProvider::filter(&format!("tag:{TAG_ROLE}"), [ROLE_ENI.to_string()]),
    ];
    let out = p
        .ec2
        .call(
            rec,
            "ec2:DescribeNetworkInterfaces",
            ENI_NAME,
            false,
            || {
                p.ec2
                    .client
                    .describe_network_interfaces()
                    .set_filters(Some(filters.to_vec()))
                    .send()
            },
        )
        .await?;
    Ok(out.network_interfaces().iter().map(eni_view).collect())
}

pub(crate) async fn describe_subnets(
    p: &AwsProvider,
    rec: &Recorder,
    block: Ipv4Net,
) -> Result<Vec<SubnetV>, CloudError> {
    let filters = [
        AwsProvider::filter("vpc-id", [p.id.vpc_id.clone()]),
        AwsProvider::filter("cidr-block", [block.to_string()]),
    ];
    let out = p
        .ec2
        .call(
            rec,
            "ec2:DescribeSubnets",
            &block.to_string(),
            false,
            || {
                p.ec2
                    .client
                    .describe_subnets()
                    .set_filters(Some(filters.to_vec()))
                    .send()
            },
        )
        .await?;
    Ok(out
        .subnets()
        .iter()
        .map(|s| SubnetV {
            id: s.subnet_id().unwrap_or_default().to_string(),
            az: s.availability_zone().unwrap_or_default().to_string(),
            ours: s.tags().iter().any(|t| {
                t.key() == Some(TAG_CLUSTER) && t.value() == Some(p.opts.cluster.as_str())
            }),
        })
        .collect())
}

pub(crate) async fn describe_vpc_cidrs(
    p: &AwsProvider,
    rec: &Recorder,
) -> Result<Vec<(Ipv4Net, String)>, CloudError> {
    let out = p
        .ec2
        .call(rec, "ec2:DescribeVpcs", &p.id.vpc_id, false, || {
            p.ec2.client.describe_vpcs().vpc_ids(&p.id.vpc_id).send()
        })
        .await?;
    let mut v = Vec::new();
    for vpc in out.vpcs() {
        for a in vpc.cidr_block_association_set() {
            let state = a
                .cidr_block_state()
                .and_then(|s| s.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "associated".into());
            if let Some(net) = a.cidr_block().and_then(|c| c.parse().ok()) {
                v.push((net, state));
            }
        }
        if v.is_empty()
            && let Some(net) = vpc.cidr_block().and_then(|c| c.parse().ok())
        {
            v.push((net, "associated".into()));
        }
    }
    Ok(v)
}

pub(crate) async fn describe_route_tables(
    p: &AwsProvider,
    rec: &Recorder,
) -> Result<(Option<(String, bool)>, HashMap<String, (String, String)>), CloudError> {
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
    let mut main = None;
    let mut explicit = None;
    let mut assoc = HashMap::new();
    for rt in out.route_tables() {
        let rtb = rt.route_table_id().unwrap_or_default().to_string();
        for a in rt.associations() {
            if a.main() == Some(true) {
                main = Some(rtb.clone());
            } else if let Some(sn) = a.subnet_id() {
                if sn == p.id.subnet_id {
                    explicit = Some(rtb.clone());
                }
                assoc.insert(
                    sn.to_string(),
                    (
                        a.route_table_association_id()
                            .unwrap_or_default()
                            .to_string(),
                        rtb.clone(),
                    ),
                );
            }
        }
    }
    let inst = explicit.map(|r| (r, false)).or(main.map(|r| (r, true)));
    Ok((inst, assoc))
}

/// One parallel round of reads.
pub(crate) async fn describe_view(
    p: &AwsProvider,
    rec: &Recorder,
    block: Ipv4Net,
    eips: &[Ipv4Addr],
) -> Result<View, CloudError> {
    let (vpc_cidrs, subnets, enis, addrs, (instance_rtb, assoc)) = tokio::try_join!(
        describe_vpc_cidrs(p, rec),
        describe_subnets(p, rec, block),
        describe_enis(p, rec),
        describe_addresses(p, rec, eips),
        describe_route_tables(p, rec),
    )?;
    Ok(View {
        vpc_cidrs,
        subnets,
        enis,
        addrs,
        instance_rtb,
        assoc,
    })
}
