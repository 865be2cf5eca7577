//! A fault-injecting HTTP proxy between the provider and moto. Requests are
//! matched by their EC2 `Action=` and, while a rule has uses left, answered
//! with a throttle (503 RequestLimitExceeded), a 500 InternalError, a delay,
//! or forwarded and then "lost" (the change happened, the caller sees a
//! fatal error: a crash right after the step). [`Fault::DryRunAnswer`]
//! answers a `DryRun=true` request itself, for the calls on which moto
//! ignores DryRun (it would really create or change the resource).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tokio::{io::AsyncWriteExt, net::TcpListener, task::JoinHandle};

use crate::http::{read_message, response, roundtrip};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 503 with code RequestLimitExceeded.
    Throttle,
    /// HTTP 500 with code InternalError.
    ServerError,
    /// Forward after a delay.
    Delay(Duration),
    /// Forward (the change takes effect), then answer 400 InvalidParameterValue
    /// (a fatal error): the caller aborts after the step.
    AbortAfter,
    /// A `DryRun=true` request is answered here with 412 DryRunOperation and
    /// never forwarded; any other request is forwarded untouched.
    DryRunAnswer,
}

#[derive(Debug, Clone)]
struct Rule {
    action: String,
    fault: Fault,
    remaining: u32,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    /// Requests seen per action.
    seen: HashMap<String, u32>,
    /// Faults injected per action.
    injected: HashMap<String, u32>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

fn ec2_error(status: u16, reason: &str, code: &str, message: &str) -> crate::http::Message {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>injected-by-fault-proxy</RequestID></Response>"
    );
    response(status, reason, &[("Content-Type", "text/xml")], body)
}

fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("")
        .to_string()
}

impl FaultProxy {
    pub async fn start(upstream: String) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let st = st.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(req) = read_message(&mut s).await else {
                        return;
                    };
                    let action = action_of(&req.body);
                    let dry_run = String::from_utf8_lossy(&req.body)
                        .split('&')
                        .any(|kv| kv.eq_ignore_ascii_case("DryRun=true"));
                    let fault = {
                        let mut g = st.lock().unwrap();
                        *g.seen.entry(action.clone()).or_default() += 1;
                        let f = g
                            .rules
                            .iter_mut()
                            .find(|r| {
                                r.action == action
                                    && r.remaining > 0
                                    && (r.fault != Fault::DryRunAnswer || dry_run)
                            })
                            .map(|r| {
                                r.remaining -= 1;
                                r.fault
                            });
                        if f.is_some() {
                            *g.injected.entry(action.clone()).or_default() += 1;
                        }
                        f
                    };
                    let forward = || roundtrip(&upstream, &req, Duration::from_secs(30));
                    let resp = match fault {
                        Some(Fault::Throttle) => ec2_error(
                            503,
                            "Service Unavailable",
                            "RequestLimitExceeded",
                            "Request limit exceeded.",
                        ),
                        Some(Fault::ServerError) => ec2_error(
                            500,
                            "Internal Server Error",
                            "InternalError",
                            "An internal error has occurred.",
                        ),
                        Some(Fault::Delay(d)) => {
                            tokio::time::sleep(d).await;
                            match forward().await {
                                Ok(r) => r,
                                Err(_) => return,
                            }
                        }
                        Some(Fault::DryRunAnswer) => ec2_error(
                            412,
                            "Precondition Failed",
                            "DryRunOperation",
                            "Request would have succeeded, but DryRun flag is set.",
                        ),
                        Some(Fault::AbortAfter) => {
                            let _ = forward().await;
                            ec2_error(
                                400,
                                "Bad Request",
                                "InvalidParameterValue",
                                "injected abort after the step took effect",
                            )
                        }
                        None => match forward().await {
                            Ok(r) => r,
                            Err(_) => return,
                        },
                    };
                    let _ = s.write_all(&resp.to_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(Self {
            endpoint,
            state,
            task,
        })
    }

    /// Injects `fault` on the next `times` requests with `Action=action`.
    pub fn inject(&self, action: &str, fault: Fault, times: u32) {
        self.state.lock().unwrap().rules.push(Rule {
            action: action.into(),
            fault,
            remaining: times,
        });
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Faults injected so far for `action`.
    pub fn injected(&self, action: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .injected
            .get(action)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen so far for `action`.
    pub fn seen(&self, action: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .seen
            .get(action)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
