//! A small IAM identity-policy evaluator for the offline test of
//! `iam/policy.json` (tests/tests/iam_policy_eval.rs), plus the one documented
//! way of filling the policy's placeholders ([`render`]).
//!
//! It evaluates one request = (action, resource ARN, request context) the way
//! IAM does for a single identity policy: an explicit `Deny` wins, else any
//! matching `Allow`, else the implicit deny. A statement matches when its
//! `Action`/`NotAction`, `Resource`/`NotResource` and every condition match.
//! Conditions: every operator block and every key in it must hold (AND); the
//! values listed for one key are alternatives (OR). Supported operators:
//! `String{Equals,NotEquals,EqualsIgnoreCase,Like,NotLike}`,
//! `Arn{Equals,Like,NotEquals,NotLike}` (matched per ARN component, wildcards
//! allowed as IAM allows them), `Bool`, `Null`, each with `...IfExists`, and
//! the set qualifiers `ForAllValues:` (true when the key is absent or every
//! value matches) and `ForAnyValue:` (false when absent, else any value).
//! Any other operator, a policy variable or a leftover `${...}` placeholder is
//! a parse error: the evaluator never ignores what it does not understand.
//! Condition key names are case-insensitive, values case-sensitive (except
//! `...IgnoreCase` and `Bool`), actions case-insensitive.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// Replaces every `${name}` in `template` by its value: the substitution
/// documented in iam/README.md (and what Terraform's `templatefile` does).
/// Fails when a placeholder has no value or a value is left unused.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String> {
    let mut out = template.to_string();
    for (k, v) in vars {
        let ph = format!("${{{k}}}");
        ensure!(out.contains(&ph), "the template has no placeholder {ph}");
        out = out.replace(&ph, v);
    }
    if let Some(i) = out.find("${") {
        let end = out[i..].find('}').map(|j| i + j + 1).unwrap_or(out.len());
        bail!("placeholder {} has no value", &out[i..end]);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the statement with this Sid (or index).
    Allow(String),
    /// Denied by the statement with this Sid.
    ExplicitDeny(String),
    /// No statement allows it.
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnLike,
    ArnNotLike,
    Bool,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQ {
    None,
    ForAll,
    ForAny,
}

#[derive(Debug, Clone)]
struct Cond {
    op: Op,
    set: SetQ,
    if_exists: bool,
    /// Lower-cased key name.
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone)]
struct Statement {
    sid: String,
    effect: Effect,
    actions: Vec<String>,
    not_action: bool,
    resources: Vec<String>,
    not_resource: bool,
    conds: Vec<Cond>,
}

/// A parsed identity policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// What the evaluator is asked: one action on one resource.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `ec2:CreateSubnet`.
    pub action: String,
    /// The resource's ARN, or `*` for actions without resource types.
    pub resource: String,
    /// Context keys (any case) and their values; multi-valued keys have several.
    pub context: BTreeMap<String, Vec<String>>,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => bail!("{what}: expected strings, got {x}"),
            })
            .collect(),
        _ => bail!("{what}: expected a string or a list, got {v}"),
    }
}

