//! Background work driven from Postgres: today the delivery worker; the dispatcher,
//! reconciler and reporter join it here.

pub mod intake;
pub mod tasks;

pub use intake::{DeliveryMeta, DeliveryWorker, HandlerError, LoggingHandler, TriggerHandler};

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
