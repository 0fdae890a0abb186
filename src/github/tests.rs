//! The client against a small in-test HTTP server: headers, credentials, retries,
//! waits, limits, concurrency and request bodies checked against GitHub's OpenAPI
//! description. Time is a `ManualClock`: nothing here sleeps for real.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::*;
use crate::openapi::OpenApiDoc;

const APP_ID: u64 = 4242;
const PRIVATE_KEY: &str = include_str!("../github_sim/dev-app-private-key.pem");
const PUBLIC_KEY: &str = include_str!("../github_sim/dev-app-public-key.pem");

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    /// Path and query as received, prefix included.
    uri: String,
    authorization: Option<String>,
    accept: Option<String>,
    api_version: Option<String>,
    body: Value,
}

struct Scripted {
    method: Method,
    path_contains: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

struct Fake {
    prefix: String,
    requests: Mutex<Vec<Recorded>>,
    scripted: Mutex<VecDeque<Scripted>>,
    violations: Mutex<Vec<String>>,
    tokens_minted: AtomicUsize,
    token_lifetime: TimeDelta,
    clock: Arc<ManualClock>,
    in_flight: watch::Sender<usize>,
    max_in_flight: AtomicUsize,
    /// When set, repository requests wait for a permit (to hold them in flight).
    gate: Option<Arc<Semaphore>>,
}

impl Fake {
    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn requests_to(&self, method: Method, path_contains: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.uri.contains(path_contains))
            .collect()
    }

    fn script(&self, method: Method, path_contains: &'static str, status: u16, body: Value) {
        self.script_with_headers(method, path_contains, status, vec![], body);
    }

    fn script_with_headers(
        &self,
        method: Method,
        path_contains: &'static str,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    ) {
        self.scripted.lock().unwrap().push_back(Scripted {
            method,
            path_contains,
            status,
            headers,
            body,
        });
    }

    fn check_credentials(&self, path: &str, authorization: Option<&str>) -> Result<(), String> {
        let bearer = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or("no bearer credential")?;
        if path.starts_with("/app") {
            let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
            let mut validation = Validation::new(Algorithm::RS256);
            validation.validate_exp = false;
            let claims = jsonwebtoken::decode::<AppJwtClaims>(bearer, &key, &validation)
                .map_err(|e| format!("bad JWT: {e}"))?
                .claims;
            if claims.iss != APP_ID.to_string() {
                return Err(format!("JWT for app {}", claims.iss));
            }
        } else if !bearer.starts_with("fake-token-") {
            return Err(format!("{bearer:?} is not an installation token"));
        }
        Ok(())
    }
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::String("<not JSON>".into()))
    };
    let full = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let recorded = Recorded {
        method: method.clone(),
        uri: full.clone(),
        authorization: header("authorization"),
        accept: header("accept"),
        api_version: header("x-github-api-version"),
        body: body.clone(),
    };
    fake.requests.lock().unwrap().push(recorded.clone());

    let Some(path) = uri.path().strip_prefix(fake.prefix.as_str()) else {
        return (StatusCode::NOT_FOUND, "outside the API prefix").into_response();
    };
    let path = path.to_owned();
    if !body.is_null()
        && let Err(violations) =
            OpenApiDoc::github_rest().validate_request(method.as_str(), &path, &body)
    {
        fake.violations
            .lock()
            .unwrap()
            .push(format!("{method} {path}: {violations}"));
    }
    if let Err(why) = fake.check_credentials(&path, recorded.authorization.as_deref()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": why})),
        )
            .into_response();
    }

    fake.in_flight.send_modify(|n| *n += 1);
    fake.max_in_flight
        .fetch_max(*fake.in_flight.borrow(), Ordering::SeqCst);
    if path.starts_with("/repos")
        && let Some(gate) = &fake.gate
    {
        let _ = gate.acquire().await.map(|p| p.forget());
    }
    fake.in_flight.send_modify(|n| *n -= 1);

    let scripted = {
        let mut queue = fake.scripted.lock().unwrap();
        let found = queue
            .iter()
            .position(|s| s.method == method && full.contains(s.path_contains));
        found.and_then(|i| queue.remove(i))
    };
    if let Some(s) = scripted {
        let mut response = if s.body.is_null() {
            StatusCode::from_u16(s.status).unwrap().into_response()
        } else {
            (StatusCode::from_u16(s.status).unwrap(), axum::Json(s.body)).into_response()
        };
        for (name, value) in s.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    default_response(&fake, &method, &path)
}

