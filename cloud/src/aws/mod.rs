//! AWS provider: moves Elastic IPs and private VIPs between the two
//! instances of a pair, in two modes.
//!
//! **ENI mode** (`--cloud=aws --cloudcidrblock=CIDR`): the VIPs live on a
//! dedicated interface named `loxi-eni` in a VIP subnet whose CIDR is the
//! cloud CIDR block. A subnet sits in one AZ, so on failover to the other AZ
//! the old subnet (and its ENI) is torn down and rebuilt next to the new
//! MASTER, then each EIP is re-associated to its VIP. See [`eni`].
//!
//! **Route mode** (`--cloud-mode=route`): the VIPs lie outside the VPC CIDR;
//! each given route table sends VIP/32 to the MASTER's primary ENI and each
//! EIP is associated with the MASTER's primary private IP. Every call is
//! independent, so promotion is one parallel round. See [`route`].
//!
//! Every resource floatlb creates carries `floatlb:cluster=<name>` and
//! `floatlb:role=<role>` tags; every query filters on them, so two clusters
//! in one VPC never see (let alone touch) each other's resources.

pub mod api;
pub mod calls;
pub mod dryrun;
pub mod eni;
mod eni_steps;
mod eni_view;
pub mod imds;
mod lease;
pub mod route;

use std::{collections::HashMap, net::Ipv4Addr, sync::Mutex};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::provider::ProvideCredentials;
use ipnet::Ipv4Net;

pub use api::{Ec2, RetryPolicy};

use crate::{
    Action, CloudError, CloudProvider, CloudStatus, FloatingSet, NodeIdentity, Recorder,
    TransitionReport,
};

/// Tag key naming the cluster that owns a resource.
pub const TAG_CLUSTER: &str = "floatlb:cluster";
/// Tag key naming what a resource is for (`vip-subnet`, `vip-eni`).
pub const TAG_ROLE: &str = "floatlb:role";
pub const ROLE_SUBNET: &str = "vip-subnet";
pub const ROLE_ENI: &str = "vip-eni";
/// The VIP interface's `Name` tag (loxilb's name, kept for runbooks).
pub const ENI_NAME: &str = "loxi-eni";
pub const SUBNET_NAME: &str = "loxi-vip-subnet";
/// Tag on the (first) EIP holding the MASTER's lease: `<instance-id>/<expiry unix ms>`.
pub const TAG_LEASE: &str = "floatlb:lease";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsMode {
    Eni,
    Route,
}

/// Options of the AWS provider.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    pub mode: AwsMode,
    /// ENI mode: the VIP subnet's CIDR.
    pub cidr_block: Option<Ipv4Net>,
    /// Route mode: route tables that get VIP/32 -> this node.
    pub route_tables: Vec<String>,
    /// Value of the `floatlb:cluster` tag.
    pub cluster: String,
    /// Configure the OS (interface up, VIPs, routes). Off for API-only runs.
    pub os_config: bool,
    /// Device index the VIP ENI is attached at.
    pub device_index: i32,
    /// EC2 endpoint; `None` = SDK settings (`AWS_ENDPOINT_URL`, region default).
    pub ec2_endpoint: Option<String>,
    /// IMDS endpoint; `None` = SDK settings (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub imds_endpoint: Option<String>,
    /// Credentials; `None` = the SDK's default chain.
    pub credentials: Option<aws_credential_types::Credentials>,
    pub retry: RetryPolicy,
}

