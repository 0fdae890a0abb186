//! From a `/bg-agent` comment to a validated pull request, for real: the fake GitHub
//! (real git repositories over smart HTTP, a tiny npm registry, strict schemas) sends
//! signed webhooks to the real server, which creates tasks in a real database, runs the
//! real `bg-agent runner` through the local executor, and reports on the fake GitHub
//! through the real client.

use std::sync::Arc;
use std::time::Duration;

use bg_agent::app::{EngineOptions, RunningServer, start_app};
use bg_agent::config::Config;
use bg_agent::store::DeliveryState;
use bg_agent_core::task::{Phase, TaskId, TaskRecord, TaskState};
use bg_agent_github::{GitHubApp, SystemClock};
use bg_agent_testkit::db::TestDb;
use bg_agent_testkit::fixtures::{SECRET, package_json, passing_test, picky_test};
use bg_agent_testkit::recording::{test_config, wait_for_delivery};
use github_fake::{Fault, FaultKind, GitHubSim, Role, RunningSim, SimConfig, SimState};

const WIDGETS: &str = "acme/widgets";
const WIDGETS_ID: i64 = 700001;
const ISSUE: u64 = 17;
const LEAD: &str = "octo-lead";
/// Long enough for a clone, npm and a push on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(120);
/// The npm project in every test repository.
const PROJECT: &str = "widgets";

struct Harness {
    sim: RunningSim,
    db: TestDb,
    config: Config,
    github: GitHubApp,
    server: Option<RunningServer>,
    _data: tempfile::TempDir,
}

struct Setup<'a> {
    test_js: String,
    extra_files: Vec<(&'a str, String)>,
    agent_command: Option<Vec<String>>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            test_js: passing_test(PROJECT),
            extra_files: Vec::new(),
            agent_command: None,
        }
    }
}

