//! GitHub's errors and crashes around reports: a part of a report GitHub refuses for good
//! (a deleted comment, a refused pull request, a removed installation) ends that part,
//! recorded and shown, without keeping the rest back or being tried again without end;
//! and what was made on GitHub just before a crash is found and adopted, never made twice.

use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::Connection as _;

use bg_agent_core::task::TaskState;
use bg_agent_core::task::render::VALIDATION_CHECK_NAME;
use bg_agent_testkit::harness::{Harness, ISSUE, LEAD, REPO, Scenario, WAIT};
use github_fake::{Fault, FaultKind, SimState};

const RUNNER: &str = env!("CARGO_BIN_EXE_bg-agent");
const UPGRADE: &str = "/bg-agent upgrade lodash 4.17.21";

fn scenario() -> Scenario {
    Scenario::engine(RUNNER)
}

/// Requests to the fake matching `method` and a path that contains `part`.
fn requests(h: &Harness, method: &str, part: &str) -> usize {
    h.sim.read(|s: &SimState| {
        s.requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .count()
    })
}

/// Waits until GitHub has been shown (or refused) the task's last version.
async fn settled(h: &Harness, task: bg_agent::store::tasks::TaskId) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t = h.store().task(task).await.unwrap().unwrap();
        let mut conn = h.db.connect_options().connect().await.unwrap();
        let due: bool =
            sqlx::query_scalar("SELECT reported_version >= version FROM tasks WHERE id = $1")
                .bind(task)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let _ = conn.close().await;
        if t.state.is_terminal() && due {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {task} was never settled on GitHub: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refused_steps(
    h: &Harness,
    task: bg_agent::store::tasks::TaskId,
) -> Vec<(String, Option<i32>)> {
    h.store()
        .report_errors(task)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.step, e.status))
        .collect()
}

/// Someone deletes the tracking comment while the task runs: the task still ends, its
/// check run completes, and the 404 is recorded once and not tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tracking_comment_is_recorded_and_the_task_still_reports() {
    let h = scenario().start().await;
    h.comment(LEAD, UPGRADE).await;
    let task = h.only_task().await.get().await;
    let comment = task.tracking_comment_id.expect("tracking comment");
    assert!(h.sim.delete_comment(u64::try_from(comment).unwrap()));

    let proxy = h.task(task.id);
    let ended = proxy.expect_state(TaskState::Succeeded).await;
    assert_eq!(proxy.check_run().conclusion.as_deref(), Some("success"));
    assert_eq!(h.pulls().len(), 1);
    assert_eq!(
        refused_steps(&h, ended.id).await,
        [("tracking_comment".to_owned(), Some(404))]
    );
    // Tried once, refused once, never again.
    let path = format!("/issues/comments/{comment}");
    assert_eq!(requests(&h, "PATCH", &path), 1);
    h.finish().await;
}

/// GitHub refuses the pull request (422): the task ends, its check run is completed
/// (not left `in_progress`), the reason is recorded, and the pull request is asked for once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pull_request_ends_the_report_and_completes_the_check_run() {
    let h = scenario().start().await;
    let refuse = h.sim.inject_fault(
        Fault::new("POST", "/repos/*/*/pulls", FaultKind::Refuse(422)).times(usize::MAX),
    );
    h.comment(LEAD, UPGRADE).await;
    let task = h.only_task().await.get().await;
    settled(&h, task.id).await;
    let run = h.check_run(task.id);
    assert_eq!(run.status, "completed");
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert!(h.pulls().is_empty());
    assert_eq!(
        refused_steps(&h, task.id).await,
        [("pull_request".to_owned(), Some(422))]
    );
    assert_eq!(h.sim.fault_fired(refuse), 1);
    // Said so where people look, not "opening the pull request" for ever.
    let said = "GitHub refused the pull request";
    assert!(
        run.output
            .summary
            .as_deref()
            .unwrap_or_default()
            .contains(said),
        "{run:#?}"
    );
    assert!(h.last_reply().contains(said), "{}", h.last_reply());
    h.finish().await;
}

/// The installation is removed while the task runs (404 on everything): the task ends,
/// each part of its report is refused once and recorded, and nothing is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_installation_ends_the_reports_without_retrying() {
    let h = scenario().start().await;
    h.comment(LEAD, UPGRADE).await;
    let task = h.only_task().await.get().await;
    h.task(task.id).wait(|t| t.check_run_id.is_some()).await;
    h.sim
        .inject_fault(Fault::new("*", "**", FaultKind::Refuse(404)).times(usize::MAX));
    settled(&h, task.id).await;
    let steps: Vec<String> = refused_steps(&h, task.id)
        .await
        .into_iter()
        .map(|(step, status)| {
            assert_eq!(status, Some(404));
            step
        })
        .collect();
    assert!(steps.contains(&"check_run".to_owned()), "{steps:?}");
    assert!(steps.contains(&"tracking_comment".to_owned()), "{steps:?}");
    // Settled means no report is due: a while later, nobody has asked GitHub again.
    let asked = h.sim.read(|s| s.requests.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.sim.read(|s| s.requests.len()), asked);
    h.sim.clear_faults();
    h.finish().await;
}

