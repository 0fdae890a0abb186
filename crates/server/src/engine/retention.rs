//! The retention job: every [`EVERY`] (and at start), purges webhook bodies and finished
//! tasks' logs older than the configured age, batch by batch (short transactions, a pause
//! between them), until nothing old is left.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::background::Background;
use crate::store::retention::Purged;
use crate::store::{Store, StoreError};

/// Time between two purges.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Deliveries (and tasks' logs) per batch.
const BATCH: i64 = 500;
/// Between two batches, so other writers get the tables.
const PAUSE: Duration = Duration::from_millis(50);

pub struct Retention {
    store: Store,
    /// What is older than this is purged.
    age: Duration,
}

impl Retention {
    pub fn new(store: Store, age: Duration) -> Self {
        Self { store, age }
    }

    /// Purges until the background group stops.
    pub async fn run(self, background: Background) {
        let shutdown = background.token().clone();
        loop {
            tokio::select! {
                result = self.purge(Utc::now()) => match result {
                    Ok(purged) if !purged.is_empty() => {
                        tracing::info!(?purged, "old webhook bodies and task logs purged")
                    }
                    Ok(_) => tracing::debug!("nothing old to purge"),
                    Err(e) => tracing::warn!(error = %e, "the retention purge failed"),
                },
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Purges everything older than the age at `now`, batch by batch.
    pub async fn purge(&self, now: DateTime<Utc>) -> Result<Purged, StoreError> {
        let cutoff = now - chrono::Duration::from_std(self.age).unwrap_or(chrono::Duration::MAX);
        let mut total = Purged::default();
        loop {
            let purged = self.store.purge_before(cutoff, BATCH).await?;
            if purged.is_empty() {
                return Ok(total);
            }
            total.bodies += purged.bodies;
            total.log_lines += purged.log_lines;
            tokio::time::sleep(PAUSE).await;
        }
    }
}