impl Harness {
    async fn start(setup: Setup<'_>) -> Self {
        let sim = GitHubSim::start(SimConfig {
            webhook_secret: SECRET.into(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let package = package_json(PROJECT, "4.17.20", "node test.js");
        let lock = sim.npm_lockfile(&package).await.unwrap();
        let mut files: Vec<(&str, String)> = vec![
            ("package.json", package),
            ("package-lock.json", lock),
            ("test.js", setup.test_js.clone()),
        ];
        files.extend(setup.extra_files);
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        sim.seed_world_with(&files).await.unwrap();
        let db = TestDb::new().await;
        let github = GitHubApp::new(
            bg_agent_testkit::fixtures::github_config(&sim),
            Arc::new(SystemClock),
        )
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.app_id = Some(sim.app_id());
        config.app_slug = sim.app_slug();
        config.data_dir = data.path().to_owned();
        config.run.npm_registry = Some(sim.npm_registry_url());
        config.run.agent_command = setup.agent_command;
        let mut harness = Self {
            sim,
            db,
            config,
            github,
            server: None,
            _data: data,
        };
        harness.start_server().await;
        harness
    }

    async fn start_server(&mut self) {
        let server = self.replica().await;
        self.sim
            .set_webhook_url(Some(format!("http://{}/webhook", server.addr)));
        self.server = Some(server);
    }

    /// Another server on the same database and GitHub (webhooks still go to the first).
    async fn replica(&mut self) -> RunningServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.config.run.public_url = format!("http://{}", listener.local_addr().unwrap());
        let options = EngineOptions {
            poll: Duration::from_millis(200),
            report_throttle: Duration::from_millis(300),
            ..EngineOptions::new(env!("CARGO_BIN_EXE_bg-agent").into())
        };
        start_app(
            &self.config,
            self.db.store().clone(),
            self.github.clone(),
            listener,
            &options,
        )
        .unwrap()
    }

    async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }

    /// `user` comments on widgets#17; returns (comment id, delivery id) once the server
    /// has processed the delivery.
    async fn comment(&self, user: &str, body: &str) -> (u64, u64) {
        let triggered = self.sim.comment(WIDGETS, ISSUE, user, body).await.unwrap();
        assert_eq!(triggered.delivery.status_code, 202, "{triggered:?}");
        self.processed(&triggered.delivery.guid).await;
        (triggered.id.unwrap(), triggered.delivery.id)
    }

    async fn processed(&self, guid: &str) {
        let record =
            wait_for_delivery(self.db.store(), guid, |d| d.state != DeliveryState::Pending).await;
        assert_eq!(record.state, DeliveryState::Processed, "{record:?}");
    }

    fn tasks(&self) -> Vec<TaskRecord> {
        let store = self.db.store().clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let mut all = store.repository_tasks(WIDGETS_ID, 50).await.unwrap();
                all.reverse();
                all
            })
        })
    }

    /// Waits until task `id` satisfies `condition` (re-reading it as the sim changes and
    /// at least every 100 ms).
    async fn wait_task(&self, id: TaskId, condition: impl Fn(&TaskRecord) -> bool) -> TaskRecord {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let task = self.db.store().task(id).await.unwrap().unwrap();
            if condition(&task) {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never got there; it is {task:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the task has ended and GitHub has seen its final version.
    async fn wait_reported_end(&self, id: TaskId) -> TaskRecord {
        let task = self.wait_task(id, |t| t.state.is_terminal()).await;
        let wanted_pr = task.state == TaskState::Succeeded && task.changed == Some(true);
        let sim = &self.sim;
        let task_id = id.to_string();
        sim.wait_for(WAIT, |s: &SimState| {
            let run = s
                .check_runs_in(WIDGETS)
                .into_iter()
                .find(|r| r.external_id.as_deref() == Some(&task_id) && r.name == "bg-agent");
            let completed = run.is_some_and(|r| r.status == "completed");
            let pr_shown = !wanted_pr
                || run.is_some_and(|r| {
                    r.output
                        .summary
                        .as_deref()
                        .is_some_and(|s| s.contains("Pull request:"))
                });
            completed && pr_shown
        })
        .await
        .unwrap_or_else(|e| panic!("task {id} was never reported as ended: {e}"));
        self.db.store().task(id).await.unwrap().unwrap()
    }

    fn check_run(&self, task: TaskId) -> github_fake::CheckRunRecord {
        let id = task.to_string();
        self.sim.read(|s| {
            s.check_runs_in(WIDGETS)
                .into_iter()
                .find(|r| r.external_id.as_deref() == Some(&id) && r.name == "bg-agent")
                .cloned()
                .unwrap_or_else(|| panic!("no check run for task {task}"))
        })
    }

    fn bot_comments(&self) -> Vec<String> {
        let bot = self.sim.bot_login();
        self.sim.read(|s| {
            s.comments_on(WIDGETS, ISSUE)
                .into_iter()
                .filter(|c| c.author == bot)
                .map(|c| c.body.clone())
                .collect()
        })
    }

    fn pulls(&self) -> Vec<(u64, String, String, String, Vec<String>)> {
        self.sim.read(|s| {
            s.pulls_in(WIDGETS)
                .into_iter()
                .map(|p| {
                    let issue = s.issue(WIDGETS, p.number).unwrap();
                    (
                        p.number,
                        p.head_ref.clone(),
                        issue.title.clone(),
                        issue.body.clone().unwrap_or_default(),
                        issue.labels.clone(),
                    )
                })
                .collect()
        })
    }

    /// A file on a branch of the sim's bare repository.
    fn show(&self, branch: &str, path: &str) -> String {
        let repo = self.sim.read(|s| s.repo(WIDGETS).unwrap().git_dir.clone());
        let output = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["show", &format!("{branch}:{path}")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{branch}:{path} not found");
        String::from_utf8(output.stdout).unwrap()
    }

    async fn stop(mut self) {
        self.stop_server().await;
        self.sim.assert_no_violations();
    }
}

/// Scenarios 1–3: the upgrade becomes a validated pull request; progress moves forward;
/// everything links back and the audit trail is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_comment_ends_in_a_validated_pull_request() {
    let h = Harness::start(Setup::default()).await;
    let (comment, _) = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let tasks = h.tasks();
    assert_eq!(tasks.len(), 1);
    let task = h.wait_reported_end(tasks[0].id).await;
    assert_eq!(task.state, TaskState::Succeeded, "{task:#?}");
    assert_eq!(task.changed, Some(true));
    assert_eq!(task.phase, Phase::Finished);
    assert_eq!(task.progress, 100);

    // 👀 on the command.
    let bot = h.sim.bot_login();
    assert!(h.sim.read(|s| {
        s.reactions_on(comment)
            .iter()
            .any(|r| r.user == bot && r.content == "eyes")
    }));

    // The check run went queued → in_progress → completed/success, forward only.
    let run = h.check_run(task.id);
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert_eq!(run.head_sha, task.head_sha.clone().unwrap());
    assert_eq!(
        run.details_url.as_deref(),
        Some(format!("{}/tasks/{}", h.config.run.public_url, task.id).as_str())
    );
    let statuses: Vec<&str> = run.history.iter().map(|r| r.status.as_str()).collect();
    let first = |s: &str| statuses.iter().position(|x| *x == s).unwrap();
    assert!(first("queued") < first("in_progress"), "{statuses:?}");
    assert!(first("in_progress") < first("completed"), "{statuses:?}");
    let progress: Vec<u32> = run
        .history
        .iter()
        .filter(|r| r.status == "in_progress")
        .filter_map(|r| r.output.title.as_deref())
        .filter_map(|t| t.split(" — ").nth(1))
        .filter_map(|p| p.trim_end_matches(" %").parse().ok())
        .collect();
    assert!(!progress.is_empty(), "{:#?}", run.history);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(run.actions.is_empty(), "no buttons after success");

    // The pull request: changed package.json and lockfile, validation table, links.
    let pulls = h.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let (number, head, title, body, labels) = &pulls[0];
    assert_eq!(title, "[bg-agent] upgrade lodash 4.17.21");
    assert_eq!(Some(head.as_str()), task.branch.as_deref());
    assert!(
        head.starts_with(&format!("bg-agent/{}-", task.id)),
        "{head}"
    );
    assert!(labels.contains(&"bg-agent".to_owned()), "{labels:?}");
    assert!(body.contains(&format!("/tasks/{}", task.id)), "{body}");
    assert!(body.contains("#17"), "{body}");
    assert!(body.contains("| `npm test` | ✅ passed |"), "{body}");
    assert!(
        body.contains("| `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed |"),
        "{body}"
    );
    assert!(body.contains("@octo-lead"), "{body}");
    assert!(
        h.show(head, "package.json")
            .contains("\"lodash\": \"4.17.21\"")
    );
    assert!(
        h.show(head, "package-lock.json")
            .contains("lodash-4.17.21.tgz")
    );
    assert!(h.show("main", "package.json").contains("4.17.20"));
    assert_eq!(task.pr_number, Some(i32::try_from(*number).unwrap()));
    // The validation results also sit on the PR's head commit.
    let pr_run = h.sim.read(|s| {
        s.check_runs_in(WIDGETS)
            .into_iter()
            .find(|r| r.name == "bg-agent / validation")
            .cloned()
            .unwrap()
    });
    assert_eq!(Some(pr_run.head_sha.as_str()), task.commit_sha.as_deref());
    assert_eq!(pr_run.conclusion.as_deref(), Some("success"));

    // One tracking comment, edited to the end: state, PR link, page link.
    let comments = h.bot_comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("**succeeded**"), "{}", comments[0]);
    assert!(comments[0].contains("Pull request: "), "{}", comments[0]);
    assert!(comments[0].contains(&format!("/tasks/{}", task.id)));

    // The audit trail, in order.
    let events = h.db.store().task_events(task.id).await.unwrap();
    let actions: Vec<String> = events
        .iter()
        .map(|e| match (&e.from_state, &e.to_state) {
            (Some(from), Some(to)) => format!("{from}->{to}"),
            (None, Some(to)) => format!("{}:{to}", e.action),
            _ => e.action.clone(),
        })
        .collect();
    let expected = [
        "created:queued",
        "queued->starting",
        "starting->running",
        "phase cloning",
        "phase applying",
        "phase validating",
        "validated `npm test`: passed",
        "phase pushing",
        "running->succeeded",
        "opened pull request",
    ];
    let mut at = 0;
    for step in expected {
        let found = actions[at..]
            .iter()
            .position(|a| a.starts_with(step))
            .unwrap_or_else(|| panic!("{step} missing after position {at} in {actions:?}"));
        at += found + 1;
    }
    assert_eq!(events[0].actor, LEAD);
    assert!(events[0].delivery_guid.is_some());

    // The task page shows it all.
    let page = reqwest::get(format!("{}/tasks/{}", h.config.run.public_url, task.id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("succeeded"), "{page}");
    assert!(page.contains("npm test"), "{page}");
    h.stop().await;
}

/// Scenario 4: tests fail after the change → no PR, `failure` naming the command; the
/// Retry button makes attempt 2, linked to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_validation_opens_no_pull_request_and_retry_makes_a_linked_attempt() {
    let h = Harness::start(Setup {
        test_js: picky_test(PROJECT),
        ..Setup::default()
    })
    .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let first = h.tasks()[0].clone();
    let first = h.wait_reported_end(first.id).await;
    assert_eq!(first.state, TaskState::Failed);
    assert_eq!(first.failing_command.as_deref(), Some("npm test"));
    assert!(
        first.error.as_deref().unwrap().contains("npm test"),
        "{first:?}"
    );
    assert!(h.pulls().is_empty());
    let run = h.check_run(first.id);
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert!(
        run.output
            .summary
            .as_deref()
            .unwrap()
            .contains("Failing command: `npm test`"),
        "{:?}",
        run.output
    );
    let retry: Vec<&str> = run.actions.iter().map(|a| a.identifier.as_str()).collect();
    assert_eq!(retry, ["retry"]);
    let validations = h.db.store().validations(first.id).await.unwrap();
    let commands: Vec<&str> = validations.iter().map(|v| v.command.as_str()).collect();
    assert_eq!(
        commands,
        ["npm ci --ignore-scripts --no-audit --no-fund", "npm test"]
    );
    assert_eq!(validations[1].exit_code, Some(1));
    assert!(validations[1].output_tail.contains("breaks the widgets"));

    // Retry from the button.
    let clicked = h
        .sim
        .request_check_run_action(run.id, LEAD, "retry")
        .await
        .unwrap();
    h.processed(&clicked.delivery.guid).await;
    let tasks = h.tasks();
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    let second = &tasks[1];
    assert_eq!(second.retry_of, Some(first.id));
    assert_eq!(second.attempt, 2);
    assert_eq!(second.trigger, "retry_button");
    let second = h.wait_reported_end(second.id).await;
    assert_eq!(second.state, TaskState::Failed);
    // The original is kept as it was.
    let original = h.db.store().task(first.id).await.unwrap().unwrap();
    assert_eq!(original.state, TaskState::Failed);
    assert_eq!(original.attempt, 1);
    // Clicking Retry on the first again does not make a third attempt.
    let again = h
        .sim
        .request_check_run_action(run.id, LEAD, "retry")
        .await
        .unwrap();
    h.processed(&again.delivery.guid).await;
    assert_eq!(h.tasks().len(), 2);
    // GitHub's own "Re-run" on the second attempt's check run makes attempt 3.
    let rerun = h
        .sim
        .rerequest_check_run(h.check_run(second.id).id, LEAD)
        .await
        .unwrap();
    h.processed(&rerun.delivery.guid).await;
    let tasks = h.tasks();
    assert_eq!(tasks.len(), 3, "{tasks:#?}");
    assert_eq!(tasks[2].retry_of, Some(second.id));
    assert_eq!(tasks[2].attempt, 3);
    assert_eq!(tasks[2].trigger, "rerun");
    let third = h.wait_reported_end(tasks[2].id).await;
    assert_eq!(third.state, TaskState::Failed);
    h.stop().await;
}

/// Scenario 5: a repository template with parameters, used twice with different values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_template_is_used_twice_and_counted() {
    let config = "templates:\n  - name: note\n    description: Leave a note for the team\n    parameters:\n      - { name: topic, pattern: \"[a-z]+\" }\n    instructions: Write a note about {{topic}}.\n";
    let h = Harness::start(Setup {
        extra_files: vec![(".github/bg-agent.yml", config.to_owned())],
        agent_command: Some(vec!["sh".into(), "-c".into(), "cat > NOTE.md".into()]),
        ..Setup::default()
    })
    .await;
    h.comment(LEAD, "/bg-agent note cats").await;
    let first = h.wait_reported_end(h.tasks()[0].id).await;
    assert_eq!(first.state, TaskState::Succeeded, "{first:#?}");
    h.comment(LEAD, "/bg-agent note dogs").await;
    let second = h.wait_reported_end(h.tasks()[1].id).await;
    assert_eq!(second.state, TaskState::Succeeded, "{second:#?}");
    assert!(
        h.show(first.branch.as_deref().unwrap(), "NOTE.md")
            .contains("Write a note about cats.")
    );
    assert!(
        h.show(second.branch.as_deref().unwrap(), "NOTE.md")
            .contains("Write a note about dogs.")
    );
    let (uses, last) =
        h.db.store()
            .template_usage(WIDGETS_ID, "note")
            .await
            .unwrap();
    assert_eq!(uses, 2);
    assert!(last.is_some());
    assert_eq!(h.pulls().len(), 2);
    // A value that does not match the pattern is refused with the expected form.
    h.comment(LEAD, "/bg-agent note C4TS").await;
    let last_reply = h.bot_comments().pop().unwrap();
    assert!(last_reply.contains("topic"), "{last_reply}");
    assert_eq!(h.tasks().len(), 2);
    h.stop().await;
}

