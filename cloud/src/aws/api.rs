//! One EC2 call = one helper: classify the error, retry what is transient
//! with exponential backoff and jitter (backon) inside a bounded total time,
//! and record every attempt in the transition's [`Recorder`].
//!
//! The SDK's own retry layer is disabled so that this is the only retry loop
//! and every attempt shows in the report.

use std::{future::Future, time::Duration, time::Instant};

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::{CloudError, ErrorClass, Recorder, error::classify_code, report::CallOutcome};

/// Retry and polling bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First backoff delay (doubles each time, with jitter).
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Most attempts of one call.
    pub max_attempts: usize,
    /// Most total backoff time for one call.
    pub total: Duration,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
    /// Interval and bound of eventual-consistency polls.
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: 8,
            total: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            poll_timeout: Duration::from_secs(60),
        }
    }
}

/// Converts an SDK error into a classified [`CloudError`].
pub(crate) fn convert<E>(call: &str, err: &SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, status) = match err {
        SdkError::ServiceError(s) => (
            s.err().code().map(str::to_string),
            Some(s.raw().status().as_u16()),
        ),
        SdkError::ResponseError(r) => (None, Some(r.raw().status().as_u16())),
        _ => (None, None),
    };
    let class = match err {
        SdkError::TimeoutError(_) => ErrorClass::Transient,
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => ErrorClass::Transient,
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => ErrorClass::Fatal,
        _ => classify_code(code.as_deref(), status),
    };
    let message = match err {
        SdkError::ServiceError(s) => s
            .err()
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| DisplayErrorContext(err).to_string()),
        _ => DisplayErrorContext(err).to_string(),
    };
    if class == ErrorClass::Denied {
        return CloudError::Denied {
            call: call.to_string(),
            action: call.trim_start_matches("ec2:").to_string(),
            code: code.unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0))),
            message,
        };
    }
    CloudError::Api {
        call: call.to_string(),
        class,
        code: code.or_else(|| match err {
            SdkError::TimeoutError(_) => Some("Timeout".into()),
            _ => status.map(|s| format!("HTTP {s}")),
        }),
        message,
    }
}

/// The EC2 client plus the retry policy.
#[derive(Debug, Clone)]
pub struct Ec2 {
    pub client: aws_sdk_ec2::Client,
    pub policy: RetryPolicy,
}

impl Ec2 {
    /// Runs `f` until it succeeds, fails with a non-transient error, or the
    /// retry budget is spent. `call` is `ec2:Action`; `target` names the resource.
    pub async fn call<T, E, F, Fut>(
        &self,
        rec: &Recorder,
        call: &'static str,
        target: &str,
        mutating: bool,
        mut f: F,
    ) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.max_attempts.saturating_sub(1))
            .with_total_delay(Some(self.policy.total))
            .with_jitter()
            .build();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let start = Instant::now();
            let result = match tokio::time::timeout(self.policy.attempt_timeout, f()).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(convert(call, &e)),
                Err(_) => Err(CloudError::Api {
                    call: call.into(),
                    class: ErrorClass::Transient,
                    code: Some("Timeout".into()),
                    message: format!("no answer within {:?}", self.policy.attempt_timeout),
                }),
            };
            match result {
                Ok(v) => {
                    rec.record_span(call, target, mutating, attempt, start, CallOutcome::Ok);
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next();
                    let label = e.code().unwrap_or("transient").to_string();
                    match delay {
                        Some(d) => {
                            rec.record_span(
                                call,
                                target,
                                mutating,
                                attempt,
                                start,
                                CallOutcome::Retried(label),
                            );
                            tracing::warn!(call, target, attempt, delay_ms = d.as_millis() as u64, error = %e, "transient EC2 error, retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            rec.record_span(
                                call,
                                target,
                                mutating,
                                attempt,
                                start,
                                CallOutcome::Failed(label),
                            );
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    rec.record_span(
                        call,
                        target,
                        mutating,
                        attempt,
                        start,
                        CallOutcome::Failed(e.code().unwrap_or("error").to_string()),
                    );
                    return Err(e);
                }
            }
        }
    }

    /// Polls `check` every `poll_interval` until it returns `Some`, at most
    /// `poll_timeout`. `what`/`state` name the wait in the timeout error.
    pub async fn poll<T, F, Fut>(
        &self,
        what: &str,
        state: &str,
        mut check: F,
    ) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, CloudError>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = check().await? {
                return Ok(v);
            }
            if start.elapsed() >= self.policy.poll_timeout {
                return Err(CloudError::Timeout {
                    what: what.into(),
                    state: state.into(),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(self.policy.poll_interval).await;
        }
    }
}
