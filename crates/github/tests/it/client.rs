//! The GitHub App client (`bg_agent_github`) against the strict fake GitHub
//! (`github_fake`), both for real over HTTP: installation and runner tokens,
//! App JWTs, retries, rate limits, GitHub's check-run limits, the per-installation
//! concurrency cap, every typed call, and git over smart HTTP with the runner token.
//!
//! The sim validates every request body against GitHub's REST description and panics
//! on drop if one broke it. It checks JWTs and token expiry against the real clock, so
//! each client runs on a `ManualClock` started at the real time: the client's waits
//! (backoff, `Retry-After`) move that clock and are recorded, and nothing here sleeps.
//! Waits for the sim are on conditions, with a generous bound.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bg_agent_core::task::Permission;
use bg_agent_github::limits::{MAX_COMMENT_CHARS, MAX_OUTPUT_CHARS, TRUNCATION_MARKER};
use bg_agent_github::retry::BACKOFF_BASE;
use bg_agent_github::{
    ActionError, AnnotationLevel, CheckRunAction, CheckRunAnnotation, CheckRunConclusion,
    CheckRunOutput, CheckRunStatus, CheckRunUpdate, Clock, GitHubApp, GitHubConfig, GitHubError,
    InstallationClient, InstallationToken, ManualClock, NewCheckRun, NewPullRequest,
    PullRequestUpdate, REFRESH_BEFORE_EXPIRY, Reaction, RepoName, Repository, TokenScope,
};
use chrono::{DateTime, TimeDelta, Utc};
use github_fake::{
    Access, Credential, Fault, FaultKind, GitHubSim, Permissions, RequestRecord, Role, RunningSim,
    SeededWorld, SimConfig, world,
};
use secrecy::{ExposeSecret, SecretString};

/// Generous bound for waits on conditions (never a threshold being tested).
const WAIT: Duration = Duration::from_secs(30);
const BRANCH: &str = "bg-agent/17-upgrade-lodash";

/// A seeded sim and a client of it on its own `ManualClock`.
struct Harness {
    sim: RunningSim,
    world: SeededWorld,
    clock: Arc<ManualClock>,
    app: GitHubApp,
}

fn config_for(sim: &RunningSim, key_pem: &str) -> GitHubConfig {
    GitHubConfig::new(
        sim.api_url(),
        sim.app_id(),
        SecretString::from(key_pem.to_owned()),
    )
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(SimConfig::default(), |config| config).await
    }

    async fn start_with(
        sim_config: SimConfig,
        configure: impl FnOnce(GitHubConfig) -> GitHubConfig,
    ) -> Self {
        let sim = GitHubSim::start(sim_config).await.expect("sim starts");
        let world = sim.seed_world().await.expect("world seeds");
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let config = configure(config_for(&sim, sim.app_private_key_pem()));
        let app = GitHubApp::new(config, clock.clone()).expect("client");
        Self {
            sim,
            world,
            clock,
            app,
        }
    }

    /// Another client of the same sim (own token cache), on a clock at `now`.
    fn other_app(&self, key_pem: &str, now: DateTime<Utc>) -> (GitHubApp, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(now));
        let app = GitHubApp::new(config_for(&self.sim, key_pem), clock.clone()).expect("client");
        (app, clock)
    }

    fn client(&self) -> InstallationClient {
        self.app.installation(self.world.installation_id)
    }

    /// Requests to exactly `path` (query ignored), oldest first.
    fn requests(&self, method: &str, path: &str) -> Vec<RequestRecord> {
        self.sim.read(|s| {
            s.requests
                .iter()
                .filter(|r| r.method == method && r.path.split('?').next() == Some(path))
                .cloned()
                .collect()
        })
    }

    fn statuses(&self, method: &str, path: &str) -> Vec<u16> {
        self.requests(method, path)
            .iter()
            .map(|r| r.status)
            .collect()
    }

    fn mints(&self) -> usize {
        let path = format!(
            "/app/installations/{}/access_tokens",
            self.world.installation_id
        );
        self.requests("POST", &path).len()
    }

    async fn main_sha(&self) -> String {
        self.client()
            .branch_head_sha(&widgets(), "main")
            .await
            .expect("main")
    }
}

fn widgets() -> RepoName {
    RepoName::new(world::ORG, "widgets")
}

fn other_key() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/github/other-app-private-key.pem"
    ))
    .expect("other key")
}

/// The backoff after failure `n` (1-based) lies in `[nominal / 2, nominal]`.
fn assert_backoffs(sleeps: &[Duration]) {
    for (i, slept) in sleeps.iter().enumerate() {
        let nominal = BACKOFF_BASE * 2u32.pow(u32::try_from(i).expect("few"));
        assert!(
            nominal / 2 <= *slept && *slept <= nominal,
            "backoff {i}: {slept:?}"
        );
    }
}

fn annotations(lines: std::ops::RangeInclusive<u32>) -> Vec<CheckRunAnnotation> {
    lines
        .map(|line| {
            CheckRunAnnotation::new(
                "src/index.js",
                line,
                AnnotationLevel::Warning,
                format!("note {line}"),
            )
        })
        .collect()
}

/// git with nothing from the machine's configuration; credentials only as an
/// `http.extraHeader` given on the command line (never written to `.git/config`).
struct Git {
    home: tempfile::TempDir,
}

impl Git {
    fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("temp home"),
        }
    }

    async fn run(
        &self,
        cwd: &Path,
        extra_header: Option<&SecretString>,
        args: &[&str],
    ) -> std::process::Output {
        let mut command = tokio::process::Command::new("git");
        command
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "bg-agent")
            .env("GIT_AUTHOR_EMAIL", "bg-agent@example.invalid")
            .env("GIT_COMMITTER_NAME", "bg-agent")
            .env("GIT_COMMITTER_EMAIL", "bg-agent@example.invalid");
        if let Some(header) = extra_header {
            command
                .arg("-c")
                .arg(format!("http.extraHeader={}", header.expose_secret()));
        }
        command.args(args).output().await.expect("git runs")
    }

    async fn ok(&self, cwd: &Path, extra_header: Option<&SecretString>, args: &[&str]) -> String {
        let output = self.run(cwd, extra_header, args).await;
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    async fn fails(&self, cwd: &Path, extra_header: Option<&SecretString>, args: &[&str]) {
        let output = self.run(cwd, extra_header, args).await;
        assert!(!output.status.success(), "git {args:?} succeeded");
    }

    /// Clones `repository` with `token`, commits a change to `package.json` and pushes
    /// it as `branch`; returns the pushed commit.
    async fn push_branch(
        &self,
        repository: &Repository,
        token: &InstallationToken,
        branch: &str,
    ) -> String {
        let header = repository.git_remote(token).http_extra_header();
        let work = tempfile::tempdir().expect("work dir");
        let checkout = work.path().join("checkout");
        let checkout_arg = checkout.to_string_lossy().into_owned();
        self.ok(
            work.path(),
            Some(&header),
            &[
                "clone",
                "--quiet",
                &repository.clone_url,
                checkout_arg.as_str(),
            ],
        )
        .await;
        let package = std::fs::read_to_string(checkout.join("package.json")).expect("file");
        std::fs::write(
            checkout.join("package.json"),
            package.replace("4.17.20", "4.17.21"),
        )
        .expect("edit");
        self.ok(
            &checkout,
            None,
            &["commit", "--quiet", "-am", "Upgrade lodash to 4.17.21"],
        )
        .await;
        let refspec = format!("HEAD:refs/heads/{branch}");
        self.ok(
            &checkout,
            Some(&header),
            &["push", "--quiet", "origin", &refspec],
        )
        .await;
        self.ok(&checkout, None, &["rev-parse", "HEAD"]).await
    }
}

