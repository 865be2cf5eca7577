//! `floatlb cloud dry-run`: proves this node's IAM permissions on the real
//! account before the first failover, without changing anything.
//!
//! The provider reads the current state (the same Describe round a promotion
//! starts with, which also proves the read permissions), then sends every
//! write a failover would make in this mode with `DryRun=true`, against the
//! resources that exist now: EC2 authorises the request exactly as it would
//! the real one and answers `DryRunOperation` (allowed) or
//! `UnauthorizedOperation` (denied) without doing anything. A write whose
//! resource does not exist yet (no VIP subnet or `loxi-eni` before the first
//! promotion) is reported as skipped with the reason; any other answer is
//! inconclusive and shows EC2's message. An endpoint that ignores DryRun and
//! performs the call is reported as inconclusive too, never as allowed.
//!
//! ENI mode, in failover order: detach/delete the current `loxi-eni`, drop the
//! VIP subnet's route-table association and the subnet, associate the block
//! with the VPC (only when it is not a VPC CIDR yet), create the subnet and
//! the interface (with the tags and security groups floatlb uses), give the
//! subnet the instance subnet's route table, attach, source/dest check,
//! associate and disassociate each EIP, and the lease tag. EC2 has no DryRun
//! for `AssociateVpcCidrBlock` and `AssignPrivateIpAddresses`: they are
//! reported as skipped, saying so. Route mode: the
//! VIP routes (ReplaceRoute where the route exists, else CreateRoute), each
//! EIP to the primary private IP, source/dest check on the primary ENI, and
//! the lease tag.

use std::{future::Future, net::Ipv4Addr};

use aws_sdk_ec2::{
    error::{ProvideErrorMetadata, SdkError},
    types::{AttributeBooleanValue, ResourceType, Tag},
};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::{
    AwsMode, AwsProvider, ENI_NAME, ROLE_ENI, ROLE_SUBNET, SUBNET_NAME, TAG_LEASE, aws_pairs,
    eni_view::{View, describe_addresses, describe_view},
};
use crate::{Action, CloudError, ErrorClass, FloatingSet, Recorder};

/// What EC2 answered to one DryRun request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `DryRunOperation`: the real call would be authorised.
    Allowed,
    /// `UnauthorizedOperation` / `AccessDenied`: the policy lacks it.
    Denied,
    /// Not sent: the resource it needs does not exist yet.
    Skipped,
    /// Any other answer (EC2's message is in `detail`).
    Inconclusive,
}

/// One probed call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DryRunCheck {
    /// `ec2:Action`.
    pub action: String,
    /// The resource(s) the request names.
    pub target: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// Every check of one dry run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DryRunReport {
    pub provider: String,
    pub checks: Vec<DryRunCheck>,
}

impl DryRunReport {
    pub fn denied(&self) -> Vec<&DryRunCheck> {
        self.with(Verdict::Denied)
    }

    pub fn with(&self, v: Verdict) -> Vec<&DryRunCheck> {
        self.checks.iter().filter(|c| c.verdict == v).collect()
    }

    /// Every probed call was allowed (skipped ones aside).
    pub fn all_allowed(&self) -> bool {
        self.checks
            .iter()
            .all(|c| matches!(c.verdict, Verdict::Allowed | Verdict::Skipped))
    }
}

struct Run<'a> {
    p: &'a AwsProvider,
    rec: Recorder,
    checks: Vec<DryRunCheck>,
}

impl Run<'_> {
    fn skip(&mut self, call: &str, why: &str) {
        self.checks.push(DryRunCheck {
            action: call.into(),
            target: "-".into(),
            verdict: Verdict::Skipped,
            detail: why.into(),
        });
    }

    /// A read that failed: denied reads are a finding, anything else aborts.
    fn read_failed(&mut self, e: CloudError) -> Result<(), CloudError> {
        match &e {
            CloudError::Denied { call, message, .. } => {
                self.checks.push(DryRunCheck {
                    action: call.clone(),
                    target: "-".into(),
                    verdict: Verdict::Denied,
                    detail: message.clone(),
                });
                self.skip(
                    "(writes)",
                    "not probed: the reads they depend on are denied",
                );
                Ok(())
            }
            _ => Err(e),
        }
    }

    async fn probe<T, E, F, Fut>(&mut self, call: &'static str, target: String, f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let r = self.p.ec2.call(&self.rec, call, &target, true, f).await;
        let (verdict, detail) = match r {
            Ok(_) => (
                Verdict::Inconclusive,
                "the endpoint ignored DryRun=true and made the change".to_string(),
            ),
            Err(e) if e.code() == Some("DryRunOperation") => {
                (Verdict::Allowed, "DryRunOperation".to_string())
            }
            Err(e) if e.class() == ErrorClass::Denied => (
                Verdict::Denied,
                format!(
                    "{}: {}",
                    e.code().unwrap_or("denied"),
                    e.api_message().unwrap_or_default()
                ),
            ),
            Err(e) => (Verdict::Inconclusive, e.to_string()),
        };
        self.checks.push(DryRunCheck {
            action: call.into(),
            target,
            verdict,
            detail,
        });
    }
}