fn default_response(fake: &Fake, method: &Method, path: &str) -> Response {
    let ok = |status: u16, body: Value| {
        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["app", "installations", _, "access_tokens"]) => {
            let n = fake.tokens_minted.fetch_add(1, Ordering::SeqCst);
            let expires_at = fake.clock.now() + fake.token_lifetime;
            ok(
                201,
                json!({"token": format!("fake-token-{n}"), "expires_at": expires_at}),
            )
        }
        ("GET", ["app"]) => ok(
            200,
            json!({"id": APP_ID, "slug": "bg-agent", "name": "bg-agent", "html_url": "https://github.com/apps/bg-agent"}),
        ),
        ("GET", ["repos", owner, name]) => ok(200, repository(owner, name)),
        ("GET", ["repos", _, _, "branches", ..]) => ok(200, json!({"commit": {"sha": "abc123"}})),
        ("POST", ["repos", _, _, "check-runs"]) | ("PATCH", ["repos", _, _, "check-runs", _]) => {
            ok(if method == Method::POST { 201 } else { 200 }, check_run())
        }
        ("POST", ["repos", _, _, "issues", _, "comments"])
        | ("PATCH", ["repos", _, _, "issues", "comments", _]) => ok(
            if method == Method::POST { 201 } else { 200 },
            json!({"id": 10, "html_url": "https://github.com/o/r/issues/1#issuecomment-10", "body": "b"}),
        ),
        ("POST", ["repos", _, _, "issues", "comments", _, "reactions"]) => {
            ok(201, json!({"id": 5, "content": "eyes"}))
        }
        ("GET", ["repos", _, _, "pulls"]) => ok(200, json!([])),
        ("POST", ["repos", _, _, "pulls"]) => ok(201, pull_request(7)),
        ("PATCH", ["repos", _, _, "pulls", _]) => ok(200, pull_request(7)),
        ("POST", ["repos", _, _, "issues", _, "labels"]) => {
            ok(200, json!([{"id": 1, "name": "bg-agent"}]))
        }
        ("GET", ["repos", _, _, "collaborators", _, "permission"]) => {
            ok(200, json!({"permission": "write", "role_name": "maintain"}))
        }
        _ => ok(404, json!({"message": "Not Found"})),
    }
}

fn repository(owner: &str, name: &str) -> Value {
    json!({
        "id": 99, "name": name, "full_name": format!("{owner}/{name}"),
        "owner": {"login": owner}, "default_branch": "main", "private": true,
        "clone_url": format!("https://git.example.com/{owner}/{name}.git"),
        "html_url": format!("https://git.example.com/{owner}/{name}"),
    })
}

fn check_run() -> Value {
    json!({"id": 1, "name": "bg-agent", "head_sha": "abc123", "status": "queued",
           "conclusion": null, "html_url": null, "details_url": null, "external_id": "task-1"})
}

fn pull_request(number: u64) -> Value {
    json!({"id": 70, "number": number, "html_url": format!("https://github.com/o/r/pull/{number}"),
           "state": "open", "title": "t", "body": null, "draft": false,
           "head": {"ref": "bg-agent/1", "sha": "abc"}, "base": {"ref": "main", "sha": "def"}})
}

struct Harness {
    fake: Arc<Fake>,
    clock: Arc<ManualClock>,
    app: GitHubApp,
    url: String,
}