// ---- Tokens ----

#[tokio::test]
async fn an_installation_token_is_minted_once_and_reused() {
    let h = Harness::start().await;
    let client = h.client();
    let repo = widgets();
    // Concurrent first callers share one mint.
    let first = futures::future::join_all((0..8).map(|_| client.repository(&repo))).await;
    for result in first {
        assert_eq!(result.expect("repository").id, world::WIDGETS_ID);
    }
    client.branch_head_sha(&repo, "main").await.expect("branch");
    client
        .file_contents(&repo, "README.md", None)
        .await
        .expect("file");
    client
        .collaborator_permission(&repo, world::LEAD)
        .await
        .expect("permission");
    assert_eq!(h.mints(), 1);

    let snapshot = h.sim.snapshot();
    let mint = &h.requests(
        "POST",
        &format!(
            "/app/installations/{}/access_tokens",
            world::INSTALLATION_ID
        ),
    )[0];
    assert_eq!(mint.credential, Credential::AppJwt);
    assert_eq!(mint.status, 201);
    let repo_calls: Vec<&RequestRecord> = snapshot
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .collect();
    assert_eq!(repo_calls.len(), 11);
    for call in repo_calls {
        assert_eq!(call.status, 200, "{call:?}");
        assert_eq!(
            call.credential,
            Credential::InstallationToken {
                installation_id: world::INSTALLATION_ID
            }
        );
        // The server's token: every repository, the App's permissions.
        let scope = call.token_scope.as_ref().expect("scope recorded");
        assert_eq!(scope.repository_ids, None);
        assert_eq!(scope.permissions, Permissions::bg_agent());
    }
    assert!(h.clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_token_is_refreshed_five_minutes_before_it_expires() {
    let h = Harness::start().await;
    // Six-minute tokens: the refresh point is a minute away, near enough to the real
    // time that the sim still accepts the JWTs the client signs at the moved clock.
    h.sim.set_token_lifetime(Duration::from_secs(6 * 60));
    let client = h.client();
    client.repository(&widgets()).await.expect("repository");
    let first = client.token().await.expect("token");
    assert_eq!(h.mints(), 1);

    h.clock
        .set(first.expires_at() - REFRESH_BEFORE_EXPIRY - TimeDelta::seconds(1));
    client.repository(&widgets()).await.expect("repository");
    let still = client.token().await.expect("token");
    assert_eq!(still.expose_secret(), first.expose_secret());
    assert_eq!(h.mints(), 1);

    // The next token lives longer, so that it is not itself due for refresh at once by
    // the client's clock, which is now a minute ahead of the sim's.
    h.sim.set_token_lifetime(Duration::from_secs(10 * 60));
    h.clock.set(first.expires_at() - REFRESH_BEFORE_EXPIRY);
    client.repository(&widgets()).await.expect("repository");
    assert_eq!(h.mints(), 2);
    let refreshed = client.token().await.expect("token");
    assert_ne!(refreshed.expose_secret(), first.expose_secret());
    assert!(refreshed.expires_at() > first.expires_at());
    client.repository(&widgets()).await.expect("repository");
    assert_eq!(h.mints(), 2);
    // Both tokens were used for real (the sim accepted each).
    assert!(h.sim.read(|s| s.requests.iter().all(|r| r.status < 400)));
}

#[tokio::test]
async fn a_refused_token_is_dropped_and_minted_again() {
    let h = Harness::start().await;
    let client = h.client();
    client.repository(&widgets()).await.expect("repository");
    let revoked = client.token().await.expect("token");
    // Still valid by the client's clock, refused by GitHub's.
    h.sim.expire_all_tokens();
    let err = client.repository(&widgets()).await.unwrap_err();
    match &err {
        GitHubError::Unauthorized { endpoint, message } => {
            assert_eq!(endpoint, "GET /repos/{owner}/{repo}");
            assert_eq!(message, "Bad credentials");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(!err.to_string().contains(revoked.expose_secret()));
    assert_eq!(h.statuses("GET", "/repos/acme/widgets"), vec![200, 401]);
    assert_eq!(
        h.requests("GET", "/repos/acme/widgets")[1].credential,
        Credential::Rejected
    );

    client.repository(&widgets()).await.expect("repository");
    assert_eq!(h.mints(), 2);
    assert_ne!(
        client.token().await.expect("token").expose_secret(),
        revoked.expose_secret()
    );
    assert!(h.clock.sleeps().is_empty());
}

#[tokio::test]
async fn the_runner_token_reaches_only_its_repository_and_contents() {
    let h = Harness::start().await;
    let installation = h.world.installation_id;
    let runner = h
        .app
        .runner_token(installation, world::WIDGETS_ID)
        .await
        .expect("runner token");
    assert_eq!(runner.installation_id(), installation);
    assert_eq!(runner.scope().repository_ids(), &[world::WIDGETS_ID]);
    assert!(!format!("{runner:?}").contains(runner.expose_secret()));
    // Never cached: each task gets a token of its own, distinct from the server's.
    let again = h
        .app
        .runner_token(installation, world::WIDGETS_ID)
        .await
        .expect("runner token");
    assert_ne!(again.expose_secret(), runner.expose_secret());
    let lasting = h
        .app
        .runner_token_lasting(
            installation,
            world::WIDGETS_ID,
            Duration::from_secs(30 * 60),
        )
        .await
        .expect("runner token");
    assert_ne!(lasting.expose_secret(), runner.expose_secret());
    assert_ne!(lasting.expose_secret(), again.expose_secret());
    assert_eq!(h.mints(), 3);
    assert!(!format!("{:?}", h.app).contains(runner.expose_secret()));
    let server = h.client().token().await.expect("server token");
    assert_ne!(server.expose_secret(), runner.expose_secret());
    assert_eq!(h.mints(), 4);
    let sha = h.main_sha().await;

    // The client makes its repository calls with the server's token only, so the
    // runner token is used through octocrab, as a runner's own tooling would.
    let crab = octocrab::Octocrab::builder()
        .base_uri(h.sim.base_url())
        .expect("base URI")
        .personal_token(runner.expose_secret().to_owned())
        .build()
        .expect("octocrab");
    let status = |result: Result<_, octocrab::Error>| match result {
        Ok(_) => 200,
        Err(octocrab::Error::GitHub { source, .. }) => source.status_code.as_u16(),
        Err(other) => panic!("unexpected octocrab error: {other}"),
    };
    let own = crab.repos(world::ORG, "widgets").get().await;
    assert_eq!(status(own.map(drop)), 200);
    let other_repo = crab.repos(world::ORG, "gadgets").get().await;
    assert_eq!(status(other_repo.map(drop)), 404);
    let check = crab
        .checks(world::ORG, "widgets")
        .create_check_run("bg-agent", sha)
        .send()
        .await;
    assert_eq!(status(check.map(drop)), 403);
    let comment = crab
        .issues(world::ORG, "widgets")
        .create_comment(world::ISSUE_NUMBER, "from the runner")
        .await;
    assert_eq!(status(comment.map(drop)), 403);

    // The sim saw the runner's scope on each of those requests, and nothing was written.
    let runner_scope = github_fake::TokenScope {
        repository_ids: Some(vec![world::WIDGETS_ID]),
        permissions: Permissions::new([("contents", Access::Write), ("metadata", Access::Read)]),
    };
    let by_runner: Vec<(String, String, u16)> = h.sim.read(|s| {
        s.requests
            .iter()
            .filter(|r| r.token_scope.as_ref() == Some(&runner_scope))
            .map(|r| (r.method.clone(), r.path.clone(), r.status))
            .collect()
    });
    assert_eq!(
        by_runner,
        vec![
            ("GET".into(), "/repos/acme/widgets".into(), 200),
            ("GET".into(), "/repos/acme/gadgets".into(), 404),
            ("POST".into(), "/repos/acme/widgets/check-runs".into(), 403),
            (
                "POST".into(),
                "/repos/acme/widgets/issues/17/comments".into(),
                403
            ),
        ]
    );
    let snapshot = h.sim.snapshot();
    assert!(snapshot.check_runs.is_empty());
    assert!(snapshot.comments.is_empty());
}

// ---- The App JWT ----

#[tokio::test]
async fn a_jwt_signed_with_another_key_is_refused() {
    let h = Harness::start().await;
    let (impostor, clock) = h.other_app(&other_key(), Utc::now());
    match impostor.app_info().await.unwrap_err() {
        GitHubError::Unauthorized { endpoint, message } => {
            assert_eq!(endpoint, "GET /app");
            assert_eq!(message, "A JSON web token could not be decoded");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let err = impostor
        .installation(h.world.installation_id)
        .repository(&widgets())
        .await
        .unwrap_err();
    match err {
        GitHubError::Unauthorized { endpoint, .. } => {
            assert_eq!(
                endpoint,
                "POST /app/installations/{installation_id}/access_tokens"
            );
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    // Refused at once: one request each, no retry, nothing reached a repository.
    assert_eq!(h.statuses("GET", "/app"), vec![401]);
    assert_eq!(h.mints(), 1);
    assert!(h.requests("GET", "/repos/acme/widgets").is_empty());
    assert!(h.sim.read(|s| {
        s.requests
            .iter()
            .all(|r| r.credential == Credential::Rejected)
    }));
    assert!(clock.sleeps().is_empty());

    // The App's own key works against the same sim.
    let info = h.app.app_info().await.expect("app info");
    assert_eq!(info.id, world::APP_ID);
}

#[tokio::test]
async fn an_expired_jwt_is_refused() {
    let h = Harness::start().await;
    // The client's clock is an hour behind: its JWTs expired (by GitHub's clock) 51
    // minutes before they were sent.
    let (late, clock) = h.other_app(
        h.sim.app_private_key_pem(),
        Utc::now() - TimeDelta::hours(1),
    );
    match late.app_info().await.unwrap_err() {
        GitHubError::Unauthorized { message, .. } => {
            assert!(
                message.contains("'Expiration time' claim ('exp')"),
                "{message}"
            );
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let err = late
        .installation(h.world.installation_id)
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err:?}");
    assert_eq!(h.statuses("GET", "/app"), vec![401]);
    assert_eq!(h.mints(), 1);
    assert!(clock.sleeps().is_empty());
}

// ---- Retries and rate limits ----

#[tokio::test]
async fn server_errors_are_retried_with_backoff_on_the_manual_clock() {
    let h = Harness::start().await;
    let start = h.clock.now();
    let client = h.client();
    client.repository(&widgets()).await.expect("warm-up");

    let fault = h.sim.inject_fault(
        Fault::new("GET", "/repos/acme/widgets", FaultKind::ServerError(500)).times(2),
    );
    let repository = client.repository(&widgets()).await.expect("recovers");
    assert_eq!(repository.id, world::WIDGETS_ID);
    assert_eq!(h.sim.fault_fired(fault), 2);
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets"),
        vec![200, 500, 500, 200]
    );
    let sleeps = h.clock.sleeps();
    assert_eq!(sleeps.len(), 2);
    assert_backoffs(&sleeps);

    // A POST is retried too; the 502s answered before GitHub acted, so one run exists.
    let sha = h.main_sha().await;
    h.sim.inject_fault(
        Fault::new("POST", "/repos/*/*/check-runs", FaultKind::ServerError(502)).times(4),
    );
    let run = client
        .create_check_run(&widgets(), NewCheckRun::new("bg-agent", sha))
        .await
        .expect("recovers");
    assert_eq!(
        h.statuses("POST", "/repos/acme/widgets/check-runs"),
        vec![502, 502, 502, 502, 201]
    );
    assert_eq!(h.sim.read(|s| s.check_runs.len()), 1);
    assert_eq!(h.sim.read(|s| s.check_runs[0].id), run.id);
    let sleeps = h.clock.sleeps();
    assert_eq!(sleeps.len(), 6);
    assert_backoffs(&sleeps[2..]);

    // Five failures: the call gives up with the last one.
    h.sim.inject_fault(
        Fault::new("GET", "/repos/*/*/branches/*", FaultKind::ServerError(502)).times(5),
    );
    let err = client
        .branch_head_sha(&widgets(), "main")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GitHubError::Server {
                status: 502,
                attempts: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    // One request from main_sha above, five from this call.
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets/branches/main"),
        vec![200, 502, 502, 502, 502, 502]
    );
    let sleeps = h.clock.sleeps();
    assert_eq!(sleeps.len(), 10);
    assert_backoffs(&sleeps[6..]);
    // Time moved by the recorded sleeps and nothing else.
    assert_eq!(
        h.clock.now(),
        start + TimeDelta::from_std(h.clock.total_slept()).expect("short")
    );
    assert_eq!(h.mints(), 1);
}

#[tokio::test]
async fn retry_after_is_waited_exactly_on_403_and_429() {
    let h = Harness::start().await;
    let client = h.client();
    client.repository(&widgets()).await.expect("warm-up");
    h.sim.inject_fault(Fault::new(
        "GET",
        "/repos/acme/widgets",
        FaultKind::SecondaryRateLimit {
            retry_after_secs: 7,
        },
    ));
    client.repository(&widgets()).await.expect("after the wait");
    assert_eq!(h.clock.sleeps(), vec![Duration::from_secs(7)]);
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets"),
        vec![200, 403, 200]
    );

    h.sim.inject_fault(Fault::new(
        "GET",
        "/repos/acme/widgets",
        FaultKind::TooManyRequests {
            retry_after_secs: 7,
        },
    ));
    client.repository(&widgets()).await.expect("after the wait");
    assert_eq!(
        h.clock.sleeps(),
        vec![Duration::from_secs(7), Duration::from_secs(7)]
    );
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets"),
        vec![200, 403, 200, 429, 200]
    );

    // App-level calls wait the same way.
    h.sim.inject_fault(Fault::new(
        "GET",
        "/app",
        FaultKind::SecondaryRateLimit {
            retry_after_secs: 3,
        },
    ));
    h.app.app_info().await.expect("after the wait");
    assert_eq!(h.clock.sleeps().last(), Some(&Duration::from_secs(3)));
    assert_eq!(h.statuses("GET", "/app"), vec![403, 200]);
}

#[tokio::test]
async fn an_exhausted_primary_rate_limit_waits_until_reset() {
    let h = Harness::start().await;
    let client = h.client();
    client.repository(&widgets()).await.expect("warm-up");
    h.sim.inject_fault(Fault::new(
        "GET",
        "/repos/acme/widgets",
        FaultKind::PrimaryRateLimit {
            reset_after_secs: 30,
        },
    ));
    // The sim sets `x-ratelimit-reset` from the real clock; bracket it.
    h.clock.set(Utc::now());
    let before = Utc::now().timestamp();
    let asked_at = h.clock.now();
    client
        .repository(&widgets())
        .await
        .expect("after the reset");
    let after = Utc::now().timestamp();
    let sleeps = h.clock.sleeps();
    assert_eq!(sleeps.len(), 1);
    let reset = asked_at + TimeDelta::from_std(sleeps[0]).expect("short");
    assert_eq!(
        reset.timestamp_subsec_nanos(),
        0,
        "waited until a whole second"
    );
    assert!(
        (before + 30..=after + 30).contains(&reset.timestamp()),
        "{reset}"
    );
    assert_eq!(h.clock.now(), reset);
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets"),
        vec![200, 403, 200]
    );
}

#[tokio::test]
async fn a_wait_longer_than_allowed_fails_at_once() {
    let h = Harness::start().await;
    let client = h.client();
    client.repository(&widgets()).await.expect("warm-up");
    // The default bound is 60 s.
    h.sim.inject_fault(Fault::new(
        "GET",
        "/repos/acme/widgets",
        FaultKind::TooManyRequests {
            retry_after_secs: 61,
        },
    ));
    match client.repository(&widgets()).await.unwrap_err() {
        GitHubError::RateLimited {
            endpoint,
            retry_after,
        } => {
            assert_eq!(endpoint, "GET /repos/{owner}/{repo}");
            assert_eq!(retry_after, Duration::from_secs(61));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    h.sim.inject_fault(Fault::new(
        "GET",
        "/repos/acme/widgets",
        FaultKind::PrimaryRateLimit {
            reset_after_secs: 3600,
        },
    ));
    let err = client.repository(&widgets()).await.unwrap_err();
    match &err {
        GitHubError::RateLimited { retry_after, .. } => {
            assert!(*retry_after > Duration::from_secs(60), "{retry_after:?}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(h.clock.sleeps().is_empty());
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets"),
        vec![200, 429, 403]
    );
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let h = Harness::start().await;
    let client = h.client();

    let err = client
        .branch_head_sha(&widgets(), "no-such-branch")
        .await
        .unwrap_err();
    match &err {
        GitHubError::NotFound { endpoint, message } => {
            assert_eq!(endpoint, "GET /repos/{owner}/{repo}/branches/{branch}");
            assert_eq!(message, "Branch not found");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        h.statuses("GET", "/repos/acme/widgets/branches/no-such-branch"),
        vec![404]
    );
    let err = client
        .repository(&RepoName::new(world::ORG, "no-such-repo"))
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
    assert_eq!(h.statuses("GET", "/repos/acme/no-such-repo"), vec![404]);

    // `main` into `main`: nothing to merge.
    let pull = NewPullRequest {
        title: "Nothing".into(),
        head: "main".into(),
        base: "main".into(),
        body: None,
        draft: None,
        maintainer_can_modify: None,
    };
    match client
        .create_pull_request(&widgets(), &pull)
        .await
        .unwrap_err()
    {
        GitHubError::Unprocessable {
            endpoint,
            message,
            errors,
        } => {
            assert_eq!(endpoint, "POST /repos/{owner}/{repo}/pulls");
            assert_eq!(message, "Validation Failed");
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].resource.as_deref(), Some("PullRequest"));
            assert_eq!(errors[0].code.as_deref(), Some("custom"));
            assert_eq!(
                errors[0].message.as_deref(),
                Some("No commits between main and main")
            );
        }
        other => panic!("expected Unprocessable, got {other:?}"),
    }
    assert_eq!(h.statuses("POST", "/repos/acme/widgets/pulls"), vec![422]);

    // An installation whose owner has not accepted the `checks` permission: a 403 that
    // is not a rate limit (the answer carries quota left) is Forbidden, at once.
    h.sim
        .set_installation_permissions(
            h.world.installation_id,
            Permissions::new([
                ("contents", Access::Write),
                ("issues", Access::Write),
                ("metadata", Access::Read),
                ("pull_requests", Access::Write),
            ]),
        )
        .expect("installation");
    let sha = h.main_sha().await;
    let (narrow, clock) = h.other_app(h.sim.app_private_key_pem(), Utc::now());
    let err = narrow
        .installation(h.world.installation_id)
        .create_check_run(&widgets(), NewCheckRun::new("bg-agent", sha))
        .await
        .unwrap_err();
    match &err {
        GitHubError::Forbidden { endpoint, message } => {
            assert_eq!(endpoint, "POST /repos/{owner}/{repo}/check-runs");
            assert_eq!(message, "Resource not accessible by integration");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(
        h.statuses("POST", "/repos/acme/widgets/check-runs"),
        vec![403]
    );
    assert!(clock.sleeps().is_empty());
    assert!(h.clock.sleeps().is_empty());
}

// ---- GitHub's check-run limits ----

#[tokio::test]
async fn check_run_text_is_cut_and_annotations_go_fifty_at_a_time() {
    let h = Harness::start().await;
    let client = h.client();
    let sha = h.main_sha().await;
    let started = h.clock.now();
    let mut run = NewCheckRun::new("bg-agent", sha.clone());
    run.status = Some(CheckRunStatus::Completed);
    run.conclusion = Some(CheckRunConclusion::Failure);
    run.started_at = Some(started);
    run.completed_at = Some(started + TimeDelta::seconds(90));
    run.external_id = Some("task-1".into());
    run.details_url = Some("https://bg-agent.example.com/tasks/1".into());
    run.actions = vec![CheckRunAction::new("Retry", "Run the task again", "retry")];
    run.output = Some(CheckRunOutput {
        title: "Validation failed".into(),
        summary: "🦀".repeat(70_000),
        text: Some("log line\n".repeat(10_000)),
        annotations: annotations(1..=120),
    });
    let created = client
        .create_check_run(&widgets(), run)
        .await
        .expect("created");
    assert_eq!(created.status, "completed");
    assert_eq!(created.conclusion.as_deref(), Some("failure"));
    assert_eq!(created.external_id.as_deref(), Some("task-1"));

    let record = h
        .sim
        .read(|s| s.check_run(created.id).cloned())
        .expect("run");
    let operations: Vec<&str> = record.history.iter().map(|r| r.operation).collect();
    assert_eq!(operations, vec!["create", "update", "update"]);
    let batches: Vec<usize> = record
        .history
        .iter()
        .map(|r| {
            r.request["output"]["annotations"]
                .as_array()
                .expect("annotations sent")
                .len()
        })
        .collect();
    assert_eq!(batches, vec![50, 50, 20]);
    assert_eq!(record.output.annotations.len(), 120);
    let lines: Vec<u64> = record
        .output
        .annotations
        .iter()
        .map(|a| a["start_line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, (1..=120).collect::<Vec<u64>>());
    let summary = record.output.summary.as_deref().expect("summary");
    assert_eq!(summary.chars().count(), MAX_OUTPUT_CHARS);
    assert!(summary.ends_with(TRUNCATION_MARKER));
    assert!(summary.ends_with("(truncated)"));
    let text = record.output.text.as_deref().expect("text");
    assert_eq!(text.chars().count(), MAX_OUTPUT_CHARS);
    assert!(text.ends_with(TRUNCATION_MARKER));
    assert_eq!(record.output.title.as_deref(), Some("Validation failed"));
    assert_eq!(record.conclusion.as_deref(), Some("failure"));
    assert_eq!(record.actions.len(), 1);
    assert_eq!(
        record.started_at.map(|t| t.timestamp()),
        Some(started.timestamp())
    );

    // Invalid actions and a completion without a conclusion never leave the process.
    let posts = h.requests("POST", "/repos/acme/widgets/check-runs").len();
    let mut too_many = NewCheckRun::new("bg-agent", sha.clone());
    too_many.actions = vec![CheckRunAction::new("a", "b", "c"); 4];
    let err = client
        .create_check_run(&widgets(), too_many)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GitHubError::InvalidAction(ActionError::TooMany { count: 4 })
        ),
        "{err:?}"
    );
    let mut long_label = NewCheckRun::new("bg-agent", sha.clone());
    long_label.actions = vec![CheckRunAction::new("x".repeat(21), "d", "id")];
    let err = client
        .create_check_run(&widgets(), long_label)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GitHubError::InvalidAction(ActionError::TooLong { field: "label", .. })
        ),
        "{err:?}"
    );
    let empty_identifier = CheckRunUpdate {
        actions: Some(vec![CheckRunAction::new("Retry", "", "")]),
        ..CheckRunUpdate::default()
    };
    let err = client
        .update_check_run(&widgets(), created.id, empty_identifier)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitHubError::InvalidAction(ActionError::Empty { .. })),
        "{err:?}"
    );
    let unconcluded = CheckRunUpdate {
        status: Some(CheckRunStatus::Completed),
        ..CheckRunUpdate::default()
    };
    let err = client
        .update_check_run(&widgets(), created.id, unconcluded)
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::InvalidRequest(_)), "{err:?}");
    assert_eq!(
        h.requests("POST", "/repos/acme/widgets/check-runs").len(),
        posts
    );
    let patch_path = format!("/repos/acme/widgets/check-runs/{}", created.id);
    assert_eq!(h.requests("PATCH", &patch_path).len(), 2);
    assert_eq!(h.sim.read(|s| s.check_runs.len()), 1);
}

#[tokio::test]
async fn a_failed_annotation_batch_reports_the_saved_run() {
    let h = Harness::start().await;
    let client = h.client();
    let sha = h.main_sha().await;
    // Every follow-up PATCH fails, through all five attempts.
    h.sim.inject_fault(
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::ServerError(500),
        )
        .times(5),
    );
    let mut run = NewCheckRun::new("bg-agent", sha);
    run.output = Some(CheckRunOutput {
        annotations: annotations(1..=60),
        ..CheckRunOutput::new("Lint", "60 notes")
    });
    let err = client.create_check_run(&widgets(), run).await.unwrap_err();
    let saved = match err {
        GitHubError::AnnotationsIncomplete {
            check_run,
            sent,
            total,
            source,
        } => {
            assert_eq!((sent, total), (50, 60));
            assert!(
                matches!(
                    *source,
                    GitHubError::Server {
                        status: 500,
                        attempts: 5,
                        ..
                    }
                ),
                "{source:?}"
            );
            check_run
        }
        other => panic!("expected AnnotationsIncomplete, got {other:?}"),
    };
    let record = h.sim.read(|s| s.check_run(saved.id).cloned()).expect("run");
    assert_eq!(record.output.annotations.len(), 50);
    assert_eq!(h.sim.read(|s| s.check_runs.len()), 1, "created once");

    // On an update, a failure of the first request is a plain error: nothing was saved.
    h.sim.inject_fault(
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::ServerError(500),
        )
        .times(5),
    );
    let update = CheckRunUpdate {
        output: Some(CheckRunOutput {
            annotations: annotations(61..=120),
            ..CheckRunOutput::new("Lint", "more notes")
        }),
        ..CheckRunUpdate::default()
    };
    let err = client
        .update_check_run(&widgets(), saved.id, update)
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Server { .. }), "{err:?}");
    let patches = h.requests(
        "PATCH",
        &format!("/repos/acme/widgets/check-runs/{}", saved.id),
    );
    assert_eq!(patches.len(), 10);
    assert!(patches.iter().all(|r| r.status == 500));
}