impl AwsProvider {
    /// Sends every write a failover of this mode makes with `DryRun=true`
    /// (see the module docs). `Err` only when the state cannot be read for a
    /// reason other than a denial, or the set is invalid.
    pub async fn dry_run(&self, set: &FloatingSet) -> Result<DryRunReport, CloudError> {
        let pairs = aws_pairs(set)?;
        let mut run = Run {
            p: self,
            rec: Recorder::new(Action::Reconcile, "aws-dry-run"),
            checks: Vec::new(),
        };
        match self.opts.mode {
            AwsMode::Eni => eni(&mut run, &pairs).await?,
            AwsMode::Route => route(&mut run, &pairs).await?,
        }
        Ok(DryRunReport {
            provider: self.label().into(),
            checks: run.checks,
        })
    }
}

async fn eni(run: &mut Run<'_>, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> Result<(), CloudError> {
    let p = run.p;
    let block = p
        .opts
        .cidr_block
        .ok_or_else(|| CloudError::invalid("--cloudcidrblock", "(missing)", "ENI mode needs it"))?;
    let eips: Vec<Ipv4Addr> = pairs.iter().map(|(e, _)| *e).collect();
    let view: View = match describe_view(p, &run.rec, block, &eips).await {
        Ok(v) => v,
        Err(e) => return run.read_failed(e),
    };
    let no_eni = "no loxi-eni of this cluster exists yet: promote once, then run dry-run again";
    let no_subnet =
        "no VIP subnet of this cluster exists yet: promote once, then run dry-run again";
    let eni = view.enis.first().cloned();
    let subnet = view
        .subnets
        .iter()
        .filter(|s| s.ours)
        .min_by_key(|s| s.az != p.id.availability_zone)
        .cloned();
    // Tear-down of the other AZ's interface and subnet.
    match eni
        .as_ref()
        .and_then(|e| e.attach.clone().map(|a| (e.id.clone(), a.id)))
    {
        Some((id, att)) => {
            run.probe("ec2:DetachNetworkInterface", id, || {
                p.ec2
                    .client
                    .detach_network_interface()
                    .attachment_id(&att)
                    .force(true)
                    .dry_run(true)
                    .send()
            })
            .await;
        }
        None => run.skip("ec2:DetachNetworkInterface", "no attached loxi-eni"),
    }
    match &eni {
        Some(e) => {
            run.probe("ec2:DeleteNetworkInterface", e.id.clone(), || {
                p.ec2
                    .client
                    .delete_network_interface()
                    .network_interface_id(&e.id)
                    .dry_run(true)
                    .send()
            })
            .await;
        }
        None => run.skip("ec2:DeleteNetworkInterface", no_eni),
    }
    let assoc = subnet.as_ref().and_then(|s| view.assoc.get(&s.id).cloned());
    match &assoc {
        Some((assoc_id, rtb)) => {
            run.probe(
                "ec2:DisassociateRouteTable",
                format!("{assoc_id} ({rtb})"),
                || {
                    p.ec2
                        .client
                        .disassociate_route_table()
                        .association_id(assoc_id)
                        .dry_run(true)
                        .send()
                },
            )
            .await;
        }
        None => run.skip(
            "ec2:DisassociateRouteTable",
            "the VIP subnet has no explicit route-table association",
        ),
    }
    match &subnet {
        Some(s) => {
            run.probe("ec2:DeleteSubnet", s.id.clone(), || {
                p.ec2
                    .client
                    .delete_subnet()
                    .subnet_id(&s.id)
                    .dry_run(true)
                    .send()
            })
            .await;
        }
        None => run.skip("ec2:DeleteSubnet", no_subnet),
    }
    // Build-up next to this node.
    if view.vpc_cidrs.iter().any(|(n, _)| n.contains(&block)) {
        run.skip(
            "ec2:AssociateVpcCidrBlock",
            "the block is already one of the VPC's CIDRs: a promotion does not call it",
        );
    } else {
        run.skip(
            "ec2:AssociateVpcCidrBlock",
            "NEEDED (the block is not a VPC CIDR yet) but EC2 offers no DryRun for it: associate the block in Terraform, or check the EniModeUseClusterVpc statement",
        );
    }
    let subnet_tags = p.tags(ResourceType::Subnet, SUBNET_NAME, ROLE_SUBNET);
    run.probe(
        "ec2:CreateSubnet",
        format!("{} {block} {}", p.id.vpc_id, p.id.availability_zone),
        || {
            p.ec2
                .client
                .create_subnet()
                .vpc_id(&p.id.vpc_id)
                .cidr_block(block.to_string())
                .availability_zone(&p.id.availability_zone)
                .tag_specifications(subnet_tags.clone())
                .dry_run(true)
                .send()
        },
    )
    .await;
    match &subnet {
        Some(s) => {
            let tags = p.tags(ResourceType::NetworkInterface, ENI_NAME, ROLE_ENI);
            run.probe(
                "ec2:CreateNetworkInterface",
                format!("{} {:?}", s.id, p.id.security_groups),
                || {
                    p.ec2
                        .client
                        .create_network_interface()
                        .subnet_id(&s.id)
                        .description(format!("floatlb-vip-eni-{}", p.opts.cluster))
                        .set_groups(Some(p.id.security_groups.clone()))
                        .tag_specifications(tags.clone())
                        .dry_run(true)
                        .send()
                },
            )
            .await;
        }
        None => run.skip("ec2:CreateNetworkInterface", no_subnet),
    }
    match (&view.instance_rtb, &subnet, &assoc) {
        (Some((rtb, _)), Some(_), Some((assoc_id, _))) => {
            run.probe(
                "ec2:ReplaceRouteTableAssociation",
                format!("{assoc_id} -> {rtb}"),
                || {
                    p.ec2
                        .client
                        .replace_route_table_association()
                        .association_id(assoc_id)
                        .route_table_id(rtb)
                        .dry_run(true)
                        .send()
                },
            )
            .await;
        }
        (Some((rtb, false)), Some(s), None) => {
            run.probe(
                "ec2:AssociateRouteTable",
                format!("{rtb} <- {}", s.id),
                || {
                    p.ec2
                        .client
                        .associate_route_table()
                        .route_table_id(rtb)
                        .subnet_id(&s.id)
                        .dry_run(true)
                        .send()
                },
            )
            .await;
        }
        (Some((_, true)), _, None) => run.skip(
            "ec2:AssociateRouteTable",
            "the instance subnet uses the VPC's main route table: nothing to associate",
        ),
        _ => run.skip("ec2:AssociateRouteTable", no_subnet),
    }
    let Some(e) = eni else {
        for call in [
            "ec2:AttachNetworkInterface",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:AssociateAddress",
        ] {
            run.skip(call, no_eni);
        }
        return lease_and_disassociate(run, &view, &eips).await;
    };
    run.probe(
        "ec2:AttachNetworkInterface",
        format!("{} -> {}", e.id, p.id.instance_id),
        || {
            p.ec2
                .client
                .attach_network_interface()
                .network_interface_id(&e.id)
                .instance_id(&p.id.instance_id)
                .device_index(p.opts.device_index)
                .dry_run(true)
                .send()
        },
    )
    .await;
    run.probe("ec2:ModifyNetworkInterfaceAttribute", e.id.clone(), || {
        p.ec2
            .client
            .modify_network_interface_attribute()
            .network_interface_id(&e.id)
            .source_dest_check(AttributeBooleanValue::builder().value(false).build())
            .dry_run(true)
            .send()
    })
    .await;
    // AssignPrivateIpAddresses (a VIP added to a live loxi-eni) has no
    // DryRun parameter in the EC2 API.
    run.skip(
        "ec2:AssignPrivateIpAddresses",
        "EC2 offers no DryRun for it (tests/tests/iam_policy_eval.rs covers it)",
    );
    for (eip, vip) in pairs {
        let Some(a) = view.addrs.get(eip) else {
            run.skip(
                "ec2:AssociateAddress",
                &format!("no Elastic IP {eip} in this region"),
            );
            continue;
        };
        run.probe(
            "ec2:AssociateAddress",
            format!("{eip} -> {} {vip}", e.id),
            || {
                p.ec2
                    .client
                    .associate_address()
                    .allocation_id(&a.allocation_id)
                    .network_interface_id(&e.id)
                    .private_ip_address(vip.to_string())
                    .allow_reassociation(true)
                    .dry_run(true)
                    .send()
            },
        )
        .await;
    }
    lease_and_disassociate(run, &view, &eips).await
}

