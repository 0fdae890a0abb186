//! What a hostile payload, runner report or commenter cannot make the engine do: clone
//! from a host a payload names, mark a push validated that GitHub does not show, open a
//! pull request that looks validated when nothing checked it, leave a runner's token
//! alive after its task, or make the app post without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bg_agent::config::Unvalidated;
use bg_agent::engine::supervise::runner_secret_hash;
use bg_agent::store::DeliveryState;
use bg_agent_core::protocol::{RunOutcome, RunnerEvent, RunnerReport};
use bg_agent_core::task::render::{UNVALIDATED_LABEL, unvalidated_note};
use bg_agent_core::task::{Phase, TaskState};
use bg_agent_testkit::fixtures::SECRET;
use bg_agent_testkit::harness::{ISSUE, LEAD, REPO, REPO_ID, Scenario, WAIT};
use bg_agent_testkit::recording::wait_for_delivery;
use github_fake::{Role, world};
use sqlx::{ConnectOptions, Connection};

/// The engine, running tasks with this very binary.
fn scenario() -> Scenario {
    Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
}

/// Validation that never ends, so a test can act while the task runs.
const SLOW_VALIDATION: &str = "validation:\n  - node -e \"setTimeout(() => {}, 600000)\"\n";

/// A signed `issue_comment` whose `repository.clone_url` names another host (here a
/// listener that would capture the runner's token) makes no task, no clone there, and a
/// recorded refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_naming_another_clone_host_is_refused_and_nothing_is_cloned_there() {
    let h = scenario().start().await;
    let capture = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let capture_url = format!(
        "http://{}/{}.git",
        capture.local_addr().unwrap(),
        world::WIDGETS
    );
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let listening = tokio::spawn(async move {
        while capture.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });

    // GitHub's delivery of a real comment, with the clone URL changed and signed again
    // with the webhook secret (as a leaked secret or a forged event would be).
    let webhook = format!("{}/webhook", h.public_url());
    h.sim.set_webhook_url(None);
    let comment = h
        .sim
        .comment(REPO, ISSUE, LEAD, "/bg-agent upgrade lodash 4.17.21")
        .await
        .unwrap();
    h.sim.set_webhook_url(Some(webhook.clone()));
    let delivery = h
        .sim
        .read(|s| s.delivery(comment.delivery.id).cloned())
        .unwrap();
    let mut payload = delivery.payload.clone();
    payload["repository"]["clone_url"] = capture_url.clone().into();
    let body = serde_json::to_vec(&payload).unwrap();
    let mut request = reqwest::Client::new().post(&webhook);
    for (name, value) in &delivery.request_headers {
        if !name.to_ascii_lowercase().starts_with("x-hub-signature")
            && !name.eq_ignore_ascii_case("content-length")
        {
            request = request.header(name, value);
        }
    }
    let answer = request
        .header(
            "x-hub-signature-256",
            github_fake::sign(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);

    let record = wait_for_delivery(h.store(), &delivery.guid, |d| {
        d.state != DeliveryState::Pending
    })
    .await;
    assert_eq!(record.state, DeliveryState::Failed, "{record:?}");
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains(&capture_url),
        "{record:?}"
    );
    let refusals = h.store().refusals(REPO_ID).await.unwrap();
    assert!(
        refusals
            .iter()
            .any(|(actor, reason)| actor == LEAD && reason.contains("clone URL")),
        "{refusals:?}"
    );
    assert!(h.tasks().await.is_empty(), "{:#?}", h.tasks().await);
    assert_eq!(connections.load(Ordering::SeqCst), 0, "something connected");
    listening.abort();
    h.finish().await;
}

/// A repository with no validation commands gets a draft pull request, labelled and
/// saying so first, and a neutral (not passed) validation check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_nothing_validated_becomes_a_labelled_draft() {
    let h = scenario()
        .file(".github/bg-agent.yml", "validation: []\n")
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    assert!(h.tasks().await[0].changed == Some(true));
    let pr = h.pr(u64::try_from(task.pr_number.unwrap()).unwrap());
    assert!(
        pr.labels.contains(&UNVALIDATED_LABEL.to_owned()),
        "{:?}",
        pr.labels
    );
    assert!(pr.body.starts_with(&unvalidated_note()), "{}", pr.body);
    let draft = h.sim.read(|s| {
        s.pulls_in(REPO)
            .iter()
            .find(|p| p.number == pr.number)
            .map(|p| p.draft)
    });
    assert_eq!(draft, Some(true));
    assert_eq!(
        h.validation_check(task.id).conclusion.as_deref(),
        Some("neutral")
    );
    h.finish().await;
}