struct Options {
    prefix: &'static str,
    concurrency: usize,
    max_retry_wait: Duration,
    gate: Option<Arc<Semaphore>>,
    request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            prefix: "",
            concurrency: 10,
            max_retry_wait: Duration::from_secs(60),
            gate: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

async fn harness(options: Options) -> Harness {
    let clock = Arc::new(ManualClock::new(start()));
    let fake = Arc::new(Fake {
        prefix: options.prefix.to_owned(),
        requests: Mutex::default(),
        scripted: Mutex::default(),
        violations: Mutex::default(),
        tokens_minted: AtomicUsize::new(0),
        token_lifetime: TimeDelta::hours(1),
        clock: Arc::clone(&clock),
        in_flight: watch::channel(0).0,
        max_in_flight: AtomicUsize::new(0),
        gate: options.gate,
    });
    let router = Router::new().fallback(handle).with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("http://{address}{}", options.prefix);
    let config = GitHubConfig {
        concurrency_per_installation: options.concurrency,
        max_retry_wait: options.max_retry_wait,
        request_timeout: options.request_timeout,
        ..GitHubConfig::new(&url, APP_ID, SecretString::from(PRIVATE_KEY.to_owned()))
    };
    let app = GitHubApp::new(config, clock.clone()).unwrap();
    Harness {
        fake,
        clock,
        app,
        url,
    }
}

impl Harness {
    fn assert_schema_clean(&self) {
        let violations = self.fake.violations.lock().unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

fn repo() -> RepoName {
    RepoName::new("octo", "widgets")
}

#[tokio::test]
async fn installation_calls_mint_one_token_and_send_it() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    let repository = client.repository(&repo()).await.unwrap();
    assert_eq!(repository.id, 99);
    assert_eq!(repository.owner, "octo");
    assert_eq!(repository.full_name, "octo/widgets");
    assert_eq!(repository.default_branch, "main");
    assert_eq!(
        repository.clone_url,
        "https://git.example.com/octo/widgets.git"
    );
    assert_eq!(
        client.branch_head_sha(&repo(), "feature/x").await.unwrap(),
        "abc123"
    );

    let mints = h.fake.requests_to(Method::POST, "/access_tokens");
    assert_eq!(mints.len(), 1);
    assert_eq!(mints[0].uri, "/app/installations/7/access_tokens");
    assert_eq!(
        mints[0].body,
        Value::Null,
        "the whole installation: no body"
    );
    let repo_calls = h.fake.requests_to(Method::GET, "/repos/");
    assert_eq!(repo_calls[0].uri, "/repos/octo/widgets");
    assert_eq!(
        repo_calls[1].uri,
        "/repos/octo/widgets/branches/feature%2Fx"
    );
    for call in &repo_calls {
        assert_eq!(call.authorization.as_deref(), Some("Bearer fake-token-0"));
        assert_eq!(call.accept.as_deref(), Some("application/vnd.github+json"));
        assert_eq!(call.api_version.as_deref(), Some("2022-11-28"));
    }
    assert!(h.clock.sleeps().is_empty());
}

#[tokio::test]
async fn tokens_are_refreshed_five_minutes_before_expiry() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    let first = client.token().await.unwrap();
    assert_eq!(first.expires_at(), start() + TimeDelta::hours(1));
    h.clock.advance(Duration::from_secs(54 * 60));
    assert_eq!(
        client.token().await.unwrap().expose_secret(),
        "fake-token-0"
    );
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(
        client.token().await.unwrap().expose_secret(),
        "fake-token-1"
    );
}

#[tokio::test]
async fn concurrent_callers_mint_once() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    let repo = repo();
    let calls = (0..8).map(|_| client.repository(&repo));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(h.fake.requests_to(Method::POST, "/access_tokens").len(), 1);
}

