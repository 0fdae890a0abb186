//! The delivery worker: claims stored deliveries (`FOR UPDATE SKIP LOCKED`, so replicas
//! can share the inbox), decodes each into a [`Trigger`], records installations, hands
//! triggers to a [`TriggerHandler`] and stores every outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::store::pull_requests::{PullRequestRecorded, PullRequestStateChange};
use crate::store::{
    ClaimedDelivery, DeliveryClaim, DeliveryFacts, DeliveryOutcome, InstallationAccount,
    InstallationRepository, Store, StoreError,
};
use crate::webhook::inbox::FreshDeliveries;
use crate::webhook::trigger::decode_delivery;
use crate::webhook::trigger::{
    InstallationAccountRef, InstallationChange, InstalledRepo, PullRequestChange,
};
use crate::webhook::{DecodeContext, Decoded, Trigger};
use bg_agent_core::backoff::Backoff;

/// How long a worker gathers fresh deliveries into one batch.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// After this many attempts a delivery that keeps failing transiently is failed for good.
pub const MAX_ATTEMPTS: i32 = 10;

/// 1 s, 2 s, 4 s … 256 s at most, between attempts at a delivery and between tries to
/// reach the database. (256 s, not the 5 minutes an older comment claimed: the doubling
/// always stopped at 2⁸.) No jitter: deliveries are retried from the database in batches.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), 2, Duration::from_secs(256));

#[derive(Debug, Clone)]
pub struct DeliveryMeta {
    pub guid: String,
    pub event: String,
    pub attempt: i32,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt later (GitHub or the database briefly unavailable).
    #[error("{0}")]
    Transient(String),
    /// Will never succeed; the delivery is failed with this reason.
    #[error("{0}")]
    Permanent(String),
}

/// Turns triggers into work. The engine implements it; tests record what they get.
/// It may be called more than once for one delivery (at-least-once), so it must be
/// idempotent per delivery.
pub trait TriggerHandler: Send + Sync + 'static {
    fn handle(
        &self,
        delivery: &DeliveryMeta,
        trigger: &Trigger,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Logs each trigger and does nothing else: the handler of a server without GitHub App
/// credentials (deliveries are stored and decoded only), and of tests of intake alone.
pub struct LoggingHandler;

impl TriggerHandler for LoggingHandler {
    async fn handle(
        &self,
        _delivery: &DeliveryMeta,
        trigger: &Trigger,
    ) -> Result<(), HandlerError> {
        tracing::debug!(kind = trigger.kind(), "trigger received");
        Ok(())
    }
}

pub struct DeliveryWorker<H> {
    store: Store,
    handler: Arc<H>,
    context: DecodeContext,
    config: WorkerConfig,
}

impl<H> Clone for DeliveryWorker<H> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            handler: self.handler.clone(),
            context: self.context.clone(),
            config: self.config.clone(),
        }
    }
}

impl<H: TriggerHandler> DeliveryWorker<H> {
    pub fn new(
        store: Store,
        handler: Arc<H>,
        context: DecodeContext,
        config: WorkerConfig,
    ) -> Self {
        Self {
            store,
            handler,
            context,
            config,
        }
    }