impl AwsOptions {
    pub fn new(mode: AwsMode, cluster: impl Into<String>) -> Self {
        Self {
            mode,
            cidr_block: None,
            route_tables: Vec::new(),
            cluster: cluster.into(),
            os_config: true,
            device_index: 1,
            ec2_endpoint: None,
            imds_endpoint: None,
            credentials: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// The AWS provider for one node.
pub struct AwsProvider {
    pub(crate) ec2: Ec2,
    pub(crate) id: NodeIdentity,
    pub(crate) opts: AwsOptions,
    /// EIP public address -> allocation id (allocation ids never change).
    pub(crate) alloc_cache: Mutex<HashMap<Ipv4Addr, String>>,
    /// Route mode: (route table, VIP) pairs known to have a route, so the
    /// first promotion can go straight to CreateRoute where there is none.
    pub(crate) routes_seen: Mutex<std::collections::HashSet<(String, Ipv4Addr)>>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("id", &self.id)
            .field("mode", &self.opts.mode)
            .finish()
    }
}

impl AwsProvider {
    /// Reads the identity from IMDSv2, builds the EC2 client and checks that
    /// credentials exist. Each missing prerequisite is one clear error.
    pub async fn connect(opts: AwsOptions) -> Result<Self, CloudError> {
        match opts.mode {
            AwsMode::Eni if opts.cidr_block.is_none() => {
                return Err(CloudError::invalid(
                    "--cloudcidrblock",
                    "(missing)",
                    "ENI mode needs the block the VIP subnet is made of",
                ));
            }
            AwsMode::Route if opts.route_tables.is_empty() => {
                return Err(CloudError::invalid(
                    "--cloud-route-tables",
                    "(missing)",
                    "route mode needs at least one route table id (rtb-...)",
                ));
            }
            _ => {}
        }
        if opts.cluster.is_empty() {
            return Err(CloudError::invalid(
                "--cloud-cluster-name",
                "\"\"",
                "the cluster tag must not be empty",
            ));
        }
        let id = imds::discover(opts.imds_endpoint.as_deref()).await?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(id.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .operation_attempt_timeout(opts.retry.attempt_timeout)
                    .build(),
            );
        if let Some(ep) = &opts.ec2_endpoint {
            loader = loader.endpoint_url(ep);
        }
        if let Some(c) = &opts.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let conf = loader.load().await;
        match conf.credentials_provider() {
            None => {
                return Err(CloudError::NoCredentials {
                    reason: "no credentials provider is configured".into(),
                });
            }
            Some(p) => {
                p.provide_credentials().await.map_err(|e| {
                    tracing::debug!(error = %aws_sdk_ec2::error::DisplayErrorContext(&e), "credential chain");
                    CloudError::NoCredentials {
                        reason: "none of the SDK's sources (environment, profile, web identity, ECS, instance role) has any".into(),
                    }
                })?;
            }
        }
        let client = aws_sdk_ec2::Client::new(&conf);
        tracing::info!(
            instance = %id.instance_id, az = %id.availability_zone, vpc = %id.vpc_id,
            mode = ?opts.mode, "AWS provider ready"
        );
        Ok(Self {
            ec2: Ec2 {
                client,
                policy: opts.retry,
            },
            id,
            opts,
            alloc_cache: Mutex::new(HashMap::new()),
            routes_seen: Mutex::new(std::collections::HashSet::new()),
        })
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.id
    }

    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.ec2.client
    }

    /// The source/destination check of this instance's primary interface
    /// (`None` when EC2 does not list the interface). It must be off: the
    /// node sends packets from the floating addresses, not from its own.
    pub async fn primary_source_dest_check(&self) -> Result<Option<bool>, CloudError> {
        let rec = Recorder::new(Action::Reconcile, "aws-preflight");
        Ok(eni_steps::describe_eni(self, &rec, &self.id.primary_eni)
            .await?
            .map(|e| e.src_dst))
    }

    fn label(&self) -> &'static str {
        match self.opts.mode {
            AwsMode::Eni => "aws-eni",
            AwsMode::Route => "aws-route",
        }
    }

    /// A filter for `Describe*` calls.
    pub(crate) fn filter(
        name: &str,
        values: impl IntoIterator<Item = String>,
    ) -> aws_sdk_ec2::types::Filter {
        aws_sdk_ec2::types::Filter::builder()
            .name(name)
            .set_values(Some(values.into_iter().collect()))
            .build()
    }

    pub(crate) fn cluster_filter(&self) -> aws_sdk_ec2::types::Filter {
        Self::filter(&format!("tag:{TAG_CLUSTER}"), [self.opts.cluster.clone()])
    }

    pub(crate) fn tags(
        &self,
        resource: aws_sdk_ec2::types::ResourceType,
        name: &str,
        role: &str,
    ) -> aws_sdk_ec2::types::TagSpecification {
        use aws_sdk_ec2::types::{Tag, TagSpecification};
        TagSpecification::builder()
            .resource_type(resource)
            .tags(Tag::builder().key("Name").value(name).build())
            .tags(
                Tag::builder()
                    .key(TAG_CLUSTER)
                    .value(&self.opts.cluster)
                    .build(),
            )
            .tags(Tag::builder().key(TAG_ROLE).value(role).build())
            .build()
    }