#[tokio::test]
async fn runner_token_is_narrowed_to_one_repository() {
    let h = harness(Options::default()).await;
    let token = h.app.runner_token(7, 99).await.unwrap();
    assert_eq!(token.installation_id(), 7);
    assert_eq!(token.scope().repository_ids(), &[99]);
    assert!(!format!("{token:?}").contains(token.expose_secret()));
    let mints = h.fake.requests_to(Method::POST, "/access_tokens");
    assert_eq!(
        mints[0].body,
        json!({"repository_ids": [99], "permissions": {"contents": "write"}})
    );
    // The server's token is a different cache entry.
    let server = h.app.installation(7).token().await.unwrap();
    assert_ne!(server.expose_secret(), token.expose_secret());
    h.assert_schema_clean();

    let repository = h.app.installation(7).repository(&repo()).await.unwrap();
    let remote = repository.git_remote(&token);
    assert_eq!(remote.username(), "x-access-token");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&remote.authenticated_url().unwrap()),
        format!(
            "https://x-access-token:{}@git.example.com/octo/widgets.git",
            token.expose_secret()
        )
    );
    assert!(!format!("{remote:?}").contains(token.expose_secret()));
    assert!(!format!("{:?}", h.app).contains("fake-token"));

    // 40 minutes later the cached runner token has 20 left: fine for a plain request,
    // too short for a runner that needs 30, which gets a fresh one.
    h.clock.advance(Duration::from_secs(40 * 60));
    let cached = h.app.runner_token(7, 99).await.unwrap();
    assert_eq!(cached.expose_secret(), token.expose_secret());
    let lasting = h
        .app
        .runner_token_lasting(7, 99, Duration::from_secs(30 * 60))
        .await
        .unwrap();
    assert_ne!(lasting.expose_secret(), token.expose_secret());
    assert_eq!(lasting.expires_at(), h.clock.now() + TimeDelta::hours(1));
}

#[tokio::test]
async fn an_enterprise_base_url_keeps_its_path_prefix() {
    let h = harness(Options {
        prefix: "/api/v3",
        ..Options::default()
    })
    .await;
    assert!(h.url.ends_with("/api/v3"));
    h.app.installation(7).repository(&repo()).await.unwrap();
    let paths: Vec<String> = h.fake.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        paths,
        vec![
            "/api/v3/app/installations/7/access_tokens",
            "/api/v3/repos/octo/widgets"
        ]
    );
    assert!(h.fake.requests().iter().all(|r| r.authorization.is_some()));
}

#[tokio::test]
async fn retry_after_is_waited_exactly() {
    let h = harness(Options::default()).await;
    h.fake.script_with_headers(
        Method::GET,
        "/repos/octo/widgets",
        429,
        vec![("retry-after", "7".into())],
        json!({"message": "You have exceeded a secondary rate limit."}),
    );
    h.app.installation(7).repository(&repo()).await.unwrap();
    assert_eq!(h.clock.sleeps(), vec![Duration::from_secs(7)]);
    assert_eq!(h.fake.requests_to(Method::GET, "/repos/").len(), 2);
}

#[tokio::test]
async fn exhausted_rate_limit_waits_until_reset() {
    let h = harness(Options::default()).await;
    let reset = start().timestamp() + 42;
    h.fake.script_with_headers(
        Method::GET,
        "/repos/octo/widgets",
        403,
        vec![
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset.to_string()),
        ],
        json!({"message": "API rate limit exceeded"}),
    );
    h.app.installation(7).repository(&repo()).await.unwrap();
    assert_eq!(h.clock.sleeps(), vec![Duration::from_secs(42)]);
}

#[tokio::test]
async fn a_wait_longer_than_allowed_fails_at_once() {
    let h = harness(Options::default()).await;
    h.fake.script_with_headers(
        Method::GET,
        "/repos/octo/widgets",
        429,
        vec![("retry-after", "61".into())],
        json!({"message": "slow down"}),
    );
    let err = h.app.installation(7).repository(&repo()).await.unwrap_err();
    match err {
        GitHubError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(61));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(h.clock.sleeps().is_empty());
    assert_eq!(h.fake.requests_to(Method::GET, "/repos/").len(), 1);
}

