//! A two-AZ VPC in moto: two instance subnets (one per AZ) sharing a route
//! table with an internet gateway, two instances, one Elastic IP, and the
//! IMDS stand-ins that give each node its instance's identity. Plus the
//! Describe-based checks the cloud tests assert with.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aws_credential_types::Credentials;
use aws_sdk_ec2::{
    Client,
    config::{BehaviorVersion, Region},
    types::{Filter, ResourceType, Tag, TagSpecification},
};
use floatlb_cloud::{
    FloatingIp, FloatingSet,
    aws::{AwsMode, AwsOptions, AwsProvider, RetryPolicy},
};

use crate::imds::{ImdsServer, InstanceMeta};

pub const REGION: &str = "us-east-1";
pub const AZS: [&str; 2] = ["us-east-1a", "us-east-1b"];
pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const VIP_BLOCK: &str = "10.0.100.0/24";
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 100, 10);
/// Route-mode VIP: outside the VPC CIDR.
pub const ROUTE_VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 255, 10);

/// Static test credentials (moto accepts any unless IAM is enforced).
pub fn test_credentials() -> Credentials {
    Credentials::new(
        "AKIATESTFLOATLB00001",
        "secret",
        None,
        None,
        "floatlb-tests",
    )
}

/// An EC2 client for `endpoint`.
pub fn client(endpoint: &str, creds: Credentials) -> Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    Client::from_conf(conf)
}