fn parse_op(name: &str) -> Result<(Op, SetQ, bool)> {
    let (set, rest) = if let Some(r) = name.strip_prefix("ForAllValues:") {
        (SetQ::ForAll, r)
    } else if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (SetQ::ForAny, r)
    } else {
        (SetQ::None, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    let op = match base {
        "StringEquals" => Op::StringEquals,
        "StringNotEquals" => Op::StringNotEquals,
        "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
        "StringLike" => Op::StringLike,
        "StringNotLike" => Op::StringNotLike,
        // IAM matches ArnEquals like ArnLike: per component, wildcards allowed.
        "ArnEquals" | "ArnLike" => Op::ArnLike,
        "ArnNotEquals" | "ArnNotLike" => Op::ArnNotLike,
        "Bool" => Op::Bool,
        "Null" => Op::Null,
        other => bail!("condition operator {name:?} ({other}) is not supported by this evaluator"),
    };
    ensure!(
        !(op == Op::Null && (if_exists || set != SetQ::None)),
        "{name}: Null takes no qualifier"
    );
    Ok((op, set, if_exists))
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self> {
        ensure!(
            !text.contains("${"),
            "the policy still holds a ${{...}} placeholder or policy variable (render it first)"
        );
        let doc: Value = serde_json::from_str(text).context("the policy is not JSON")?;
        ensure!(doc["Version"] == "2012-10-17", "Version must be 2012-10-17");
        let stmts = match &doc["Statement"] {
            Value::Array(a) => a.clone(),
            o @ Value::Object(_) => vec![o.clone()],
            other => bail!("Statement: expected a list, got {other}"),
        };
        let mut statements = Vec::new();
        for (i, s) in stmts.iter().enumerate() {
            let sid = s["Sid"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(format!("#{i}"));
            let effect = match s["Effect"].as_str() {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                other => bail!("{sid}: Effect {other:?}"),
            };
            let (actions, not_action) = match (s.get("Action"), s.get("NotAction")) {
                (Some(a), None) => (strings(a, "Action")?, false),
                (None, Some(a)) => (strings(a, "NotAction")?, true),
                _ => bail!("{sid}: exactly one of Action and NotAction"),
            };
            let (resources, not_resource) = match (s.get("Resource"), s.get("NotResource")) {
                (Some(r), None) => (strings(r, "Resource")?, false),
                (None, Some(r)) => (strings(r, "NotResource")?, true),
                _ => bail!("{sid}: exactly one of Resource and NotResource"),
            };
            let mut conds = Vec::new();
            if let Some(c) = s.get("Condition") {
                let ops = c.as_object().context("Condition: expected an object")?;
                for (opname, keys) in ops {
                    let (op, set, if_exists) = parse_op(opname).context(sid.clone())?;
                    let keys = keys
                        .as_object()
                        .context("condition block: expected an object")?;
                    for (key, vals) in keys {
                        conds.push(Cond {
                            op,
                            set,
                            if_exists,
                            key: key.to_ascii_lowercase(),
                            values: strings(vals, key)?,
                        });
                    }
                }
            }
            statements.push(Statement {
                sid,
                effect,
                actions,
                not_action,
                resources,
                not_resource,
                conds,
            });
        }
        Ok(Self { statements })
    }

    /// Every condition key the policy uses (lower-cased).
    pub fn condition_keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .statements
            .iter()
            .flat_map(|s| s.conds.iter().map(|c| c.key.clone()))
            .collect();
        k.sort();
        k.dedup();
        k
    }

    /// Every action pattern the policy names.
    pub fn actions(&self) -> Vec<String> {
        self.statements
            .iter()
            .flat_map(|s| s.actions.clone())
            .collect()
    }

    pub fn evaluate(&self, req: &Request) -> Decision {
        let ctx: BTreeMap<String, Vec<String>> = req
            .context
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let mut allow = None;
        for s in &self.statements {
            if !s.applies(req, &ctx) {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny(s.sid.clone()),
                Effect::Allow => {
                    allow.get_or_insert_with(|| s.sid.clone());
                }
            }
        }
        allow.map(Decision::Allow).unwrap_or(Decision::ImplicitDeny)
    }
}

impl Statement {
    fn applies(&self, req: &Request, ctx: &BTreeMap<String, Vec<String>>) -> bool {
        let action = req.action.to_ascii_lowercase();
        let a = self
            .actions
            .iter()
            .any(|p| glob(&p.to_ascii_lowercase(), &action));
        let r = self.resources.iter().any(|p| glob(p, &req.resource));
        a != self.not_action
            && r != self.not_resource
            && self.conds.iter().all(|c| c.holds(ctx.get(&c.key)))
    }
}

impl Cond {
    fn one(&self, policy: &str, ctx: &str) -> bool {
        match self.op {
            Op::StringEquals | Op::StringNotEquals => policy == ctx,
            Op::StringEqualsIgnoreCase => policy.eq_ignore_ascii_case(ctx),
            Op::StringLike | Op::StringNotLike => glob(policy, ctx),
            Op::ArnLike | Op::ArnNotLike => arn_like(policy, ctx),
            Op::Bool => policy.eq_ignore_ascii_case(ctx),
            Op::Null => false,
        }
    }

    fn negated(&self) -> bool {
        matches!(
            self.op,
            Op::StringNotEquals | Op::StringNotLike | Op::ArnNotLike
        )
    }

    fn holds(&self, ctx: Option<&Vec<String>>) -> bool {
        let present = ctx.is_some_and(|v| !v.is_empty());
        if self.op == Op::Null {
            // "true": the key must be absent; "false": present.
            return self.values.iter().any(|v| (v == "true") != present);
        }
        let vals: &[String] = ctx.map(Vec::as_slice).unwrap_or(&[]);
        let any_policy = |c: &String| self.values.iter().any(|p| self.one(p, c));
        match self.set {
            SetQ::ForAll => {
                if !present {
                    return true;
                }
                if self.negated() {
                    vals.iter().all(|c| !any_policy(c))
                } else {
                    vals.iter().all(any_policy)
                }
            }
            SetQ::ForAny => {
                if !present {
                    return false;
                }
                if self.negated() {
                    vals.iter().any(|c| !any_policy(c))
                } else {
                    vals.iter().any(any_policy)
                }
            }
            SetQ::None => {
                if !present {
                    // A missing key matches only ...IfExists and negated operators.
                    return self.if_exists || self.negated();
                }
                if self.negated() {
                    !vals.iter().any(any_policy)
                } else {
                    vals.iter().any(any_policy)
                }
            }
        }
    }
}

/// `*` any run of characters, `?` one character; case-sensitive.
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(si) = star {
            i = si + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// ARN match per component (`arn:partition:service:region:account:resource`),
/// each with [`glob`] wildcards; the resource part may hold further colons.
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}
