//! Faults lose nothing and leave nothing stuck: outages, crashes, storms. Each scenario
//! asserts the figures exactly (tasks, requests to GitHub) once things have settled.

use std::time::{Duration, Instant};

use bg_agent::engine::redelivery::RedeliverySettings;
use bg_agent_core::task::render::CHECK_RUN_NAME;
use bg_agent_core::task::{Phase, TaskState};
use bg_agent_testkit::harness::{Harness, ISSUE, LEAD, REPO, Scenario, WAIT};
use github_fake::{Fault, FaultKind, Role};

const RUNNER: &str = env!("CARGO_BIN_EXE_bg-agent");

/// GitHub does not redeliver by itself. Commands sent while the database is down are
/// answered 503; once it is back, the engine's sweep finds them in the App's delivery
/// list, asks GitHub to send each again, and every command becomes one task.
#[tokio::test]
async fn commands_refused_in_a_database_outage_are_asked_again_and_become_tasks() {
    let h = Scenario::engine(RUNNER)
        .database_behind_proxy()
        .redelivery(RedeliverySettings {
            every: Duration::from_millis(300),
            pause: Duration::ZERO,
            ..RedeliverySettings::default()
        })
        .start()
        .await;
    let people = ["ana", "ben", "cyd"];
    for person in people {
        h.add_user(person, Role::Write);
    }

    h.database_down();
    for person in people {
        let made = h
            .sim
            .comment(REPO, ISSUE, person, "/bg-agent upgrade lodash 4.17.21")
            .await
            .unwrap();
        assert_eq!(made.delivery.status_code, 503, "{made:?}");
    }
    assert!(h.tasks().await.is_empty());
    h.database_up();

    let deadline = tokio::time::Instant::now() + WAIT;
    while h.tasks().await.len() < people.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commands never became tasks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more sweeps find nothing missing: nothing is asked for twice.
    let (guids, attempts) = h.store().redelivery_counts().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.store().redelivery_counts().await.unwrap(),
        (guids, attempts)
    );
    assert_eq!((guids, attempts), (3, 3));
    let mut creators: Vec<String> = h
        .tasks()
        .await
        .into_iter()
        .map(|t| t.creator_login)
        .collect();
    creators.sort();
    assert_eq!(creators, people);
    h.finish().await;
}

/// What a task left on GitHub, counted: tasks, check runs of the task's name, the bot's
/// comments on the issue, pull requests.
async fn figures(h: &Harness) -> (usize, usize, usize, usize) {
    let check_runs = h.sim.read(|s| {
        s.check_runs_in(REPO)
            .into_iter()
            .filter(|r| r.name == CHECK_RUN_NAME)
            .count()
    });
    (
        h.tasks().await.len(),
        check_runs,
        h.bot_comments().len(),
        h.pulls().len(),
    )
}

/// Validation that takes a few seconds, so a fault can land while it runs (the test never
/// depends on when exactly).
const SLOWISH_VALIDATION: &str =
    "validation:\n  - node -e \"setTimeout(() => {}, 3000)\"\n  - npm test\n";

/// The database goes away while a task validates, long enough for the runner's last
/// reports to be refused, and comes back: the task succeeds with one of everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_task_loses_nothing_and_duplicates_nothing() {
    let h = Scenario::engine(RUNNER)
        .file(".github/bg-agent.yml", SLOWISH_VALIDATION)
        .database_behind_proxy()
        .start()
        .await;
    let started = Instant::now();
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    h.task(task).wait_phase(Phase::Validating).await;
    h.database_down();
    tokio::time::sleep(Duration::from_secs(6)).await;
    h.database_up();
    let done = h.task(task).expect_state(TaskState::Succeeded).await;
    assert!(done.pr_number.is_some());
    eprintln!(
        "fault figures: database restart mid-task settled in {:?}",
        started.elapsed()
    );
    assert_eq!(
        figures(&h).await,
        (1, 1, 1, 1),
        "tasks, check runs, comments, PRs"
    );
    assert_eq!(h.check_run(task).conclusion.as_deref(), Some("success"));
    h.finish().await;
}

/// GitHub answers with 5xx, secondary and primary rate limits and 429s on every kind of
/// report: the client waits as told and retries, and the task settles with exactly one
/// check run, one tracking comment and one pull request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_github_errors_and_rate_limits_settles_with_exact_figures() {
    let h = Scenario::engine(RUNNER).start().await;
    for fault in [
        Fault::new("POST", "/repos/*/*/check-runs", FaultKind::ServerError(502)).times(2),
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::ServerError(503),
        )
        .times(4),
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::SecondaryRateLimit {
                retry_after_secs: 1,
            },
        )
        .times(2),
        Fault::new(
            "POST",
            "/repos/*/*/issues/*/comments",
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
        )
        .times(2),
        Fault::new(
            "PATCH",
            "/repos/*/*/issues/comments/*",
            FaultKind::PrimaryRateLimit {
                reset_after_secs: 1,
            },
        )
        .times(1),
        Fault::new("POST", "/repos/*/*/pulls", FaultKind::ServerError(500)).times(2),
    ] {
        h.sim.inject_fault(fault);
    }
    let started = Instant::now();
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await;
    task.expect_state(TaskState::Succeeded).await;
    let settled = Instant::now() + WAIT;
    while task.check_run().conclusion.is_none() || h.pulls().is_empty() {
        assert!(Instant::now() < settled, "the reports never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "fault figures: GitHub error storm settled in {:?}",
        started.elapsed()
    );
    assert_eq!(
        figures(&h).await,
        (1, 1, 1, 1),
        "tasks, check runs, comments, PRs"
    );
    assert_eq!(task.check_run().conclusion.as_deref(), Some("success"));
    h.finish().await;
}

/// The same delivery arrives again and again at once (a redelivery racing the original,
/// a retrying proxy): every answer is 2xx and the command makes one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_make_one_task() {
    let h = Scenario::intake().start().await;
    let comment = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let statuses = futures::future::join_all((0..8).map(|_| h.redeliver(comment.delivery))).await;
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "{statuses:?}"
    );
    // Each redelivery was processed (or found already stored) before its answer.
    assert_eq!(figures(&h).await.0, 1, "one task");
    assert_eq!(h.bot_comments().len(), 1, "one tracking comment");
    h.finish().await;
}