/// The check run is made, then the database goes away before it is stored (a crash
/// between GitHub's answer and our write): the next attempt finds it by its
/// `external_id` and adopts it; the task has exactly one check run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_run_made_before_a_crash_is_adopted_not_made_twice() {
    let h = scenario().database_behind_proxy().start().await;
    let hold = h
        .sim
        .inject_fault(Fault::new("POST", "/repos/*/*/check-runs", FaultKind::Hold));
    h.sim.comment(REPO, ISSUE, LEAD, UPGRADE).await.unwrap();
    wait_fired(&h, hold).await;
    h.database_down();
    h.sim.release(hold);
    h.sim
        .wait_for(WAIT, |s: &SimState| !s.check_runs_in(REPO).is_empty())
        .await
        .unwrap();
    // Long enough for the write to be tried and fail.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.database_up();

    let deadline = tokio::time::Instant::now() + WAIT;
    while h.tasks().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no task");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    let runs = h.sim.read(|s: &SimState| {
        s.check_runs_in(REPO)
            .iter()
            .filter(|r| r.name == "bg-agent")
            .map(|r| r.external_id.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(runs, [Some(task.id.to_string())]);
    assert_eq!(tracking_comments(&h), 1);
    assert_eq!(h.pulls().len(), 1);
    h.finish().await;
}

/// The pull request's validation check is made, then the database goes away before it
/// is stored: the next report finds it on the commit and adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_check_made_before_a_crash_is_adopted_not_made_twice() {
    let h = scenario().database_behind_proxy().start().await;
    h.comment(LEAD, UPGRADE).await;
    let task = h.only_task().await.get().await;
    h.task(task.id).wait(|t| t.check_run_id.is_some()).await;
    // The next check run made is the validation check, once the task has succeeded.
    let hold = h
        .sim
        .inject_fault(Fault::new("POST", "/repos/*/*/check-runs", FaultKind::Hold));
    wait_fired(&h, hold).await;
    h.database_down();
    h.sim.release(hold);
    h.sim
        .wait_for(WAIT, |s: &SimState| {
            s.check_runs_in(REPO)
                .iter()
                .any(|r| r.name == VALIDATION_CHECK_NAME)
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.database_up();
    let task = h.task(task.id).expect_state(TaskState::Succeeded).await;
    h.task(task.id).wait(|t| t.pr_check_run_id.is_some()).await;
    settled(&h, task.id).await;
    let checks = h.sim.read(|s: &SimState| {
        s.check_runs_in(REPO)
            .iter()
            .filter(|r| r.name == VALIDATION_CHECK_NAME)
            .map(|r| r.external_id.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(checks, [Some(task.id.to_string())]);
    assert_eq!(h.pulls().len(), 1);
    h.finish().await;
}

/// The tracking comment is posted, then the database goes away before it is stored:
/// the delivery is processed again, finds the App's comment and adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_comment_made_before_a_crash_is_adopted_not_posted_twice() {
    let h = Scenario::intake().database_behind_proxy().start().await;
    let hold = h.sim.inject_fault(Fault::new(
        "POST",
        "/repos/*/*/issues/*/comments",
        FaultKind::Hold,
    ));
    let made = h.sim.comment(REPO, ISSUE, LEAD, UPGRADE).await.unwrap();
    wait_fired(&h, hold).await;
    h.database_down();
    h.sim.release(hold);
    wait_comments(&h, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.database_up();
    h.processed(&made.delivery.guid).await;
    let task = h.only_task().await.get().await;
    assert!(task.tracking_comment_id.is_some());
    assert_eq!(tracking_comments(&h), 1);
    assert_eq!(h.bot_comments().len(), 1, "{:#?}", h.bot_comments());
    h.finish().await;
}

/// A delivery processed again after its outcome could not be stored does not answer
/// twice: `/bg-agent help` gets one reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_processed_again_does_not_reply_twice() {
    let h = Scenario::intake().database_behind_proxy().start().await;
    let hold = h.sim.inject_fault(Fault::new(
        "POST",
        "/repos/*/*/issues/*/comments",
        FaultKind::Hold,
    ));
    let made = h
        .sim
        .comment(REPO, ISSUE, LEAD, "/bg-agent help")
        .await
        .unwrap();
    wait_fired(&h, hold).await;
    h.database_down();
    h.sim.release(hold);
    wait_comments(&h, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.database_up();
    h.processed(&made.delivery.guid).await;
    assert_eq!(h.bot_comments().len(), 1, "{:#?}", h.bot_comments());
    h.finish().await;
}

/// A report slower than the reporter's lease (here GitHub holds the check run's creation
/// for longer than it) keeps its task: the lease is renewed while it goes on, so another
/// replica's reporter does not take the task over and make a second check run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_report_keeps_its_lease_and_nothing_is_made_twice() {
    let mut h = scenario().start().await;
    h.start_replica().await;
    let hold = h
        .sim
        .inject_fault(Fault::new("POST", "/repos/*/*/check-runs", FaultKind::Hold));
    h.comment(LEAD, UPGRADE).await;
    wait_fired(&h, hold).await;
    // Longer than the 15 s lease, shorter than the client's 30 s request timeout.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        requests(&h, "POST", "/check-runs"),
        0,
        "another reporter took over"
    );
    h.sim.release(hold);
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    let runs = h.sim.read(|s: &SimState| {
        s.check_runs_in(REPO)
            .iter()
            .filter(|r| r.name == "bg-agent")
            .map(|r| r.external_id.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(runs, [Some(task.id.to_string())]);
    h.finish().await;
}

async fn wait_fired(h: &Harness, fault: github_fake::FaultId) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.sim.fault_fired(fault) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fault never fired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_comments(h: &Harness, n: usize) {
    let bot = h.sim.bot_login();
    h.sim
        .wait_for(WAIT, |s: &SimState| {
            s.comments_on(REPO, ISSUE)
                .iter()
                .filter(|c| c.author == bot)
                .count()
                >= n
        })
        .await
        .unwrap();
}

fn tracking_comments(h: &Harness) -> usize {
    h.bot_comments()
        .iter()
        .filter(|b| b.starts_with("**bg-agent** task [#"))
        .count()
}
