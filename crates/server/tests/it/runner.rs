//! The real `bg-agent runner`, run the way the server runs it (through the local
//! executor, cleared environment, secrets in the environment only), against the fake
//! GitHub's real git repositories and its npm registry, reporting to a stand-in for the
//! server's `POST /internal/tasks/{id}/events`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use bg_agent::executor::sandbox::Protected;
use bg_agent::executor::{Executor, Launch, LocalExecutor, Observed, Sandbox, SandboxSettings};
use bg_agent_core::protocol::{
    AgentProvider, AgentSpec, RunOutcome, RunnerEvent, RunnerReport, SPEC_ENV, TaskSpec,
    ValidationResult,
};
use bg_agent_core::task::{Phase, Recipe};
use github_fake::{Access, GitHubSim, Permissions, RepoHandle, RunningSim, SimConfig};

/// Bounds a whole runner execution (never a threshold being tested).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const BOT_NAME: &str = "bg-agent[bot]";
const BOT_EMAIL: &str = "410001+bg-agent[bot]@users.noreply.github.com";

mod hostile;

// ---- the server's events endpoint, played by the test ----

struct Endpoint {
    task_id: i64,
    secret: String,
    /// Accepted reports, in arrival order.
    reports: Mutex<Vec<RunnerReport>>,
    /// Every body received, accepted or not (to look for leaked secrets).
    bodies: Mutex<Vec<String>>,
    /// Sequence numbers to answer 500 once.
    fail_once: Mutex<HashSet<u64>>,
    failed: Mutex<Vec<u64>>,
    unauthorized: Mutex<usize>,
}

struct Callback {
    url: String,
    endpoint: Arc<Endpoint>,
}

