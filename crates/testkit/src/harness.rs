//! One scenario harness: the fake GitHub, a fresh database and the real server (the real
//! intake, and with [`Scenario::engine`] the real supervisor, reporter and local executor
//! running the real runner), driven the way people drive the product: comments, buttons,
//! labels. What the product did is read back from the fake's recorded state and the store
//! through proxies ([`Harness::task`], [`Harness::check_run`], [`Harness::pr`]).
//!
//! ```ignore
//! let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent")).start().await;
//! h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
//! let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
//! let pr = h.pr(task.pr_number.unwrap() as u64);
//! assert_eq!(pr.title, "[bg-agent] upgrade lodash 4.17.21");
//! assert_eq!(h.check_run(task.id).conclusion.as_deref(), Some("success"));
//! h.finish().await;
//! ```
//!
//! [`Harness::finish`] stops everything and fails the test if the server did not stop
//! cleanly (a background loop or worker died) or the fake recorded a schema violation.
//! A harness dropped without `finish` fails the test too, so no scenario skips the checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bg_agent::app::{EngineOptions, RunningServer, start_app};
use bg_agent::config::{Config, ExecutorKind};
use bg_agent::engine::redelivery::RedeliverySettings;
use bg_agent::engine::tasks::{TaskIntake, TaskPolicy};
use bg_agent::store::tasks::TaskEvent;
use bg_agent::store::{DeliveryState, Store};
use bg_agent_core::protocol::ValidationResult;
use bg_agent_core::task::render::{CHECK_RUN_NAME, VALIDATION_CHECK_NAME};
use bg_agent_core::task::{Permission, Phase, TaskId, TaskRecord, TaskState};
use bg_agent_github::{GitHubApp, SystemClock};
use github_fake::{CheckRunRecord, GitHubSim, Role, RunningSim, SimConfig, SimState, world};
use sqlx::{ConnectOptions, Connection};

use crate::db::TestDb;
use crate::fixtures::{SECRET, github_config, package_json, passing_test};
use crate::kubelet::Kubelet;
use crate::recording::{test_config, wait_for_delivery};
use crate::tcp_proxy::TcpProxy;

/// The repository every scenario happens in, and its issue.
pub const REPO: &str = world::WIDGETS;
pub const REPO_ID: i64 = world::WIDGETS_ID as i64;
pub const ISSUE: u64 = world::ISSUE_NUMBER;
/// A writer on the repository (the issue's author).
pub const LEAD: &str = world::LEAD;
pub const LEAD_ID: i64 = world::LEAD_ID as i64;
/// A commenter without access.
pub const DRIVE_BY: &str = world::DRIVE_BY;
/// The npm project in a repository the engine works on.
pub const PROJECT: &str = "widgets";
/// How long any wait lasts before the test fails: long enough for a clone, npm and a
/// push on a busy 2-core machine. A bound, not an expectation.
pub const WAIT: Duration = Duration::from_secs(120);

/// What to start: the repository's files and whether tasks run.
pub struct Scenario {
    runner: Option<PathBuf>,
    files: Vec<(String, Vec<u8>)>,
    test_js: Option<String>,
    agent_command: Option<Vec<String>>,
    agent: Option<bg_agent_core::protocol::AgentSpec>,
    agent_credential: Option<String>,
    database_behind_proxy: bool,
    redelivery: Option<RedeliverySettings>,
    in_process: bool,
    configure: Option<ConfigChange>,
    sign_in: bool,
    kubernetes: Option<OnKubernetes>,
}

/// Where a scenario's tasks run as Kubernetes Jobs (see [`Scenario::on_kubernetes`]).
#[derive(Debug, Clone)]
pub struct OnKubernetes {
    /// The executor's kubeconfig (the server's rights).
    pub kubeconfig: PathBuf,
    /// The stand-in kubelet's (it writes Pods' status and reads Secrets).
    pub kubelet_kubeconfig: PathBuf,
    pub namespace: String,
    /// The runner image the Jobs name ([`crate::kubelet::RUNNER_IMAGE`] runs).
    pub image: String,
}

/// A change a scenario makes to the servers' configuration.
type ConfigChange = Box<dyn FnOnce(&mut Config) + Send>;

