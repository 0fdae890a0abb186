//! Every SQL statement the app runs. Schema and invariants live in `migrations/`.
//!
//! Statements are `sqlx::query!`-family macros, checked at build time against the query
//! data in `.sqlx/` at the workspace root (`SQLX_OFFLINE=true` in `.cargo/config.toml`:
//! builds need no database). After changing a statement or a migration, regenerate it
//! against a migrated database:
//! `SQLX_OFFLINE=false DATABASE_URL=postgres://… cargo sqlx prepare --workspace`.
//! The only dynamic SQL left, each for a reason given where it is: `CREATE DATABASE` in
//! [`embedded`] (an identifier cannot be a parameter), the plan-cache test below (a
//! system view, test-only), and the per-test databases in `bg-agent-testkit` (created,
//! dropped and locked by generated names, in a dev-only crate).

pub mod agent_rounds;
pub mod credentials;
pub mod embedded;
pub mod listing;
pub mod logs;
pub mod pull_requests;
pub mod redeliveries;
pub mod reports;
pub mod retention;
pub mod runs;
pub mod sessions;
pub mod tasks;
pub mod templates;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Processing state of a stored delivery; mirrors the `deliveries.state` check constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Processed,
    Ignored,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
        }
    }
}

/// A delivery as the webhook handler hands it to the store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub guid: String,
    pub event: String,
    pub body: bytes::Bytes,
}

/// A delivery claimed by a worker.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub guid: String,
    pub event: String,
    pub body: bytes::Bytes,
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
}

/// A delivery just stored, handed to this process's workers in memory. Its attempts and
/// receipt time are provisional: [`Store::claim_fresh_deliveries`] takes them from the row.
impl From<NewDelivery> for ClaimedDelivery {
    fn from(delivery: NewDelivery) -> Self {
        Self {
            guid: delivery.guid,
            event: delivery.event,
            body: delivery.body,
            attempts: 0,
            received_at: Utc::now(),
        }
    }
}