/// Validation that never ends, so a test can act while the task runs.
fn slow_validation() -> Setup<'static> {
    Setup {
        extra_files: vec![(
            ".github/bg-agent.yml",
            "validation:\n  - node -e \"setTimeout(() => {}, 600000)\"\n".to_owned(),
        )],
        ..Setup::default()
    }
}

/// Limits: a second task by the same user is refused; a second user's task on the same
/// repository waits queued (with its position) and runs after. Cancel stops a running
/// task, a duplicate delivery makes no second task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_queueing_cancel_and_duplicates() {
    let h = Harness::start(slow_validation()).await;
    let other = "octo-dev";
    h.sim.add_user(other);
    h.sim
        .set_permission(WIDGETS, other, Some(Role::Write))
        .unwrap();

    let (_, delivery) = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let first = h.tasks()[0].clone();
    let first = h
        .wait_task(first.id, |t| t.phase == Phase::Validating)
        .await;
    assert_eq!(first.state, TaskState::Running);

    // The same delivery again: still one task.
    let redelivered = h.sim.redeliver(delivery).await.unwrap();
    assert!(
        matches!(redelivered.status_code, 200 | 202),
        "{redelivered:?}"
    );
    assert_eq!(h.tasks().len(), 1);

    // Same user again: refused, naming the running task.
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let refusal = h.bot_comments().pop().unwrap();
    assert!(refusal.contains(&format!("#{}", first.id)), "{refusal}");
    assert_eq!(h.tasks().len(), 1);

    // Another user: queued behind it.
    h.comment(other, "/bg-agent upgrade lodash 4.17.21").await;
    let tasks = h.tasks();
    assert_eq!(tasks.len(), 2);
    let second = tasks[1].clone();
    assert_eq!(second.state, TaskState::Queued);
    assert!(
        h.bot_comments().iter().any(|c| c.contains("position 1")),
        "{:?}",
        h.bot_comments()
    );

    // Cancel the running one: it ends cancelled, and the queued one starts.
    h.comment(LEAD, "/bg-agent cancel").await;
    let cancelled = h.wait_reported_end(first.id).await;
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(
        h.check_run(first.id).conclusion.as_deref(),
        Some("cancelled")
    );
    let running = h
        .wait_task(second.id, |t| t.phase == Phase::Validating)
        .await;
    assert_eq!(running.state, TaskState::Running);

    // Cancel the second from its check run's button.
    h.sim
        .wait_for(WAIT, |s: &SimState| {
            s.check_runs_in(WIDGETS).iter().any(|r| {
                r.external_id.as_deref() == Some(&second.id.to_string())
                    && r.status == "in_progress"
                    && r.actions.iter().any(|a| a.identifier == "cancel")
            })
        })
        .await
        .unwrap();
    let run = h.check_run(second.id);
    let clicked = h
        .sim
        .request_check_run_action(run.id, other, "cancel")
        .await
        .unwrap();
    h.processed(&clicked.delivery.guid).await;
    let second = h.wait_reported_end(second.id).await;
    assert_eq!(second.state, TaskState::Cancelled);
    assert!(h.pulls().is_empty());
    h.stop().await;
}

