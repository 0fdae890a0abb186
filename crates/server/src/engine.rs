//! Background work driven from Postgres: the delivery worker, the triggers → tasks
//! handler, the supervisor (dispatch, executions, reconciliation) and the reporter.

pub mod delivery_worker;
pub mod reporter;
pub mod supervise;
pub mod tasks;

pub use delivery_worker::{
    DeliveryMeta, DeliveryWorker, HandlerError, LoggingHandler, TriggerHandler,
};

use tokio::sync::watch;

/// A shutdown signal shared by background loops.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Flips every [`Shutdown`] made from it.
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is requested (or the trigger is gone).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// "Something changed, look again": wakes the supervisor and the reporter at once instead
/// of at their next poll. Each loop holds its own [`Wakeups`], so no wake-up is lost to
/// another loop.
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
    pub async fn next(&mut self, poll: std::time::Duration, shutdown: &mut Shutdown) {
        tokio::select! {
            _ = self.0.changed() => {}
            () = tokio::time::sleep(poll) => {}
            () = shutdown.requested() => {}
        }
    }
}