/// What is stored about a delivery, for status pages and tests.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub state: DeliveryState,
    pub reason: Option<String>,
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationAccount {
    pub id: i64,
    pub account_login: String,
    pub account_id: i64,
    pub account_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationRepository {
    pub id: i64,
    pub full_name: String,
    pub private: bool,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A server setting (`SHOW`-style), e.g. to check how the server runs.
    pub async fn setting(&self, name: &str) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT current_setting($1) AS "setting!""#, name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar!("SELECT 1 AS ping")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a batch of deliveries in one statement and one commit (group commit).
    /// Rows go in GUID order: two batches holding the same GUIDs (a redelivery racing its
    /// original) then take their unique-index locks in the same order and one waits for
    /// the other, where any other order can deadlock and fail both.
    /// Returns, per input row, whether it was new (`false` = that GUID was already stored,
    /// a redelivery). Within one batch only the first of equal GUIDs counts as new.
    ///
    /// Pollers leave the new rows alone for `local_grace`: the process that stored them
    /// hands them to its own workers in memory, and pollers only step in after a crash
    /// or an overflow.
    pub async fn insert_deliveries(
        &self,
        batch: &[NewDelivery],
        local_grace: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let guids: Vec<&str> = batch.iter().map(|d| d.guid.as_str()).collect();
        let events: Vec<&str> = batch.iter().map(|d| d.event.as_str()).collect();
        let bodies: Vec<&[u8]> = batch.iter().map(|d| d.body.as_ref()).collect();
        let inserted: Vec<String> = sqlx::query_scalar!(
            "INSERT INTO deliveries (guid, event, body, next_attempt_at)
             SELECT g, e, b, now() + make_interval(secs => $4)
             FROM UNNEST($1::text[], $2::text[], $3::bytea[]) AS t(g, e, b)
             ORDER BY g
             ON CONFLICT (guid) DO NOTHING
             RETURNING guid",
            &guids as &[&str],
            &events as &[&str],
            &bodies as &[&[u8]],
            local_grace.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await?;

        let mut fresh: std::collections::HashSet<&str> =
            inserted.iter().map(String::as_str).collect();
        // `remove` hands "new" to the first occurrence only.
        Ok(guids.iter().map(|g| fresh.remove(g)).collect())
    }

    /// A claim's transaction. Its commit need not wait for the WAL flush: a claim lost in
    /// a crash only means its deliveries are processed again (handlers are idempotent).
    /// Stored deliveries, by contrast, are committed synchronously before GitHub gets its
    /// 202.
    ///
    /// Its statements are planned for the table as it is at each run: a plan cached while
    /// the inbox was nearly empty (a fresh install, before autovacuum has analyzed it) is a
    /// sequential scan, kept until the next ANALYZE, and every claim would then read the
    /// whole inbox while it grows by thousands of rows a second. Planning a claim costs
    /// far less than that. All three statements go in one round trip.
    async fn begin_claim(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool
            .begin_with(
                "BEGIN; SET LOCAL synchronous_commit = off; \
                 SET LOCAL plan_cache_mode = force_custom_plan",
            )
            .await
    }

    /// Claims up to `limit` pending deliveries that are due, oldest first. The rows stay
    /// locked (other workers skip them) until the claim is committed or dropped; a crash
    /// rolls back, so the deliveries are claimed again.
    pub async fn claim_deliveries(&self, limit: i64) -> Result<DeliveryClaim, StoreError> {
        let mut tx = self.begin_claim().await?;
        let deliveries = sqlx::query!(
            "SELECT guid, event, body, attempts, received_at
             FROM deliveries
             WHERE state = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            limit,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| ClaimedDelivery {
            guid: row.guid,
            event: row.event,
            body: bytes::Bytes::from(row.body),
            attempts: row.attempts,
            received_at: row.received_at,
        })
        .collect();
        Ok(DeliveryClaim::new(tx, deliveries))
    }

    /// Claims deliveries this process has just stored and still holds in memory, so their
    /// bodies need not be read back. Those another worker has claimed or finished
    /// meanwhile are left out.
    pub async fn claim_fresh_deliveries(
        &self,
        fresh: Vec<ClaimedDelivery>,
    ) -> Result<DeliveryClaim, StoreError> {
        let mut tx = self.begin_claim().await?;
        let guids: Vec<&str> = fresh.iter().map(|d| d.guid.as_str()).collect();
        // The state is checked here rather than in SQL: a `state` condition lets the
        // planner combine the pending index into a much slower bitmap scan.
        let rows = sqlx::query!(
            r#"SELECT guid, state AS "state: DeliveryState", attempts, received_at
             FROM deliveries
             WHERE guid = ANY($1)
             FOR UPDATE SKIP LOCKED"#,
            &guids as &[&str],
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed: std::collections::HashMap<String, (i32, DateTime<Utc>)> = rows
            .into_iter()
            .filter(|row| row.state == DeliveryState::Pending)
            .map(|row| (row.guid, (row.attempts, row.received_at)))
            .collect();
        let deliveries = fresh
            .into_iter()
            .filter_map(|mut d| {
                let (attempts, received_at) = claimed.remove(&d.guid)?;
                d.attempts = attempts;
                d.received_at = received_at;
                Some(d)
            })
            .collect();
        Ok(DeliveryClaim::new(tx, deliveries))
    }

    pub async fn delivery(&self, guid: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        Ok(sqlx::query_as!(
            DeliveryRecord,
            r#"SELECT guid, event, action, installation_id, state AS "state: DeliveryState",
                    reason, attempts, received_at, processed_at
             FROM deliveries WHERE guid = $1"#,
            guid,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Puts a delivery back for a later attempt after its claim was rolled back, or fails
    /// it for good once `max_attempts` is reached. Runs outside any claim.
    pub async fn defer_delivery(
        &self,
        guid: &str,
        reason: &str,
        delay: Duration,
        max_attempts: i32,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE deliveries
             SET attempts = attempts + 1, reason = $2,
                 next_attempt_at = now() + make_interval(secs => $3),
                 state = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE state END,
                 processed_at = CASE WHEN attempts + 1 >= $4 THEN now() ELSE processed_at END
             WHERE guid = $1 AND state = 'pending'",
            guid,
            reason,
            delay.as_secs_f64(),
            max_attempts,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Number of deliveries in each state (pending, processed, ignored, failed).
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        Ok(sqlx::query_as!(
            DeliveryCounts,
            r#"SELECT count(*) FILTER (WHERE state = 'pending')   AS "pending!",
                    count(*) FILTER (WHERE state = 'processed') AS "processed!",
                    count(*) FILTER (WHERE state = 'ignored')   AS "ignored!",
                    count(*) FILTER (WHERE state = 'failed')    AS "failed!"
             FROM deliveries"#,
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn installation(&self, id: i64) -> Result<Option<InstallationRow>, StoreError> {
        let row = sqlx::query!(
            "SELECT id, account_login, account_id, account_type, suspended, deleted_at
             FROM installations WHERE id = $1",
            id,
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let repositories = sqlx::query_as!(
            InstallationRepository,
            r#"SELECT repository_id AS id, full_name, private FROM installation_repositories
             WHERE installation_id = $1 ORDER BY repository_id"#,
            id,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(InstallationRow {
            account: InstallationAccount {
                id: row.id,
                account_login: row.account_login,
                account_id: row.account_id,
                account_type: row.account_type,
            },
            suspended: row.suspended,
            deleted: row.deleted_at.is_some(),
            repositories,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub processed: i64,
    pub ignored: i64,
    pub failed: i64,
}

impl DeliveryCounts {
    pub fn total(&self) -> i64 {
        self.pending + self.processed + self.ignored + self.failed
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationRow {
    pub account: InstallationAccount,
    pub suspended: bool,
    pub deleted: bool,
    pub repositories: Vec<InstallationRepository>,
}

/// Deliveries claimed in one transaction. Outcomes and installation records written
/// through it commit together with the claim.
pub struct DeliveryClaim {
    tx: Transaction<'static, Postgres>,
    deliveries: Vec<ClaimedDelivery>,
    outcomes: Vec<(String, DeliveryFacts, DeliveryOutcome)>,
}

/// Top-level facts read from a payload by the worker, stored for listing and routing.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFacts {
    pub action: Option<String>,
    pub installation_id: Option<i64>,
}

/// How a claimed delivery ended.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    /// Decoded and handed to the trigger handler.
    Processed,
    Ignored {
        reason: String,
    },
    Failed {
        reason: String,
    },
    /// A transient error: try again after `delay` (the delivery stays pending).
    RetryLater {
        reason: String,
        delay: Duration,
    },
}

impl DeliveryClaim {
    fn new(tx: Transaction<'static, Postgres>, deliveries: Vec<ClaimedDelivery>) -> Self {
        Self {
            tx,
            deliveries,
            outcomes: Vec::new(),
        }
    }

    pub fn deliveries(&self) -> &[ClaimedDelivery] {
        &self.deliveries
    }

    pub fn take_deliveries(&mut self) -> Vec<ClaimedDelivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Records how a delivery ended; written with the others in [`Self::commit`].
    pub fn finish(&mut self, guid: &str, facts: DeliveryFacts, outcome: DeliveryOutcome) {
        self.outcomes.push((guid.to_owned(), facts, outcome));
    }

    /// Records an installation (created, or seen again) and, when given, replaces its
    /// repository list.
    pub async fn upsert_installation(
        &mut self,
        account: &InstallationAccount,
        repositories: Option<&[InstallationRepository]>,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO installations (id, account_login, account_id, account_type)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET account_login = EXCLUDED.account_login, account_id = EXCLUDED.account_id,
                 account_type = EXCLUDED.account_type, deleted_at = NULL, updated_at = now()",
            account.id,
            account.account_login,
            account.account_id,
            account.account_type,
        )
        .execute(&mut *self.tx)
        .await?;
        if let Some(repositories) = repositories {
            clear_installation_repositories(&mut *self.tx, account.id).await?;
            self.add_installation_repositories(account.id, repositories)
                .await?;
        }
        Ok(())
    }

    pub async fn add_installation_repositories(
        &mut self,
        installation_id: i64,
        repositories: &[InstallationRepository],
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = repositories.iter().map(|r| r.id).collect();
        let names: Vec<&str> = repositories.iter().map(|r| r.full_name.as_str()).collect();
        let private: Vec<bool> = repositories.iter().map(|r| r.private).collect();
        sqlx::query!(
            "INSERT INTO installation_repositories (installation_id, repository_id, full_name, private)
             SELECT $1, i, n, p FROM UNNEST($2::int8[], $3::text[], $4::bool[]) AS t(i, n, p)
             ON CONFLICT (installation_id, repository_id) DO UPDATE
             SET full_name = EXCLUDED.full_name, private = EXCLUDED.private",
            installation_id,
            &ids,
            &names as &[&str],
            &private,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn remove_installation_repositories(
        &mut self,
        installation_id: i64,
        repository_ids: &[i64],
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM installation_repositories
             WHERE installation_id = $1 AND repository_id = ANY($2)",
            installation_id,
            repository_ids,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// `installation.deleted`: keep the row (audit), drop its repositories.
    pub async fn mark_installation_deleted(
        &mut self,
        installation_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE installations SET deleted_at = now(), updated_at = now() WHERE id = $1",
            installation_id,
        )
        .execute(&mut *self.tx)
        .await?;
        clear_installation_repositories(&mut *self.tx, installation_id).await?;
        Ok(())
    }

    pub async fn set_installation_suspended(
        &mut self,
        installation_id: i64,
        suspended: bool,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE installations SET suspended = $2, updated_at = now() WHERE id = $1",
            installation_id,
            suspended,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Writes every outcome in one statement and commits the claim.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let n = self.outcomes.len();
        let mut guids = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(n);
        let mut installations = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut reasons = Vec::with_capacity(n);
        let mut delays = Vec::with_capacity(n);
        for (guid, facts, outcome) in &self.outcomes {
            let (state, reason, delay) = match outcome {
                DeliveryOutcome::Processed => (DeliveryState::Processed, None, 0.0),
                DeliveryOutcome::Ignored { reason } => (DeliveryState::Ignored, Some(reason), 0.0),
                DeliveryOutcome::Failed { reason } => (DeliveryState::Failed, Some(reason), 0.0),
                DeliveryOutcome::RetryLater { reason, delay } => {
                    (DeliveryState::Pending, Some(reason), delay.as_secs_f64())
                }
            };
            guids.push(guid.as_str());
            actions.push(facts.action.as_deref());
            installations.push(facts.installation_id);
            states.push(state);
            reasons.push(reason.map(String::as_str));
            delays.push(delay);
        }
        if !guids.is_empty() {
            sqlx::query!(
                "UPDATE deliveries AS d
                 SET state = u.state, reason = u.reason,
                     action = u.action, installation_id = u.installation_id,
                     attempts = d.attempts + 1,
                     processed_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END,
                     next_attempt_at = CASE WHEN u.state = 'pending'
                                            THEN now() + make_interval(secs => u.delay)
                                            ELSE d.next_attempt_at END
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[],
                             $6::int8[])
                      AS u(guid, state, reason, delay, action, installation_id)
                 WHERE d.guid = u.guid",
                &guids as &[&str],
                &states as &[DeliveryState],
                &reasons as &[Option<&str>],
                &delays,
                &actions as &[Option<&str>],
                &installations as &[Option<i64>],
            )
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Forgets an installation's repositories (before a full list replaces them, or when the
/// installation is deleted).
async fn clear_installation_repositories(
    executor: impl PgExecutor<'_>,
    installation_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM installation_repositories WHERE installation_id = $1",
        installation_id,
    )
    .execute(executor)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries(prefix: &str, n: usize) -> Vec<NewDelivery> {
        (0..n)
            .map(|i| NewDelivery {
                guid: format!("{prefix}-{i}"),
                event: "ping".into(),
                body: bytes::Bytes::from_static(b"{}"),
            })
            .collect()
    }

    async fn claim_and_finish(store: &Store, fresh: &[NewDelivery]) {
        let fresh = fresh.iter().cloned().map(ClaimedDelivery::from).collect();
        let mut claim = store.claim_fresh_deliveries(fresh).await.unwrap();
        let guids: Vec<String> = claim.deliveries().iter().map(|d| d.guid.clone()).collect();
        for guid in guids {
            let facts = DeliveryFacts {
                action: None,
                installation_id: None,
            };
            claim.finish(&guid, facts, DeliveryOutcome::Processed);
        }
        claim.commit().await.unwrap();
    }

    /// A redelivery racing its original (or a retrying proxy) puts the same GUIDs in two
    /// concurrent batches, in any order. Neither batch may fail: a deadlock between them
    /// would answer 503 for every delivery in both.
    #[tokio::test]
    async fn concurrent_batches_sharing_guids_never_deadlock() {
        let db = bg_agent_testkit::db::TestDb::new().await;
        let store = Store::connect(db.connect_options(), 8).await.unwrap();
        for round in 0..20 {
            let forward = deliveries(&format!("race-{round}"), 200);
            let mut backward = forward.clone();
            backward.reverse();
            let mut interleaved = forward.clone();
            interleaved.rotate_left(100);
            let results = futures::future::join_all(
                [forward, backward, interleaved]
                    .iter()
                    .map(|batch| store.insert_deliveries(batch, Duration::ZERO)),
            )
            .await;
            let mut stored = 0;
            for result in results {
                let fresh = result.expect("a batch failed while another held the same GUIDs");
                stored += fresh.iter().filter(|new| **new).count();
            }
            assert_eq!(stored, 200, "each GUID is new exactly once");
        }
    }

    /// PostgreSQL switches a prepared statement to a cached generic plan after five runs.
    /// Built on a near-empty inbox that plan scans the whole table; the claims must not
    /// keep it as the inbox grows.
    #[tokio::test]
    async fn claims_are_planned_for_the_inbox_as_it_is_now() {
        let db = bg_agent_testkit::db::TestDb::new().await;
        // One connection: every statement below is prepared and cached in one session.
        let store = Store::connect(db.connect_options(), 1).await.unwrap();
        for round in 0..8 {
            let batch = deliveries(&format!("small-{round}"), 1);
            store
                .insert_deliveries(&batch, Duration::ZERO)
                .await
                .unwrap();
            claim_and_finish(&store, &batch).await;
            store
                .claim_deliveries(10)
                .await
                .unwrap()
                .commit()
                .await
                .unwrap();
        }
        let many = deliveries("many", 5000);
        store
            .insert_deliveries(&many, Duration::ZERO)
            .await
            .unwrap();
        claim_and_finish(&store, &many[..50]).await;
        assert_eq!(store.delivery_counts().await.unwrap().processed, 58);

        // Dynamic on purpose: it reads a system view about this very session, in a test
        // target that `cargo sqlx prepare` does not check.
        let plans: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements
             WHERE (statement LIKE '%FOR UPDATE SKIP LOCKED%'
                    OR statement LIKE 'UPDATE deliveries AS d%')
               AND statement NOT LIKE '%pg_prepared_statements%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            plans.len(),
            3,
            "fresh claim, due claim, outcome update: {plans:?}"
        );
        for (statement, generic, custom) in plans {
            assert_eq!(generic, 0, "ran on a cached generic plan: {statement}");
            assert!(custom >= 8, "planned {custom} times only: {statement}");
        }
    }
}