    /// Looks up allocation ids of the EIPs (cached: they never change).
    pub(crate) async fn allocation_ids(
        &self,
        rec: &Recorder,
        eips: &[Ipv4Addr],
    ) -> Result<HashMap<Ipv4Addr, String>, CloudError> {
        let missing: Vec<Ipv4Addr> = {
            let cache = self.alloc_cache.lock().unwrap_or_else(|p| p.into_inner());
            eips.iter()
                .filter(|e| !cache.contains_key(e))
                .copied()
                .collect()
        };
        if !missing.is_empty() {
            let addrs = eni_view::describe_addresses(self, rec, &missing).await?;
            let mut cache = self.alloc_cache.lock().unwrap_or_else(|p| p.into_inner());
            for (ip, a) in addrs {
                cache.insert(ip, a.allocation_id);
            }
        }
        let cache = self.alloc_cache.lock().unwrap_or_else(|p| p.into_inner());
        eips.iter()
            .map(|e| {
                cache.get(e).map(|a| (*e, a.clone())).ok_or_else(|| {
                    CloudError::invalid(
                        "externalIP",
                        e,
                        "no Elastic IP with this public address in this account and region",
                    )
                })
            })
            .collect()
    }
}

/// AWS needs an EIP per VIP and IPv4 VIPs.
fn aws_pairs(set: &FloatingSet) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, CloudError> {
    let mut out = Vec::new();
    for e in set.entries() {
        let vip = match e.vip {
            std::net::IpAddr::V4(v) => v,
            std::net::IpAddr::V6(v) => {
                return Err(CloudError::invalid("privateIP", v, "AWS VIPs must be IPv4"));
            }
        };
        match e.eip {
            Some(eip) => out.push((eip, vip)),
            None => {
                return Err(CloudError::invalid(
                    "privateIP",
                    vip,
                    "on AWS every service needs externalIP (the Elastic IP) and privateIP (the VIP)",
                ));
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl CloudProvider for AwsProvider {
    fn name(&self) -> &'static str {
        self.label()
    }

    async fn discover(&self) -> Result<NodeIdentity, CloudError> {
        imds::discover(self.opts.imds_endpoint.as_deref()).await
    }

    async fn promote(&self, set: &FloatingSet) -> TransitionReport {
        let rec = Recorder::new(Action::Promote, self.label());
        let res = match aws_pairs(set) {
            Err(e) => Err(e),
            Ok(pairs) => match self.opts.mode {
                AwsMode::Eni => eni::promote(self, &rec, &pairs).await,
                AwsMode::Route => route::promote(self, &rec, &pairs).await,
            },
        };
        if let Err(e) = &res {
            tracing::error!(error = %e, "promotion failed");
        }
        rec.finish(res)
    }

    async fn demote(&self, set: &FloatingSet) -> TransitionReport {
        let rec = Recorder::new(Action::Demote, self.label());
        let res = match aws_pairs(set) {
            Err(e) => Err(e),
            Ok(pairs) => match self.opts.mode {
                AwsMode::Eni => eni::demote(self, &rec, &pairs).await,
                AwsMode::Route => route::demote(self, &rec, &pairs).await,
            },
        };
        rec.finish(res)
    }

    async fn release(&self, set: &FloatingSet) -> TransitionReport {
        let rec = Recorder::new(Action::Demote, self.label());
        let res = match aws_pairs(set) {
            Err(e) => Err(e),
            Ok(pairs) => match self.opts.mode {
                AwsMode::Eni => eni::release(self, &rec, &pairs).await,
                // Route mode's demote touches only the given VIPs.
                AwsMode::Route => route::demote(self, &rec, &pairs).await,
            },
        };
        rec.finish(res)
    }

    async fn reconcile(&self, set: &FloatingSet) -> TransitionReport {
        let rec = Recorder::new(Action::Reconcile, self.label());
        let res = match aws_pairs(set) {
            Err(e) => Err(e),
            Ok(pairs) => match self.opts.mode {
                AwsMode::Eni => eni::reconcile(self, &rec, &pairs).await,
                AwsMode::Route => route::reconcile(self, &rec, &pairs).await,
            },
        };
        rec.finish(res)
    }

    async fn ownership(&self, set: &FloatingSet) -> Result<crate::Ownership, CloudError> {
        let pairs = aws_pairs(set)?;
        lease::ownership(self, &pairs).await
    }

    async fn renew_lease(
        &self,
        set: &FloatingSet,
        ttl: std::time::Duration,
    ) -> Result<(), CloudError> {
        let pairs = aws_pairs(set)?;
        lease::renew(self, &pairs, ttl).await
    }

    async fn status(&self, set: &FloatingSet) -> Result<CloudStatus, CloudError> {
        let pairs = aws_pairs(set)?;
        let rec = Recorder::new(Action::Reconcile, self.label());
        match self.opts.mode {
            AwsMode::Eni => eni::status(self, &rec, &pairs).await,
            AwsMode::Route => route::status(self, &rec, &pairs).await,
        }
    }
}