#[tokio::test]
async fn server_errors_back_off_with_jitter_then_give_up() {
    let h = harness(Options::default()).await;
    for _ in 0..5 {
        h.fake.script(
            Method::GET,
            "/repos/octo/widgets",
            502,
            json!({"message": "Bad Gateway"}),
        );
    }
    let err = h.app.installation(7).repository(&repo()).await.unwrap_err();
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
    let sleeps = h.clock.sleeps();
    assert_eq!(sleeps.len(), 4);
    for (i, slept) in sleeps.iter().enumerate() {
        let nominal = retry::BACKOFF_BASE * 2u32.pow(u32::try_from(i).unwrap());
        assert!(nominal / 2 <= *slept && *slept <= nominal, "{i}: {slept:?}");
    }
}

#[tokio::test]
async fn a_server_error_then_success_is_one_call() {
    let h = harness(Options::default()).await;
    h.fake
        .script(Method::POST, "/check-runs", 500, json!({"message": "oops"}));
    let run = h
        .app
        .installation(7)
        .create_check_run(&repo(), NewCheckRun::new("bg-agent", "abc123"))
        .await
        .unwrap();
    assert_eq!(run.id, 1);
    assert_eq!(h.clock.sleeps().len(), 1);
    assert_eq!(h.fake.requests_to(Method::POST, "/check-runs").len(), 2);
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    h.fake.script(
        Method::GET,
        "/branches/",
        404,
        json!({"message": "Branch not found"}),
    );
    let err = client
        .branch_head_sha(&repo(), "missing")
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");

    h.fake.script(
        Method::POST,
        "/pulls",
        422,
        json!({"message": "Validation Failed", "documentation_url": "https://docs.github.com",
               "errors": [{"resource": "PullRequest", "code": "custom",
                           "message": "A pull request already exists for octo:bg-agent/1."}]}),
    );
    let pull = NewPullRequest {
        title: "t".into(),
        head: "bg-agent/1".into(),
        base: "main".into(),
        body: None,
        draft: None,
        maintainer_can_modify: None,
    };
    match client
        .create_pull_request(&repo(), &pull)
        .await
        .unwrap_err()
    {
        GitHubError::Unprocessable {
            message, errors, ..
        } => {
            assert_eq!(message, "Validation Failed");
            assert_eq!(errors[0].code.as_deref(), Some("custom"));
            assert!(
                errors[0]
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("already exists")
            );
        }
        other => panic!("expected Unprocessable, got {other:?}"),
    }

    h.fake.script(
        Method::GET,
        "/permission",
        403,
        json!({"message": "Resource not accessible by integration"}),
    );
    let err = client
        .collaborator_permission(&repo(), "someone")
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Forbidden { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(h.clock.sleeps().is_empty());
    assert_eq!(h.fake.requests_to(Method::POST, "/pulls").len(), 1);
}

#[tokio::test]
async fn a_refused_token_is_dropped_and_the_next_call_mints_another() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    client.repository(&repo()).await.unwrap();
    h.fake.script(
        Method::GET,
        "/repos/octo/widgets",
        401,
        json!({"message": "Bad credentials"}),
    );
    let err = client.repository(&repo()).await.unwrap_err();
    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err:?}");
    client.repository(&repo()).await.unwrap();
    assert_eq!(h.fake.requests_to(Method::POST, "/access_tokens").len(), 2);
    assert!(!err.to_string().contains("fake-token"));
}

