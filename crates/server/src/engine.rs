//! Background work driven from Postgres: the delivery worker, the triggers → tasks
//! handler, the supervisor (dispatch, executions, reconciliation), the reporter and the
//! sweep that asks GitHub again for missed deliveries. They
//! run as [`crate::background::Background`] work and stop on its token.

pub mod delivery_worker;
pub mod redelivery;
pub mod reporter;
pub mod retention;
pub mod supervise;
pub mod tasks;

pub use delivery_worker::{
    DeliveryMeta, DeliveryWorker, HandlerError, LoggingHandler, TriggerHandler,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// "Something changed, look again": wakes the supervisor and the reporter at once instead
/// of at their next poll. Each loop holds its own [`Wakeups`], so no wake-up is lost to
/// another loop, and one that came while the loop was busy is not lost either (a
/// generation counter, which `Notify` would not give every loop).
#[derive(Clone)]
pub struct Signal(std::sync::Arc<watch::Sender<u64>>);

pub struct Wakeups(watch::Receiver<u64>);

impl Signal {
    pub fn new() -> Self {
        Self(std::sync::Arc::new(watch::channel(0).0))
    }

    pub fn wake(&self) {
        self.0
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    pub fn subscribe(&self) -> Wakeups {
        Wakeups(self.0.subscribe())
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Wakeups {
    /// Returns on a wake-up, after `poll` at the latest, or when shutdown is requested.
    pub async fn next(&mut self, poll: std::time::Duration, shutdown: &CancellationToken) {
        tokio::select! {
            _ = self.0.changed() => {}
            () = tokio::time::sleep(poll) => {}
            () = shutdown.cancelled() => {}
        }
    }
}