impl Scenario {
    /// The whole app: tasks run on the local executor as `runner_program runner` (in a
    /// server test, `env!("CARGO_BIN_EXE_bg-agent")`). The repository is a small npm
    /// project whose tests pass (see [`Scenario::tests`]).
    pub fn engine(runner_program: impl Into<PathBuf>) -> Self {
        Self {
            runner: Some(runner_program.into()),
            files: Vec::new(),
            test_js: Some(passing_test(PROJECT)),
            agent_command: None,
            agent: None,
            agent_credential: None,
            database_behind_proxy: false,
            redelivery: None,
            in_process: true,
            configure: None,
            sign_in: false,
            kubernetes: None,
        }
    }

    /// The intake alone: tasks are created and acknowledged, never run. The repository
    /// holds the fake world's files.
    pub fn intake() -> Self {
        Self {
            runner: None,
            files: world::WIDGETS_FILES
                .iter()
                .map(|(path, content)| ((*path).to_owned(), content.to_vec()))
                .collect(),
            test_js: None,
            agent_command: None,
            agent: None,
            agent_credential: None,
            database_behind_proxy: false,
            redelivery: None,
            in_process: true,
            configure: None,
            sign_in: false,
            kubernetes: None,
        }
    }

    /// The npm project's `test.js` (see [`crate::fixtures`]).
    pub fn tests(mut self, test_js: impl Into<String>) -> Self {
        self.test_js = Some(test_js.into());
        self
    }