#[tokio::test]
async fn file_contents_are_decoded_and_a_missing_file_is_none() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    let text = "template: upgrade\nlimits:\n  timeout: 30m\n";
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
    let wrapped = encoded
        .as_bytes()
        .chunks(20)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    h.fake.script(
        Method::GET,
        "/contents/",
        200,
        json!({"type": "file", "encoding": "base64", "content": wrapped,
               "path": ".github/bg-agent.yml", "sha": "blob1"}),
    );
    let file = client
        .file_contents(&repo(), ".github/bg-agent.yml", Some("main"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(file.text().unwrap(), text);
    assert_eq!(file.sha, "blob1");
    let calls = h.fake.requests_to(Method::GET, "/contents/");
    assert_eq!(
        calls[0].uri,
        "/repos/octo/widgets/contents/.github/bg-agent.yml?ref=main"
    );

    assert_eq!(
        client
            .file_contents(&repo(), ".github/bg-agent.yml", None)
            .await
            .unwrap(),
        None
    );
    h.fake
        .script(Method::GET, "/contents/", 200, json!([{"type": "file"}]));
    assert!(matches!(
        client.file_contents(&repo(), ".github", None).await,
        Err(GitHubError::Decode { .. })
    ));
}

#[tokio::test]
async fn check_runs_respect_githubs_limits() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    let mut run = NewCheckRun::new("bg-agent", "abc123");
    run.status = Some(CheckRunStatus::Completed);
    run.conclusion = Some(CheckRunConclusion::Failure);
    run.started_at = Some(start());
    run.completed_at = Some(start() + TimeDelta::seconds(90));
    run.external_id = Some("task-1".into());
    run.details_url = Some("https://bg-agent.example.com/tasks/1".into());
    run.actions = vec![CheckRunAction::new("Retry", "Run the task again", "retry")];
    run.output = Some(CheckRunOutput {
        title: "Validation failed".into(),
        summary: "🦀".repeat(70_000),
        text: Some("log line\n".repeat(10_000)),
        annotations: (1..=120)
            .map(|i| CheckRunAnnotation::new("src/lib.rs", i, AnnotationLevel::Failure, "bad"))
            .collect(),
    });
    let created = client.create_check_run(&repo(), run).await.unwrap();
    assert_eq!(created.id, 1);

    let posts = h.fake.requests_to(Method::POST, "/check-runs");
    let patches = h.fake.requests_to(Method::PATCH, "/check-runs/1");
    assert_eq!(posts.len(), 1);
    assert_eq!(patches.len(), 2);
    let counts: Vec<usize> = posts
        .iter()
        .chain(&patches)
        .map(|r| r.body["output"]["annotations"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, vec![50, 50, 20]);
    let summary = posts[0].body["output"]["summary"].as_str().unwrap();
    assert_eq!(summary.chars().count(), limits::MAX_OUTPUT_CHARS);
    assert!(summary.ends_with(limits::TRUNCATION_MARKER));
    assert_eq!(posts[0].body["started_at"], "2030-03-17T17:46:40Z");
    assert_eq!(
        patches[1].body["output"]["annotations"][19]["start_line"],
        120
    );
    assert_eq!(patches[0].body["output"]["title"], "Validation failed");
    h.assert_schema_clean();

    // Invalid actions never leave the process.
    let mut bad = NewCheckRun::new("bg-agent", "abc123");
    bad.actions = vec![CheckRunAction::new(
        "A label that is far too long",
        "d",
        "x",
    )];
    let err = client.create_check_run(&repo(), bad).await.unwrap_err();
    assert!(matches!(
        err,
        GitHubError::InvalidAction(ActionError::TooLong { .. })
    ));
    let update = CheckRunUpdate {
        actions: Some(vec![CheckRunAction::new("a", "b", "c"); 4]),
        ..CheckRunUpdate::default()
    };
    let err = client
        .update_check_run(&repo(), 1, update)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        GitHubError::InvalidAction(ActionError::TooMany { count: 4 })
    ));
    assert_eq!(h.fake.requests_to(Method::POST, "/check-runs").len(), 1);
    assert_eq!(h.fake.requests_to(Method::PATCH, "/check-runs").len(), 2);
}

