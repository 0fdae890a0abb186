//! Retention with a controlled clock: the purge is told what "now" is, the rows' ages are
//! set in the database, and exactly what is older than the retention age goes: delivery
//! bodies of settled deliveries and finished tasks' logs. Tasks, audit events, delivery
//! rows (their GUIDs are the duplicate check), a pending delivery's body and an unfinished
//! task's log stay.

use std::time::Duration;

use bg_agent::engine::retention::Retention;
use bg_agent::store::NewDelivery;
use bg_agent::store::retention::Purged;
use bg_agent::store::tasks::{CreatedTask, NewTask, TaskId};
use bg_agent_testkit::db::TestDb;
use bg_agent_testkit::fixtures::agent_task;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

const DAY: i64 = 24 * 3600;

fn task(key: &str, creator_id: i64) -> NewTask {
    agent_task(key, creator_id, creator_id)
}

/// A task with three old log lines, finished `finished` days ago (`None`: not finished).
async fn task_with_log(
    db: &TestDb,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    key: &str,
    creator_id: i64,
    finished: Option<i64>,
) -> TaskId {
    let CreatedTask::Created(created) = db
        .store()
        .create_task(&task(key, creator_id))
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    // Unfinished tasks stay as created: what matters is that they have no `finished_at`.
    if let Some(days) = finished {
        sqlx::query("UPDATE tasks SET state = 'succeeded', finished_at = $2 WHERE id = $1")
            .bind(created.id)
            .bind(now - chrono::Duration::seconds(days * DAY))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO task_logs (task_id, seq, line, at)
         SELECT $1, n, 'line ' || n, $2 FROM generate_series(0, 2) AS n",
    )
    .bind(created.id)
    .bind(now - chrono::Duration::seconds(60 * DAY))
    .execute(&mut *conn)
    .await
    .unwrap();
    created.id
}

async fn delivery(
    db: &TestDb,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    guid: &str,
    age_days: i64,
    state: &str,
) {
    db.store()
        .insert_deliveries(
            &[NewDelivery {
                guid: guid.into(),
                event: "ping".into(),
                body: bytes::Bytes::from_static(b"{\"zen\":\"old\"}"),
            }],
            Duration::ZERO,
        )
        .await
        .unwrap();
    let processed = (state != "pending").then_some(now);
    sqlx::query(
        "UPDATE deliveries SET received_at = $2, state = $3, processed_at = $4 WHERE guid = $1",
    )
    .bind(guid)
    .bind(now - chrono::Duration::seconds(age_days * DAY))
    .bind(state)
    .bind(processed)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// Each delivery's GUID and body size; each task's log line count and audit events.
async fn figures(conn: &mut PgConnection) -> (Vec<(String, i32)>, Vec<(i64, i64, i64)>) {
    let bodies = sqlx::query_as("SELECT guid, octet_length(body) FROM deliveries ORDER BY guid")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let tasks = sqlx::query_as(
        "SELECT t.id,
                (SELECT count(*) FROM task_logs l WHERE l.task_id = t.id),
                (SELECT count(*) FROM task_events e WHERE e.task_id = t.id)
         FROM tasks t ORDER BY t.id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    (bodies, tasks)
}

#[tokio::test]
async fn old_bodies_and_finished_logs_are_purged_and_the_rest_kept() {
    let db = TestDb::new().await;
    let mut conn = PgConnection::connect_with(&db.connect_options())
        .await
        .unwrap();
    // The clock the purge is given; the rows' ages are set against it.
    let now: DateTime<Utc> = "2031-06-01T12:00:00Z".parse().unwrap();
    let body = 13;
    delivery(&db, &mut conn, now, "a-old-processed", 40, "processed").await;
    delivery(&db, &mut conn, now, "b-old-failed", 31, "failed").await;
    delivery(&db, &mut conn, now, "c-old-pending", 40, "pending").await;
    delivery(&db, &mut conn, now, "d-recent", 29, "processed").await;
    let old = task_with_log(&db, &mut conn, now, "t:old", 11, Some(45)).await;
    let recent = task_with_log(&db, &mut conn, now, "t:recent", 12, Some(25)).await;
    let unfinished = task_with_log(&db, &mut conn, now, "t:unfinished", 13, None).await;
    let (_, before) = figures(&mut conn).await;
    let audit = |tasks: &[(i64, i64, i64)]| tasks.iter().map(|t| t.2).collect::<Vec<_>>();

    let retention = Retention::new(db.store().clone(), Duration::from_secs(30 * DAY as u64));
    let purged = retention.purge(now).await.unwrap();
    assert_eq!(
        purged,
        Purged {
            bodies: 2,
            log_lines: 3
        }
    );
    let (bodies, tasks) = figures(&mut conn).await;
    assert_eq!(
        bodies,
        [
            ("a-old-processed".into(), 0),
            ("b-old-failed".into(), 0),
            // Still to be processed: its body is needed.
            ("c-old-pending".into(), body),
            ("d-recent".into(), body),
        ]
    );
    assert_eq!(
        tasks
            .iter()
            .map(|t| (TaskId::new(t.0), t.1))
            .collect::<Vec<_>>(),
        [(old, 0), (recent, 3), (unfinished, 3)]
    );
    assert_eq!(audit(&tasks), audit(&before));
    // The GUID is still the duplicate check: the same delivery is not stored again.
    let again = db
        .store()
        .insert_deliveries(
            &[NewDelivery {
                guid: "a-old-processed".into(),
                event: "ping".into(),
                body: bytes::Bytes::from_static(b"{}"),
            }],
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(again, [false]);

    // Purging again at the same time finds nothing; ten days later, the recent ones go.
    assert_eq!(retention.purge(now).await.unwrap(), Purged::default());
    let later = now + chrono::Duration::seconds(10 * DAY);
    assert_eq!(
        retention.purge(later).await.unwrap(),
        Purged {
            bodies: 1,
            log_lines: 3
        }
    );
    let (bodies, tasks) = figures(&mut conn).await;
    assert_eq!(
        bodies.iter().map(|b| b.1).collect::<Vec<_>>(),
        [0, 0, body, 0]
    );
    assert_eq!(tasks.iter().map(|t| t.1).collect::<Vec<_>>(), [0, 0, 3]);
    assert_eq!(audit(&tasks), audit(&before));

    // Batches: one row at a time until nothing is left.
    delivery(&db, &mut conn, now, "e-old", 40, "ignored").await;
    delivery(&db, &mut conn, now, "f-old", 40, "ignored").await;
    let cutoff = now - chrono::Duration::seconds(30 * DAY);
    let one = db.store().purge_before(cutoff, 1).await.unwrap();
    assert_eq!(one.bodies, 1);
    let two = db.store().purge_before(cutoff, 1).await.unwrap();
    assert_eq!(two.bodies, 1);
    assert_eq!(
        db.store().purge_before(cutoff, 1).await.unwrap(),
        Purged::default()
    );
    let _ = conn.close().await;
}
