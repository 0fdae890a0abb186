//! Missed deliveries asked again: which GUIDs the inbox already holds, and one claim per
//! GUID and attempt so that replicas sweeping at the same time ask GitHub once.

use std::collections::HashSet;
use std::time::Duration;

use super::{Store, StoreError};

impl Store {
    /// Those of `guids` the inbox holds (stored once, whatever became of them since).
    pub async fn held_deliveries(&self, guids: &[String]) -> Result<HashSet<String>, StoreError> {
        let held = sqlx::query_scalar!(
            "SELECT guid FROM deliveries WHERE guid = ANY($1::text[])",
            guids
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(held.into_iter().collect())
    }

    /// Claims the next request for `guid` (attempt `delivery_id` of `event`): `true` when
    /// this caller should ask GitHub now — the first time, or again after `spacing` while
    /// fewer than `max_attempts` were made.
    pub async fn claim_redelivery(
        &self,
        guid: &str,
        delivery_id: i64,
        event: &str,
        spacing: Duration,
        max_attempts: i32,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query_scalar!(
            "INSERT INTO redelivery_requests (guid, delivery_id, event)
             VALUES ($1, $2, $3)
             ON CONFLICT (guid) DO UPDATE
                SET attempts = redelivery_requests.attempts + 1,
                    delivery_id = EXCLUDED.delivery_id,
                    last_requested_at = now(),
                    last_error = NULL
              WHERE redelivery_requests.attempts < $5
                AND redelivery_requests.last_requested_at
                    < now() - make_interval(secs => $4)
             RETURNING guid",
            guid,
            delivery_id,
            event,
            spacing.as_secs_f64(),
            max_attempts,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(claimed.is_some())
    }

    /// Records why GitHub refused the request just claimed for `guid`.
    pub async fn redelivery_failed(&self, guid: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE redelivery_requests SET last_error = $2 WHERE guid = $1",
            guid,
            error
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many GUIDs were asked for, and how many times in all (for the logs and tests).
    pub async fn redelivery_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query!(
            r#"SELECT count(*) AS "guids!", coalesce(sum(attempts), 0)::bigint AS "attempts!"
               FROM redelivery_requests"#
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.guids, row.attempts))
    }
}
