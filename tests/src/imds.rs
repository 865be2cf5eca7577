//! An IMDSv2 stand-in: `PUT /latest/api/token` hands out a token, and
//! `GET /latest/meta-data/...` answers only requests carrying it, with the
//! identity of one moto instance. Tests point the provider (or
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`) at it.

use std::{collections::HashMap, sync::Arc};

use anyhow::Result;
use tokio::{io::AsyncWriteExt, net::TcpListener, task::JoinHandle};

use crate::http::{read_message, response};

const TOKEN: &str = "floatlb-test-imds-token";

/// The instance facts IMDS serves.
#[derive(Debug, Clone, Default)]
pub struct InstanceMeta {
    pub instance_id: String,
    pub region: String,
    pub az: String,
    pub mac: String,
    pub eni: String,
    pub subnet: String,
    pub vpc: String,
    pub private_ip: String,
    pub security_groups: Vec<String>,
}

impl InstanceMeta {
    fn paths(&self) -> HashMap<String, String> {
        let base = format!("network/interfaces/macs/{}", self.mac);
        [
            ("instance-id".to_string(), self.instance_id.clone()),
            ("placement/region".into(), self.region.clone()),
            ("placement/availability-zone".into(), self.az.clone()),
            ("mac".into(), self.mac.clone()),
            ("local-ipv4".into(), self.private_ip.clone()),
            (format!("{base}/interface-id"), self.eni.clone()),
            (format!("{base}/subnet-id"), self.subnet.clone()),
            (format!("{base}/vpc-id"), self.vpc.clone()),
            (
                format!("{base}/security-group-ids"),
                self.security_groups.join("\n"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (format!("/latest/meta-data/{k}"), v))
        .collect()
    }
}

/// A running IMDS stand-in; stops when dropped.
pub struct ImdsServer {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl ImdsServer {
    pub async fn start(meta: &InstanceMeta) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(meta, listener)
    }

    /// Serves on a listener created elsewhere, e.g. bound inside a node's
    /// namespace (by [`crate::netns::Netns::enter`]) on 169.254.169.254:80.
    pub fn start_on(meta: &InstanceMeta, listener: std::net::TcpListener) -> Result<Self> {
        listener.set_nonblocking(true)?;
        Self::serve(meta, TcpListener::from_std(listener)?)
    }

    fn serve(meta: &InstanceMeta, listener: TcpListener) -> Result<Self> {
        let endpoint = format!("http://{}", listener.local_addr()?);
        let paths = Arc::new(meta.paths());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let paths = paths.clone();
                tokio::spawn(async move {
                    let Ok(req) = read_message(&mut s).await else {
                        return;
                    };
                    let (method, path) = req.method_path();
                    let resp = match (method, path) {
                        ("PUT", "/latest/api/token") => {
                            match req.header("x-aws-ec2-metadata-token-ttl-seconds") {
                                Some(ttl) => response(
                                    200,
                                    "OK",
                                    &[("x-aws-ec2-metadata-token-ttl-seconds", ttl)],
                                    TOKEN,
                                ),
                                None => response(400, "Bad Request", &[], "missing TTL header"),
                            }
                        }
                        ("GET", p) => {
                            if req.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
                                response(401, "Unauthorized", &[], "")
                            } else {
                                match paths.get(p) {
                                    Some(v) => response(
                                        200,
                                        "OK",
                                        &[("Content-Type", "text/plain")],
                                        v.clone(),
                                    ),
                                    None => response(404, "Not Found", &[], ""),
                                }
                            }
                        }
                        _ => response(405, "Method Not Allowed", &[], ""),
                    };
                    let _ = s.write_all(&resp.to_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(Self { endpoint, task })
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