    /// One more file in the repository (e.g. `.github/bg-agent.yml`).
    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        self.files
            .push((path.to_owned(), content.as_ref().to_vec()));
        self
    }

    /// The coding agent free-text and custom-template tasks run (argv; it reads the
    /// instructions on stdin).
    pub fn agent(mut self, argv: &[&str]) -> Self {
        self.agent_command = Some(argv.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    /// Changes the servers' configuration (after the harness has made it).
    pub fn configure(mut self, change: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.configure = Some(Box::new(change));
        self
    }

    /// The coding agent agent tasks run (provider, model API URL, limits), instead of the
    /// `command` provider.
    pub fn agent_spec(mut self, agent: bg_agent_core::protocol::AgentSpec) -> Self {
        self.agent = Some(agent);
        self
    }

    /// The provider credential agent tasks are given.
    pub fn agent_credential(mut self, credential: &str) -> Self {
        self.agent_credential = Some(credential.to_owned());
        self
    }

    /// The servers reach the database through a proxy that [`Harness::database_down`]
    /// cuts (the harness itself still reads the database directly).
    pub fn database_behind_proxy(mut self) -> Self {
        self.database_behind_proxy = true;
        self
    }

    /// No server in this process: the test starts its own as processes of their own
    /// (see [`crate::server_process`]) on the scenario's database and fake GitHub.
    pub fn without_server(mut self) -> Self {
        self.in_process = false;
        self
    }

    /// The status pages and API ask people to sign in with the fake GitHub
    /// (`BG_AGENT_AUTH=github`, the fake's OAuth client); see `RunningSim::approve_sign_in_as`.
    pub fn sign_in(mut self) -> Self {
        self.sign_in = true;
        self
    }

    /// Tasks run as Kubernetes Jobs in `on.namespace`, whose Pods a stand-in kubelet
    /// ([`crate::kubelet`]) runs with the scenario's runner program.
    pub fn on_kubernetes(mut self, on: OnKubernetes) -> Self {
        self.kubernetes = Some(on);
        self
    }

    /// How the engine sweeps for missed deliveries (by default every five minutes).
    pub fn redelivery(mut self, settings: RedeliverySettings) -> Self {
        self.redelivery = Some(settings);
        self
    }

    pub async fn start(self) -> Harness {
        let sim = GitHubSim::start(SimConfig {
            webhook_secret: SECRET.into(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let mut files = Vec::new();
        if let Some(test_js) = &self.test_js {
            let package = package_json(PROJECT, "4.17.20", "node test.js");
            let lock = sim.npm_lockfile(&package).await.unwrap();
            files.push(("package.json".to_owned(), package.into_bytes()));
            files.push(("package-lock.json".to_owned(), lock.into_bytes()));
            files.push(("test.js".to_owned(), test_js.clone().into_bytes()));
        }
        files.extend(self.files);
        let seeded: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(path, content)| (path.as_str(), content.as_slice()))
            .collect();
        sim.seed_world_with(&seeded).await.unwrap();
        let db = TestDb::new().await;
        let (proxy, server_store) = if self.database_behind_proxy {
            let (proxy, through) = db.outage_proxy().await;
            (Some(proxy), Store::connect(through, 10).await.unwrap())
        } else {
            (None, db.store().clone())
        };
        let github = GitHubApp::new(github_config(&sim), Arc::new(SystemClock)).unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.app_id = Some(sim.app_id());
        config.app_slug = sim.app_slug();
        config.data_dir = data.path().to_owned();
        config.run.npm_registry = Some(sim.npm_registry_url());
        config.run.agent_command = self.agent_command;
        if self.sign_in {
            // Sessions keep the user's token sealed with the credentials' keyring (a test
            // may take it away in `configure`).
            config.run.encryption_keys = Some(crate::fixtures::encryption_keys());
        }
        if let Some(change) = self.configure {
            change(&mut config);
        }
        if self.sign_in {
            // The user calls of sign-in go to the API the App's client uses.
            config.github.api_url = sim.api_url().to_owned();
            config.auth = bg_agent::config::AuthSettings {
                mode: bg_agent::web::auth::AuthMode::GitHub,
                oauth: Some(bg_agent::config::OAuthClient {
                    client_id: sim.oauth_client_id(),
                    client_secret: sim.oauth_client_secret().to_owned().into(),
                }),
                github_web_url: sim.base_url().to_owned(),
                session_key: None,
            };
        }
        let mut kubelet = None;
        if let Some(on) = &self.kubernetes {
            config.executor = ExecutorKind::Kubernetes;
            config.kubernetes.kubeconfig = Some(on.kubeconfig.clone());
            config.kubernetes.namespace = Some(on.namespace.clone());
            config.kubernetes.runner_image = Some(on.image.clone());
            let runner = self
                .runner
                .as_ref()
                .expect("Scenario::engine runs tasks on Kubernetes");
            let (client, _) = bg_agent::executor::kubernetes::client(Some(&on.kubelet_kubeconfig))
                .await
                .unwrap();
            kubelet = Some(Kubelet::start(client, &on.namespace, runner).await);
        }
        if let Some(agent) = self.agent {
            config.run.agent = agent;
        }
        let agent_credential = self.agent_credential;
        let redelivery = self.redelivery.unwrap_or_default();
        let engine = self.runner.map(|runner| EngineOptions {
            poll: Duration::from_millis(200),
            report_throttle: Duration::from_millis(300),
            redelivery,
            agent_credential: agent_credential.map(Into::into),
            ..EngineOptions::new(runner)
        });
        let mut harness = Harness {
            sim,
            db,
            server_store,
            proxy,
            config,
            github,
            engine,
            server: None,
            replicas: Vec::new(),
            kubelet,
            finished: false,
            _data: data,
        };
        if self.in_process {
            harness.start_server().await;
        }
        harness
    }
}

/// A running scenario. Fields are public for what the proxies do not cover.
pub struct Harness {
    pub sim: RunningSim,
    pub db: TestDb,
    /// What the servers use: the database, or the same through `proxy`.
    server_store: Store,
    proxy: Option<TcpProxy>,
    pub config: Config,
    github: GitHubApp,
    engine: Option<EngineOptions>,
    server: Option<RunningServer>,
    replicas: Vec<RunningServer>,
    kubelet: Option<Kubelet>,
    finished: bool,
    _data: tempfile::TempDir,
}

/// A comment a user wrote, once the server has processed its webhook.
#[derive(Debug, Clone)]
pub struct Commented {
    pub id: u64,
    /// The fake's delivery id (for [`Harness::redeliver`]).
    pub delivery: u64,
}

/// A pull request as GitHub shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    pub head: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
}

impl Harness {
    pub fn store(&self) -> &Store {
        self.db.store()
    }

    /// Where the (first) server's pages are.
    pub fn public_url(&self) -> &str {
        &self.config.run.public_url
    }

    /// Starts the server (again) and points the App's webhook at it.
    pub async fn start_server(&mut self) {
        let server = self.launch().await;
        self.sim
            .set_webhook_url(Some(format!("http://{}/webhook", server.addr)));
        self.server = Some(server);
    }

    /// The database becomes unreachable for the servers (see
    /// [`Scenario::database_behind_proxy`]): connections reset, new ones refused.
    pub fn database_down(&self) {
        self.proxy
            .as_ref()
            .expect("Scenario::database_behind_proxy")
            .cut();
    }

    pub fn database_up(&self) {
        self.proxy
            .as_ref()
            .expect("Scenario::database_behind_proxy")
            .restore();
    }

    /// What the local executor holds in its workspaces' root for tasks: workspaces and
    /// their output and id files (the root's `.`-named entries, such as the runner
    /// program's link, are the executor's own).
    pub fn task_workspaces(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.config.data_dir.join("workspaces"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the server the webhooks go to, failing the test if it does not stop cleanly.
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .stop()
                .await
                .unwrap_or_else(|e| panic!("the server did not stop cleanly: {e:#}"));
        }
    }

    /// Another replica on the same database and GitHub (webhooks still go to the
    /// first); stopped by [`Harness::finish`].
    pub async fn start_replica(&mut self) {
        let replica = self.launch().await;
        self.replicas.push(replica);
    }

    async fn launch(&mut self) -> RunningServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.config.run.public_url = format!("http://{}", listener.local_addr().unwrap());
        let store = self.server_store.clone();
        match &self.engine {
            Some(options) => start_app(&self.config, store, self.github.clone(), listener, options)
                .await
                .unwrap(),
            None => {
                let intake = TaskIntake::new(
                    store.clone(),
                    self.github.clone(),
                    TaskPolicy {
                        required_permission: Permission::Write,
                        default_timeout_secs: 3600,
                        label_trust: self.config.tasks.label_trust,
                    },
                )
                .with_public_url(&self.config.run.public_url);
                RunningServer::start(&self.config, store, Arc::new(intake), listener).unwrap()
            }
        }
    }

    /// Stops every server and the fake; fails the test if a server did not stop cleanly
    /// (a background loop, worker or writer died) or the fake recorded a schema violation.
    pub async fn finish(mut self) {
        self.finished = true;
        let mut failures = Vec::new();
        for server in self
            .server
            .take()
            .into_iter()
            .chain(self.replicas.drain(..))
        {
            if let Err(e) = server.stop().await {
                failures.push(format!("{e:#}"));
            }
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop().await;
        }
        let violations = self.sim.violations().len();
        assert!(
            failures.is_empty(),
            "the server did not stop cleanly (and the fake recorded {violations} schema violation(s)): {failures:?}"
        );
        self.sim.assert_no_violations();
    }

    // ---- People acting ----

    /// `user` comments on the issue; returns once the server has processed the webhook.
    pub async fn comment(&self, user: &str, body: &str) -> Commented {
        let triggered = self.sim.comment(REPO, ISSUE, user, body).await.unwrap();
        assert_eq!(triggered.delivery.status_code, 202, "{triggered:?}");
        self.processed(&triggered.delivery.guid).await;
        Commented {
            id: triggered.id.unwrap(),
            delivery: triggered.delivery.id,
        }
    }

    /// `user` adds `label` to the issue; returns once the server has processed it.
    pub async fn label(&self, user: &str, label: &str) {
        let triggered = self
            .sim
            .label_issue(REPO, ISSUE, user, label)
            .await
            .unwrap();
        self.processed(&triggered.delivery.guid).await;
    }

    /// `user` presses the button `identifier` on task `task`'s check run.
    pub async fn click(&self, task: impl Into<TaskId>, user: &str, identifier: &str) {
        let run = self.check_run(task);
        let clicked = self
            .sim
            .request_check_run_action(run.id, user, identifier)
            .await
            .unwrap();
        self.processed(&clicked.delivery.guid).await;
    }

    /// `user` presses GitHub's own "Re-run" on task `task`'s check run.
    pub async fn rerun(&self, task: impl Into<TaskId>, user: &str) {
        let run = self.check_run(task);
        let rerun = self.sim.rerequest_check_run(run.id, user).await.unwrap();
        self.processed(&rerun.delivery.guid).await;
    }

    /// Sends delivery `delivery` again; returns the receiver's status.
    pub async fn redeliver(&self, delivery: u64) -> u16 {
        self.sim.redeliver(delivery).await.unwrap().status_code
    }

    /// A new user with `role` on the repository.
    pub fn add_user(&self, login: &str, role: Role) {
        self.sim.add_user(login);
        self.sim.set_permission(REPO, login, Some(role)).unwrap();
    }

    /// Waits (bounded) until the server has processed the delivery, successfully.
    pub async fn processed(&self, guid: &str) {
        let record =
            wait_for_delivery(self.store(), guid, |d| d.state != DeliveryState::Pending).await;
        assert_eq!(record.state, DeliveryState::Processed, "{record:?}");
    }

    // ---- What the product did ----

    /// The repository's tasks, oldest first.
    pub async fn tasks(&self) -> Vec<TaskRecord> {
        let mut tasks = self.store().repository_tasks(REPO_ID, 50).await.unwrap();
        tasks.reverse();
        tasks
    }

    /// The one task there is.
    pub async fn only_task(&self) -> TaskProxy<'_> {
        let tasks = self.tasks().await;
        assert_eq!(tasks.len(), 1, "{tasks:#?}");
        self.task(tasks[0].id)
    }

    pub fn task(&self, id: impl Into<TaskId>) -> TaskProxy<'_> {
        TaskProxy {
            h: self,
            id: id.into(),
        }
    }

    /// Task `task`'s check run on GitHub.
    pub fn check_run(&self, task: impl Into<TaskId>) -> CheckRunRecord {
        let task = task.into();
        self.find_check_run(task, CHECK_RUN_NAME)
            .unwrap_or_else(|| panic!("no check run for task {task}"))
    }

    /// The validation check on task `task`'s pull request.
    pub fn validation_check(&self, task: impl Into<TaskId>) -> CheckRunRecord {
        let task = task.into();
        self.find_check_run(task, VALIDATION_CHECK_NAME)
            .unwrap_or_else(|| panic!("no validation check for task {task}"))
    }

    fn find_check_run(&self, task: impl Into<TaskId>, name: &str) -> Option<CheckRunRecord> {
        let id = task.into().to_string();
        self.sim.read(|s| {
            s.check_runs_in(REPO)
                .into_iter()
                .find(|r| r.external_id.as_deref() == Some(&id) && r.name == name)
                .cloned()
        })
    }

    /// The repository's pull requests, oldest first.
    pub fn pulls(&self) -> Vec<Pull> {
        self.sim.read(|s| {
            s.pulls_in(REPO)
                .into_iter()
                .map(|p| {
                    let issue = s.issue(REPO, p.number).unwrap();
                    Pull {
                        number: p.number,
                        head: p.head_ref.clone(),
                        title: issue.title.clone(),
                        body: issue.body.clone().unwrap_or_default(),
                        labels: issue.labels.clone(),
                    }
                })
                .collect()
        })
    }

    /// Pull request `number`.
    pub fn pr(&self, number: u64) -> Pull {
        self.pulls()
            .into_iter()
            .find(|p| p.number == number)
            .unwrap_or_else(|| panic!("no pull request #{number}"))
    }

    /// The comments the app wrote on the issue, oldest first.
    pub fn bot_comments(&self) -> Vec<String> {
        let bot = self.sim.bot_login();
        self.sim.read(|s: &SimState| {
            s.comments_on(REPO, ISSUE)
                .into_iter()
                .filter(|c| c.author == bot)
                .map(|c| c.body.clone())
                .collect()
        })
    }

    /// The app's latest comment on the issue.
    pub fn last_reply(&self) -> String {
        self.bot_comments()
            .pop()
            .expect("the app has not commented")
    }

    /// Whether the app reacted `content` (e.g. `eyes`) to comment `comment`.
    pub fn reacted(&self, comment: u64, content: &str) -> usize {
        let bot = self.sim.bot_login();
        self.sim.read(|s| {
            s.reactions_on(comment)
                .iter()
                .filter(|r| r.user == bot && r.content == content)
                .count()
        })
    }

    /// A file on a branch of the fake's repository.
    pub fn show(&self, branch: &str, path: &str) -> String {
        let repo = self.sim.read(|s| s.repo(REPO).unwrap().git_dir.clone());
        let output = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["show", &format!("{branch}:{path}")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{branch}:{path} not found");
        String::from_utf8(output.stdout).unwrap()
    }

    /// Settings for snapshots of what GitHub shows: the servers' addresses, task ids
    /// (`[task 1]` is the oldest), commits, times and durations are replaced by names,
    /// and a check run's log tail is left out (its lines and timings vary from run to
    /// run, and whether the last report had them; the core's snapshots show it).
    pub async fn snapshot_settings(&self) -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"(?s)### Last log lines\n\n```\n.*?\n```\n\n?", "");
        settings.add_filter(&regex::escape(self.sim.base_url()), "[github]");
        settings.add_filter(&regex::escape(self.public_url()), "[bg-agent]");
        for (n, task) in self.tasks().await.iter().enumerate() {
            settings.add_filter(
                &format!(r"(#|/tasks/|retry |bg-agent/){}\b", task.id),
                format!("${{1}}[task {}]", n + 1),
            );
        }
        settings.add_filter(r"\b[0-9a-f]{40}\b", "[sha]");
        settings.add_filter("\u{200B}", "<zwsp>");
        settings.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "[time]");
        settings.add_filter(
            r"(\*\* after |Finished after |· )\d+( min \d{2})? s\b",
            "${1}[elapsed]",
        );
        settings.add_filter(r"\| \d+\.\d s \|", "| [duration] |");
        settings
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!(
                "a scenario must end with `h.finish().await` (it checks the server and the fake)"
            );
        }
    }
}

