//! The conntrack expiry thread: walking a large table takes seconds, so it
//! never runs in the owner task (which carries HA); it uses map handles of
//! its own and only logs (rate-limited).

use std::time::Duration;

use crate::ratelimit::RateLimit;

/// The thread that expires conntrack entries every
/// `conntrack_expiry_interval`. Walking a large table takes seconds, which
/// must never delay the owner task, which runs the HA orchestration.
pub(super) struct SweeperThread {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl SweeperThread {
    pub(super) fn spawn<E: std::fmt::Display + 'static>(
        every: Duration,
        mut sweep: Box<dyn FnMut() -> Result<usize, E> + Send>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("ct-expiry".into())
            .spawn(move || {
                let mut warn = RateLimit::new(Duration::from_secs(60));
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    match sweep() {
                        Ok(0) => {}
                        Ok(removed) => tracing::debug!(removed, "conntrack entries expired"),
                        Err(error) => {
                            if let Some(suppressed) = warn.check() {
                                tracing::warn!(%error, suppressed, "conntrack expiry failed");
                            }
                        }
                    }
                }
            })?;
        Ok(Self { stop, handle })
    }

    /// Stops the thread and waits for a sweep in progress to finish.
    pub(super) fn stop(self) {
        drop(self.stop);
        if self.handle.join().is_err() {
            tracing::error!("conntrack expiry thread panicked");
        }
    }
}