// ---- Concurrency ----

#[tokio::test]
async fn the_concurrency_cap_holds_under_a_burst() {
    let h = Harness::start_with(SimConfig::default(), |config| GitHubConfig {
        concurrency_per_installation: 3,
        ..config
    })
    .await;
    let installation = h.world.installation_id;
    let client = h.client();
    client.repository(&widgets()).await.expect("warm-up");

    // The first three requests are held until released, the rest slowed down: the
    // test waits on the sim's count, never on time.
    let held = h
        .sim
        .inject_fault(Fault::new("GET", "/repos/acme/widgets", FaultKind::Hold).times(3));
    let slowed = h.sim.inject_fault(
        Fault::new(
            "GET",
            "/repos/acme/widgets",
            FaultKind::Latency(Duration::from_millis(20)),
        )
        .times(17),
    );
    let burst = tokio::spawn(async move {
        let repo = widgets();
        let calls = (0..20).map(|_| client.repository(&repo));
        futures::future::join_all(calls).await
    });
    h.sim
        .wait_for(WAIT, |s| {
            s.in_flight
                .get(&installation)
                .is_some_and(|f| f.current == 3)
        })
        .await
        .expect("three requests in flight");
    // Three are in flight and held; the other seventeen wait in the client.
    assert_eq!(h.sim.fault_fired(held), 3);
    assert_eq!(h.sim.fault_fired(slowed), 0);
    h.sim.release(held);

    for result in burst.await.expect("burst task") {
        assert_eq!(result.expect("repository").id, world::WIDGETS_ID);
    }
    assert_eq!(h.sim.fault_fired(slowed), 17);
    let max = h.sim.read(|s| s.max_in_flight(installation));
    assert!(max <= 3, "{max} in flight");
    assert_eq!(max, 3);
    assert_eq!(h.requests("GET", "/repos/acme/widgets").len(), 21);
    assert_eq!(h.mints(), 1);
    assert!(h.clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_request_that_never_answers_times_out_and_is_retried() {
    // The timeout is the client's own: the held request never answers, so how long it
    // is does not change the outcome.
    let h = Harness::start_with(SimConfig::default(), |config| GitHubConfig {
        request_timeout: Duration::from_millis(200),
        ..config
    })
    .await;
    let held = h
        .sim
        .inject_fault(Fault::new("GET", "/repos/acme/widgets", FaultKind::Hold).times(5));
    let err = h.client().repository(&widgets()).await.unwrap_err();
    match err {
        GitHubError::Timeout {
            endpoint,
            timeout,
            attempts,
        } => {
            assert_eq!(timeout, Duration::from_millis(200));
            assert_eq!(attempts, 5);
            // On a very loaded machine the token mint itself may be what timed out.
            if endpoint == "GET /repos/{owner}/{repo}" {
                assert_eq!(h.sim.fault_fired(held), 5);
            } else {
                assert_eq!(
                    endpoint,
                    "POST /app/installations/{installation_id}/access_tokens"
                );
            }
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // Four backoffs between the five attempts (more if the mint was retried too).
    let sleeps = h.clock.sleeps();
    assert!(sleeps.len() >= 4, "{sleeps:?}");
}

#[tokio::test]
async fn an_enterprise_api_path_prefix_is_kept() {
    let h = Harness::start_with(
        SimConfig {
            api_path_prefix: "/api/v3".into(),
            ..SimConfig::default()
        },
        |config| config,
    )
    .await;
    assert_eq!(h.sim.api_url(), format!("{}/api/v3", h.sim.base_url()));
    let info = h.app.app_info().await.expect("app info");
    assert_eq!(info.id, world::APP_ID);
    let repository = h.client().repository(&widgets()).await.expect("repository");
    assert_eq!(repository.full_name, world::WIDGETS);
    let paths: Vec<String> = h
        .sim
        .read(|s| s.requests.iter().map(|r| r.path.clone()).collect());
    assert_eq!(
        paths,
        vec![
            "/api/v3/app".to_owned(),
            format!(
                "/api/v3/app/installations/{}/access_tokens",
                world::INSTALLATION_ID
            ),
            "/api/v3/repos/acme/widgets".to_owned(),
        ]
    );
    // Without the prefix there is no API there.
    let config = GitHubConfig {
        api_url: h.sim.base_url().to_owned(),
        ..config_for(&h.sim, h.sim.app_private_key_pem())
    };
    let unprefixed =
        GitHubApp::new(config, Arc::new(ManualClock::new(Utc::now()))).expect("client");
    let err = unprefixed.app_info().await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
}

// ---- Every typed call ----

#[tokio::test]
async fn every_typed_call_end_to_end() {
    let h = Harness::start().await;
    let client = h.client();
    let repo = widgets();
    let git = Git::new();

    let info = h.app.app_info().await.expect("app info");
    assert_eq!(info.id, world::APP_ID);
    assert_eq!(info.slug.as_deref(), Some(world::APP_SLUG));
    assert_eq!(h.app.app_id(), world::APP_ID);

    let repository = client.repository(&repo).await.expect("repository");
    assert_eq!(repository.id, world::WIDGETS_ID);
    assert_eq!(repository.owner, world::ORG);
    assert_eq!(repository.name, "widgets");
    assert_eq!(repository.full_name, world::WIDGETS);
    assert_eq!(repository.default_branch, "main");
    assert!(repository.private);
    assert_eq!(repository.clone_url, h.world.widgets.clone_url);
    assert_eq!(repository.repo_name(), repo);

    let main = client.branch_head_sha(&repo, "main").await.expect("main");
    let bare = h.world.widgets.git_dir.to_string_lossy().into_owned();
    assert_eq!(
        main,
        git.ok(
            Path::new("/"),
            None,
            &["--git-dir", &bare, "rev-parse", "main"]
        )
        .await
    );

    // Files: present (at the default branch and at a ref), absent, not a file.
    let readme = client
        .file_contents(&repo, "README.md", None)
        .await
        .expect("readme")
        .expect("present");
    assert_eq!(readme.path, "README.md");
    assert_eq!(readme.content, world::WIDGETS_FILES[0].1);
    assert_eq!(readme.sha.len(), 40);
    let index = client
        .file_contents(&repo, "src/index.js", Some("main"))
        .await
        .expect("index")
        .expect("present");
    assert_eq!(
        index.text().expect("utf-8").as_bytes(),
        world::WIDGETS_FILES[2].1
    );
    assert_eq!(
        client
            .file_contents(&repo, ".github/bg-agent.yml", None)
            .await
            .expect("absent"),
        None
    );
    let err = client.file_contents(&repo, "src", None).await.unwrap_err();
    assert!(matches!(err, GitHubError::Decode { .. }), "{err:?}");

    // Collaborator permissions, by role.
    for (login, role) in [
        ("mona", Role::Maintain),
        ("hubot", Role::Write),
        ("triager", Role::Triage),
    ] {
        h.sim.add_user(login);
        h.sim
            .set_permission(world::WIDGETS, login, Some(role))
            .expect("role");
    }
    h.sim.add_user("outsider");
    for (login, expected) in [
        (world::LEAD, Permission::Admin),
        ("mona", Permission::Write),
        ("hubot", Permission::Write),
        (world::DRIVE_BY, Permission::Read),
        ("triager", Permission::Read),
        ("outsider", Permission::None),
    ] {
        assert_eq!(
            client
                .collaborator_permission(&repo, login)
                .await
                .expect("permission"),
            expected,
            "{login}"
        );
    }
    let err = client
        .collaborator_permission(&repo, "nobody-at-all")
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");

    // A check run through its life.
    let mut new_run = NewCheckRun::new("bg-agent", main.clone());
    new_run.status = Some(CheckRunStatus::Queued);
    new_run.external_id = Some("task-17".into());
    let run = client
        .create_check_run(&repo, new_run)
        .await
        .expect("created");
    assert_eq!(run.status, "queued");
    assert_eq!(run.head_sha, main);
    let running = client
        .update_check_run(
            &repo,
            run.id,
            CheckRunUpdate {
                status: Some(CheckRunStatus::InProgress),
                output: Some(CheckRunOutput::new("Running", "phase 2 of 4")),
                ..CheckRunUpdate::default()
            },
        )
        .await
        .expect("in progress");
    assert_eq!(running.status, "in_progress");
    let done = client
        .update_check_run(
            &repo,
            run.id,
            CheckRunUpdate {
                status: Some(CheckRunStatus::Completed),
                conclusion: Some(CheckRunConclusion::Success),
                completed_at: Some(h.clock.now()),
                output: Some(CheckRunOutput::new("Done", "lodash 4.17.21")),
                actions: Some(vec![]),
                ..CheckRunUpdate::default()
            },
        )
        .await
        .expect("completed");
    assert_eq!(done.conclusion.as_deref(), Some("success"));
    let history: Vec<(String, Option<String>)> = h.sim.read(|s| {
        s.check_run(run.id)
            .expect("run")
            .history
            .iter()
            .map(|r| (r.status.clone(), r.conclusion.clone()))
            .collect()
    });
    assert_eq!(
        history,
        vec![
            ("queued".into(), None),
            ("in_progress".into(), None),
            ("completed".into(), Some("success".into())),
        ]
    );

    // Comments and reactions.
    let comment = client
        .create_issue_comment(&repo, world::ISSUE_NUMBER, "On it.")
        .await
        .expect("comment");
    assert_eq!(comment.body.as_deref(), Some("On it."));
    let edited = client
        .update_issue_comment(&repo, comment.id, "Done: #18")
        .await
        .expect("edit");
    assert_eq!(edited.id, comment.id);
    let record = h
        .sim
        .read(|s| s.comment(comment.id).cloned())
        .expect("comment");
    assert_eq!(record.body, "Done: #18");
    assert_eq!(record.previous_bodies, vec!["On it.".to_owned()]);
    assert_eq!(record.author, h.sim.bot_login());
    assert!(record.via_app);
    let long = client
        .create_issue_comment(&repo, world::ISSUE_NUMBER, &"x".repeat(70_000))
        .await
        .expect("long comment");
    let stored = h
        .sim
        .read(|s| s.comment(long.id).map(|c| c.body.clone()))
        .expect("stored");
    assert_eq!(stored.chars().count(), MAX_COMMENT_CHARS);
    assert!(stored.ends_with(TRUNCATION_MARKER));

    let added = client
        .add_comment_reaction(&repo, comment.id, Reaction::Eyes)
        .await
        .expect("reaction");
    assert!(!added.already_existed);
    let again = client
        .add_comment_reaction(&repo, comment.id, Reaction::Eyes)
        .await
        .expect("reaction");
    assert!(again.already_existed);
    assert_eq!(again.id, added.id);
    let reactions: Vec<String> = h.sim.read(|s| {
        s.reactions_on(comment.id)
            .iter()
            .map(|r| r.content.clone())
            .collect()
    });
    assert_eq!(reactions, vec!["eyes".to_owned()]);

    // A pull request from a pushed branch.
    assert_eq!(
        client
            .find_open_pull_request(&repo, BRANCH)
            .await
            .expect("none yet"),
        None
    );
    let runner = client
        .runner_token(world::WIDGETS_ID)
        .await
        .expect("runner token");
    let head = git.push_branch(&repository, &runner, BRANCH).await;
    let new_pull = NewPullRequest {
        title: "Upgrade lodash to 4.17.21".into(),
        head: BRANCH.into(),
        base: "main".into(),
        body: Some("Closes #17".into()),
        draft: Some(false),
        maintainer_can_modify: None,
    };
    let pull = client
        .create_pull_request(&repo, &new_pull)
        .await
        .expect("pull request");
    assert_eq!(pull.number, 18);
    assert_eq!(pull.state, "open");
    assert_eq!(pull.head.ref_name, BRANCH);
    assert_eq!(pull.head.sha, head);
    assert_eq!(pull.base.ref_name, "main");
    assert_eq!(pull.body.as_deref(), Some("Closes #17"));
    let found = client
        .find_open_pull_request(&repo, BRANCH)
        .await
        .expect("found")
        .expect("open");
    assert_eq!(found.number, pull.number);
    let err = client
        .create_pull_request(&repo, &new_pull)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::Unprocessable { errors, .. }
            if errors[0].message.as_deref().is_some_and(|m| m.contains("already exists"))),
        "{err:?}"
    );
    let updated = client
        .update_pull_request(
            &repo,
            pull.number,
            &PullRequestUpdate {
                title: Some("Upgrade lodash (CVE-2021-23337)".into()),
                body: None,
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.title, "Upgrade lodash (CVE-2021-23337)");
    assert_eq!(updated.body.as_deref(), Some("Closes #17"));
    let labels = client
        .add_labels(
            &repo,
            pull.number,
            &["bg-agent".to_owned(), "bg-agent:done".to_owned()],
        )
        .await
        .expect("labels");
    let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["bg-agent", "bg-agent:done"]);
    assert_eq!(
        h.sim.read(|s| s.labels_on(world::WIDGETS, pull.number)),
        vec!["bg-agent".to_owned(), "bg-agent:done".to_owned()]
    );
    let label_posts = h
        .requests("POST", "/repos/acme/widgets/issues/18/labels")
        .len();
    let err = client
        .add_labels(&repo, pull.number, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::InvalidRequest(_)), "{err:?}");
    assert_eq!(
        h.requests("POST", "/repos/acme/widgets/issues/18/labels")
            .len(),
        label_posts
    );

    // Webhook deliveries: listed newest first, a page at a time, then one redelivered.
    let first = h.sim.ping().await.expect("ping");
    let second = h.sim.ping().await.expect("ping");
    let page = h.app.list_deliveries(1, None).await.expect("page 1");
    assert_eq!(page.deliveries.len(), 1);
    assert_eq!(page.deliveries[0].id, second.delivery.id);
    assert_eq!(page.deliveries[0].guid, second.delivery.guid);
    assert_eq!(page.deliveries[0].event, "ping");
    assert!(!page.deliveries[0].redelivery);
    let cursor = page.next_cursor.expect("a next page");
    let page = h
        .app
        .list_deliveries(1, Some(&cursor))
        .await
        .expect("page 2");
    assert_eq!(page.deliveries.len(), 1);
    assert_eq!(page.deliveries[0].guid, first.delivery.guid);
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        h.app
            .list_deliveries(250, None)
            .await
            .expect("all")
            .deliveries
            .len(),
        2
    );
    // `per_page` is clamped to GitHub's 100; the cursor goes back as GitHub gave it.
    let listed: Vec<String> = h
        .requests("GET", "/app/hook/deliveries")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        listed,
        vec![
            "/app/hook/deliveries?per_page=1".to_owned(),
            format!("/app/hook/deliveries?per_page=1&cursor={cursor}"),
            "/app/hook/deliveries?per_page=100".to_owned(),
        ]
    );

    h.app
        .redeliver(first.delivery.id)
        .await
        .expect("redelivery accepted");
    let guid = first.delivery.guid.clone();
    h.sim
        .wait_for(WAIT, |s| {
            s.deliveries.iter().any(|d| d.redelivery && d.guid == guid)
        })
        .await
        .expect("redelivered");
    let newest = h.app.list_deliveries(1, None).await.expect("newest");
    assert!(newest.deliveries[0].redelivery);
    assert_eq!(newest.deliveries[0].guid, first.delivery.guid);
    let err = h.app.redeliver(1).await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");

    assert!(h.clock.sleeps().is_empty());
    h.sim.assert_no_violations();
}