/// With `BG_AGENT_UNVALIDATED=refuse`, such a change fails the task: no pull request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_nothing_validated_is_refused_when_configured() {
    let mut h = scenario()
        .file(".github/bg-agent.yml", "validation: []\n")
        .start()
        .await;
    h.stop_server().await;
    h.config.run.unvalidated = Unvalidated::Refuse;
    h.start_server().await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.expect_state(TaskState::Failed).await;
    assert!(
        task.error
            .as_deref()
            .unwrap_or_default()
            .contains("no validation commands"),
        "{task:#?}"
    );
    assert!(h.pulls().is_empty(), "{:?}", h.pulls());
    h.finish().await;
}

/// A runner report naming a commit GitHub does not show on the branch fails the task:
/// nothing is marked validated, no pull request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_push_that_github_does_not_show_fails_the_task() {
    let h = scenario()
        .file(".github/bg-agent.yml", SLOW_VALIDATION)
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let proxy = h.only_task().await;
    let task = proxy.wait_phase(Phase::Validating).await;
    let branch = task.branch.clone().unwrap();
    // The branch exists on GitHub, at the default branch's head.
    let git_dir = h.sim.read(|s| s.repo(REPO).unwrap().git_dir.clone());
    let created = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["branch", &branch, "main"])
        .status()
        .unwrap();
    assert!(created.success());
    // A report as the task's runner (the test takes over its secret).
    let secret = "test-owned-runner-secret";
    let mut conn = h.db.connect_options().connect().await.unwrap();
    sqlx::query("UPDATE tasks SET runner_secret_hash = $1 WHERE id = $2")
        .bind(runner_secret_hash(secret))
        .bind(task.id)
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let report = RunnerReport {
        seq: 1_000_000,
        event: RunnerEvent::Finished(RunOutcome::Pushed {
            branch: branch.clone(),
            commit: "1111111111111111111111111111111111111111".into(),
            changed_files: vec!["package.json".into()],
        }),
    };
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/internal/tasks/{}/events",
            h.public_url(),
            task.id
        ))
        .bearer_auth(secret)
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let task = proxy.expect_state(TaskState::Failed).await;
    let error = task.error.clone().unwrap_or_default();
    assert!(error.contains("GitHub shows the branch at"), "{error}");
    assert!(h.pulls().is_empty(), "{:?}", h.pulls());
    h.finish().await;
}

/// Each task's runner gets a token of its own, revoked once the task has ended; a
/// revoked token opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runner_token_is_its_tasks_own_and_revoked_when_it_ends() {
    let mut h = scenario().start().await;
    // A short timeout: a token cached for an hour would outlast it and be handed on.
    h.stop_server().await;
    h.config.tasks.default_timeout_secs = 600;
    h.start_server().await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let first = h.only_task().await.expect_state(TaskState::Succeeded).await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    h.task(tasks[1].id).reported_end().await;

    let revoked = h
        .sim
        .wait_for(WAIT, |s| s.revoked_tokens.len() >= 2)
        .await
        .map(|_| h.sim.read(|s| s.revoked_tokens.clone()))
        .unwrap_or_else(|e| panic!("runner tokens were not revoked: {e}"));
    assert_eq!(revoked.len(), 2, "{revoked:#?}");
    assert_ne!(
        revoked[0].token, revoked[1].token,
        "two tasks shared a token"
    );
    for token in &revoked {
        assert_eq!(token.repository_ids, Some(vec![world::WIDGETS_ID]));
    }
    let answer = reqwest::Client::new()
        .get(format!("{}/repos/{REPO}", h.sim.api_url()))
        .header("authorization", format!("token {}", revoked[0].token))
        .header("user-agent", "bg-agent-test")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(first.state, TaskState::Succeeded);
    h.finish().await;
}

/// A read-only user posting command after command gets one refusal on the issue; the
/// rest are audited, not answered.
#[tokio::test]
async fn a_read_only_user_gets_one_refusal_however_often_they_ask() {
    let h = Scenario::intake().start().await;
    h.add_user("reader", Role::Read);
    for n in 0..4 {
        h.comment("reader", &format!("/bg-agent run attempt {n}"))
            .await;
    }
    assert_eq!(h.bot_comments().len(), 1, "{:#?}", h.bot_comments());
    let refusals = h.store().refusals(REPO_ID).await.unwrap();
    assert_eq!(
        refusals
            .iter()
            .filter(|(actor, _)| actor == "reader")
            .count(),
        4,
        "{refusals:?}"
    );
    assert!(h.tasks().await.is_empty());
    h.finish().await;
}