fn filter(name: &str, v: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(v).build()
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// The world: ids of everything the tests need.
pub struct World {
    pub ec2: Client,
    pub cluster: String,
    pub vpc: String,
    pub rtb: String,
    /// Extra route tables for route mode.
    pub route_tables: Vec<String>,
    pub nodes: [InstanceMeta; 2],
    pub eip: Ipv4Addr,
    pub eip_alloc: String,
}

impl World {
    /// The Elastic IP's lease tag (`floatlb:lease`), as written.
    pub async fn lease_tag(&self) -> Result<Option<String>> {
        let out = self
            .ec2
            .describe_addresses()
            .allocation_ids(&self.eip_alloc)
            .send()
            .await
            .context("DescribeAddresses")?;
        Ok(out
            .addresses()
            .first()
            .and_then(|a| {
                a.tags()
                    .iter()
                    .find(|t| t.key() == Some(floatlb_cloud::aws::TAG_LEASE))
            })
            .and_then(|t| t.value().map(str::to_string)))
    }

    /// Waits until node A has been MASTER for `hold` and its lease tag has
    /// changed at least twice (two renewals); returns the renewals seen and
    /// the lease as "holder, N ms left".
    pub async fn wait_steady_lease(&self, hold: Duration) -> Result<(u32, String)> {
        let start = Instant::now();
        let mut last = self.lease_tag().await?;
        let mut renewals = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.lease_tag().await?;
            if now.is_some() && now != last {
                renewals += 1;
                last = now;
            }
            if renewals >= 2 && start.elapsed() >= hold {
                break;
            }
            ensure!(
                start.elapsed() < hold + Duration::from_secs(30),
                "node A's lease was renewed {renewals} times in {:?} (want 2): {last:?}",
                start.elapsed()
            );
        }
        let value = last.unwrap_or_default();
        let described = match value.rsplit_once('/') {
            Some((inst, exp)) => {
                let left = exp.parse::<i64>().unwrap_or(0)
                    - crate::agent_events::unix_us(std::time::SystemTime::now()) / 1000;
                let who = if inst == self.nodes[0].instance_id {
                    "node A"
                } else {
                    "node B"
                };
                format!("{who}, {left} ms left")
            }
            None => format!("unreadable: {value:?}"),
        };
        Ok((renewals, described))
    }

    /// Builds the VPC through `ec2`. Resources that need it carry the cluster tag
    /// (the IAM policy's conditions are written against it).
    pub async fn build(ec2: Client, cluster: &str) -> Result<Self> {
        let ctag = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .tags(tag("floatlb:cluster", cluster))
                .build()
        };
        let vpc = ec2
            .create_vpc()
            .cidr_block(VPC_CIDR)
            .send()
            .await
            .context("create_vpc")?
            .vpc
            .and_then(|v| v.vpc_id)
            .context("vpc id")?;
        let igw = ec2
            .create_internet_gateway()
            .send()
            .await
            .context("create_internet_gateway")?
            .internet_gateway
            .and_then(|g| g.internet_gateway_id)
            .context("igw id")?;
        ec2.attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&vpc)
            .send()
            .await
            .context("attach_internet_gateway")?;
        let rtb = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .tag_specifications(ctag(ResourceType::RouteTable))
            .send()
            .await
            .context("create_route_table")?
            .route_table
            .and_then(|r| r.route_table_id)
            .context("rtb id")?;
        ec2.create_route()
            .route_table_id(&rtb)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(&igw)
            .send()
            .await
            .context("create_route")?;
        let mut route_tables = Vec::new();
        for _ in 0..2 {
            route_tables.push(
                ec2.create_route_table()
                    .vpc_id(&vpc)
                    .tag_specifications(ctag(ResourceType::RouteTable))
                    .send()
                    .await
                    .context("create_route_table")?
                    .route_table
                    .and_then(|r| r.route_table_id)
                    .context("rtb id")?,
            );
        }
        let sg = ec2
            .create_security_group()
            .group_name(format!("floatlb-{cluster}"))
            .description("floatlb-test")
            .vpc_id(&vpc)
            .send()
            .await
            .context("create_security_group")?
            .group_id
            .context("sg id")?;
        let image = ec2
            .describe_images()
            .send()
            .await
            .context("describe_images")?
            .images()
            .first()
            .and_then(|i| i.image_id().map(str::to_string))
            .context("moto has no images")?;
        let alloc = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .tag_specifications(ctag(ResourceType::ElasticIp))
            .send()
            .await
            .context("allocate_address")?;
        let eip: Ipv4Addr = alloc.public_ip().context("eip")?.parse()?;
        let eip_alloc = alloc.allocation_id().context("alloc")?.to_string();
        let mut nodes: Vec<InstanceMeta> = Vec::new();
        for (i, az) in AZS.iter().enumerate() {
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.0.{}.0/24", i + 1))
                .availability_zone(*az)
                .send()
                .await
                .context("create_subnet")?
                .subnet
                .and_then(|s| s.subnet_id)
                .context("subnet id")?;
            ec2.associate_route_table()
                .route_table_id(&rtb)
                .subnet_id(&subnet)
                .send()
                .await
                .context("associate_route_table")?;
            let inst = ec2
                .run_instances()
                .image_id(&image)
                .min_count(1)
                .max_count(1)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .subnet_id(&subnet)
                .security_group_ids(&sg)
                .tag_specifications(ctag(ResourceType::Instance))
                .send()
                .await
                .context("run_instances")?;
            let inst = inst.instances().first().context("instance")?;
            let nic = inst.network_interfaces().first().context("primary eni")?;
            let eni = nic.network_interface_id().context("eni id")?.to_string();
            ec2.create_tags()
                .resources(&eni)
                .tags(tag("floatlb:cluster", cluster))
                .send()
                .await
                .context("create_tags")?;
            nodes.push(InstanceMeta {
                instance_id: inst.instance_id().context("instance id")?.into(),
                region: REGION.into(),
                az: (*az).into(),
                mac: nic.mac_address().context("mac")?.into(),
                eni,
                subnet,
                vpc: vpc.clone(),
                private_ip: inst.private_ip_address().context("private ip")?.into(),
                security_groups: vec![sg.clone()],
            });
        }
        let nodes: [InstanceMeta; 2] =
            nodes.try_into().map_err(|_| anyhow::anyhow!("two nodes"))?;
        Ok(Self {
            ec2,
            cluster: cluster.into(),
            vpc,
            rtb,
            route_tables,
            nodes,
            eip,
            eip_alloc,
        })
    }

    /// Writes `dir/lb.json`: one TCP service on port 80 whose `externalIP`
    /// is the Elastic IP and `privateIP` the ENI-mode VIP (the list the
    /// `floatlb cloud` commands read the floating set from).
    pub fn write_service_config(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        let config = dir.join("lb.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"lbAttr":[{{"serviceArguments":{{"externalIP":"{}","privateIP":"{VIP}","port":80,"protocol":"tcp","sel":0,"mode":2}},"endpoints":[{{"endpointIP":"10.0.1.50","targetPort":8080,"weight":1}}]}}]}}"#,
                self.eip
            ),
        )?;
        Ok(config)
    }

    /// The floating set of ENI mode: EIP -> VIP in the VIP block.
    pub fn eni_set(&self) -> FloatingSet {
        FloatingSet::new([FloatingIp {
            eip: Some(self.eip),
            vip: VIP.into(),
        }])
    }

    pub fn route_set(&self) -> FloatingSet {
        FloatingSet::new([FloatingIp {
            eip: Some(self.eip),
            vip: ROUTE_VIP.into(),
        }])
    }

    /// Provider options for node `i` (API-only: no OS configuration).
    pub fn options(
        &self,
        mode: AwsMode,
        endpoint: &str,
        imds: &ImdsServer,
        creds: Credentials,
    ) -> AwsOptions {
        let mut o = AwsOptions::new(mode, self.cluster.clone());
        o.cidr_block = Some(VIP_BLOCK.parse().expect("block"));
        o.route_tables = self.route_tables.clone();
        o.os_config = false;
        o.ec2_endpoint = Some(endpoint.into());
        o.imds_endpoint = Some(imds.endpoint.clone());
        o.credentials = Some(creds);
        o.retry = RetryPolicy {
            min_delay: std::time::Duration::from_millis(20),
            max_delay: std::time::Duration::from_millis(200),
            poll_interval: std::time::Duration::from_millis(50),
            poll_timeout: std::time::Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        o
    }

    /// Starts node `i`'s IMDS and connects its provider.
    pub async fn node(
        &self,
        i: usize,
        mode: AwsMode,
        endpoint: &str,
        creds: Credentials,
    ) -> Result<Node> {
        let imds = ImdsServer::start(&self.nodes[i]).await?;
        let provider = AwsProvider::connect(self.options(mode, endpoint, &imds, creds)).await?;
        Ok(Node { imds, provider })
    }

    /// Asserts through Describe calls that node `i` is the ENI-mode MASTER:
    /// the EIP points at the VIP on the node's `loxi-eni`; exactly one VIP
    /// subnet and one `loxi-eni` exist, in the node's AZ, attached to it;
    /// source/dest check is off.
    pub async fn assert_eni_master(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let subnets = self
            .ec2
            .describe_subnets()
            .filters(filter("vpc-id", &self.vpc))
            .filters(filter("cidr-block", VIP_BLOCK))
            .send()
            .await?;
        let subnets = subnets.subnets();
        ensure!(
            subnets.len() == 1,
            "want 1 VIP subnet, found {}",
            subnets.len()
        );
        ensure!(
            subnets[0].availability_zone() == Some(node.az.as_str()),
            "VIP subnet in {:?}, want {}",
            subnets[0].availability_zone(),
            node.az
        );
        let enis = self
            .ec2
            .describe_network_interfaces()
            .filters(filter("vpc-id", &self.vpc))
            .filters(filter("tag:Name", "loxi-eni"))
            .send()
            .await?;
        let enis = enis.network_interfaces();
        ensure!(enis.len() == 1, "want 1 loxi-eni, found {}", enis.len());
        let eni = &enis[0];
        ensure!(
            eni.availability_zone() == Some(node.az.as_str()),
            "loxi-eni in {:?}",
            eni.availability_zone()
        );
        ensure!(
            eni.subnet_id() == subnets[0].subnet_id(),
            "loxi-eni not in the VIP subnet"
        );
        let att = eni.attachment().context("loxi-eni not attached")?;
        ensure!(
            att.instance_id() == Some(node.instance_id.as_str()),
            "loxi-eni attached to {:?}, want {}",
            att.instance_id(),
            node.instance_id
        );
        ensure!(
            eni.source_dest_check() == Some(false),
            "source/dest check is {:?}",
            eni.source_dest_check()
        );
        let addr = self.address().await?;
        ensure!(
            addr.network_interface_id() == eni.network_interface_id(),
            "EIP on {:?}, want {:?}",
            addr.network_interface_id(),
            eni.network_interface_id()
        );
        ensure!(
            addr.private_ip_address() == Some(VIP.to_string().as_str()),
            "EIP -> {:?}",
            addr.private_ip_address()
        );
        Ok(())
    }

    /// Asserts that node `i` is the route-mode MASTER: VIP/32 -> its primary
    /// ENI in every route table (exactly one such route each), EIP -> its
    /// primary private IP, source/dest check off on its primary ENI.
    pub async fn assert_route_master(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let dest = format!("{ROUTE_VIP}/32");
        let tables = self
            .ec2
            .describe_route_tables()
            .set_route_table_ids(Some(self.route_tables.clone()))
            .send()
            .await?;
        ensure!(
            tables.route_tables().len() == self.route_tables.len(),
            "route tables missing"
        );
        for t in tables.route_tables() {
            let routes: Vec<_> = t
                .routes()
                .iter()
                .filter(|r| r.destination_cidr_block() == Some(dest.as_str()))
                .collect();
            ensure!(
                routes.len() == 1,
                "{:?}: {} routes for {dest}",
                t.route_table_id(),
                routes.len()
            );
            ensure!(
                routes[0].network_interface_id() == Some(node.eni.as_str()),
                "{:?}: {dest} -> {:?}, want {}",
                t.route_table_id(),
                routes[0].network_interface_id(),
                node.eni
            );
        }
        let addr = self.address().await?;
        ensure!(
            addr.network_interface_id() == Some(node.eni.as_str()),
            "EIP on {:?}",
            addr.network_interface_id()
        );
        ensure!(
            addr.private_ip_address() == Some(node.private_ip.as_str()),
            "EIP -> {:?}",
            addr.private_ip_address()
        );
        let eni = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(&node.eni)
            .send()
            .await?;
        let sdc = eni
            .network_interfaces()
            .first()
            .and_then(|e| e.source_dest_check());
        ensure!(
            sdc == Some(false),
            "source/dest check on {} is {sdc:?}",
            node.eni
        );
        Ok(())
    }

    pub async fn address(&self) -> Result<aws_sdk_ec2::types::Address> {
        let out = self
            .ec2
            .describe_addresses()
            .allocation_ids(&self.eip_alloc)
            .send()
            .await?;
        out.addresses().first().cloned().context("EIP vanished")
    }

    /// Counts what could leak: (subnets, network interfaces, addresses, routes in all tables).
    pub async fn census(&self) -> Result<Census> {
        let subnets = self
            .ec2
            .describe_subnets()
            .filters(filter("vpc-id", &self.vpc))
            .send()
            .await?;
        let enis = self
            .ec2
            .describe_network_interfaces()
            .filters(filter("vpc-id", &self.vpc))
            .send()
            .await?;
        let addrs = self.ec2.describe_addresses().send().await?;
        let rtbs = self
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &self.vpc))
            .send()
            .await?;
        Ok(Census {
            subnets: subnets.subnets().len(),
            enis: enis.network_interfaces().len(),
            addresses: addrs.addresses().len(),
            routes: rtbs.route_tables().iter().map(|t| t.routes().len()).sum(),
            rtb_associations: rtbs
                .route_tables()
                .iter()
                .map(|t| t.associations().len())
                .sum(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub subnets: usize,
    pub enis: usize,
    pub addresses: usize,
    pub routes: usize,
    pub rtb_associations: usize,
}

/// One node: its IMDS stand-in (kept alive) and its provider.
pub struct Node {
    pub imds: ImdsServer,
    pub provider: AwsProvider,
}

/// Fails with the report's error when a transition did not succeed.
pub fn check(report: &floatlb_cloud::TransitionReport) -> Result<()> {
    if !report.ok {
        bail!(
            "{:?} failed: {}\ncalls: {:#?}",
            report.action,
            report.error.as_deref().unwrap_or("?"),
            report.calls
        );
    }
    Ok(())
}

/// A cluster name unique to this process and test.
pub fn cluster_name(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}
