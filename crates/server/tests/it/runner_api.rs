//! `POST /internal/tasks/{id}/events` against the real router and database: only the
//! task's own secret is accepted, malformed reports get a precise 4xx, each sequence
//! number is applied once, and an ended task's secret is useless.

use bg_agent::engine::supervise::runner_secret_hash;
use bg_agent::store::tasks::{AuditActor, Caps, CreatedTask, NewTask};
use bg_agent_core::protocol::{LogLevel, RunOutcome, RunnerEvent, RunnerReport};
use bg_agent_core::task::{Phase, TaskId, TaskState};
use bg_agent_testkit::fixtures::agent_task;
use bg_agent_testkit::harness::{Harness, Scenario};
use serde_json::json;

const SECRET: &str = "per-task-secret-0123456789abcdef";

struct Api {
    h: Harness,
    url: String,
    client: reqwest::Client,
    task: TaskId,
}

/// The real server (no task runs by itself) with one task launched, as if a runner had
/// been started for it with [`SECRET`].
async fn start() -> Api {
    let h = Scenario::intake().start().await;
    let store = h.store();
    let created = store
        .create_task(&NewTask {
            repository: "acme/widgets".into(),
            issue_number: Some(17),
            comment_id: Some(3),
            creator_login: "octo-lead".into(),
            ..agent_task("comment:3", 4, 2)
        })
        .await
        .unwrap();
    let CreatedTask::Created(task) = created else {
        panic!("{created:?}")
    };
    let engine = AuditActor {
        name: "test",
        delivery_guid: None,
    };
    let caps = Caps {
        per_installation: 1,
        global: 1,
        check_run_wait: std::time::Duration::ZERO,
    };
    store
        .dispatch_next(caps, uuid::Uuid::nil(), engine)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .prepare_launch(
                task.id,
                &runner_secret_hash(SECRET),
                "bg-agent/1-do-it",
                None
            )
            .await
            .unwrap()
            .is_some()
    );
    Api {
        url: format!("{}/internal/tasks/{}/events", h.public_url(), task.id),
        h,
        client: reqwest::Client::new(),
        task: task.id,
    }
}

impl Api {
    async fn post(
        &self,
        secret: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.post(&self.url).json(body);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(json!(null)))
    }

    async fn report(&self, seq: u64, event: RunnerEvent) -> u16 {
        let body = serde_json::to_value(RunnerReport { seq, event }).unwrap();
        self.post(Some(SECRET), &body).await.0
    }
}

#[tokio::test]
async fn only_the_tasks_secret_is_accepted_and_bad_reports_get_a_clear_answer() {
    let api = start().await;
    let phase = serde_json::to_value(RunnerReport {
        seq: 1,
        event: RunnerEvent::Phase {
            phase: Phase::Cloning,
            progress: None,
        },
    })
    .unwrap();
    assert_eq!(api.post(None, &phase).await.0, 401);
    let (status, body) = api.post(Some("someone-elses-secret"), &phase).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("secret"), "{body}");
    let (status, body) = api
        .post(Some(SECRET), &json!({"seq": 1, "event": {"type": "dance"}}))
        .await;
    assert_eq!(status, 422, "{body}");
    // Nothing was applied by any of those.
    let task = api.h.store().task(api.task).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Starting);

    assert_eq!(api.post(Some(SECRET), &phase).await.0, 200);
    let task = api.h.store().task(api.task).await.unwrap().unwrap();
    assert_eq!(
        (task.state, task.phase, task.progress),
        (TaskState::Running, Phase::Cloning, 10)
    );
    api.h.finish().await;
}

