//! Shared harness for floatlb's integration tests.

//!
//!   bpffs mounts, all with Drop cleanup.
//! - [`agent`]: starting and stopping the real `floatlb` binary.
//! - [`netns`]: namespaces, veth pairs, bridges, processes in a namespace,
//! - [`servers`]: echo servers that report which endpoint answered.
//! - [`topology`]: the client / LB / switch / endpoints topology.
//! - [`prober`]: a 1 ms UDP prober measuring failover traffic gaps.
//! - [`demonet`], [`demoapi`], [`agent_events`]: the demo's VPC namespaces; an agent's HA event lines.
//! - [`apiclient`], [`apilab`]: the REST API as kube-loxilb speaks it; a lab running the agent with no `--config`.
//! - [`iam_eval`]: an IAM policy evaluator for the offline test of iam/policy.json.
//! - [`vpcsim`]: routes a VIP to whichever node moto says owns its Elastic IP.
pub mod agent;
pub mod agent_events;
pub mod apiclient;
pub mod apilab;
pub mod demoapi;
pub mod demonet;
pub mod ec2world;
pub mod faultproxy;
pub mod hapair;
pub mod http;
pub mod iam_eval;
pub mod imds;
pub mod moto;
pub mod netns;
pub mod partition;
pub mod prober;
pub mod servers;
pub mod syncload;
pub mod timeline;
pub mod topology;
pub mod vpcsim;