// ---- git over smart HTTP ----

/// A revoked runner token opens nothing any more, neither the API nor git, and revoking
/// it again is harmless; another task's token is untouched.
#[tokio::test]
async fn a_revoked_runner_token_no_longer_works() {
    let h = Harness::start().await;
    let git = Git::new();
    let repository = h.client().repository(&widgets()).await.expect("repository");
    let installation = h.world.installation_id;
    let token = h
        .app
        .runner_token(installation, repository.id)
        .await
        .expect("runner token");
    let other = h
        .app
        .runner_token(installation, repository.id)
        .await
        .expect("another task's token");
    let work = tempfile::tempdir().expect("work dir");
    let clone = |token: &InstallationToken, dir: &str| {
        let header = repository.git_remote(token).http_extra_header();
        let path = work.path().join(dir).to_string_lossy().into_owned();
        (header, path)
    };
    let (header, before) = clone(&token, "before");
    git.ok(
        work.path(),
        Some(&header),
        &["clone", "--quiet", &repository.clone_url, &before],
    )
    .await;

    h.app.revoke_token(&token).await.expect("revoked");
    let revoked: Vec<String> = h
        .sim
        .read(|s| s.revoked_tokens.iter().map(|r| r.token.clone()).collect());
    assert_eq!(revoked, vec![token.expose_secret().to_owned()]);
    let (header, after) = clone(&token, "after");
    git.fails(
        work.path(),
        Some(&header),
        &["clone", "--quiet", &repository.clone_url, &after],
    )
    .await;
    let crab = octocrab::Octocrab::builder()
        .base_uri(h.sim.base_url())
        .expect("base URI")
        .personal_token(token.expose_secret().to_owned())
        .build()
        .expect("octocrab");
    match crab.repos(world::ORG, "widgets").get().await {
        Err(octocrab::Error::GitHub { source, .. }) => {
            assert_eq!(source.status_code.as_u16(), 401)
        }
        other => panic!("a revoked token was accepted: {other:?}"),
    }
    // Again: GitHub no longer knows it, which is what was wanted.
    h.app.revoke_token(&token).await.expect("revoked twice");

    let (header, theirs) = clone(&other, "theirs");
    git.ok(
        work.path(),
        Some(&header),
        &["clone", "--quiet", &repository.clone_url, &theirs],
    )
    .await;
    h.sim.assert_no_violations();
}