/// A GitHub outage while reporting delays the reports but loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_github_errors() {
    let h = Harness::start(Setup::default()).await;
    h.sim.inject_fault(
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::ServerError(502),
        )
        .times(6),
    );
    h.sim
        .inject_fault(Fault::new("POST", "/repos/*/*/pulls", FaultKind::ServerError(500)).times(2));
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.wait_reported_end(h.tasks()[0].id).await;
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(h.pulls().len(), 1, "exactly one pull request");
    assert_eq!(h.check_run(task.id).conclusion.as_deref(), Some("success"));
    h.stop().await;
}

/// The server stops mid-task and starts again: the task whose execution is gone ends
/// `failed` (lost, retryable), nothing is duplicated, and a retry completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_task_leaves_nothing_stuck() {
    let mut h = Harness::start(slow_validation()).await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.tasks()[0].clone();
    h.wait_task(task.id, |t| t.phase == Phase::Validating).await;
    h.stop_server().await;
    h.start_server().await;
    let lost = h.wait_reported_end(task.id).await;
    assert_eq!(lost.state, TaskState::Failed);
    assert!(lost.error.as_deref().unwrap().contains("lost"), "{lost:?}");
    assert_eq!(h.tasks().len(), 1, "no duplicate task");
    assert!(h.pulls().is_empty(), "no pull request");
    let run = h.check_run(task.id);
    assert!(run.actions.iter().any(|a| a.identifier == "retry"));
    h.stop().await;
}

