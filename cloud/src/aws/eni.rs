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

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, NetworkInterface, PrivateIpAddressSpecification, ResourceType,
};
use futures::future::try_join_all;
use ipnet::Ipv4Net;

use super::{AwsProvider, ENI_NAME, ROLE_ENI, ROLE_SUBNET, SUBNET_NAME, TAG_CLUSTER, TAG_ROLE};
use crate::{CloudError, CloudStatus, ErrorClass, Recorder, netconf};

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

fn eni_view(n: &NetworkInterface) -> EniV {
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

async fn describe_subnets(
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

async fn describe_vpc_cidrs(
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

async fn describe_route_tables(
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

/// Detaches (force) and deletes one ENI. Idempotent.
async fn remove_eni(p: &AwsProvider, rec: &Recorder, eni: &EniV) -> Result<(), CloudError> {
    if let Some(a) = &eni.attach {
        match p
            .ec2
            .call(rec, "ec2:DetachNetworkInterface", &eni.id, true, || {
                p.ec2
                    .client
                    .detach_network_interface()
                    .attachment_id(&a.id)
                    .force(true)
                    .send()
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) if e.class() == ErrorClass::NotReady => {}
            Err(e) => return Err(e),
        }
    }
    p.ec2
        .poll(&format!("delete {}", eni.id), "deleted", || async {
            match p
                .ec2
                .call(rec, "ec2:DeleteNetworkInterface", &eni.id, true, || {
                    p.ec2
                        .client
                        .delete_network_interface()
                        .network_interface_id(&eni.id)
                        .send()
                })
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(e) if e.is_not_found() => Ok(Some(())),
                // Still detaching: poll.
                Err(e) if e.class() == ErrorClass::NotReady => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
}

/// Removes a subnet's explicit route-table association (EC2 drops it with the
/// subnet, but saying so explicitly keeps the route table clean everywhere).
async fn disassociate_rtb(
    p: &AwsProvider,
    rec: &Recorder,
    assoc_id: &str,
) -> Result<(), CloudError> {
    match p
        .ec2
        .call(rec, "ec2:DisassociateRouteTable", assoc_id, true, || {
            p.ec2
                .client
                .disassociate_route_table()
                .association_id(assoc_id)
                .send()
        })
        .await
    {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

async fn delete_subnet(p: &AwsProvider, rec: &Recorder, id: &str) -> Result<(), CloudError> {
    p.ec2
        .poll(&format!("delete {id}"), "deleted", || async {
            match p
                .ec2
                .call(rec, "ec2:DeleteSubnet", id, true, || {
                    p.ec2.client.delete_subnet().subnet_id(id).send()
                })
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(e) if e.is_not_found() => Ok(Some(())),
                Err(e) if e.class() == ErrorClass::NotReady => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
}

async fn ensure_vpc_cidr(
    p: &AwsProvider,
    rec: &Recorder,
    view: &View,
    block: Ipv4Net,
) -> Result<(), CloudError> {
    let covering = view.vpc_cidrs.iter().find(|(net, _)| net.contains(&block));
    match covering {
        Some((_, state)) if state == "associated" => return Ok(()),
        Some(_) => {}
        None => {
            p.ec2
                .call(
                    rec,
                    "ec2:AssociateVpcCidrBlock",
                    &block.to_string(),
                    true,
                    || {
                        p.ec2
                            .client
                            .associate_vpc_cidr_block()
                            .vpc_id(&p.id.vpc_id)
                            .cidr_block(block.to_string())
                            .send()
                    },
                )
                .await?;
        }
    }
    p.ec2
        .poll(&format!("VPC CIDR {block}"), "associated", || async {
            let cidrs = describe_vpc_cidrs(p, rec).await?;
            Ok(cidrs
                .iter()
                .any(|(n, s)| n.contains(&block) && s == "associated")
                .then_some(()))
        })
        .await
}

async fn create_subnet(
    p: &AwsProvider,
    rec: &Recorder,
    block: Ipv4Net,
) -> Result<String, CloudError> {
    let tags = p.tags(ResourceType::Subnet, SUBNET_NAME, ROLE_SUBNET);
    p.ec2
        .poll(&format!("VIP subnet {block}"), "created", || async {
            let r = p
                .ec2
                .call(rec, "ec2:CreateSubnet", &block.to_string(), true, || {
                    p.ec2
                        .client
                        .create_subnet()
                        .vpc_id(&p.id.vpc_id)
                        .cidr_block(block.to_string())
                        .availability_zone(&p.id.availability_zone)
                        .tag_specifications(tags.clone())
                        .send()
                })
                .await;
            match r {
                Ok(out) => Ok(out.subnet().and_then(|s| s.subnet_id()).map(str::to_string)),
                // The old subnet's deletion is not visible yet, or a previous
                // run created ours: look again.
                Err(e) if e.code() == Some("InvalidSubnet.Conflict") => {
                    let subnets = describe_subnets(p, rec, block).await?;
                    Ok(subnets
                        .into_iter()
                        .find(|s| s.ours && s.az == p.id.availability_zone)
                        .map(|s| s.id))
                }
                Err(e) => Err(e),
            }
        })
        .await
}

async fn create_eni(
    p: &AwsProvider,
    rec: &Recorder,
    subnet: &str,
    vips: &[Ipv4Addr],
) -> Result<EniV, CloudError> {
    let specs: Vec<PrivateIpAddressSpecification> = vips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            PrivateIpAddressSpecification::builder()
                .primary(i == 0)
                .private_ip_address(v.to_string())
                .build()
        })
        .collect();
    let tags = p.tags(ResourceType::NetworkInterface, ENI_NAME, ROLE_ENI);
    let r = p
        .ec2
        .call(rec, "ec2:CreateNetworkInterface", subnet, true, || {
            p.ec2
                .client
                .create_network_interface()
                .subnet_id(subnet)
                .description(format!("floatlb-vip-eni-{}", p.opts.cluster))
                .set_private_ip_addresses(Some(specs.clone()))
                .set_groups(Some(p.id.security_groups.clone()))
                .tag_specifications(tags.clone())
                .send()
        })
        .await;
    match r {
        Ok(out) => out
            .network_interface()
            .map(eni_view)
            .ok_or_else(|| CloudError::Api {
                call: "ec2:CreateNetworkInterface".into(),
                class: ErrorClass::Fatal,
                code: None,
                message: "the response carries no network interface".into(),
            }),
        Err(e) if e.code() == Some("InvalidIPAddress.InUse") => {
            // A previous run may have created it: adopt ours, refuse others'.
            describe_enis(p, rec)
                .await?
                .into_iter()
                .find(|n| n.subnet == subnet && n.ips.contains(&vips[0]))
                .ok_or_else(|| CloudError::Foreign {
                    resource: format!("VIP {}", vips[0]),
                    why: format!(
                        "another interface not tagged {TAG_CLUSTER}={} holds it",
                        p.opts.cluster
                    ),
                })
        }
        Err(e) => Err(e),
    }
}

/// Gives the VIP subnet the instance subnet's route table (internet egress).
async fn ensure_rtb(
    p: &AwsProvider,
    rec: &Recorder,
    view: &View,
    subnet: &str,
) -> Result<(), CloudError> {
    let Some((rtb, is_main)) = &view.instance_rtb else {
        return Ok(());
    };
    match view.assoc.get(subnet) {
        Some((_, cur)) if cur == rtb => Ok(()),
        Some((assoc_id, _)) => p
            .ec2
            .call(
                rec,
                "ec2:ReplaceRouteTableAssociation",
                subnet,
                true,
                || {
                    p.ec2
                        .client
                        .replace_route_table_association()
                        .association_id(assoc_id)
                        .route_table_id(rtb)
                        .send()
                },
            )
            .await
            .map(|_| ()),
        // Implicitly on the main table, like the instance subnet.
        None if *is_main => Ok(()),
        None => match p
            .ec2
            .call(rec, "ec2:AssociateRouteTable", subnet, true, || {
                p.ec2
                    .client
                    .associate_route_table()
                    .route_table_id(rtb)
                    .subnet_id(subnet)
                    .send()
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("Resource.AlreadyAssociated") => Ok(()),
            Err(e) => Err(e),
        },
    }
}

async fn associate_eip(
    p: &AwsProvider,
    rec: &Recorder,
    alloc: &str,
    eni: &str,
    vip: Ipv4Addr,
) -> Result<(), CloudError> {
    p.ec2
        .call(rec, "ec2:AssociateAddress", alloc, true, || {
            p.ec2
                .client
                .associate_address()
                .allocation_id(alloc)
                .network_interface_id(eni)
                .private_ip_address(vip.to_string())
                .allow_reassociation(true)
                .send()
        })
        .await
        .map(|_| ())
}

async fn disable_src_dst(p: &AwsProvider, rec: &Recorder, eni: &str) -> Result<(), CloudError> {
    p.ec2
        .call(
            rec,
            "ec2:ModifyNetworkInterfaceAttribute",
            eni,
            true,
            || {
                p.ec2
                    .client
                    .modify_network_interface_attribute()
                    .network_interface_id(eni)
                    .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                    .send()
            },
        )
        .await
        .map(|_| ())
}

async fn describe_eni(
    p: &AwsProvider,
    rec: &Recorder,
    id: &str,
) -> Result<Option<EniV>, CloudError> {
    match p
        .ec2
        .call(rec, "ec2:DescribeNetworkInterfaces", id, false, || {
            p.ec2
                .client
                .describe_network_interfaces()
                .network_interface_ids(id)
                .send()
        })
        .await
    {
        Ok(out) => Ok(out.network_interfaces().first().map(eni_view)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether this ENI belongs here: in this AZ and not attached elsewhere.
fn is_local(p: &AwsProvider, e: &EniV) -> bool {
    e.az == p.id.availability_zone
        && e.attach
            .as_ref()
            .is_none_or(|a| a.instance == p.id.instance_id)
}

pub(crate) async fn promote(
    p: &AwsProvider,
    rec: &Recorder,
    pairs: &[(Ipv4Addr, Ipv4Addr)],
) -> Result<(), CloudError> {
    let block = p
        .opts
        .cidr_block
        .ok_or_else(|| CloudError::invalid("--cloudcidrblock", "(missing)", "ENI mode needs it"))?;
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
    let block = p
        .opts
        .cidr_block
        .ok_or_else(|| CloudError::invalid("--cloudcidrblock", "(missing)", "ENI mode needs it"))?;
    let (vips, eips) = split(pairs);
    let (enis, addrs, subnets, (_, assoc)) = tokio::try_join!(
        describe_enis(p, rec),
        describe_addresses(p, rec, &eips),
        describe_subnets(p, rec, block),
        describe_route_tables(p, rec),
    )?;
    let mine: Vec<&EniV> = enis
        .iter()
        .filter(|e| {
            e.attach
                .as_ref()
                .is_some_and(|a| a.instance == p.id.instance_id)
                || (e.az == p.id.availability_zone && e.attach.is_none())
        })
        .collect();
    if p.opts.os_config {
        let handle = netconf::connect().await?;
        let links = netconf::links(&handle).await?;
        for e in &mine {
            let mac = netconf::parse_mac(&e.mac)?;
            if let Some(link) = links.iter().find(|l| l.mac == Some(mac)) {
                for v in &vips {
                    netconf::del_address(&handle, rec, link, (*v).into()).await?;
                }
            }
        }
    }
    let disassociate = addrs.values().filter_map(|a| {
        let eni = a.eni.as_deref()?;
        let assoc = a.association_id.as_deref()?;
        mine.iter().any(|m| m.id == eni).then(|| async move {
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
    let block = p
        .opts
        .cidr_block
        .ok_or_else(|| CloudError::invalid("--cloudcidrblock", "(missing)", "ENI mode needs it"))?;
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
