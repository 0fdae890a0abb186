//! Background work that ends with the server. A [`CancellationToken`] asks it to stop, a
//! [`TaskTracker`] lets shutdown wait for it (for a bounded time), and a panic in it is
//! logged and counted instead of vanishing with a detached task. The server spawns its
//! background work only through [`Background`] (its one `tokio::spawn` is the server's own
//! task, whose handle `RunningServer` keeps and awaits).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// One group of background work: spawned here, stopped by one token, waited for together.
#[derive(Clone, Default)]
pub struct Background {
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Shared by every group made with [`Background::group`]: the server reports them.
    panics: Arc<AtomicUsize>,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// A further group under the same stop request (and panic count), waited for on its
    /// own: shutdown can then wait for one kind of work before stopping the next.
    pub fn group(&self) -> Self {
        Self {
            stop: self.stop.clone(),
            tracker: TaskTracker::new(),
            panics: Arc::clone(&self.panics),
        }
    }

    /// Asks every group sharing this one's token to stop.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once a stop is requested.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Runs `work` on the runtime, in the caller's span, tracked by this group.
    pub fn spawn<F>(&self, what: &'static str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker
            .spawn(self.guarded(what, work).in_current_span());
    }

    /// `work`, with a panic in it logged and counted rather than lost (for work run
    /// elsewhere, e.g. in a `JoinSet`). State a panic must not leave behind is released
    /// by guards dropped while it unwinds.
    pub fn guarded<F>(
        &self,
        what: &'static str,
        work: F,
    ) -> impl Future<Output = ()> + Send + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let panics = Arc::clone(&self.panics);
        async move {
            if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
                panics.fetch_add(1, Ordering::Relaxed);
                crate::metrics::background_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                tracing::error!(work = what, panic = message, "background work panicked");
            }
        }
    }

    /// Waits, at most `grace`, for everything spawned in this group; `false` (and a
    /// warning) if some is still running, which is then left to end with the runtime.
    /// Work spawned after this still counts.
    pub async fn finish(&self, what: &'static str, grace: Duration) -> bool {
        self.tracker.close();
        let ended = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !ended {
            tracing::warn!(
                work = what,
                still_running = self.tracker.len(),
                ?grace,
                "background work still running at shutdown; leaving it"
            );
        }
        ended
    }

    /// How many pieces of work panicked, in this group and those made with it.
    pub fn panics(&self) -> usize {
        self.panics.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENEROUS: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_panic_is_counted_and_the_rest_still_finishes() {
        let background = Background::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        background.spawn("doomed", async { panic!("on purpose") });
        background.spawn("fine", async move {
            let _ = done_tx.send(());
        });
        assert!(background.finish("test work", GENEROUS).await);
        assert_eq!(background.panics(), 1);
        assert_eq!(done_rx.await, Ok(()));
    }

    #[tokio::test]
    async fn groups_share_the_stop_request_and_the_panic_count_but_not_the_waiting() {
        let server = Background::new();
        let engine = server.group();
        let stopped = engine.clone();
        engine.spawn("waits for stop", async move { stopped.stopping().await });
        // The server's own group is empty: it finishes although the engine's work runs.
        assert!(server.finish("server work", GENEROUS).await);
        assert!(!engine.is_stopping());
        server.stop();
        assert!(engine.is_stopping());
        assert!(engine.finish("engine work", GENEROUS).await);
        engine.spawn("late panic", async { panic!("after finish") });
        assert!(engine.finish("engine work", GENEROUS).await);
        assert_eq!(server.panics(), 1, "counted for the server too");
    }
}