/// ENI mode's graceful demotion (DisassociateAddress) and the lease tag.
async fn lease_and_disassociate(
    run: &mut Run<'_>,
    view: &View,
    eips: &[Ipv4Addr],
) -> Result<(), CloudError> {
    let p = run.p;
    let assoc = eips
        .iter()
        .find_map(|e| view.addrs.get(e)?.association_id.clone().map(|a| (*e, a)));
    match assoc {
        Some((eip, id)) => {
            run.probe("ec2:DisassociateAddress", format!("{eip} ({id})"), || {
                p.ec2
                    .client
                    .disassociate_address()
                    .association_id(&id)
                    .dry_run(true)
                    .send()
            })
            .await;
        }
        None => run.skip(
            "ec2:DisassociateAddress",
            "no Elastic IP of the set is associated",
        ),
    }
    let first = eips
        .first()
        .and_then(|e| view.addrs.get(e).map(|a| (*e, a)));
    lease(run, first.map(|(e, a)| (e, a.allocation_id.clone()))).await;
    Ok(())
}

async fn lease(run: &mut Run<'_>, eip: Option<(Ipv4Addr, String)>) {
    let p = run.p;
    let Some((eip, alloc)) = eip else {
        run.skip("ec2:CreateTags", "no Elastic IP to carry the lease");
        return;
    };
    let tag = Tag::builder()
        .key(TAG_LEASE)
        .value(format!("{}/0", p.id.instance_id))
        .build();
    run.probe(
        "ec2:CreateTags",
        format!("{eip} ({alloc}) {TAG_LEASE}"),
        || {
            p.ec2
                .client
                .create_tags()
                .resources(&alloc)
                .tags(tag.clone())
                .dry_run(true)
                .send()
        },
    )
    .await;
}

