//! ENI mode, the individual steps. Each one is idempotent: deletes treat
//! "not found" as done, creates adopt what a previous run left, and waits
//! for eventual consistency are bounded polls.

use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{AttributeBooleanValue, PrivateIpAddressSpecification, ResourceType};
use ipnet::Ipv4Net;

use super::eni_view::{EniV, View, describe_enis, describe_subnets, describe_vpc_cidrs, eni_view};
use super::{AwsProvider, ENI_NAME, ROLE_ENI, ROLE_SUBNET, SUBNET_NAME, TAG_CLUSTER};
use crate::{CloudError, ErrorClass, Recorder};

/// One delete attempt inside a bounded poll: done once the resource is gone
/// (deleted now, or already), poll again while EC2 says it is not ready
/// (still detaching or in use), fail on anything else.
fn deleted<T>(res: Result<T, CloudError>) -> Result<Option<()>, CloudError> {
    match res {
        Ok(_) => Ok(Some(())),
        Err(e) if e.is_not_found() => Ok(Some(())),
        Err(e) if e.class() == ErrorClass::NotReady => Ok(None),
        Err(e) => Err(e),
    }
}

/// Detaches (force) and deletes one ENI. Idempotent.
pub(crate) async fn remove_eni(
    p: &AwsProvider,
    rec: &Recorder,
    eni: &EniV,
) -> Result<(), CloudError> {
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
            deleted(
                p.ec2
                    .call(rec, "ec2:DeleteNetworkInterface", &eni.id, true, || {
                        p.ec2
                            .client
                            .delete_network_interface()
                            .network_interface_id(&eni.id)
                            .send()
                    })
                    .await,
            )
        })
        .await
}

/// Removes a subnet's explicit route-table association (EC2 drops it with the
/// subnet, but saying so explicitly keeps the route table clean everywhere).
pub(crate) async fn disassociate_rtb(
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

pub(crate) async fn delete_subnet(
    p: &AwsProvider,
    rec: &Recorder,
    id: &str,
) -> Result<(), CloudError> {
    p.ec2
        .poll(&format!("delete {id}"), "deleted", || async {
            deleted(
                p.ec2
                    .call(rec, "ec2:DeleteSubnet", id, true, || {
                        p.ec2.client.delete_subnet().subnet_id(id).send()
                    })
                    .await,
            )
        })
        .await
}

pub(crate) async fn ensure_vpc_cidr(
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

pub(crate) async fn create_subnet(
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

pub(crate) async fn create_eni(
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
pub(crate) async fn ensure_rtb(
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

pub(crate) async fn associate_eip(
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

pub(crate) async fn disable_src_dst(
    p: &AwsProvider,
    rec: &Recorder,
    eni: &str,
) -> Result<(), CloudError> {
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

pub(crate) async fn describe_eni(
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