/// Repositories are cloned from the configured GitHub's web host.
#[tokio::test]
async fn the_clone_url_is_the_configured_githubs() {
    let h = Harness::start().await;
    let repository = h.client().repository(&widgets()).await.expect("repository");
    assert_eq!(h.app.clone_url(&widgets()), repository.clone_url);
}

#[tokio::test]
async fn git_clone_and_push_with_the_runner_token() {
    let h = Harness::start().await;
    let client = h.client();
    let git = Git::new();
    let repository = client.repository(&widgets()).await.expect("repository");
    let token = h
        .app
        .runner_token(h.world.installation_id, repository.id)
        .await
        .expect("runner token");
    let remote = repository.git_remote(&token);
    assert_eq!(remote.url, h.world.widgets.clone_url);
    assert_eq!(remote.username(), "x-access-token");
    assert!(!format!("{remote:?}").contains(token.expose_secret()));
    let header = remote.http_extra_header();

    let work = tempfile::tempdir().expect("work dir");
    let checkout = work.path().join("widgets");
    let checkout_arg = checkout.to_string_lossy().into_owned();
    git.ok(
        work.path(),
        Some(&header),
        &["clone", "--quiet", &remote.url, &checkout_arg],
    )
    .await;
    let package = std::fs::read_to_string(checkout.join("package.json")).expect("cloned");
    assert!(package.contains("4.17.20"));
    // The token stayed out of the repository's configuration.
    let config = std::fs::read_to_string(checkout.join(".git/config")).expect("config");
    assert!(!config.contains(token.expose_secret()), "{config}");
    assert!(
        !config.to_ascii_lowercase().contains("authorization"),
        "{config}"
    );
    assert_eq!(
        git.ok(&checkout, None, &["remote", "get-url", "origin"])
            .await,
        remote.url
    );

    std::fs::write(
        checkout.join("package.json"),
        package.replace("4.17.20", "4.17.21"),
    )
    .expect("edit");
    git.ok(
        &checkout,
        None,
        &["commit", "--quiet", "-am", "Upgrade lodash to 4.17.21"],
    )
    .await;
    let refspec = format!("HEAD:refs/heads/{BRANCH}");
    git.ok(
        &checkout,
        Some(&header),
        &["push", "--quiet", "origin", &refspec],
    )
    .await;
    let head = git.ok(&checkout, None, &["rev-parse", "HEAD"]).await;
    assert_eq!(
        h.sim.read(|s| s.pushes.get(&repository.id).copied()),
        Some(1)
    );

    // The branch is visible to the API at once, and a pull request can be opened from it.
    assert_eq!(
        client
            .branch_head_sha(&widgets(), BRANCH)
            .await
            .expect("pushed branch"),
        head
    );
    let file = client
        .file_contents(&widgets(), "package.json", Some(BRANCH))
        .await
        .expect("file")
        .expect("present");
    assert!(file.text().expect("utf-8").contains("4.17.21"));
    let pull = client
        .create_pull_request(
            &widgets(),
            &NewPullRequest {
                title: "Upgrade lodash to 4.17.21".into(),
                head: BRANCH.into(),
                base: "main".into(),
                body: None,
                draft: None,
                maintainer_can_modify: None,
            },
        )
        .await
        .expect("pull request");
    assert_eq!(pull.head.sha, head);

    // The credentials in a URL work too (though the header is preferred).
    let url = remote.authenticated_url().expect("URL");
    assert!(url.expose_secret().starts_with("http://x-access-token:"));
    let refs = git
        .ok(
            work.path(),
            None,
            &["ls-remote", url.expose_secret(), BRANCH],
        )
        .await;
    assert!(refs.starts_with(&head), "{refs}");

    // A token GitHub never issued: no clone, no push.
    let bogus = InstallationToken::new(
        SecretString::from("ghs_NotATokenTheSimMinted0123456789".to_owned()),
        Utc::now() + TimeDelta::hours(1),
        TokenScope::runner(h.world.installation_id, repository.id),
    );
    let bogus_header = repository.git_remote(&bogus).http_extra_header();
    let elsewhere = work.path().join("bogus");
    let elsewhere_arg = elsewhere.to_string_lossy().into_owned();
    git.fails(
        work.path(),
        Some(&bogus_header),
        &["clone", "--quiet", &remote.url, &elsewhere_arg],
    )
    .await;
    git.fails(
        &checkout,
        Some(&bogus_header),
        &["push", "--quiet", "origin", "HEAD:refs/heads/bogus"],
    )
    .await;

    // A runner token for the other repository: it works there, not here.
    let gadgets_token = h
        .app
        .runner_token(h.world.installation_id, world::GADGETS_ID)
        .await
        .expect("gadgets token");
    let gadgets_header = repository.git_remote(&gadgets_token).http_extra_header();
    let gadgets = work.path().join("gadgets");
    let gadgets_arg = gadgets.to_string_lossy().into_owned();
    git.ok(
        work.path(),
        Some(&gadgets_header),
        &["clone", "--quiet", &h.world.gadgets.clone_url, &gadgets_arg],
    )
    .await;
    git.fails(
        work.path(),
        Some(&gadgets_header),
        &["clone", "--quiet", &remote.url, &elsewhere_arg],
    )
    .await;
    git.fails(
        &checkout,
        Some(&gadgets_header),
        &["push", "--quiet", "origin", "HEAD:refs/heads/from-gadgets"],
    )
    .await;
    assert_eq!(
        h.sim.read(|s| s.pushes.get(&repository.id).copied()),
        Some(1)
    );
    assert_eq!(
        client
            .branch_head_sha(&widgets(), "from-gadgets")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    let gadgets_scope_on_widgets: Vec<u16> = h.sim.read(|s| {
        s.requests
            .iter()
            .filter(|r| {
                r.path.starts_with("/acme/widgets.git/")
                    && r.token_scope
                        .as_ref()
                        .is_some_and(|t| t.repository_ids == Some(vec![world::GADGETS_ID]))
            })
            .map(|r| r.status)
            .collect()
    });
    assert!(!gadgets_scope_on_widgets.is_empty());
    assert!(gadgets_scope_on_widgets.iter().all(|status| *status == 404));
}