#[tokio::test]
async fn a_failed_annotation_batch_reports_the_saved_run() {
    let h = harness(Options::default()).await;
    h.fake.script(
        Method::PATCH,
        "/check-runs/1",
        422,
        json!({"message": "Validation Failed", "documentation_url": "x"}),
    );
    let update = CheckRunUpdate {
        output: Some(CheckRunOutput {
            annotations: (1..=60)
                .map(|i| CheckRunAnnotation::new("a.rs", i, AnnotationLevel::Notice, "n"))
                .collect(),
            ..CheckRunOutput::new("t", "s")
        }),
        ..CheckRunUpdate::default()
    };
    // The first PATCH (with 50) fails: nothing saved, a plain error.
    let err = h
        .app
        .installation(7)
        .update_check_run(&repo(), 1, update.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unprocessable { .. }), "{err:?}");
    // The follow-up fails: the error carries the run and how far it got.
    h.fake
        .script(Method::PATCH, "/check-runs/1", 200, check_run());
    h.fake.script(
        Method::PATCH,
        "/check-runs/1",
        422,
        json!({"message": "Validation Failed", "documentation_url": "x"}),
    );
    match h
        .app
        .installation(7)
        .update_check_run(&repo(), 1, update)
        .await
        .unwrap_err()
    {
        GitHubError::AnnotationsIncomplete {
            check_run,
            sent,
            total,
            ..
        } => {
            assert_eq!(check_run.id, 1);
            assert_eq!((sent, total), (50, 60));
        }
        other => panic!("expected AnnotationsIncomplete, got {other:?}"),
    }
}

