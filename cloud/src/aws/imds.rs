//! This node's identity from the EC2 instance metadata service, IMDSv2 only
//! (a session token from `PUT /latest/api/token`, then `GET`s carrying it).
//!
//! The endpoint comes from the SDK's standard settings
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT`), or from an explicit override.

use std::time::Duration;

use aws_config::imds::Client;

use crate::{CloudError, NodeIdentity};

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

fn endpoint_label(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// Reads the identity. A missing or unreachable IMDS gives [`CloudError::NoImds`].
pub async fn discover(endpoint: Option<&str>) -> Result<NodeIdentity, CloudError> {
    let label = endpoint_label(endpoint);
    let no_imds = |reason: String| CloudError::NoImds {
        endpoint: label.clone(),
        reason,
    };
    let mut builder = Client::builder()
        .max_attempts(2)
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_secs(2));
    if let Some(ep) = endpoint {
        builder = builder
            .endpoint(ep)
            .map_err(|e| no_imds(format!("bad endpoint: {e}")))?;
    }
    let client = builder.build();
    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("/latest/meta-data/{path}"))
                .await
                .map(|s| s.as_ref().trim().to_string())
                .map_err(|e| format!("GET /latest/meta-data/{path}: {e}"))
        }
    };
    let (instance_id, region, az, mac, local_ip) = tokio::try_join!(
        get("instance-id".into()),
        get("placement/region".into()),
        get("placement/availability-zone".into()),
        get("mac".into()),
        get("local-ipv4".into()),
    )
    .map_err(no_imds)?;
    let base = format!("network/interfaces/macs/{mac}");
    let (eni, subnet, vpc, sgs) = tokio::try_join!(
        get(format!("{base}/interface-id")),
        get(format!("{base}/subnet-id")),
        get(format!("{base}/vpc-id")),
        get(format!("{base}/security-group-ids")),
    )
    .map_err(no_imds)?;
    Ok(NodeIdentity {
        instance_id,
        region,
        availability_zone: az,
        vpc_id: vpc,
        subnet_id: subnet,
        primary_eni: eni,
        mac,
        private_ip: local_ip.parse().ok(),
        security_groups: sgs.split_whitespace().map(str::to_string).collect(),
    })
}