async fn events(
    State(endpoint): State<Arc<Endpoint>>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let text = String::from_utf8_lossy(&body).into_owned();
    endpoint.bodies.lock().unwrap().push(text.clone());
    let expected = format!("Bearer {}", endpoint.secret);
    if id != endpoint.task_id
        || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
    {
        *endpoint.unauthorized.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(report) = serde_json::from_str::<RunnerReport>(&text) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    if endpoint.fail_once.lock().unwrap().remove(&report.seq) {
        endpoint.failed.lock().unwrap().push(report.seq);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut reports = endpoint.reports.lock().unwrap();
    // Idempotent by sequence number, as the server is.
    if !reports.iter().any(|r| r.seq == report.seq) {
        reports.push(report);
    }
    StatusCode::OK
}

async fn callback(task_id: i64, fail_once: &[u64]) -> Callback {
    let endpoint = Arc::new(Endpoint {
        task_id,
        secret: format!("task-secret-{}", uuid::Uuid::new_v4()),
        reports: Mutex::default(),
        bodies: Mutex::default(),
        fail_once: Mutex::new(fail_once.iter().copied().collect()),
        failed: Mutex::default(),
        unauthorized: Mutex::default(),
    });
    let app = Router::new()
        .route("/internal/tasks/{id}/events", post(events))
        .with_state(Arc::clone(&endpoint));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Callback {
        // A trailing slash, as configuration often has one.
        url: format!("http://{addr}/"),
        endpoint,
    }
}

// ---- the world: the fake GitHub with a repository of our own ----

struct World {
    sim: RunningSim,
    installation: u64,
}

async fn world() -> World {
    let sim = GitHubSim::start(SimConfig::default()).await.unwrap();
    let seeded = sim.seed_world().await.unwrap();
    World {
        installation: seeded.installation_id,
        sim,
    }
}

impl World {
    /// A repository holding `files` on `main`.
    async fn repo(&self, name: &str, files: &[(&str, String)]) -> RepoHandle {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        self.sim
            .add_repository(self.installation, "acme", name, &files)
            .await
            .unwrap()
    }

    async fn lockfile(&self, package_json: &str) -> String {
        self.sim.npm_lockfile(package_json).await.unwrap()
    }

    /// A token like the server's: this repository only, `contents: write` only.
    fn token(&self, repo: &RepoHandle) -> String {
        self.sim
            .mint_token(
                self.installation,
                Some(&[repo.id]),
                Some(Permissions::new([("contents", Access::Write)])),
            )
            .unwrap()
    }

    fn spec(&self, task_id: i64, repo: &RepoHandle, recipe: Recipe) -> TaskSpec {
        TaskSpec {
            task_id,
            repository: repo.full_name(),
            clone_url: repo.clone_url.clone(),
            default_branch: "main".into(),
            branch: format!("bg-agent/{task_id}-upgrade-lodash"),
            recipe,
            params: BTreeMap::new(),
            instructions: "Upgrade lodash to 4.17.21.\n\nIt has an advisory.".into(),
            agent_command: None,
            template: None,
            agent: None,
            resume_branch: None,
            author_name: BOT_NAME.into(),
            author_email: BOT_EMAIL.into(),
            commit_title: format!("[bg-agent] task {task_id}: upgrade lodash"),
            commit_body: format!("Made by bg-agent task {task_id}."),
            npm_registry: Some(self.sim.npm_registry_url()),
            scope: Default::default(),
        }
    }
}

fn upgrade(spec: &mut TaskSpec, package: &str, version: &str) {
    spec.params = BTreeMap::from([
        ("package".to_owned(), package.to_owned()),
        ("version".to_owned(), version.to_owned()),
    ]);
}

/// The npm project in the test repositories.
const PROJECT: &str = "shop";

fn package_json(lodash: &str, test: &str) -> String {
    bg_agent_testkit::fixtures::package_json(PROJECT, lodash, test)
}

// ---- running the runner ----

struct Run {
    observed: Observed,
    reports: Vec<RunnerReport>,
}

impl Run {
    fn outcome(&self) -> &RunOutcome {
        match self.reports.last().map(|r| &r.event) {
            Some(RunnerEvent::Finished(outcome)) => outcome,
            other => panic!("the last report is not the outcome: {other:?}"),
        }
    }

    fn phases(&self) -> Vec<(Phase, u8)> {
        self.reports
            .iter()
            .filter_map(|r| match &r.event {
                RunnerEvent::Phase { phase, progress } => Some((*phase, progress.unwrap_or(0))),
                _ => None,
            })
            .collect()
    }

    fn validations(&self) -> Vec<&ValidationResult> {
        self.reports
            .iter()
            .filter_map(|r| match &r.event {
                RunnerEvent::Validation(result) => Some(result),
                _ => None,
            })
            .collect()
    }

    fn log(&self) -> String {
        self.reports
            .iter()
            .filter_map(|r| match &r.event {
                RunnerEvent::Log { lines, .. } => Some(lines.join("\n")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `bg-agent runner` as the server does and waits for it to end.
async fn run(spec: &TaskSpec, token: &str, callback: &Callback) -> Run {
    let workspaces = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::prepare(&SandboxSettings::default(), &Protected::default()).unwrap();
    let executor = LocalExecutor::sandboxed(
        PathBuf::from(env!("CARGO_BIN_EXE_bg-agent")),
        vec!["runner".into()],
        workspaces.path().to_path_buf(),
        sandbox,
    )
    .unwrap();
    let id = executor
        .launch(Launch {
            task_id: spec.task_id,
            callback_url: callback.url.clone(),
            task_secret: callback.endpoint.secret.clone().into(),
            runner_token: token.to_owned().into(),
            agent_credential: None,
            timeout: RUN_TIMEOUT,
            env: vec![(SPEC_ENV.into(), serde_json::to_string(spec).unwrap())],
        })
        .await
        .unwrap();
    let observed = executor.wait(&id).await;
    let reports = callback.endpoint.reports.lock().unwrap().clone();
    let run = Run { observed, reports };

    // Whatever happened, the protocol held and no secret went over the wire.
    assert_eq!(*callback.endpoint.unauthorized.lock().unwrap(), 0);
    let seqs: Vec<u64> = run.reports.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "sequence numbers run 1, 2, 3... with none lost"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    for body in callback.endpoint.bodies.lock().unwrap().iter() {
        assert!(!body.contains(token), "the token was reported: {body}");
        assert!(
            !body.contains(&basic),
            "the git header was reported: {body}"
        );
        assert!(
            !body.contains(&callback.endpoint.secret),
            "the task secret was reported: {body}"
        );
    }
    assert_eq!(
        run.observed,
        Observed::Exited { code: Some(0) },
        "the runner reported its outcome; log:\n{}",
        run.log()
    );
    run
}

// ---- looking into the sim's bare repository ----

fn git(repo: &RepoHandle, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo.git_dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn branch_exists(repo: &RepoHandle, branch: &str) -> bool {
    git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )
    .is_some()
}

fn show(repo: &RepoHandle, rev: &str, path: &str) -> String {
    git(repo, &["show", &format!("{rev}:{path}")])
        .unwrap_or_else(|| panic!("{path} is not in {rev}"))
}

fn assert_nothing_pushed(repo: &RepoHandle, spec: &TaskSpec, main_before: &str) {
    assert!(
        !branch_exists(repo, &spec.branch),
        "{} was pushed",
        spec.branch
    );
    assert_eq!(git(repo, &["rev-parse", "main"]).unwrap(), main_before);
}

// ---- scenarios ----

#[tokio::test]
async fn an_npm_upgrade_is_validated_committed_and_pushed() {
    let world = world().await;
    let manifest = package_json("4.17.20", "node test.js");
    let lock = world.lockfile(&manifest).await;
    assert!(lock.contains("lodash-4.17.20.tgz"), "{lock}");
    let repo = world
        .repo(
            "shop",
            &[
                ("package.json", manifest.clone()),
                ("package-lock.json", lock),
                ("test.js", bg_agent_testkit::fixtures::passing_test(PROJECT)),
            ],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let mut spec = world.spec(101, &repo, Recipe::NpmUpgrade);
    upgrade(&mut spec, "lodash", "4.17.21");
    // The second report is answered 500 once: it must be retried, not lost.
    let callback = callback(101, &[2]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;

    assert_eq!(*callback.endpoint.failed.lock().unwrap(), vec![2]);
    let RunOutcome::Pushed {
        branch,
        commit,
        changed_files,
    } = run.outcome()
    else {
        panic!("not pushed: {:?}\n{}", run.outcome(), run.log());
    };
    assert_eq!(branch, &spec.branch);
    assert_eq!(changed_files, &["package-lock.json", "package.json"]);

    let phases = run.phases();
    // Validation reports progress per command, so its phase may repeat.
    let mut order: Vec<Phase> = phases.iter().map(|(p, _)| *p).collect();
    order.dedup();
    assert_eq!(
        order,
        [
            Phase::Cloning,
            Phase::Applying,
            Phase::Validating,
            Phase::Pushing
        ]
    );
    assert!(
        phases.windows(2).all(|w| w[0].1 <= w[1].1),
        "progress goes backwards: {phases:?}"
    );
    assert_eq!(phases.first().unwrap().1, 10);
    assert_eq!(phases.last().unwrap().1, 90);

    // Dependencies are installed as locked (from the fake registry) before the tests.
    let validations = run.validations();
    let commands: Vec<&str> = validations.iter().map(|v| v.command.as_str()).collect();
    assert_eq!(
        commands,
        ["npm ci --ignore-scripts --no-audit --no-fund", "npm test"]
    );
    assert!(validations.iter().all(|v| v.passed()));
    assert!(
        validations[1].output_tail.contains("shop tests passed"),
        "{:?}",
        validations[1].output_tail
    );
    let log = run.log();
    assert!(log.contains("shop tests passed"), "{log}");
    // The outcome comes last, after every line and result.
    assert!(matches!(
        run.reports.iter().rev().nth(1).map(|r| &r.event),
        Some(RunnerEvent::Log { .. } | RunnerEvent::Phase { .. })
    ));

    // The branch is in the repository, one commit on top of main, by the bot.
    assert_eq!(
        git(&repo, &["rev-parse", &format!("refs/heads/{branch}")])
            .unwrap()
            .trim(),
        commit
    );
    assert_eq!(
        git(&repo, &["rev-parse", &format!("{commit}~1")]).unwrap(),
        main_before
    );
    let pushed_manifest = show(&repo, commit, "package.json");
    assert_eq!(pushed_manifest, manifest.replace("4.17.20", "4.17.21"));
    let pushed_lock = show(&repo, commit, "package-lock.json");
    assert!(pushed_lock.contains("lodash-4.17.21.tgz"), "{pushed_lock}");
    assert!(!pushed_lock.contains("4.17.20"), "{pushed_lock}");
    let meta = git(&repo, &["log", "-1", "--format=%an|%ae|%cn|%ce|%B", commit]).unwrap();
    assert_eq!(
        meta.trim_end(),
        format!(
            "{BOT_NAME}|{BOT_EMAIL}|{BOT_NAME}|{BOT_EMAIL}|{}\n\n{}",
            spec.commit_title, spec.commit_body
        )
    );
    assert_eq!(git(&repo, &["rev-parse", "main"]).unwrap(), main_before);
}

#[tokio::test]
async fn failing_tests_after_the_change_mean_no_push() {
    let world = world().await;
    let manifest = package_json("^4.17.20", "node test.js");
    let lock = world.lockfile(&manifest).await;
    let repo = world
        .repo(
            "shop",
            &[
                ("package.json", manifest),
                ("package-lock.json", lock),
                ("test.js", bg_agent_testkit::fixtures::picky_test(PROJECT)),
            ],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let mut spec = world.spec(102, &repo, Recipe::NpmUpgrade);
    upgrade(&mut spec, "lodash", "4.17.21");
    let callback = callback(102, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;

    assert_eq!(
        run.outcome(),
        &RunOutcome::Failed {
            error: "validation failed: npm test exited with 1".into(),
            failing_command: Some("npm test".into()),
            wip_branch: None,
        }
    );
    let validations = run.validations();
    assert_eq!(validations.len(), 2);
    assert!(validations[0].passed(), "npm ci: {:?}", validations[0]);
    assert_eq!(validations[1].exit_code, Some(1));
    assert!(
        validations[1]
            .output_tail
            .contains("lodash ^4.17.21 breaks the shop"),
        "{:?}",
        validations[1].output_tail
    );
    assert!(!run.phases().iter().any(|(p, _)| *p == Phase::Pushing));
    assert_nothing_pushed(&repo, &spec, &main_before);
}

#[tokio::test]
async fn a_dependency_already_at_the_version_needs_no_change() {
    let world = world().await;
    // A scoped package too: the registry serves `@scope%2fname` and its tarball.
    world.sim.add_npm_package("@acme/util", "1.2.3").unwrap();
    let manifest = package_json("4.17.21", "node test.js").replace(
        "\"lodash\": \"4.17.21\"",
        "\"@acme/util\": \"^1.2.0\",\n    \"lodash\": \"4.17.21\"",
    );
    let lock = world.lockfile(&manifest).await;
    assert!(lock.contains("/npm/@acme/util/-/util-1.2.3.tgz"), "{lock}");
    let repo = world
        .repo(
            "shop",
            &[
                ("package.json", manifest),
                ("package-lock.json", lock),
                ("test.js", bg_agent_testkit::fixtures::passing_test(PROJECT)),
            ],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let mut spec = world.spec(103, &repo, Recipe::NpmUpgrade);
    upgrade(&mut spec, "lodash", "4.17.21");
    let callback = callback(103, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;

    assert_eq!(run.outcome(), &RunOutcome::NoChanges);
    assert!(run.validations().is_empty(), "nothing to validate");
    assert!(run.log().contains("lodash is already at 4.17.21"));
    assert_nothing_pushed(&repo, &spec, &main_before);
}

#[tokio::test]
async fn the_repositorys_validation_commands_override_detection() {
    let world = world().await;
    // `npm test` would fail; the repository says to run its own checks instead. No
    // lockfile: only package.json changes.
    let manifest = package_json("~4.17.20", "exit 1");
    let repo = world
        .repo(
            "shop",
            &[
                ("package.json", manifest.clone()),
                (
                    ".github/bg-agent.yml",
                    "validation:\n  - node check.js first\n  - [node, check.js, second one]\n"
                        .into(),
                ),
                (
                    "check.js",
                    "console.log('check ' + process.argv.slice(2).join(' ') + ' ok');\n".into(),
                ),
            ],
        )
        .await;
    let mut spec = world.spec(104, &repo, Recipe::NpmUpgrade);
    upgrade(&mut spec, "lodash", "4.17.21");
    let callback = callback(104, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;

    let RunOutcome::Pushed {
        commit,
        changed_files,
        ..
    } = run.outcome()
    else {
        panic!("not pushed: {:?}\n{}", run.outcome(), run.log());
    };
    assert_eq!(changed_files, &["package.json"]);
    let commands: Vec<&str> = run
        .validations()
        .iter()
        .map(|v| v.command.as_str())
        .collect();
    assert_eq!(
        commands,
        ["node check.js first", "node check.js 'second one'"]
    );
    assert!(run.validations().iter().all(|v| v.passed()));
    assert!(run.log().contains("check second one ok"));
    // Progress moves within validation, per command.
    assert!(
        run.phases().contains(&(Phase::Validating, 80)),
        "{:?}",
        run.phases()
    );
    assert_eq!(
        show(&repo, commit, "package.json"),
        manifest.replace("~4.17.20", "~4.17.21")
    );
}

#[tokio::test]
async fn the_agent_recipe_runs_the_configured_program_with_the_instructions_on_stdin() {
    let world = world().await;
    let repo = world
        .repo("notes", &[("README.md", "# notes\n".into())])
        .await;
    let mut spec = world.spec(105, &repo, Recipe::Agent);
    spec.branch = "bg-agent/105-write-notes".into();
    // `$(...)` and quotes in the instructions are data on stdin, never shell text.
    spec.instructions = "Write the notes.\n$(touch PWNED) `touch PWNED` \"; touch PWNED\n".into();
    spec.agent_command = Some(vec![
        "sh".into(),
        "-c".into(),
        "cat > AGENT_INPUT.md && env | sort > AGENT_ENV.txt && echo agent done".into(),
    ]);
    let callback = callback(105, &[]).await;
    let token = world.token(&repo);
    let run = run(&spec, &token, &callback).await;

    let RunOutcome::Pushed {
        commit,
        changed_files,
        ..
    } = run.outcome()
    else {
        panic!("not pushed: {:?}\n{}", run.outcome(), run.log());
    };
    assert_eq!(changed_files, &["AGENT_ENV.txt", "AGENT_INPUT.md"]);
    assert!(run.log().contains("agent done"));
    assert!(run.log().contains("no validation commands"));
    assert_eq!(show(&repo, commit, "AGENT_INPUT.md"), spec.instructions);
    assert!(git(&repo, &["cat-file", "-e", &format!("{commit}:PWNED")]).is_none());
    // What the agent could see: none of the runner's secrets or its task.
    let env = show(&repo, commit, "AGENT_ENV.txt");
    assert!(!env.contains(&token), "{env}");
    assert!(!env.contains(&callback.endpoint.secret), "{env}");
    assert!(!env.contains("BG_AGENT"), "{env}");
    assert!(!env.contains("GIT_CONFIG"), "{env}");
    assert!(env.contains("CI=true"), "{env}");
}

/// What an agent (or a repository's tests) may do to the clone: commit by itself, plant
/// hooks, point git at a proxy, leave build output behind. The push is still one commit by
/// the bot on top of the default branch, holding the change and nothing else, and no
/// planted code runs with the token.
#[tokio::test]
async fn the_runner_commits_and_pushes_on_its_own_terms() {
    let world = world().await;
    let repo = world
        .repo(
            "notes",
            &[
                ("README.md", "# notes\n".into()),
                (
                    ".github/bg-agent.yml",
                    "validation:\n  - [sh, -c, 'mkdir -p coverage && echo 100% > coverage/report.txt']\n".into(),
                ),
            ],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let mut spec = world.spec(110, &repo, Recipe::Agent);
    spec.branch = "bg-agent/110-notes".into();
    spec.agent_command = Some(vec![
        "sh".into(),
        "-c".into(),
        [
            "cat > NOTES.md",
            "git add NOTES.md",
            "git -c user.name=agent -c user.email=agent@example.invalid commit -qm 'agent commit'",
            "echo more >> NOTES.md",
            "for hook in pre-push reference-transaction post-commit; do printf '#!/bin/sh\\necho planted-hook-$((40+2))\\n' > .git/hooks/$hook; chmod +x .git/hooks/$hook; done",
            "git config http.proxy http://127.0.0.1:9",
        ]
        .join(" && "),
    ]);
    let callback = callback(110, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;

    let RunOutcome::Pushed {
        commit,
        changed_files,
        ..
    } = run.outcome()
    else {
        panic!("not pushed: {:?}\n{}", run.outcome(), run.log());
    };
    assert_eq!(changed_files, &["NOTES.md"]);
    assert!(!run.log().contains("planted-hook-42"), "{}", run.log());
    assert_eq!(
        git(&repo, &["rev-parse", &format!("{commit}~1")]).unwrap(),
        main_before
    );
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%an", commit])
            .unwrap()
            .trim(),
        BOT_NAME
    );
    assert_eq!(
        show(&repo, commit, "NOTES.md"),
        format!("{}more\n", spec.instructions)
    );
    assert!(
        git(
            &repo,
            &["cat-file", "-e", &format!("{commit}:coverage/report.txt")]
        )
        .is_none()
    );
}

#[tokio::test]
async fn an_agent_recipe_without_an_agent_fails_clearly() {
    let world = world().await;
    let repo = world
        .repo("notes", &[("README.md", "# notes\n".into())])
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let spec = world.spec(106, &repo, Recipe::Agent);
    let callback = callback(106, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;
    assert_eq!(
        run.outcome(),
        &RunOutcome::Failed {
            error: "no coding agent is configured".into(),
            failing_command: None,
            wip_branch: None,
        }
    );
    assert_nothing_pushed(&repo, &spec, &main_before);
}

#[tokio::test]
async fn a_bad_token_fails_the_clone_without_showing_the_token() {
    let world = world().await;
    let repo = world
        .repo(
            "shop",
            &[("package.json", package_json("4.17.20", "node test.js"))],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let mut spec = world.spec(107, &repo, Recipe::NpmUpgrade);
    upgrade(&mut spec, "lodash", "4.17.21");
    let callback = callback(107, &[]).await;
    // `run` also checks that neither this token nor its git header form was reported.
    let run = run(&spec, "ghs_NotAValidToken0123456789abcdefXYZ", &callback).await;

    let RunOutcome::Failed {
        error,
        failing_command,
        ..
    } = run.outcome()
    else {
        panic!("not failed: {:?}", run.outcome());
    };
    assert_eq!(
        error,
        "git clone failed (exit 128): the repository refused the runner's token"
    );
    assert_eq!(failing_command, &None);
    assert_eq!(run.phases(), [(Phase::Cloning, 10)]);
    assert_nothing_pushed(&repo, &spec, &main_before);
}

#[tokio::test]
async fn a_package_that_is_not_a_dependency_is_named() {
    let world = world().await;
    let repo = world
        .repo(
            "shop",
            &[("package.json", package_json("4.17.20", "node test.js"))],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let mut spec = world.spec(108, &repo, Recipe::NpmUpgrade);
    upgrade(&mut spec, "left-pad", "1.3.0");
    let callback = callback(108, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;
    assert_eq!(
        run.outcome(),
        &RunOutcome::Failed {
            error: "left-pad is not a dependency in package.json".into(),
            failing_command: None,
            wip_branch: None,
        }
    );
    assert_nothing_pushed(&repo, &spec, &main_before);
}

#[tokio::test]
async fn parameters_are_checked_again_before_use() {
    let world = world().await;
    let repo = world
        .repo(
            "shop",
            &[("package.json", package_json("4.17.20", "node test.js"))],
        )
        .await;
    let mut spec = world.spec(109, &repo, Recipe::NpmUpgrade);
    upgrade(
        &mut spec,
        "lodash",
        "4.17.21 --registry=http://evil.example",
    );
    let callback = callback(109, &[]).await;
    let run = run(&spec, &world.token(&repo), &callback).await;
    let RunOutcome::Failed { error, .. } = run.outcome() else {
        panic!("not failed: {:?}", run.outcome());
    };
    assert!(error.contains("is not a valid version"), "{error}");
}

#[test]
fn the_runner_fails_without_its_environment() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bg-agent"))
        .arg("runner")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BG_AGENT_TASK_ID"), "{stderr}");
}

/// An agent task with the generic command provider running `script` in `sh`, no
/// verifier rounds.
fn agent_task(world: &World, id: i64, repo: &RepoHandle, script: &str) -> TaskSpec {
    let mut spec = world.spec(id, repo, Recipe::Agent);
    spec.branch = format!("bg-agent/{id}-fix-hello");
    spec.agent = Some(AgentSpec {
        verifier_rounds: 0,
        ..AgentSpec::new(AgentProvider::Command)
    });
    spec.agent_command = Some(vec!["sh".into(), "-c".into(), script.into()]);
    spec
}

/// A retry starts from the earlier attempt's WIP branch: fetched with the scoped token,
/// its change applied to a fresh clone of the default branch, the agent sees it, and
/// the one commit pushed holds both changes on top of the default branch. A branch that
/// is gone, or a change that no longer applies, means a fresh start, logged.
#[tokio::test]
async fn a_retry_starts_from_the_earlier_attempts_wip_branch() {
    let world = world().await;
    let repo = world
        .repo(
            "resume",
            &[
                ("README.md", "# resume\n".into()),
                (
                    ".github/bg-agent.yml",
                    "validation:\n  - [sh, -c, 'grep -qx fixed hello.txt']\n".into(),
                ),
            ],
        )
        .await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let token = world.token(&repo);

    // Attempt 1: a note, and a hello.txt that fails the check: kept, not proposed.
    let first = agent_task(
        &world,
        301,
        &repo,
        "echo one > NOTE.md && echo broken > hello.txt",
    );
    let run1 = run(&first, &token, &callback(301, &[]).await).await;
    let RunOutcome::Failed {
        wip_branch: Some(wip),
        ..
    } = run1.outcome()
    else {
        panic!("no WIP branch: {:?}\n{}", run1.outcome(), run1.log());
    };
    assert_eq!(wip, "bg-agent/wip/301");

    // Attempt 2 starts from it: the agent reads the note and fixes hello.txt.
    let mut second = agent_task(
        &world,
        302,
        &repo,
        "cat NOTE.md hello.txt > SEEN.md && echo fixed > hello.txt",
    );
    second.resume_branch = Some(wip.clone());
    let run2 = run(&second, &token, &callback(302, &[]).await).await;
    let RunOutcome::Pushed {
        commit,
        changed_files,
        ..
    } = run2.outcome()
    else {
        panic!("not pushed: {:?}\n{}", run2.outcome(), run2.log());
    };
    assert_eq!(changed_files, &["NOTE.md", "SEEN.md", "hello.txt"]);
    assert_eq!(show(&repo, commit, "SEEN.md"), "one\nbroken\n");
    assert_eq!(show(&repo, commit, "hello.txt"), "fixed\n");
    // One commit on the default branch: the pull request's diff is against it.
    assert_eq!(
        git(&repo, &["rev-parse", &format!("{commit}^")]).unwrap(),
        main_before
    );
    assert!(
        run2.log()
            .contains("starting from the earlier attempt's change on bg-agent/wip/301"),
        "{}",
        run2.log()
    );

    // The default branch moves and adds hello.txt too: the kept change conflicts, so
    // attempt 3 starts fresh, saying why.
    let upstream = agent_task(&world, 303, &repo, "echo fixed > hello.txt");
    let run3 = run(&upstream, &token, &callback(303, &[]).await).await;
    let RunOutcome::Pushed { commit: moved, .. } = run3.outcome() else {
        panic!("not pushed: {:?}\n{}", run3.outcome(), run3.log());
    };
    git(&repo, &["update-ref", "refs/heads/main", moved.trim()]).unwrap();
    let mut third = agent_task(
        &world,
        304,
        &repo,
        "test ! -e NOTE.md && echo three > THREE.md",
    );
    third.resume_branch = Some(wip.clone());
    let run4 = run(&third, &token, &callback(304, &[]).await).await;
    assert!(
        matches!(run4.outcome(), RunOutcome::Pushed { changed_files, .. } if changed_files == &["THREE.md"]),
        "{:?}\n{}",
        run4.outcome(),
        run4.log()
    );
    assert!(
        run4.log().contains(
            "the earlier attempt's change on bg-agent/wip/301 does not apply to main as it is now (it conflicts with the default branch in hello.txt): starting fresh"
        ),
        "{}",
        run4.log()
    );

    // The branch is gone: attempt 4 starts fresh, saying so.
    git(&repo, &["update-ref", "-d", "refs/heads/bg-agent/wip/301"]).unwrap();
    let mut fourth = agent_task(
        &world,
        305,
        &repo,
        "test ! -e NOTE.md && echo four > FOUR.md",
    );
    fourth.resume_branch = Some(wip.clone());
    let run5 = run(&fourth, &token, &callback(305, &[]).await).await;
    assert!(
        matches!(run5.outcome(), RunOutcome::Pushed { changed_files, .. } if changed_files == &["FOUR.md"]),
        "{:?}\n{}",
        run5.outcome(),
        run5.log()
    );
    assert!(
        run5.log().contains(
            "the earlier attempt's branch bg-agent/wip/301 is gone: starting fresh from the default branch"
        ),
        "{}",
        run5.log()
    );
}

/// Only a WIP branch as the server names them is followed.
#[tokio::test]
async fn a_resume_branch_that_is_not_a_wip_branch_is_refused() {
    let world = world().await;
    let repo = world
        .repo("resume-bad", &[("README.md", "# x\n".into())])
        .await;
    let mut spec = agent_task(&world, 306, &repo, "echo x > X.md");
    spec.resume_branch = Some("main".into());
    let run = run(&spec, &world.token(&repo), &callback(306, &[]).await).await;
    let RunOutcome::Failed { error, .. } = run.outcome() else {
        panic!("not refused: {:?}", run.outcome());
    };
    assert!(error.contains("\"main\" is not a WIP branch"), "{error}");
}