/// One task, read back from the store as it changes.
pub struct TaskProxy<'h> {
    h: &'h Harness,
    pub id: TaskId,
}

impl TaskProxy<'_> {
    pub async fn get(&self) -> TaskRecord {
        self.h.store().task(self.id).await.unwrap().unwrap()
    }

    /// Waits (bounded) until the task satisfies `condition`, re-reading it every 100 ms.
    pub async fn wait(&self, condition: impl Fn(&TaskRecord) -> bool) -> TaskRecord {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let task = self.get().await;
            if condition(&task) {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {} never got there; it is {task:#?}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the task is running in `phase`.
    pub async fn wait_phase(&self, phase: Phase) -> TaskRecord {
        let task = self
            .wait(|t| t.phase == phase || t.state.is_terminal())
            .await;
        assert_eq!(
            (task.state, task.phase),
            (TaskState::Running, phase),
            "{task:#?}"
        );
        task
    }

    /// Waits until the task is in `state` and returns it. An end state is waited for
    /// until GitHub shows it too: the check run completed and, for a change, the pull
    /// request linked from it.
    pub async fn expect_state(&self, state: TaskState) -> TaskRecord {
        let task = if state.is_terminal() {
            self.reported_end().await
        } else {
            self.wait(|t| t.state == state || t.state.is_terminal())
                .await
        };
        assert_eq!(task.state, state, "{task:#?}");
        task
    }

    /// Waits until the task has ended and GitHub has seen its final version.
    pub async fn reported_end(&self) -> TaskRecord {
        let task = self.wait(|t| t.state.is_terminal()).await;
        let wanted_pr = task.state == TaskState::Succeeded && task.changed == Some(true);
        let id = self.id.to_string();
        self.h
            .sim
            .wait_for(WAIT, |s: &SimState| {
                let run = s
                    .check_runs_in(REPO)
                    .into_iter()
                    .find(|r| r.external_id.as_deref() == Some(&id) && r.name == CHECK_RUN_NAME);
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
        // Log lines may still come in after the end: wait until GitHub has been shown
        // the task's last version, so what a test reads there is final.
        let mut conn = self.h.db.connect_options().connect().await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let settled: bool =
                sqlx::query_scalar("SELECT reported_version >= version FROM tasks WHERE id = $1")
                    .bind(self.id)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            if settled {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id}'s last version was never reported"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = conn.close().await;
        self.get().await
    }

    /// Waits until the task's check run shows a button `identifier`.
    pub async fn wait_button(&self, identifier: &str) {
        let id = self.id.to_string();
        self.h
            .sim
            .wait_for(WAIT, |s: &SimState| {
                s.check_runs_in(REPO).iter().any(|r| {
                    r.external_id.as_deref() == Some(&id)
                        && r.name == CHECK_RUN_NAME
                        && r.actions.iter().any(|a| a.identifier == identifier)
                })
            })
            .await
            .unwrap_or_else(|e| panic!("task {id} never showed a {identifier} button: {e}"));
    }

    pub fn check_run(&self) -> CheckRunRecord {
        self.h.check_run(self.id)
    }

    pub async fn events(&self) -> Vec<TaskEvent> {
        self.h.store().task_events(self.id).await.unwrap()
    }

    /// The audit trail in words: `created:queued`, `queued->starting`, `phase cloning`…
    pub async fn audit(&self) -> Vec<String> {
        self.events()
            .await
            .iter()
            .map(|e| match (&e.from_state, &e.to_state) {
                (Some(from), Some(to)) => format!("{from}->{to}"),
                (None, Some(to)) => format!("{}:{to}", e.action),
                _ => e.action.clone(),
            })
            .collect()
    }

    pub async fn validations(&self) -> Vec<ValidationResult> {
        self.h.store().validations(self.id).await.unwrap()
    }
}