#[tokio::test]
async fn every_request_body_matches_githubs_schema() {
    let h = harness(Options::default()).await;
    let client = h.app.installation(7);
    let comment = client
        .create_issue_comment(&repo(), 1, &"x".repeat(70_000))
        .await
        .unwrap();
    assert_eq!(comment.id, 10);
    client
        .update_issue_comment(&repo(), 10, "done")
        .await
        .unwrap();
    let reaction = client
        .add_comment_reaction(&repo(), 10, Reaction::Eyes)
        .await
        .unwrap();
    assert_eq!(
        reaction,
        AddedReaction {
            id: 5,
            already_existed: false
        }
    );
    assert_eq!(
        client
            .find_open_pull_request(&repo(), "bg-agent/1")
            .await
            .unwrap(),
        None
    );
    let pull = client
        .create_pull_request(
            &repo(),
            &NewPullRequest {
                title: "Upgrade lodash".into(),
                head: "bg-agent/1".into(),
                base: "main".into(),
                body: Some("Body".into()),
                draft: Some(false),
                maintainer_can_modify: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(pull.number, 7);
    assert_eq!(pull.head.ref_name, "bg-agent/1");
    client
        .update_pull_request(
            &repo(),
            7,
            &PullRequestUpdate {
                title: Some("New title".into()),
                body: None,
            },
        )
        .await
        .unwrap();
    let labels = client
        .add_labels(&repo(), 7, &["bg-agent".to_owned()])
        .await
        .unwrap();
    assert_eq!(labels[0].name, "bg-agent");
    assert!(client.add_labels(&repo(), 7, &[]).await.is_err());
    assert_eq!(
        client
            .collaborator_permission(&repo(), "mona")
            .await
            .unwrap(),
        Permission::Write
    );
    client
        .update_check_run(
            &repo(),
            1,
            CheckRunUpdate {
                status: Some(CheckRunStatus::InProgress),
                output: Some(CheckRunOutput::new("Running", "phase 2 of 4")),
                ..CheckRunUpdate::default()
            },
        )
        .await
        .unwrap();

    h.assert_schema_clean();
    let sent = h.fake.requests();
    let find = sent
        .iter()
        .find(|r| r.method == Method::GET && r.uri.contains("/pulls"))
        .unwrap();
    assert_eq!(
        find.uri,
        "/repos/octo/widgets/pulls?head=octo%3Abg-agent%2F1&state=open"
    );
    let long_comment = sent
        .iter()
        .find(|r| r.method == Method::POST && r.uri.ends_with("/issues/1/comments"))
        .unwrap();
    let body = long_comment.body["body"].as_str().unwrap();
    assert_eq!(body.chars().count(), limits::MAX_COMMENT_CHARS);
    let update = sent
        .iter()
        .find(|r| r.method == Method::PATCH && r.uri.contains("/pulls/7"))
        .unwrap();
    assert_eq!(update.body, json!({"title": "New title"}));
}

#[tokio::test]
async fn app_level_calls_use_the_jwt() {
    let h = harness(Options::default()).await;
    let info = h.app.app_info().await.unwrap();
    assert_eq!(info.slug.as_deref(), Some("bg-agent"));

    let delivery = json!({
        "id": 12, "guid": "0b989ba4-242f-11e5-81e1-c7b6966d2516",
        "delivered_at": "2019-06-03T00:57:16Z", "redelivery": false, "duration": 0.27,
        "status": "OK", "status_code": 200, "event": "issue_comment", "action": "created",
        "installation_id": 7, "repository_id": 99, "throttled_at": null
    });
    let next = format!(
        "<{}/app/hook/deliveries?per_page=1&cursor=v1_11>; rel=\"next\"",
        h.url
    );
    h.fake.script_with_headers(
        Method::GET,
        "/app/hook/deliveries",
        200,
        vec![("link", next)],
        json!([delivery]),
    );
    let page = h.app.list_deliveries(1, None).await.unwrap();
    assert_eq!(
        page.deliveries[0].guid,
        "0b989ba4-242f-11e5-81e1-c7b6966d2516"
    );
    assert_eq!(page.deliveries[0].installation_id, Some(7));
    assert_eq!(page.next_cursor.as_deref(), Some("v1_11"));
    h.fake
        .script(Method::GET, "/app/hook/deliveries", 200, json!([]));
    let last = h
        .app
        .list_deliveries(250, page.next_cursor.as_deref())
        .await
        .unwrap();
    assert!(last.deliveries.is_empty());
    assert_eq!(last.next_cursor, None);

    h.fake.script(Method::POST, "/attempts", 202, Value::Null);
    h.app.redeliver(12).await.unwrap();

    let uris: Vec<String> = h.fake.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        uris,
        vec![
            "/app",
            "/app/hook/deliveries?per_page=1",
            "/app/hook/deliveries?per_page=100&cursor=v1_11",
            "/app/hook/deliveries/12/attempts",
        ]
    );
    // All answered, so every JWT verified with the App's public key.
    assert_eq!(h.fake.tokens_minted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn requests_in_flight_are_limited_per_installation() {
    let gate = Arc::new(Semaphore::new(0));
    let h = harness(Options {
        concurrency: 2,
        gate: Some(Arc::clone(&gate)),
        ..Options::default()
    })
    .await;
    // Mint first so that only repository calls compete.
    h.app.installation(7).token().await.unwrap();
    let client = h.app.installation(7);
    let mut in_flight = h.fake.in_flight.subscribe();
    let calls = tokio::spawn(async move {
        let repo = repo();
        let calls = (0..6).map(|_| client.repository(&repo));
        futures::future::join_all(calls).await
    });
    in_flight.wait_for(|n| *n == 2).await.unwrap();
    gate.add_permits(6);
    for result in calls.await.unwrap() {
        result.unwrap();
    }
    assert_eq!(h.fake.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(h.fake.requests_to(Method::GET, "/repos/").len(), 6);
}

#[tokio::test]
async fn requests_that_never_answer_time_out_and_are_retried() {
    // The server holds every repository request forever; a 1 ms timeout makes the test
    // quick, and the outcome does not depend on how fast the machine is.
    let h = harness(Options {
        gate: Some(Arc::new(Semaphore::new(0))),
        request_timeout: Duration::from_millis(1),
        ..Options::default()
    })
    .await;
    let err = h.app.installation(7).repository(&repo()).await.unwrap_err();
    match err {
        GitHubError::Timeout {
            endpoint,
            timeout,
            attempts,
        } => {
            // The token mint may time out on a loaded machine too; either way the call
            // ends after five attempts of one request.
            assert!(
                endpoint == "GET /repos/{owner}/{repo}"
                    || endpoint == "POST /app/installations/{installation_id}/access_tokens",
                "{endpoint}"
            );
            assert_eq!(timeout, Duration::from_millis(1));
            assert_eq!(attempts, 5);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // Four backoffs between the five attempts (more if the token mint was slow too).
    assert!(h.clock.sleeps().len() >= 4);
}