#[tokio::test]
async fn each_report_is_applied_once_and_logs_are_redacted() {
    let api = start().await;
    let log = RunnerEvent::Log {
        lines: vec![
            "cloning".into(),
            format!("oops the secret is {SECRET}"),
            "token ghs_0123456789abcdefghijABCDEFGHIJ leaked".into(),
        ],
        level: LogLevel::Output,
    };
    assert_eq!(api.report(1, log.clone()).await, 200);
    // The same report again (its answer was lost): acknowledged, not applied twice.
    assert_eq!(api.report(1, log).await, 200);
    let lines = api.h.store().log_tail(api.task, 10).await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(SECRET) || l.contains("ghs_")),
        "{lines:?}"
    );
    // Progress never goes backwards.
    assert_eq!(
        api.report(
            2,
            RunnerEvent::Phase {
                phase: Phase::Validating,
                progress: Some(75)
            }
        )
        .await,
        200
    );
    assert_eq!(
        api.report(
            3,
            RunnerEvent::Phase {
                phase: Phase::Cloning,
                progress: Some(10)
            }
        )
        .await,
        200
    );
    let task = api.h.store().task(api.task).await.unwrap().unwrap();
    assert_eq!((task.phase, task.progress), (Phase::Validating, 75));

    let finished = RunnerEvent::Finished(RunOutcome::Failed {
        error: "validation failed: npm test exited with 1".into(),
        failing_command: Some("npm test".into()),
        wip_branch: None,
    });
    assert_eq!(api.report(4, finished.clone()).await, 200);
    let task = api.h.store().task(api.task).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.failing_command.as_deref(), Some("npm test"));
    // The task has ended: its secret opens nothing any more.
    assert_eq!(api.report(5, finished).await, 410);
    api.h.finish().await;
}

/// A runner's log is bounded per line and in total, and keeps its end: whatever a runner
/// sends, the task holds at most `MAX_LOG_LINES` lines of at most `MAX_LINE_CHARS`
/// characters, the newest ones, behind a line saying how many were dropped.
#[tokio::test]
async fn the_stored_log_keeps_the_newest_bounded_lines() {
    use bg_agent_core::output::{CUT_MARKER, MAX_LINE_CHARS};
    use bg_agent_core::protocol::MAX_LOG_LINES;
    let api = start().await;
    // Three reports of 900 lines, one of them a line far longer than the bound (the
    // report size limit allows it), then a report larger than the cap on its own.
    let mut seq = 0;
    let mut sent = 0usize;
    for _ in 0..3 {
        let mut lines: Vec<String> = (sent..sent + 900).map(|i| format!("line {i}")).collect();
        lines[450] = "é".repeat(100_000);
        sent += 900;
        seq += 1;
        assert_eq!(
            api.report(
                seq,
                RunnerEvent::Log {
                    lines,
                    level: LogLevel::Output
                }
            )
            .await,
            200
        );
    }
    let lines: Vec<String> = (sent..sent + MAX_LOG_LINES + 5)
        .map(|i| format!("line {i}"))
        .collect();
    sent += MAX_LOG_LINES + 5;
    seq += 1;
    assert_eq!(
        api.report(
            seq,
            RunnerEvent::Log {
                lines,
                level: LogLevel::Output
            }
        )
        .await,
        200
    );
    let lines: Vec<String> = (sent..sent + 100).map(|i| format!("line {i}")).collect();
    sent += 100;
    seq += 1;
    assert_eq!(
        api.report(
            seq,
            RunnerEvent::Log {
                lines,
                level: LogLevel::Output
            }
        )
        .await,
        200
    );

    let log = api.h.store().log_tail(api.task, i64::MAX).await.unwrap();
    // The marker, then exactly the newest MAX_LOG_LINES lines.
    assert_eq!(log.len(), MAX_LOG_LINES + 1);
    assert_eq!(
        log[0],
        format!(
            "[bg-agent: {} earlier lines were dropped; the log keeps the last lines]",
            sent - MAX_LOG_LINES
        )
    );
    let newest: Vec<String> = (sent - MAX_LOG_LINES..sent)
        .map(|i| format!("line {i}"))
        .collect();
    assert_eq!(log[1..], newest[..]);
    // A short tail has no marker.
    let tail = api.h.store().log_tail(api.task, 3).await.unwrap();
    assert_eq!(tail, newest[MAX_LOG_LINES - 3..]);

    // Long lines are cut; the older ones were dropped, so check one kept by a new report.
    seq += 1;
    let lines = vec!["é".repeat(100_000), "after".into()];
    assert_eq!(
        api.report(
            seq,
            RunnerEvent::Log {
                lines,
                level: LogLevel::Output
            }
        )
        .await,
        200
    );
    let log = api.h.store().log_tail(api.task, 2).await.unwrap();
    assert_eq!(
        log,
        [
            format!("{}{CUT_MARKER}", "é".repeat(MAX_LINE_CHARS)),
            "after".to_owned()
        ]
    );
    api.h.finish().await;
}