async fn route(run: &mut Run<'_>, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> Result<(), CloudError> {
    let p = run.p;
    let me = p.id.private_ip.ok_or_else(|| {
        CloudError::invalid(
            "local-ipv4",
            "(missing)",
            "IMDS did not report this instance's private IPv4",
        )
    })?;
    let eips: Vec<Ipv4Addr> = pairs.iter().map(|(e, _)| *e).collect();
    let mut vips: Vec<Ipv4Addr> = pairs.iter().map(|(_, v)| *v).collect();
    vips.sort();
    vips.dedup();
    let read = tokio::try_join!(
        super::route::describe_tables(p, &run.rec),
        describe_addresses(p, &run.rec, &eips)
    );
    let (tables, addrs) = match read {
        Ok(v) => v,
        Err(e) => return run.read_failed(e),
    };
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
        for vip in &vips {
            let dest = format!("{vip}/32");
            let target = format!("{rtb} {dest} -> {}", p.id.primary_eni);
            let exists = t
                .routes()
                .iter()
                .any(|r| r.destination_cidr_block() == Some(dest.as_str()));
            if exists {
                run.probe("ec2:ReplaceRoute", target, || {
                    p.ec2
                        .client
                        .replace_route()
                        .route_table_id(rtb)
                        .destination_cidr_block(&dest)
                        .network_interface_id(&p.id.primary_eni)
                        .dry_run(true)
                        .send()
                })
                .await;
            } else {
                run.probe("ec2:CreateRoute", target, || {
                    p.ec2
                        .client
                        .create_route()
                        .route_table_id(rtb)
                        .destination_cidr_block(&dest)
                        .network_interface_id(&p.id.primary_eni)
                        .dry_run(true)
                        .send()
                })
                .await;
            }
        }
    }
    for eip in &eips {
        let Some(a) = addrs.get(eip) else {
            run.skip(
                "ec2:AssociateAddress",
                &format!("no Elastic IP {eip} in this region"),
            );
            continue;
        };
        run.probe(
            "ec2:AssociateAddress",
            format!("{eip} -> {} {me}", p.id.primary_eni),
            || {
                p.ec2
                    .client
                    .associate_address()
                    .allocation_id(&a.allocation_id)
                    .network_interface_id(&p.id.primary_eni)
                    .private_ip_address(me.to_string())
                    .allow_reassociation(true)
                    .dry_run(true)
                    .send()
            },
        )
        .await;
    }
    run.probe(
        "ec2:ModifyNetworkInterfaceAttribute",
        p.id.primary_eni.clone(),
        || {
            p.ec2
                .client
                .modify_network_interface_attribute()
                .network_interface_id(&p.id.primary_eni)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .dry_run(true)
                .send()
        },
    )
    .await;
    let first = eips
        .first()
        .and_then(|e| addrs.get(e).map(|a| (*e, a.allocation_id.clone())));
    lease(run, first).await;
    Ok(())
}