    /// Works until shutdown: processes deliveries handed over in memory by this process's
    /// intake as they come, and every poll interval drains whatever else is due in the
    /// database (stored by other replicas, left by a crash, or waiting for a retry).
    pub async fn run(self, fresh: FreshDeliveries, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batch_max = usize::try_from(self.config.claim_batch).unwrap_or(1).max(1);
        let mut batch = Vec::with_capacity(batch_max);
        let mut fresh_open = true;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = fresh.recv_batch(&mut batch, batch_max, BATCH_WINDOW), if fresh_open => {
                    if received == 0 {
                        fresh_open = false;
                        continue;
                    }
                    let claimed = self.store.claim_fresh_deliveries(std::mem::take(&mut batch)).await;
                    match claimed {
                        Ok(claim) => self.process_claim(claim).await,
                        Err(e) => Err(e),
                    }
                }
                _ = poll.tick() => self.drain_due().await,
            };
            match result {
                Ok(_) => failures = 0,
                Err(e) => {
                    // What was not finished stays pending in the database; the next poll
                    // picks it up.
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::error!(error = %e, retry_in = ?delay, "delivery worker cannot reach the database");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Processes due deliveries from the database until none is left.
    pub async fn drain_due(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            match self.run_once().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Claims and processes one batch from the database; returns how many deliveries it
    /// handled (0: none due).
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claim = self.store.claim_deliveries(self.config.claim_batch).await?;
        self.process_claim(claim).await
    }

    async fn process_claim(&self, mut claim: DeliveryClaim) -> Result<usize, StoreError> {
        let deliveries = claim.take_deliveries();
        if deliveries.is_empty() {
            return Ok(0);
        }
        for delivery in &deliveries {
            let span =
                tracing::info_span!("delivery", guid = %delivery.guid, event = %delivery.event);
            let result = self
                .process(&mut claim, delivery)
                .instrument(span.clone())
                .await;
            if let Err(e) = result {
                // The claim's transaction is unusable now: roll it back (the rest of the
                // batch is claimed again) and push this one delivery back so it cannot
                // block the others.
                drop(claim);
                let _span = span.enter();
                tracing::warn!(error = %e, "processing failed; will retry");
                self.store
                    .defer_delivery(
                        &delivery.guid,
                        &format!("database error: {e}"),
                        backoff(delivery.attempts.unsigned_abs() + 1),
                        MAX_ATTEMPTS,
                    )
                    .await?;
                // Counts as handled, so a drain goes straight on with the rest.
                return Ok(1);
            }
            // Decoding is CPU work and a handler may finish without ever suspending:
            // yield between deliveries so a batch never holds a runtime thread (and the
            // webhook requests queued on it) for milliseconds.
            tokio::task::yield_now().await;
        }
        claim.commit().await?;
        Ok(deliveries.len())
    }

    async fn process(
        &self,
        claim: &mut DeliveryClaim,
        delivery: &ClaimedDelivery,
    ) -> Result<(), StoreError> {
        let (envelope, decoded) = decode_delivery(&delivery.event, &delivery.body, &self.context);
        let facts = DeliveryFacts {
            action: envelope.action,
            installation_id: envelope.installation_id,
        };
        let outcome = match decoded {
            Decoded::Ignored(reason) => {
                tracing::debug!(%reason, "delivery ignored");
                DeliveryOutcome::Ignored { reason }
            }
            Decoded::Malformed(reason) => {
                tracing::warn!(%reason, "malformed delivery");
                DeliveryOutcome::Failed { reason }
            }
            Decoded::Trigger(trigger) => {
                if let Trigger::Installation(change) = &*trigger {
                    record_installation(claim, change).await?;
                }
                if let Trigger::PullRequest(change) = &*trigger {
                    // Nothing to ask GitHub and nothing for the handler: recorded here.
                    record_pull_request(claim, &delivery.guid, change).await?
                } else {
                    self.hand_over(delivery, *trigger).await
                }
            }
        };
        claim.finish(&delivery.guid, facts, outcome);
        Ok(())
    }

    async fn hand_over(&self, delivery: &ClaimedDelivery, trigger: Trigger) -> DeliveryOutcome {
        let meta = DeliveryMeta {
            guid: delivery.guid.clone(),
            event: delivery.event.clone(),
            attempt: delivery.attempts + 1,
            received_at: delivery.received_at,
        };
        match self.handler.handle(&meta, &trigger).await {
            Ok(()) => DeliveryOutcome::Processed,
            Err(HandlerError::Permanent(reason)) => {
                tracing::warn!(%reason, "trigger failed");
                DeliveryOutcome::Failed { reason }
            }
            Err(HandlerError::Transient(reason)) if meta.attempt >= MAX_ATTEMPTS => {
                tracing::error!(%reason, attempts = meta.attempt, "giving up on delivery");
                DeliveryOutcome::Failed {
                    reason: format!("gave up after {} attempts: {reason}", meta.attempt),
                }
            }
            Err(HandlerError::Transient(reason)) => {
                let delay = backoff(meta.attempt.unsigned_abs());
                tracing::warn!(%reason, retry_in = ?delay, "trigger will be retried");
                DeliveryOutcome::RetryLater { reason, delay }
            }
        }
    }
}

/// Records what became of a pull request on the task that opened it; one bg-agent did
/// not open is ignored quietly (every pull request of the repository is delivered).
async fn record_pull_request(
    claim: &mut DeliveryClaim,
    guid: &str,
    change: &PullRequestChange,
) -> Result<DeliveryOutcome, StoreError> {
    let Ok(number) = i32::try_from(change.number) else {
        return Ok(DeliveryOutcome::Ignored {
            reason: format!("pull request #{} is not one of ours", change.number),
        });
    };
    let recorded = claim
        .record_pull_request_state(&PullRequestStateChange {
            repository_id: change.repository_id,
            number,
            state: change.state,
            updated_at: change.updated_at,
            sender: &change.sender.login,
            delivery_guid: guid,
        })
        .await?;
    Ok(match recorded {
        PullRequestRecorded::Recorded(tasks) => {
            tracing::info!(pr = number, state = %change.state, ?tasks, "pull request state recorded");
            DeliveryOutcome::Processed
        }
        PullRequestRecorded::Unchanged => DeliveryOutcome::Ignored {
            reason: format!(
                "pull request #{number} of {}: already {}, or a newer state is recorded",
                change.repository, change.state
            ),
        },
        PullRequestRecorded::NotOurs => {
            tracing::debug!(pr = number, repository = %change.repository, "not a pull request of ours");
            DeliveryOutcome::Ignored {
                reason: format!(
                    "pull request #{number} of {} was not opened by bg-agent",
                    change.repository
                ),
            }
        }
    })
}

fn backoff(attempt: u32) -> Duration {
    RETRY.delay(attempt, rand::random())
}

async fn record_installation(
    claim: &mut DeliveryClaim,
    change: &InstallationChange,
) -> Result<(), StoreError> {
    fn account(a: &InstallationAccountRef) -> InstallationAccount {
        InstallationAccount {
            id: a.installation_id,
            account_login: a.account_login.clone(),
            account_id: a.account_id,
            account_type: a.account_type.clone(),
        }
    }
    fn repos(list: &[InstalledRepo]) -> Vec<InstallationRepository> {
        list.iter()
            .map(|r| InstallationRepository {
                id: r.id,
                full_name: r.full_name.clone(),
                private: r.private,
            })
            .collect()
    }
    match change {
        InstallationChange::Created {
            account: a,
            repositories,
        } => {
            claim
                .upsert_installation(&account(a), Some(&repos(repositories)))
                .await
        }
        InstallationChange::Seen { account: a } => {
            claim.upsert_installation(&account(a), None).await
        }
        InstallationChange::Deleted { account: a } => {
            claim.upsert_installation(&account(a), None).await?;
            claim.mark_installation_deleted(a.installation_id).await
        }
        InstallationChange::Suspended { account: a }
        | InstallationChange::Unsuspended { account: a } => {
            claim.upsert_installation(&account(a), None).await?;
            let suspended = matches!(change, InstallationChange::Suspended { .. });
            claim
                .set_installation_suspended(a.installation_id, suspended)
                .await
        }
        InstallationChange::RepositoriesAdded { account: a, added } => {
            claim.upsert_installation(&account(a), None).await?;
            claim
                .add_installation_repositories(a.installation_id, &repos(added))
                .await
        }
        InstallationChange::RepositoriesRemoved {
            account: a,
            removed,
        } => {
            claim.upsert_installation(&account(a), None).await?;
            let ids: Vec<i64> = removed.iter().map(|r| r.id).collect();
            claim
                .remove_installation_repositories(a.installation_id, &ids)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(256));
    }
}
