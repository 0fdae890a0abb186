//! Missed deliveries are recovered. GitHub does not send a failed delivery again by
//! itself (an outage, a deploy, a 503 from intake): at start and every few minutes this
//! lists the App's recent deliveries (`GET /app/hook/deliveries`, newest first) and asks
//! GitHub to redeliver (`POST /app/hook/deliveries/{id}/attempts`) each GUID of the last
//! three days that no attempt delivered and the inbox does not hold. Requests are paced,
//! claimed in the database (replicas ask once) and bounded per GUID.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use crate::background::Background;
use crate::store::{Store, StoreError};
use bg_agent_github::{GitHubApp, GitHubError, HookDelivery};

/// GitHub keeps deliveries for three days; older ones cannot be redelivered.
pub const WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);
/// A sweep reads at most this many pages of 100 (a backlog beyond waits for the next).
const MAX_PAGES: usize = 50;

#[derive(Debug, Clone)]
pub struct RedeliverySettings {
    /// Time between sweeps (the first runs at start).
    pub every: Duration,
    /// How far back to look.
    pub window: Duration,
    /// Redelivery requests per sweep, at most.
    pub max_per_sweep: usize,
    /// Pause between two requests (GitHub's secondary rate limits dislike bursts).
    pub pause: Duration,
    /// A GUID asked for and still missing is asked again after this long...
    pub retry_after: Duration,
    /// ...this many times in all.
    pub max_attempts: i32,
}

impl Default for RedeliverySettings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(300),
            window: WINDOW,
            max_per_sweep: 100,
            pause: Duration::from_millis(250),
            retry_after: Duration::from_secs(600),
            max_attempts: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedeliveryError {
    #[error("listing the App's deliveries: {0}")]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one sweep saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Distinct GUIDs in the window.
    pub seen: usize,
    /// Of those, the ones no attempt delivered and the inbox does not hold.
    pub missed: usize,
    /// Redeliveries GitHub accepted to make.
    pub requested: usize,
    /// Requests GitHub refused (recorded with the reason).
    pub refused: usize,
}

pub struct Redelivery {
    store: Store,
    github: GitHubApp,
    settings: RedeliverySettings,
}

/// Every attempt GitHub lists for one GUID, as far as a sweep cares.
struct Attempts {
    /// The newest attempt (the one to repeat) and its event.
    newest_id: u64,
    event: String,
    delivered: bool,
}

impl Redelivery {
    pub fn new(store: Store, github: GitHubApp, settings: RedeliverySettings) -> Self {
        Self {
            store,
            github,
            settings,
        }
    }

    /// Sweeps until the background group stops.
    pub async fn run(self, background: Background) {
        let shutdown = background.token().clone();
        loop {
            let span = tracing::info_span!("redelivery sweep");
            match self.sweep(Utc::now()).instrument(span).await {
                Ok(swept) if swept.missed > 0 => {
                    tracing::info!(?swept, "missed deliveries found and asked again")
                }
                Ok(swept) => tracing::debug!(?swept, "no missed deliveries"),
                Err(e) => tracing::warn!(error = %e, "the redelivery sweep failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One sweep over the deliveries of the window ending at `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Swept, RedeliveryError> {
        let since = now - chrono::Duration::from_std(self.settings.window).unwrap_or_default();
        // Oldest first at the end, so recovered commands become tasks in their order.
        let mut order: Vec<String> = Vec::new();
        let mut by_guid: HashMap<String, Attempts> = HashMap::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.github.list_deliveries(100, cursor.as_deref()).await?;
            let mut reached_the_end = false;
            for delivery in page.deliveries {
                if delivery.delivered_at < since {
                    reached_the_end = true;
                    continue;
                }
                note(&mut order, &mut by_guid, delivery);
            }
            match page.next_cursor {
                Some(next) if !reached_the_end => cursor = Some(next),
                _ => break,
            }
        }
        let undelivered: Vec<String> = order
            .iter()
            .rev()
            .filter(|guid| by_guid.get(*guid).is_some_and(|a| !a.delivered))
            .cloned()
            .collect();
        let held = self.store.held_deliveries(&undelivered).await?;
        let missed: Vec<&String> = undelivered.iter().filter(|g| !held.contains(*g)).collect();
        let mut swept = Swept {
            seen: order.len(),
            missed: missed.len(),
            ..Swept::default()
        };
        for guid in missed.into_iter().take(self.settings.max_per_sweep) {
            let Some(attempts) = by_guid.get(guid) else {
                continue;
            };
            let claimed = self
                .store
                .claim_redelivery(
                    guid,
                    i64::try_from(attempts.newest_id).unwrap_or(i64::MAX),
                    &attempts.event,
                    self.settings.retry_after,
                    self.settings.max_attempts,
                )
                .await?;
            if !claimed {
                continue;
            }
            match self.github.redeliver(attempts.newest_id).await {
                Ok(()) => {
                    crate::metrics::redelivery_request("requested");
                    swept.requested += 1;
                    tracing::info!(%guid, event = %attempts.event, "asked GitHub to redeliver a missed delivery");
                }
                Err(e) => {
                    crate::metrics::redelivery_request("failed");
                    swept.refused += 1;
                    tracing::warn!(%guid, error = %e, "GitHub refused to redeliver");
                    self.store.redelivery_failed(guid, &e.to_string()).await?;
                }
            }
            tokio::time::sleep(self.settings.pause).await;
        }
        Ok(swept)
    }
}

/// Adds one listed attempt (the list is newest first).
fn note(order: &mut Vec<String>, by_guid: &mut HashMap<String, Attempts>, delivery: HookDelivery) {
    let delivered = (200..300).contains(&delivery.status_code);
    match by_guid.get_mut(&delivery.guid) {
        Some(attempts) => attempts.delivered |= delivered,
        None => {
            order.push(delivery.guid.clone());
            by_guid.insert(
                delivery.guid,
                Attempts {
                    newest_id: delivery.id,
                    event: delivery.event,
                    delivered,
                },
            );
        }
    }
}
