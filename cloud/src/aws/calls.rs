//! The EC2 actions the AWS provider calls, per mode: the one list that the
//! IAM policy's offline test (`tests/tests/iam_policy_eval.rs`) evaluates
//! and `floatlb cloud dry-run` covers.
//!
//! A unit test reads `cloud/src/` and checks that the list is exactly the set
//! of actions the code calls (every call goes through [`super::Ec2::call`]
//! under its `"ec2:Action"` name, and every SDK fluent call
//! `client.<operation>()` maps to one), so a new EC2 call without a row here
//! fails the build's tests, and with it the policy test.

/// One EC2 action and where the provider makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ec2Action {
    /// The IAM action name without the `ec2:` prefix.
    pub name: &'static str,
    /// Called in ENI mode.
    pub eni: bool,
    /// Called in route mode.
    pub route: bool,
    /// Changes something (Describe calls do not).
    pub write: bool,
}

const fn a(name: &'static str, eni: bool, route: bool, write: bool) -> Ec2Action {
    Ec2Action {
        name,
        eni,
        route,
        write,
    }
}

/// Every EC2 action the provider calls. `CreateTags` is both the lease
/// renewal (both modes) and what EC2 authorises implicitly when
/// `CreateSubnet`/`CreateNetworkInterface` carry `TagSpecifications`.
pub const EC2_ACTIONS: &[Ec2Action] = &[
    a("DescribeVpcs", true, false, false),
    a("DescribeSubnets", true, false, false),
    a("DescribeNetworkInterfaces", true, true, false),
    a("DescribeAddresses", true, true, false),
    a("DescribeRouteTables", true, true, false),
    a("DescribeInstances", true, true, false),
    a("AssociateVpcCidrBlock", true, false, true),
    a("CreateSubnet", true, false, true),
    a("DeleteSubnet", true, false, true),
    a("CreateNetworkInterface", true, false, true),
    a("DeleteNetworkInterface", true, false, true),
    a("AttachNetworkInterface", true, false, true),
    a("DetachNetworkInterface", true, false, true),
    a("AssignPrivateIpAddresses", true, false, true),
    a("AssociateRouteTable", true, false, true),
    a("ReplaceRouteTableAssociation", true, false, true),
    a("DisassociateRouteTable", true, false, true),
    a("ModifyNetworkInterfaceAttribute", true, true, true),
    a("AssociateAddress", true, true, true),
    a("DisassociateAddress", true, false, true),
    a("CreateTags", true, true, true),
    a("CreateRoute", false, true, true),
    a("ReplaceRoute", false, true, true),
];

/// The row of `name` (without `ec2:`), if the provider calls it.
pub fn action(name: &str) -> Option<&'static Ec2Action> {
    EC2_ACTIONS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("aws/calls.rs") {
                // Unit tests name made-up calls; only the code counts.
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                out.push((p.display().to_string(), code.to_string()));
            }
        }
    }

    /// `"ec2:Name"` literals.
    fn recorded(text: &str) -> BTreeSet<String> {
        text.split("\"ec2:")
            .skip(1)
            .filter_map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                (rest[name.len()..].starts_with('"') && !name.is_empty()).then_some(name)
            })
            .collect()
    }

    /// SDK fluent calls `client.operation()` / `client\n  .operation()`, as IAM names.
    fn fluent(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (i, _) in text.match_indices("client") {
            let rest = text[i + "client".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('.') else {
                continue;
            };
            let op: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            // `client.clone()` copies a client; it calls nothing.
            if op.is_empty() || op == "clone" || !rest.trim_start()[op.len()..].starts_with("()") {
                continue;
            }
            let camel: String = op
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            out.insert(camel);
        }
        out
    }

    #[test]
    fn the_list_is_exactly_what_the_code_calls() {
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut called = BTreeSet::new();
        let mut invoked = BTreeSet::new();
        for (_, text) in &files {
            called.extend(recorded(text));
            invoked.extend(fluent(text));
        }
        let listed: BTreeSet<String> = EC2_ACTIONS.iter().map(|a| a.name.to_string()).collect();
        // CreateTags is also implied by TagSpecifications; every other row is a call.
        let missing: Vec<_> = called
            .union(&invoked)
            .filter(|c| !listed.contains(*c))
            .collect();
        assert!(
            missing.is_empty(),
            "cloud/src calls EC2 actions that EC2_ACTIONS (and so iam/policy.json's test) lacks: {missing:?}"
        );
        let unused: Vec<_> = listed.iter().filter(|l| !called.contains(*l)).collect();
        assert!(
            unused.is_empty(),
            "EC2_ACTIONS lists actions the code never calls: {unused:?}"
        );
        // Each fluent call is recorded under its own name.
        let unrecorded: Vec<_> = invoked.difference(&called).collect();
        assert!(
            unrecorded.is_empty(),
            "SDK calls not recorded as \"ec2:Name\": {unrecorded:?}"
        );
        assert!(listed.len() == EC2_ACTIONS.len(), "duplicate rows");
    }

    #[test]
    fn the_scanner_sees_a_new_call() {
        let code = "p.ec2.call(rec, \"ec2:RebootInstances\", id, true, || {\n p.ec2\n .client\n .reboot_instances()\n .send() })";
        assert_eq!(
            recorded(code),
            BTreeSet::from(["RebootInstances".to_string()])
        );
        assert_eq!(
            fluent(code),
            BTreeSet::from(["RebootInstances".to_string()])
        );
        assert!(action("RebootInstances").is_none());
        assert!(action("CreateSubnet").is_some_and(|a| a.eni && !a.route && a.write));
    }
}