/// A task that runs past its timeout is stopped and ends `timed_out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_ends_timed_out() {
    let mut setup = slow_validation();
    setup.extra_files[0].1.push_str(
        "templates:\n  - name: slow\n    parameters: []\n    instructions: Take your time.\n    timeout_secs: 60\n",
    );
    setup.agent_command = Some(vec!["sh".into(), "-c".into(), "cat > SLOW.md".into()]);
    let h = Harness::start(setup).await;
    h.comment(LEAD, "/bg-agent slow").await;
    let task = h.tasks()[0].clone();
    assert_eq!(task.timeout_secs, 60);
    let ended = h.wait_reported_end(task.id).await;
    assert_eq!(ended.state, TaskState::TimedOut, "{ended:?}");
    assert_eq!(
        h.check_run(task.id).conclusion.as_deref(),
        Some("timed_out")
    );
    h.stop().await;
}

/// Two replicas with local executors: neither takes the other's running task for lost
/// while the other is alive; once it stops, the survivor settles the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_leave_each_others_runs_alone_until_one_stops() {
    let mut h = Harness::start(slow_validation()).await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.tasks()[0].clone();
    h.wait_task(task.id, |t| t.phase == Phase::Validating).await;
    let second = h.replica().await;
    // Nothing may happen: give the second replica's supervisor about ten passes (200 ms
    // apart) in which it could wrongly judge the first one's runner lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = h.db.store().task(task.id).await.unwrap().unwrap();
    assert_eq!(still.state, TaskState::Running, "{still:?}");
    // The first replica stops (its runner with it): the second settles the task.
    h.stop_server().await;
    let lost = h.wait_reported_end(task.id).await;
    assert_eq!(lost.state, TaskState::Failed);
    assert!(lost.error.as_deref().unwrap().contains("lost"), "{lost:?}");
    second.stop().await.unwrap();
    h.stop().await;
}
