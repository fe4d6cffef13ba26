//! Write-behind of last-used times: a background task that calls
//! [`ApiKeys::flush_last_used`] on an interval, so a verify never waits for a
//! database write.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::Error;
use crate::service::ApiKeys;
use crate::store::StoreError;

/// The shortest flush interval; shorter ones are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The background task started by [`ApiKeys::spawn_last_used_flusher`].
///
/// [`shutdown`](Self::shutdown) stops it after one final flush and reports
/// that flush. Dropping the handle stops it too: the task finishes the flush
/// in progress, makes a final one, and exits.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use keygate::{profiles, ApiKeys};
///
/// let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
/// let flusher = api.spawn_last_used_flusher(Duration::from_secs(5));
/// assert_eq!(flusher.shutdown().await.unwrap(), 0); // nothing was verified
/// # });
/// ```
#[must_use = "dropping the handle stops the flusher"]
#[derive(Debug)]
pub struct LastUsedFlusher {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<usize, Error>>>,
}

impl LastUsedFlusher {
    /// Stops the task and waits for its final flush; returns how many keys
    /// that flush wrote. Call it when the service shuts down.
    ///
    /// ```no_run
    /// # async fn run(api: keygate::ApiKeys) -> Result<(), keygate::Error> {
    /// let flusher = api.spawn_last_used_flusher(std::time::Duration::from_secs(10));
    /// // ... until a shutdown signal ...
    /// let written = flusher.shutdown().await?;
    /// println!("flushed last-used times of {written} keys");
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self) -> Result<usize, Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(0);
        };
        task.await.unwrap_or_else(|e| {
            Err(Error::Store(StoreError::Unavailable(
                format!("last-used flusher stopped abnormally: {e}").into(),
            )))
        })
    }
}

impl Drop for LastUsedFlusher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl ApiKeys {
    /// [`flush_rehashes`](Self::flush_rehashes), logging a failure (the keys
    /// queue again when they next verify).
    async fn flush_rehashes_logged(&self) {
        if let Err(e) = self.flush_rehashes().await {
            tracing::warn!(target: "keygate", error = %e,
                "re-hash flush failed; keys are queued again when they next verify");
        }
    }

    /// Starts a Tokio task that writes recorded last-used times to the store
    /// every `interval` (one batch per tick, see
    /// [`flush_last_used`](Self::flush_last_used)), and with them the
    /// re-hashes of keys that verified under an older pepper
    /// ([`flush_rehashes`](Self::flush_rehashes)). A failed flush is logged
    /// and retried on the next tick. Keep the handle for the life of the
    /// service and call [`LastUsedFlusher::shutdown`] on the way out.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with time enabled, like `tokio::spawn`.
    ///
    /// ```no_run
    /// # async fn run(api: keygate::ApiKeys) -> Result<(), keygate::Error> {
    /// use std::time::Duration;
    ///
    /// let flusher = api.spawn_last_used_flusher(Duration::from_secs(10));
    /// // ... serve requests ...
    /// flusher.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn spawn_last_used_flusher(&self, interval: Duration) -> LastUsedFlusher {
        let api = self.clone();
        let period = interval.max(MIN_INTERVAL);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        if let Err(e) = api.flush_last_used().await {
                            tracing::warn!(target: "keygate", error = %e,
                                "last-used flush failed; retrying on the next tick");
                        }
                        api.flush_rehashes_logged().await;
                    }
                }
            }
            api.flush_rehashes_logged().await;
            api.flush_last_used().await
        });
        LastUsedFlusher {
            stop: Some(stop),
            task: Some(task),
        }
    }
}
