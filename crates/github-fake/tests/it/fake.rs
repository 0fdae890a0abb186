//! The fake GitHub, tested over real HTTP (reqwest) and with the real `git`
//! binary: JWT and token auth and scoping, schema checks, faults, concurrency
//! tracking, check-run limits, git smart HTTP, pull requests, webhooks and
//! redelivery, and `wait_for`. Response bodies are also read into octocrab's
//! model types, since the app's client deserializes them that way.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use github_fake::openapi::OpenApiDoc;
use github_fake::{
    Access, CheckRunRecord, Credential, DEV_APP_PRIVATE_KEY_PEM, Fault, FaultKind, GitHubSim,
    Permissions, Role, RunningSim, SeededWorld, SimConfig, SimError, ViolationKind, world,
};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

/// Generous bound for waits on conditions (never a threshold being tested).
const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "sim-test-webhook-secret";

async fn start_with(config: SimConfig) -> (RunningSim, SeededWorld) {
    let sim = GitHubSim::start(config).await.expect("sim starts");
    let world = sim.seed_world().await.expect("world seeds");
    (sim, world)
}

async fn start() -> (RunningSim, SeededWorld) {
    start_with(SimConfig::default()).await
}

/// An HTTP answer: status, headers, JSON body (`Null` when empty or not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn into<T: serde::de::DeserializeOwned>(self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("{e}: cannot deserialize {:#}", self.body))
    }
}

enum Auth<'a> {
    None,
    Bearer(&'a str),
    Token(&'a str),
}

async fn call(
    sim: &RunningSim,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.base_url()))
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "github-sim-test");
    request = match auth {
        Auth::None => request,
        Auth::Bearer(jwt) => request.bearer_auth(jwt),
        Auth::Token(token) => request.header("authorization", format!("token {token}")),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request reaches the sim");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(sim: &RunningSim, path: &str, token: &str) -> Answer {
    call(sim, "GET", path, Auth::Token(token), None).await
}

async fn post_json(sim: &RunningSim, path: &str, token: &str, body: Value) -> Answer {
    call(sim, "POST", path, Auth::Token(token), Some(body)).await
}

fn jwt_with(key_pem: &str, iss: Value, iat: i64, exp: i64) -> String {
    let key = EncodingKey::from_rsa_pem(key_pem.as_bytes()).expect("RSA key");
    let claims = json!({"iss": iss, "iat": iat, "exp": exp});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("signs")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Mints a token through the API, as a client does.
async fn mint(sim: &RunningSim, body: Value) -> Answer {
    let path = format!(
        "/app/installations/{}/access_tokens",
        world::INSTALLATION_ID
    );
    call(sim, "POST", &path, Auth::Bearer(&sim.app_jwt()), Some(body)).await
}

async fn full_token(sim: &RunningSim) -> String {
    let answer = mint(sim, json!({})).await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body["token"].as_str().expect("token").to_owned()
}

/// The token a runner gets: one repository, `contents: write`.
async fn runner_token(sim: &RunningSim, repo_id: u64) -> String {
    let answer = mint(
        sim,
        json!({"repository_ids": [repo_id], "permissions": {"contents": "write"}}),
    )
    .await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body["token"].as_str().expect("token").to_owned()
}

async fn main_sha(sim: &RunningSim, token: &str) -> String {
    let branch = get(sim, "/repos/acme/widgets/branches/main", token).await;
    assert_eq!(branch.status, 200, "{:#}", branch.body);
    branch.body["commit"]["sha"]
        .as_str()
        .expect("sha")
        .to_owned()
}

#[tokio::test]
async fn app_jwt_is_checked_like_github() {
    let (sim, _) = start().await;
    let answer = call(&sim, "GET", "/app", Auth::Bearer(&sim.app_jwt()), None).await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    let app: octocrab::models::App = answer.into();
    assert_eq!(app.id.0, world::APP_ID);
    assert_eq!(app.slug.as_deref(), Some(world::APP_SLUG));

    // `iss` may be a string, as long as it is the App id.
    let string_iss = jwt_with(
        DEV_APP_PRIVATE_KEY_PEM,
        json!("310001"),
        now() - 60,
        now() + 540,
    );
    assert_eq!(
        call(&sim, "GET", "/app", Auth::Bearer(&string_iss), None)
            .await
            .status,
        200
    );

    let other_key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/github/other-app-private-key.pem"
    ))
    .expect("other key");
    let rejected = [
        (
            "expired",
            jwt_with(
                DEV_APP_PRIVATE_KEY_PEM,
                json!(310001),
                now() - 700,
                now() - 100,
            ),
        ),
        (
            "other key",
            jwt_with(&other_key, json!(310001), now() - 60, now() + 540),
        ),
        (
            "other app",
            jwt_with(
                DEV_APP_PRIVATE_KEY_PEM,
                json!(310002),
                now() - 60,
                now() + 540,
            ),
        ),
        (
            "too long",
            jwt_with(
                DEV_APP_PRIVATE_KEY_PEM,
                json!(310001),
                now() - 60,
                now() + 660,
            ),
        ),
        (
            "issued in the future",
            jwt_with(
                DEV_APP_PRIVATE_KEY_PEM,
                json!(310001),
                now() + 300,
                now() + 500,
            ),
        ),
    ];
    for (why, jwt) in rejected {
        let answer = call(&sim, "GET", "/app", Auth::Bearer(&jwt), None).await;
        assert_eq!(answer.status, 401, "{why}: {:#}", answer.body);
        assert!(
            answer.body["message"].is_string(),
            "{why}: {:#}",
            answer.body
        );
        assert!(answer.body["documentation_url"].is_string(), "{why}");
    }
    let missing = call(&sim, "GET", "/app", Auth::None, None).await;
    assert_eq!(missing.status, 401);
    // An installation token is not an App JWT.
    let token = full_token(&sim).await;
    let answer = call(&sim, "GET", "/app", Auth::Token(&token), None).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body["message"],
        "A JSON web token could not be decoded"
    );

    let log = sim.snapshot().requests;
    assert!(
        log.iter()
            .any(|r| r.credential == Credential::AppJwt && r.status == 200)
    );
    assert!(
        log.iter()
            .any(|r| r.credential == Credential::Rejected && r.status == 401)
    );
    assert!(log.iter().any(|r| r.credential == Credential::Anonymous));
}

#[tokio::test]
async fn installation_tokens_are_minted_scoped_and_used() {
    let (sim, seeded) = start().await;
    let jwt = sim.app_jwt();
    let installations = call(&sim, "GET", "/app/installations", Auth::Bearer(&jwt), None).await;
    let installations: Vec<octocrab::models::Installation> = installations.into();
    assert_eq!(installations.len(), 1);
    assert_eq!(installations[0].id.0, seeded.installation_id);
    let by_repo = call(
        &sim,
        "GET",
        "/repos/acme/widgets/installation",
        Auth::Bearer(&jwt),
        None,
    )
    .await;
    assert_eq!(by_repo.body["id"], seeded.installation_id);

    let answer = mint(&sim, json!({})).await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    let token: octocrab::models::InstallationToken = answer.into();
    assert!(token.expires_at.is_some());
    let repo = get(&sim, "/repos/acme/widgets", &token.token).await;
    assert_eq!(repo.status, 200, "{:#}", repo.body);
    assert_eq!(repo.body["clone_url"], seeded.widgets.clone_url);
    assert_eq!(repo.body["default_branch"], "main");
    assert_eq!(repo.body["permissions"]["push"], true);
    let repo: octocrab::models::Repository = repo.into();
    assert_eq!(repo.full_name.as_deref(), Some(world::WIDGETS));
    let listed = get(&sim, "/installation/repositories", &token.token).await;
    let listed: octocrab::models::InstallationRepositories = listed.into();
    assert_eq!(listed.total_count, 2);

    // Narrowed by name, and with a subset of the permissions.
    let narrowed = mint(
        &sim,
        json!({"repositories": ["gadgets"], "permissions": {"issues": "read"}}),
    )
    .await;
    assert_eq!(narrowed.status, 201, "{:#}", narrowed.body);
    assert_eq!(narrowed.body["repositories"][0]["id"], world::GADGETS_ID);
    assert_eq!(
        narrowed.body["permissions"],
        json!({"issues": "read", "metadata": "read"})
    );
    let narrowed_token = narrowed.body["token"].as_str().expect("token");
    assert_eq!(
        get(&sim, "/repos/acme/gadgets", narrowed_token)
            .await
            .status,
        200
    );
    assert_eq!(
        get(&sim, "/repos/acme/widgets", narrowed_token)
            .await
            .status,
        404
    );

    // What the installation does not have is refused.
    let unknown_repo = mint(&sim, json!({"repositories": ["secret-plans"]})).await;
    assert_eq!(unknown_repo.status, 422);
    let unknown_id = mint(&sim, json!({"repository_ids": [999]})).await;
    assert_eq!(unknown_id.status, 422);
    let too_much = mint(&sim, json!({"permissions": {"administration": "write"}})).await;
    assert_eq!(too_much.status, 422, "{:#}", too_much.body);
    let path = "/app/installations/4299999/access_tokens";
    let no_installation = call(&sim, "POST", path, Auth::Bearer(&jwt), Some(json!({}))).await;
    assert_eq!(no_installation.status, 404);
    // Tokens are opaque: unknown ones are bad credentials.
    let forged = get(&sim, "/repos/acme/widgets", "ghs_forged0123456789").await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.body["message"], "Bad credentials");
    // A JWT is not an installation token.
    let answer = call(&sim, "GET", "/repos/acme/widgets", Auth::Bearer(&jwt), None).await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    assert_eq!(get(&sim, "/repos/acme/widgets", &token).await.status, 200);
    sim.expire_all_tokens();
    let answer = get(&sim, "/repos/acme/widgets", &token).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body["message"], "Bad credentials");

    sim.set_token_lifetime(Duration::ZERO);
    let short_lived = full_token(&sim).await;
    assert_eq!(
        get(&sim, "/repos/acme/widgets", &short_lived).await.status,
        401
    );
    sim.set_token_lifetime(Duration::from_secs(3600));
    let fresh = full_token(&sim).await;
    assert_eq!(get(&sim, "/repos/acme/widgets", &fresh).await.status, 200);
}

#[tokio::test]
async fn a_runner_token_reaches_only_its_repository_and_contents() {
    let (sim, seeded) = start().await;
    let token = runner_token(&sim, seeded.widgets.id).await;
    assert_eq!(get(&sim, "/repos/acme/widgets", &token).await.status, 200);
    // GitHub hides what a token cannot see.
    assert_eq!(get(&sim, "/repos/acme/gadgets", &token).await.status, 404);
    assert_eq!(
        get(&sim, "/repos/acme/gadgets/issues/1", &token)
            .await
            .status,
        404
    );
    let file = get(&sim, "/repos/acme/widgets/contents/package.json", &token).await;
    assert_eq!(file.status, 200, "{:#}", file.body);

    let sha = main_sha(&sim, &token).await;
    let check_run = post_json(
        &sim,
        "/repos/acme/widgets/check-runs",
        &token,
        json!({"name": "bg-agent", "head_sha": sha}),
    )
    .await;
    assert_eq!(check_run.status, 403);
    assert_eq!(
        check_run.body["message"],
        "Resource not accessible by integration"
    );
    let comment = post_json(
        &sim,
        "/repos/acme/widgets/issues/17/comments",
        &token,
        json!({"body": "hello"}),
    )
    .await;
    assert_eq!(comment.status, 403);
    assert_eq!(
        comment.body["message"],
        "Resource not accessible by integration"
    );
    let full = full_token(&sim).await;
    let check_run = json!({"name": "x", "head_sha": sha, "status": "in_progress"});
    let created = post_json(&sim, "/repos/acme/widgets/check-runs", &full, check_run).await;
    let path = format!("/repos/acme/widgets/check-runs/{}", created.body["id"]);
    let update = call(
        &sim,
        "PATCH",
        &path,
        Auth::Token(&token),
        Some(json!({"conclusion": "success"})),
    )
    .await;
    assert_eq!(update.status, 403);
    let snapshot = sim.snapshot();
    let refused = snapshot.requests_to("POST", "/repos/acme/widgets/check-runs");
    let scope = refused[0]
        .token_scope
        .as_ref()
        .expect("token scope recorded");
    assert_eq!(scope.repository_ids, Some(vec![seeded.widgets.id]));
    assert!(scope.permissions.allows("contents", Access::Write));
    assert!(!scope.permissions.allows("checks", Access::Write));
    assert!(snapshot.comments_on(world::WIDGETS, 17).is_empty());
    assert_eq!(snapshot.check_runs_in(world::WIDGETS).len(), 1);
}

#[tokio::test]
async fn schema_violations_answer_422_and_are_recorded() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let answer = post_json(
        &sim,
        "/repos/acme/widgets/check-runs",
        &token,
        json!({"name": "bg-agent", "status": "finished"}),
    )
    .await;
    assert_eq!(answer.status, 422, "{:#}", answer.body);
    let message = answer.body["message"].as_str().expect("message");
    assert!(message.starts_with("Invalid request."), "{message}");
    assert!(answer.body["documentation_url"].is_string());
    let violations = sim.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].kind, ViolationKind::Request);
    assert!(
        violations[0].message.contains("head_sha"),
        "{}",
        violations[0].message
    );
    assert!(
        violations[0].message.contains("/status"),
        "{}",
        violations[0].message
    );
    // Taken: nothing left, so dropping the sim is quiet.
    sim.assert_no_violations();

    let not_json = reqwest::Client::new()
        .post(format!(
            "{}/repos/acme/widgets/issues/17/comments",
            sim.base_url()
        ))
        .header("authorization", format!("token {token}"))
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(not_json.status(), 400);
    let unknown = get(&sim, "/repos/acme/widgets/no-such-thing", &token).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["message"], "Not Found");
}

#[tokio::test]
#[should_panic(expected = "schema violation")]
async fn dropping_a_sim_with_unexamined_violations_panics() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let answer = post_json(
        &sim,
        "/repos/acme/widgets/issues/17/comments",
        &token,
        json!({}),
    )
    .await;
    assert_eq!(answer.status, 422);
    drop(sim);
}

#[tokio::test]
#[should_panic(expected = "schema violation")]
async fn assert_no_violations_panics_on_violations() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let body = json!({"content": "thumbs-up"});
    post_json(
        &sim,
        "/repos/acme/widgets/issues/comments/1/reactions",
        &token,
        body,
    )
    .await;
    sim.assert_no_violations();
}

#[tokio::test]
async fn each_fault_fires_exactly_n_times_then_service_resumes() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let sha = main_sha(&sim, &token).await;
    let create = json!({"name": "bg-agent", "head_sha": sha});
    let kinds = [
        FaultKind::ServerError(500),
        FaultKind::ServerError(502),
        FaultKind::Refuse(422),
        FaultKind::SecondaryRateLimit {
            retry_after_secs: 7,
        },
        FaultKind::TooManyRequests {
            retry_after_secs: 3,
        },
        FaultKind::PrimaryRateLimit {
            reset_after_secs: 60,
        },
        FaultKind::Latency(Duration::from_millis(1)),
    ];
    for kind in kinds {
        let fault =
            sim.inject_fault(Fault::new("POST", "/repos/*/*/check-runs", kind.clone()).times(2));
        // Other routes are untouched.
        assert_eq!(get(&sim, "/repos/acme/widgets", &token).await.status, 200);
        for attempt in 0..2 {
            let answer = post_json(
                &sim,
                "/repos/acme/widgets/check-runs",
                &token,
                create.clone(),
            )
            .await;
            match &kind {
                FaultKind::ServerError(status) => assert_eq!(answer.status, *status),
                FaultKind::Refuse(status) => {
                    assert_eq!(answer.status, *status);
                    assert!(answer.body["message"].is_string(), "{:?}", answer.body);
                }
                FaultKind::SecondaryRateLimit { retry_after_secs } => {
                    assert_eq!(answer.status, 403);
                    assert_eq!(
                        answer.header("retry-after"),
                        Some(retry_after_secs.to_string().as_str())
                    );
                    let message = answer.body["message"].as_str().unwrap_or_default();
                    assert!(message.contains("secondary rate limit"), "{message}");
                }
                FaultKind::TooManyRequests { retry_after_secs } => {
                    assert_eq!(answer.status, 429);
                    assert_eq!(
                        answer.header("retry-after"),
                        Some(retry_after_secs.to_string().as_str())
                    );
                }
                FaultKind::PrimaryRateLimit { .. } => {
                    assert_eq!(answer.status, 403);
                    assert_eq!(answer.header("x-ratelimit-remaining"), Some("0"));
                    let reset: i64 = answer
                        .header("x-ratelimit-reset")
                        .and_then(|r| r.parse().ok())
                        .expect("x-ratelimit-reset");
                    assert!(reset > now());
                }
                // `Hold` is not in `kinds`: sequential requests would wait forever.
                FaultKind::Latency(_) | FaultKind::Hold => {
                    assert_eq!(answer.status, 201, "attempt {attempt}")
                }
            }
        }
        assert_eq!(sim.fault_fired(fault), 2, "{kind:?}");
        let answer = post_json(
            &sim,
            "/repos/acme/widgets/check-runs",
            &token,
            create.clone(),
        )
        .await;
        assert_eq!(
            answer.status, 201,
            "{kind:?} after its 2 firings: {:#}",
            answer.body
        );
        let path = "/repos/acme/widgets/check-runs";
        let faulted = sim.read(|s| {
            s.requests_to("POST", path)
                .iter()
                .filter(|r| r.fault.is_some())
                .count()
        });
        assert!(faulted >= 2);
    }
    // `*` matches any method and path.
    let any = sim.inject_fault(Fault::new("*", "*", FaultKind::ServerError(503)));
    assert_eq!(
        call(&sim, "GET", "/app", Auth::Bearer(&sim.app_jwt()), None)
            .await
            .status,
        503
    );
    assert_eq!(get(&sim, "/repos/acme/widgets", &token).await.status, 200);
    assert_eq!(sim.fault_fired(any), 1);
    // Normal answers carry rate-limit headers too.
    let answer = get(&sim, "/repos/acme/widgets", &token).await;
    assert!(answer.header("x-ratelimit-remaining").is_some());
}

#[tokio::test]
async fn concurrency_is_tracked_per_installation() {
    let (sim, seeded) = start().await;
    let token = full_token(&sim).await;
    let other_installation = sim.add_installation("globex");
    sim.add_repository(
        other_installation,
        "globex",
        "tools",
        &[("README.md", b"tools\n")],
    )
    .await
    .expect("repo");
    let other_token = sim
        .mint_token(other_installation, None, None)
        .expect("token");
    assert_eq!(
        get(&sim, "/repos/globex/tools", &other_token).await.status,
        200
    );

    // Requests held long enough that all of them are in flight at once; the
    // test waits on the count, not on time, then abandons them.
    sim.inject_fault(
        Fault::new(
            "GET",
            "/repos/acme/widgets",
            FaultKind::Latency(Duration::from_secs(600)),
        )
        .times(5),
    );
    let burst: Vec<_> = (0..5)
        .map(|_| {
            let url = format!("{}/repos/acme/widgets", sim.base_url());
            let token = token.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .header("authorization", format!("token {token}"))
                    .send()
                    .await
            })
        })
        .collect();
    let installation = seeded.installation_id;
    sim.wait_for(WAIT, |s| {
        s.in_flight
            .get(&installation)
            .is_some_and(|f| f.current == 5)
    })
    .await
    .expect("5 requests in flight");
    assert_eq!(sim.read(|s| s.max_in_flight(installation)), 5);
    assert_eq!(sim.read(|s| s.max_in_flight(other_installation)), 1);
    for request in &burst {
        request.abort();
    }
    sim.wait_for(WAIT, |s| {
        s.in_flight
            .get(&installation)
            .is_some_and(|f| f.current == 0)
    })
    .await
    .expect("abandoned requests leave");
    // Sequential requests do not raise the maximum.
    for _ in 0..3 {
        assert_eq!(get(&sim, "/repos/acme/widgets", &token).await.status, 200);
    }
    assert_eq!(sim.read(|s| s.max_in_flight(installation)), 5);
}

fn annotation(i: usize) -> Value {
    json!({"path": "src/index.js", "start_line": i + 1, "end_line": i + 1, "annotation_level": "notice", "message": format!("note {i}")})
}

fn action(label: &str, description: &str, identifier: &str) -> Value {
    json!({"label": label, "description": description, "identifier": identifier})
}

#[tokio::test]
async fn check_runs_keep_history_and_enforce_githubs_limits() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let sha = main_sha(&sim, &token).await;
    let max_text = "x".repeat(65_535);
    let at_limits = json!({
        "name": "bg-agent",
        "head_sha": sha,
        "external_id": "42",
        "status": "in_progress",
        "output": {
            "title": "upgrade lodash",
            "summary": max_text,
            "text": max_text,
            "annotations": (0..50).map(annotation).collect::<Vec<_>>(),
        },
        "actions": [
            action(&"l".repeat(20), &"d".repeat(40), &"i".repeat(20)),
            action("Retry", "Run the task again", "retry"),
            action("Cancel", "Stop the task", "cancel"),
        ],
    });
    let created = post_json(&sim, "/repos/acme/widgets/check-runs", &token, at_limits).await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(created.body["output"]["annotations_count"], 50);
    let id = created.body["id"].as_u64().expect("id");
    let run: octocrab::models::checks::CheckRun = created.into();
    assert_eq!(run.head_sha, sha);

    let path = format!("/repos/acme/widgets/check-runs/{id}");
    let too_long = "y".repeat(65_536);
    let over_limits = [
        json!({"output": {"title": "t", "summary": too_long}}),
        json!({"output": {"title": "t", "summary": "s", "text": too_long}}),
        json!({"output": {"title": "t", "summary": "s", "annotations": (0..51).map(annotation).collect::<Vec<_>>()}}),
        json!({"actions": [action("a", "a", "a"), action("b", "b", "b"), action("c", "c", "c"), action("d", "d", "d")]}),
        json!({"actions": [action(&"l".repeat(21), "d", "i")]}),
        json!({"actions": [action("l", &"d".repeat(41), "i")]}),
        json!({"actions": [action("l", "d", &"i".repeat(21))]}),
    ];
    for body in over_limits {
        let answer = call(
            &sim,
            "PATCH",
            &path,
            Auth::Token(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(answer.status, 422, "{body}");
        let violations = sim.take_violations();
        assert!(
            violations.iter().all(|v| v.kind == ViolationKind::Request),
            "{violations:?}"
        );
    }
    let mut create_over =
        json!({"name": "n", "head_sha": sha, "output": {"title": "t", "summary": too_long}});
    let answer = post_json(
        &sim,
        "/repos/acme/widgets/check-runs",
        &token,
        create_over.clone(),
    )
    .await;
    assert_eq!(answer.status, 422);
    create_over["head_sha"] = json!("0".repeat(40));
    create_over["output"]["summary"] = json!("fine");
    let unknown_commit =
        post_json(&sim, "/repos/acme/widgets/check-runs", &token, create_over).await;
    assert_eq!(unknown_commit.status, 422);
    assert!(
        unknown_commit.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("No commit found")
    );
    sim.take_violations();

    // Completing needs a conclusion; annotations in an update are appended.
    let no_conclusion = call(
        &sim,
        "PATCH",
        &path,
        Auth::Token(&token),
        Some(json!({"status": "completed"})),
    )
    .await;
    assert_eq!(no_conclusion.status, 422);
    // GitHub's schema itself says so: a request violation.
    assert_eq!(sim.take_violations().len(), 1);
    let update = json!({
        "conclusion": "failure",
        "output": {"title": "upgrade lodash", "summary": "npm test failed", "annotations": [annotation(99)]},
        "actions": [action("Retry", "Run the task again", "retry")],
    });
    let updated = call(&sim, "PATCH", &path, Auth::Token(&token), Some(update)).await;
    assert_eq!(updated.status, 200, "{:#}", updated.body);
    assert_eq!(updated.body["status"], "completed");
    assert_eq!(updated.body["conclusion"], "failure");
    assert_eq!(updated.body["output"]["annotations_count"], 51);
    assert!(updated.body["completed_at"].is_string());

    let run: CheckRunRecord = sim.read(|s| s.check_run(id).cloned()).expect("recorded");
    assert_eq!(run.history.len(), 2);
    assert_eq!(run.history[0].operation, "create");
    assert_eq!(run.history[0].status, "in_progress");
    assert_eq!(run.history[0].actions.len(), 3);
    assert_eq!(run.history[1].conclusion.as_deref(), Some("failure"));
    assert_eq!(
        run.history[1].output.summary.as_deref(),
        Some("npm test failed")
    );
    assert_eq!(run.actions.len(), 1);
    assert_eq!(run.external_id.as_deref(), Some("42"));

    let fetched = get(&sim, &path, &token).await;
    assert_eq!(fetched.body["conclusion"], "failure");
    let listed = get(
        &sim,
        &format!("/repos/acme/widgets/commits/{sha}/check-runs"),
        &token,
    )
    .await;
    assert_eq!(listed.status, 200, "{:#}", listed.body);
    let listed: octocrab::models::checks::ListCheckRuns = listed.into();
    assert_eq!(listed.total_count, 1);
    let by_branch = get(
        &sim,
        "/repos/acme/widgets/commits/main/check-runs?check_name=bg-agent",
        &token,
    )
    .await;
    assert_eq!(by_branch.body["total_count"], 1);
}

/// git with nothing from the machine's configuration, and a token in an extra header.
struct Git {
    home: tempfile::TempDir,
}

impl Git {
    fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("temp home"),
        }
    }

    async fn run(&self, cwd: &Path, token: Option<&str>, args: &[&str]) -> std::process::Output {
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
        if let Some(token) = token {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            command
                .arg("-c")
                .arg(format!("http.extraHeader=Authorization: Basic {basic}"));
        }
        command.args(args).output().await.expect("git runs")
    }

    async fn ok(&self, cwd: &Path, token: Option<&str>, args: &[&str]) -> String {
        let output = self.run(cwd, token, args).await;
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

#[tokio::test]
async fn git_clone_push_and_pull_request_over_smart_http() {
    let (sim, seeded) = start().await;
    let git = Git::new();
    let work = tempfile::tempdir().expect("work dir");
    let checkout = work.path().join("widgets");
    let checkout_arg = checkout.to_string_lossy().into_owned();
    let runner = runner_token(&sim, seeded.widgets.id).await;

    git.ok(
        work.path(),
        Some(&runner),
        &["clone", "--quiet", &seeded.widgets.clone_url, &checkout_arg],
    )
    .await;
    let package = std::fs::read_to_string(checkout.join("package.json")).expect("cloned file");
    assert!(package.contains("4.17.20"));

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
    let branch = "bg-agent/17-upgrade-lodash";
    let refspec = format!("HEAD:refs/heads/{branch}");
    git.ok(
        &checkout,
        Some(&runner),
        &["push", "--quiet", "origin", &refspec],
    )
    .await;
    let head = git.ok(&checkout, None, &["rev-parse", "HEAD"]).await;
    assert_eq!(
        sim.read(|s| s.pushes.get(&seeded.widgets.id).copied()),
        Some(1)
    );

    // The pushed branch is visible to the REST API at once.
    let full = full_token(&sim).await;
    for path in [
        format!("/repos/acme/widgets/branches/{branch}"),
        "/repos/acme/widgets/branches/bg-agent%2F17-upgrade-lodash".to_owned(),
    ] {
        let answer = get(&sim, &path, &full).await;
        assert_eq!(answer.status, 200, "{path}: {:#}", answer.body);
        assert_eq!(answer.body["commit"]["sha"], head.as_str());
        assert_eq!(
            answer.body["commit"]["commit"]["message"],
            "Upgrade lodash to 4.17.21"
        );
        let _: octocrab::models::repos::Branch = answer.into();
    }
    let git_ref = get(
        &sim,
        &format!("/repos/acme/widgets/git/ref/heads/{branch}"),
        &full,
    )
    .await;
    assert_eq!(git_ref.body["object"]["sha"], head.as_str());
    let _: octocrab::models::repos::Ref = git_ref.into();
    let contents = get(
        &sim,
        &format!("/repos/acme/widgets/contents/package.json?ref={branch}"),
        &full,
    )
    .await;
    assert_eq!(contents.status, 200, "{:#}", contents.body);
    let content: octocrab::models::repos::Content = contents.into();
    let decoded = content.decoded_content().expect("base64 content");
    assert!(decoded.contains("4.17.21"));
    let on_main = get(&sim, "/repos/acme/widgets/contents/package.json", &full).await;
    assert!(on_main.body["content"].as_str().is_some());
    assert_eq!(
        get(&sim, "/repos/acme/widgets/contents/missing.txt", &full)
            .await
            .status,
        404
    );
    let dir = get(&sim, "/repos/acme/widgets/contents/src", &full).await;
    assert_eq!(dir.body[0]["path"], "src/index.js");
    assert_eq!(
        get(&sim, "/repos/acme/widgets/branches/no-such-branch", &full)
            .await
            .status,
        404
    );

    // A pull request needs its head branch to exist.
    let missing_head = post_json(
        &sim,
        "/repos/acme/widgets/pulls",
        &full,
        json!({"title": "x", "head": "acme:does-not-exist", "base": "main"}),
    )
    .await;
    assert_eq!(missing_head.status, 422, "{:#}", missing_head.body);
    assert_eq!(missing_head.body["message"], "Validation Failed");
    assert_eq!(missing_head.body["errors"][0]["field"], "head");
    let no_commits = post_json(
        &sim,
        "/repos/acme/widgets/pulls",
        &full,
        json!({"title": "x", "head": "main", "base": "main"}),
    )
    .await;
    assert_eq!(no_commits.status, 422);
    let opened = post_json(
        &sim,
        "/repos/acme/widgets/pulls",
        &full,
        json!({"title": "Upgrade lodash to 4.17.21", "head": format!("acme:{branch}"), "base": "main", "body": "Closes #17"}),
    )
    .await;
    assert_eq!(opened.status, 201, "{:#}", opened.body);
    assert_eq!(opened.body["number"], 18);
    assert_eq!(opened.body["id"], 3_400_018);
    assert_eq!(opened.body["head"]["sha"], head.as_str());
    assert_eq!(opened.body["user"]["login"], "bg-agent[bot]");
    let pull: octocrab::models::pulls::PullRequest = opened.into();
    assert_eq!(pull.number, 18);
    let duplicate = post_json(
        &sim,
        "/repos/acme/widgets/pulls",
        &full,
        json!({"title": "again", "head": branch, "base": "main"}),
    )
    .await;
    assert_eq!(duplicate.status, 422);
    let listed = get(
        &sim,
        &format!("/repos/acme/widgets/pulls?head=acme:{branch}&state=open"),
        &full,
    )
    .await;
    let listed: Vec<octocrab::models::pulls::PullRequest> = listed.into();
    assert_eq!(listed.len(), 1);
    let closed = get(&sim, "/repos/acme/widgets/pulls?state=closed", &full).await;
    assert_eq!(closed.body, json!([]));
    let closing = call(
        &sim,
        "PATCH",
        "/repos/acme/widgets/pulls/18",
        Auth::Token(&full),
        Some(json!({"state": "closed"})),
    )
    .await;
    assert_eq!(closing.body["state"], "closed");
    assert_eq!(sim.read(|s| s.pulls_in(world::WIDGETS).len()), 1);
    let fetched = get(&sim, "/repos/acme/widgets/pulls/18", &full).await;
    assert_eq!(fetched.body["merged"], false);
    assert_eq!(
        get(&sim, "/repos/acme/widgets/pulls/99", &full)
            .await
            .status,
        404
    );
    // A pull request is also an issue, and people comment on it as on one.
    let as_issue = get(&sim, "/repos/acme/widgets/issues/18", &full).await;
    assert!(
        as_issue.body["pull_request"]["url"].is_string(),
        "{:#}",
        as_issue.body
    );
    let on_pull = sim
        .comment(world::WIDGETS, 18, world::LEAD, "Thanks, looks good!")
        .await
        .expect("comment on the pull request");
    assert!(on_pull.delivery.payload["issue"]["pull_request"].is_object());

    // Refused: no credentials, a bad token, a token for another repository, a read-only token.
    let info_refs = format!(
        "{}/info/refs?service=git-upload-pack",
        seeded.widgets.clone_url
    );
    let anonymous = reqwest::get(&info_refs).await.expect("reaches the sim");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"GitHub\"")
    );
    let read_only = mint(
        &sim,
        json!({"repository_ids": [seeded.widgets.id], "permissions": {"contents": "read"}}),
    )
    .await;
    let read_only = read_only.body["token"].as_str().expect("token").to_owned();
    let gadgets_only = runner_token(&sim, seeded.gadgets.id).await;
    for (why, token) in [
        ("no token", None),
        ("bad token", Some("ghs_not-a-token")),
        ("other repository", Some(gadgets_only.as_str())),
    ] {
        let target = work.path().join(format!("clone-{}", why.replace(' ', "-")));
        let output = git
            .run(
                work.path(),
                token,
                &[
                    "clone",
                    "--quiet",
                    &seeded.widgets.clone_url,
                    &target.to_string_lossy(),
                ],
            )
            .await;
        assert!(!output.status.success(), "clone with {why} succeeded");
    }
    git.ok(&checkout, Some(&read_only), &["fetch", "--quiet", "origin"])
        .await;
    let refused = git
        .run(
            &checkout,
            Some(&read_only),
            &[
                "push",
                "--quiet",
                "origin",
                "HEAD:refs/heads/read-only-push",
            ],
        )
        .await;
    assert!(
        !refused.status.success(),
        "push with a read-only token succeeded"
    );
    assert_eq!(
        get(&sim, "/repos/acme/widgets/branches/read-only-push", &full)
            .await
            .status,
        404
    );
    let receive = format!(
        "{}/info/refs?service=git-receive-pack",
        seeded.widgets.clone_url
    );
    let advert = reqwest::Client::new()
        .get(&receive)
        .basic_auth("x-access-token", Some(&read_only))
        .send()
        .await
        .expect("reaches the sim");
    assert_eq!(advert.status(), 403);
    // Each refusal was GitHub's: 401 without or with a bad token, 404 out of scope, 403 read-only push.
    let statuses: Vec<u16> = sim.read(|s| {
        s.requests_to("GET", "/acme/widgets.git/info/refs")
            .iter()
            .map(|r| r.status)
            .collect()
    });
    for status in [200, 401, 404, 403] {
        assert!(
            statuses.contains(&status),
            "{status} missing in {statuses:?}"
        );
    }
}

#[tokio::test]
async fn refs_can_be_created_and_moved_through_the_api() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let sha = main_sha(&sim, &token).await;
    let created = post_json(
        &sim,
        "/repos/acme/widgets/git/refs",
        &token,
        json!({"ref": "refs/heads/topic", "sha": sha}),
    )
    .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let again = post_json(
        &sim,
        "/repos/acme/widgets/git/refs",
        &token,
        json!({"ref": "refs/heads/topic", "sha": sha}),
    )
    .await;
    assert_eq!(again.status, 422);
    assert_eq!(
        get(&sim, "/repos/acme/widgets/branches/topic", &token)
            .await
            .status,
        200
    );
    let deleted = call(
        &sim,
        "DELETE",
        "/repos/acme/widgets/git/refs/heads/topic",
        Auth::Token(&token),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    let gone = call(
        &sim,
        "PATCH",
        "/repos/acme/widgets/git/refs/heads/topic",
        Auth::Token(&token),
        Some(json!({"sha": sha})),
    )
    .await;
    assert_eq!(gone.status, 422);
    let same = call(
        &sim,
        "PATCH",
        "/repos/acme/widgets/git/refs/heads/main",
        Auth::Token(&token),
        Some(json!({"sha": sha})),
    )
    .await;
    assert_eq!(same.status, 200, "{:#}", same.body);
    let nowhere = json!({"sha": "1".repeat(40), "force": true});
    let unknown = call(
        &sim,
        "PATCH",
        "/repos/acme/widgets/git/refs/heads/main",
        Auth::Token(&token),
        Some(nowhere),
    )
    .await;
    assert_eq!(unknown.status, 422);
    let bad_name = post_json(
        &sim,
        "/repos/acme/widgets/git/refs",
        &token,
        json!({"ref": "topic", "sha": sha}),
    )
    .await;
    assert_eq!(bad_name.status, 422);
    assert_eq!(
        get(&sim, "/repos/acme/widgets/branches/topic", &token)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_comment_deleted_on_github_answers_404_and_is_no_longer_listed() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let created = post_json(
        &sim,
        "/repos/acme/widgets/issues/17/comments",
        &token,
        json!({"body": "Working on it"}),
    )
    .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let id = created.body["id"].as_u64().unwrap();
    assert!(sim.delete_comment(id));
    assert!(!sim.delete_comment(id));
    let path = format!("/repos/acme/widgets/issues/comments/{id}");
    let edited = call(
        &sim,
        "PATCH",
        &path,
        Auth::Token(&token),
        Some(json!({"body": "Done"})),
    )
    .await;
    assert_eq!(edited.status, 404, "{:#}", edited.body);
    let listed = get(&sim, "/repos/acme/widgets/issues/17/comments", &token).await;
    assert_eq!(listed.body, json!([]));
    sim.assert_no_violations();
}

#[tokio::test]
async fn issues_comments_reactions_labels_and_permissions() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let issue = get(&sim, "/repos/acme/widgets/issues/17", &token).await;
    assert_eq!(issue.status, 200, "{:#}", issue.body);
    assert_eq!(issue.body["id"], world::ISSUE_ID);
    assert_eq!(issue.body["node_id"], "I_kgDOADJasQ");
    assert_eq!(issue.body["author_association"], "MEMBER");
    let _: octocrab::models::issues::Issue = issue.into();

    let created = post_json(
        &sim,
        "/repos/acme/widgets/issues/17/comments",
        &token,
        json!({"body": "Working on it"}),
    )
    .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(created.body["user"]["login"], "bg-agent[bot]");
    assert_eq!(
        created.body["performed_via_github_app"]["id"],
        world::APP_ID
    );
    let comment: octocrab::models::issues::Comment = created.into();
    let comment_path = format!("/repos/acme/widgets/issues/comments/{}", comment.id);
    let edited = call(
        &sim,
        "PATCH",
        &comment_path,
        Auth::Token(&token),
        Some(json!({"body": "Done"})),
    )
    .await;
    assert_eq!(edited.body["body"], "Done");
    let listed = get(&sim, "/repos/acme/widgets/issues/17/comments", &token).await;
    let listed: Vec<octocrab::models::issues::Comment> = listed.into();
    assert_eq!(listed.len(), 1);
    let too_long = post_json(
        &sim,
        "/repos/acme/widgets/issues/17/comments",
        &token,
        json!({"body": "x".repeat(65_537)}),
    )
    .await;
    assert_eq!(too_long.status, 422);
    assert_eq!(
        get(&sim, "/repos/acme/widgets/issues/99/comments", &token)
            .await
            .status,
        404
    );

    // Reacting twice with the same content is 200 the second time.
    let user_comment = sim
        .comment(
            world::WIDGETS,
            17,
            world::LEAD,
            "/bg-agent upgrade lodash 4.17.21",
        )
        .await
        .expect("comment");
    let comment_id = user_comment.id.expect("comment id");
    let reactions = format!("/repos/acme/widgets/issues/comments/{comment_id}/reactions");
    let first = post_json(&sim, &reactions, &token, json!({"content": "eyes"})).await;
    assert_eq!(first.status, 201, "{:#}", first.body);
    let second = post_json(&sim, &reactions, &token, json!({"content": "eyes"})).await;
    assert_eq!(second.status, 200);
    assert_eq!(first.body["id"], second.body["id"]);
    let _: octocrab::models::reactions::Reaction = second.into();
    let other = post_json(&sim, &reactions, &token, json!({"content": "rocket"})).await;
    assert_eq!(other.status, 201);
    assert_eq!(sim.read(|s| s.reactions_on(comment_id).len()), 2);
    let rollup = get(
        &sim,
        &format!("/repos/acme/widgets/issues/comments/{comment_id}"),
        &token,
    )
    .await;
    assert_eq!(rollup.body["reactions"]["total_count"], 2);

    let labels = post_json(
        &sim,
        "/repos/acme/widgets/issues/17/labels",
        &token,
        json!({"labels": ["bg-agent:running"]}),
    )
    .await;
    assert_eq!(labels.status, 200, "{:#}", labels.body);
    let labels: Vec<octocrab::models::Label> = labels.into();
    assert_eq!(labels.len(), 1);
    assert_eq!(
        sim.read(|s| s.labels_on(world::WIDGETS, 17)),
        vec!["bg-agent:running".to_owned()]
    );
    let removed = call(
        &sim,
        "DELETE",
        "/repos/acme/widgets/issues/17/labels/bg-agent%3Arunning",
        Auth::Token(&token),
        None,
    )
    .await;
    assert_eq!(removed.status, 200, "{:#}", removed.body);
    assert!(sim.read(|s| s.labels_on(world::WIDGETS, 17)).is_empty());

    sim.add_user("triager");
    sim.set_permission(world::WIDGETS, "triager", Some(Role::Triage))
        .expect("role");
    sim.add_user("outsider");
    for (user, permission, role) in [
        (world::LEAD, "admin", "admin"),
        (world::DRIVE_BY, "read", "read"),
        ("triager", "read", "triage"),
        ("outsider", "none", "none"),
    ] {
        let answer = get(
            &sim,
            &format!("/repos/acme/widgets/collaborators/{user}/permission"),
            &token,
        )
        .await;
        assert_eq!(answer.status, 200, "{user}: {:#}", answer.body);
        assert_eq!(answer.body["permission"], permission, "{user}");
        assert_eq!(answer.body["role_name"], role, "{user}");
    }
    let unknown = get(
        &sim,
        "/repos/acme/widgets/collaborators/nobody-at-all/permission",
        &token,
    )
    .await;
    assert_eq!(unknown.status, 404);
}

/// A webhook endpoint that hands every delivery to the test.
struct Receiver {
    url: String,
    deliveries: mpsc::UnboundedReceiver<(HeaderMap, Bytes)>,
}

impl Receiver {
    async fn start() -> Self {
        let (sender, deliveries) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/webhook",
            post(move |headers: HeaderMap, body: Bytes| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send((headers, body));
                    StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/webhook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, deliveries }
    }

    /// The next delivery, checked like the app checks it: signature and schema.
    async fn next(&mut self) -> (HeaderMap, Value) {
        let (headers, body) = tokio::time::timeout(WAIT, self.deliveries.recv())
            .await
            .expect("a delivery arrives")
            .expect("receiver open");
        // GitHub's scheme, computed here: `sha256=` + hex HMAC-SHA256 of the raw body.
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
        mac.update(&body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            headers.get("x-hub-signature-256").map(|v| v.as_bytes()),
            Some(expected.as_bytes()),
            "signed with the webhook secret"
        );
        let payload: Value = serde_json::from_slice(&body).expect("JSON payload");
        let event = headers["x-github-event"].to_str().expect("event");
        let action = payload["action"].as_str();
        OpenApiDoc::github_webhooks()
            .validate_webhook(event, action, &payload)
            .unwrap_or_else(|e| panic!("{e}"));
        (headers, payload)
    }
}

async fn start_with_receiver() -> (RunningSim, SeededWorld, Receiver) {
    let receiver = Receiver::start().await;
    let (sim, seeded) = start_with(SimConfig {
        webhook_url: Some(receiver.url.clone()),
        webhook_secret: SECRET.into(),
        ..SimConfig::default()
    })
    .await;
    (sim, seeded, receiver)
}

#[tokio::test]
async fn webhooks_are_signed_schema_valid_and_built_from_state() {
    let (sim, seeded, mut receiver) = start_with_receiver().await;
    let sent = sim
        .comment(
            world::WIDGETS,
            17,
            world::LEAD,
            "/bg-agent upgrade lodash 4.17.21",
        )
        .await
        .expect("comment");
    let (headers, payload) = receiver.next().await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-github-event"), "issue_comment");
    assert_eq!(header("x-github-delivery"), sent.delivery.guid);
    assert!(uuid::Uuid::parse_str(&header("x-github-delivery")).is_ok());
    assert_eq!(header("x-github-hook-id"), world::HOOK_ID.to_string());
    assert_eq!(
        header("x-github-hook-installation-target-id"),
        world::APP_ID.to_string()
    );
    assert_eq!(
        header("x-github-hook-installation-target-type"),
        "integration"
    );
    assert!(header("user-agent").starts_with("GitHub-Hookshot/"));
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(payload["action"], "created");
    assert_eq!(payload["comment"]["id"], sent.id.expect("id"));
    assert_eq!(payload["comment"]["author_association"], "MEMBER");
    assert_eq!(payload["issue"]["number"], 17);
    assert_eq!(payload["repository"]["full_name"], world::WIDGETS);
    assert_eq!(payload["installation"]["id"], seeded.installation_id);
    assert_eq!(payload["sender"]["login"], world::LEAD);
    assert_eq!(sent.delivery.status_code, 202);
    assert_eq!(sim.read(|s| s.comments_on(world::WIDGETS, 17).len()), 1);

    let edited = sim
        .edit_comment(sent.id.expect("id"), "/bg-agent upgrade lodash 4.17.22")
        .await
        .expect("edit");
    let (_, payload) = receiver.next().await;
    assert_eq!(payload["action"], "edited");
    assert_eq!(
        payload["changes"]["body"]["from"],
        "/bg-agent upgrade lodash 4.17.21"
    );
    assert_eq!(edited.delivery.event, "issue_comment");

    sim.label_issue(world::WIDGETS, 17, world::LEAD, "bg-agent")
        .await
        .expect("label");
    let (headers, payload) = receiver.next().await;
    assert_eq!(headers["x-github-event"], "issues");
    assert_eq!(payload["label"]["name"], "bg-agent");
    assert_eq!(payload["label"]["id"], 8100001);
    assert_eq!(
        sim.read(|s| s.labels_on(world::WIDGETS, 17)),
        vec!["bg-agent".to_owned()]
    );

    sim.open_issue(world::WIDGETS, "Bump express", "please", world::DRIVE_BY)
        .await
        .expect("issue");
    let (_, payload) = receiver.next().await;
    assert_eq!(payload["action"], "opened");
    assert_eq!(payload["issue"]["number"], 18);

    // Check-run events need a run with buttons, created by the App.
    let token = full_token(&sim).await;
    let sha = main_sha(&sim, &token).await;
    let run = post_json(
        &sim,
        "/repos/acme/widgets/check-runs",
        &token,
        json!({
            "name": "bg-agent", "head_sha": sha, "conclusion": "failure",
            "output": {"title": "t", "summary": "failed"},
            "actions": [action("Retry", "Run the task again", "retry")],
        }),
    )
    .await;
    let run_id = run.body["id"].as_u64().expect("id");
    sim.rerequest_check_run(run_id, world::LEAD)
        .await
        .expect("rerequest");
    let (_, payload) = receiver.next().await;
    assert_eq!(payload["action"], "rerequested");
    assert_eq!(payload["check_run"]["id"], run_id);
    sim.request_check_run_action(run_id, world::LEAD, "retry")
        .await
        .expect("action");
    let (_, payload) = receiver.next().await;
    assert_eq!(payload["requested_action"]["identifier"], "retry");
    let no_button = sim
        .request_check_run_action(run_id, world::LEAD, "cancel")
        .await;
    assert!(matches!(no_button, Err(SimError::Invalid(_))));

    sim.send_installation_created(seeded.installation_id, world::LEAD)
        .await
        .expect("installation");
    let (_, payload) = receiver.next().await;
    assert_eq!(payload["installation"]["id"], seeded.installation_id);
    assert_eq!(payload["repositories"].as_array().map(Vec::len), Some(2));
    sim.ping().await.expect("ping");
    let (headers, payload) = receiver.next().await;
    assert_eq!(headers["x-github-event"], "ping");
    assert_eq!(payload["hook"]["app_id"], world::APP_ID);
    assert_eq!(sim.read(|s| s.deliveries.len()), 8);
}

#[tokio::test]
async fn deliveries_are_listed_and_redelivered_with_the_same_guid() {
    let (sim, _, mut receiver) = start_with_receiver().await;
    let sent = sim
        .comment(
            world::WIDGETS,
            17,
            world::LEAD,
            "/bg-agent upgrade lodash 4.17.21",
        )
        .await
        .expect("comment");
    let (_, first) = receiver.next().await;
    let jwt = sim.app_jwt();
    let listed = call(
        &sim,
        "GET",
        "/app/hook/deliveries",
        Auth::Bearer(&jwt),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{:#}", listed.body);
    assert_eq!(listed.body[0]["guid"], sent.delivery.guid);
    assert_eq!(listed.body[0]["redelivery"], false);
    assert_eq!(listed.body[0]["status_code"], 202);
    let one = call(
        &sim,
        "GET",
        &format!("/app/hook/deliveries/{}", sent.delivery.id),
        Auth::Bearer(&jwt),
        None,
    )
    .await;
    assert_eq!(one.body["request"]["payload"], first);
    let token = full_token(&sim).await;
    let with_token = call(
        &sim,
        "GET",
        "/app/hook/deliveries",
        Auth::Token(&token),
        None,
    )
    .await;
    assert_eq!(with_token.status, 401);

    let path = format!("/app/hook/deliveries/{}/attempts", sent.delivery.id);
    let accepted = call(&sim, "POST", &path, Auth::Bearer(&jwt), None).await;
    assert_eq!(accepted.status, 202, "{:#}", accepted.body);
    let (headers, again) = receiver.next().await;
    assert_eq!(
        headers["x-github-delivery"].to_str().ok(),
        Some(sent.delivery.guid.as_str())
    );
    assert_eq!(again, first);
    sim.wait_for(WAIT, |s| s.deliveries.len() == 2)
        .await
        .expect("redelivery recorded");
    let listed = call(
        &sim,
        "GET",
        "/app/hook/deliveries",
        Auth::Bearer(&jwt),
        None,
    )
    .await;
    assert_eq!(listed.body[0]["redelivery"], true);
    assert_eq!(listed.body[0]["guid"], sent.delivery.guid);
    let missing = call(
        &sim,
        "POST",
        "/app/hook/deliveries/1/attempts",
        Auth::Bearer(&jwt),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);

    // Without a URL, deliveries are recorded but not sent.
    sim.set_webhook_url(None);
    let unsent = sim.ping().await.expect("ping");
    assert_eq!(unsent.delivery.status_code, 0);
    assert_eq!(sim.read(|s| s.deliveries.len()), 3);
}

#[tokio::test]
async fn wait_for_wakes_on_state_changes() {
    let (sim, _) = start().await;
    let token = full_token(&sim).await;
    let url = format!("{}/repos/acme/widgets/issues/17/comments", sim.base_url());
    let (go, ready) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let _ = ready.await;
        reqwest::Client::new()
            .post(url)
            .header("authorization", format!("token {token}"))
            .json(&json!({"body": "from another task"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let waiting = sim.wait_for(WAIT, |s| !s.comments_on(world::WIDGETS, 17).is_empty());
    let _ = go.send(());
    waiting.await.expect("woken by the comment");
    assert_eq!(writer.await.ok().and_then(Result::ok), Some(201));
    let comment = sim.read(|s| s.comments_on(world::WIDGETS, 17)[0].body.clone());
    assert_eq!(comment, "from another task");

    let never = sim.wait_for(Duration::from_millis(20), |_| false).await;
    assert!(matches!(never, Err(SimError::Timeout(_))));
}

#[tokio::test]
async fn the_control_api_drives_a_standalone_sim() {
    let (sim, _, mut receiver) = start_with_receiver().await;
    let client = reqwest::Client::new();
    let base = sim.base_url().to_owned();
    let response = client
        .post(format!("{base}/_sim/repos/acme/widgets/issues/17/comments"))
        .json(&json!({"user": "octo-lead", "body": "/bg-agent upgrade lodash 4.17.21"}))
        .send()
        .await
        .expect("control API");
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("JSON");
    let (_, payload) = receiver.next().await;
    assert_eq!(payload["comment"]["id"], result["id"]);
    let unknown_user = client
        .post(format!("{base}/_sim/repos/acme/widgets/issues/17/comments"))
        .json(&json!({"user": "nobody", "body": "hi"}))
        .send()
        .await
        .expect("control API");
    assert_eq!(unknown_user.status(), 404);

    let token: Value = client
        .post(format!("{base}/_sim/tokens"))
        .json(&json!({"installation_id": world::INSTALLATION_ID, "permissions": {"contents": "read"}}))
        .send()
        .await
        .expect("control API")
        .json()
        .await
        .expect("JSON");
    let token = token["token"].as_str().expect("token");
    assert_eq!(
        get(&sim, "/repos/acme/widgets/contents/README.md", token)
            .await
            .status,
        200
    );
    assert_eq!(
        get(&sim, "/repos/acme/widgets/issues/17", token)
            .await
            .status,
        403
    );

    let fault = client
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"method": "GET", "path": "/repos/acme/*", "kind": "server_error", "status": 502}))
        .send()
        .await
        .expect("control API");
    assert_eq!(fault.status(), 200);
    assert_eq!(get(&sim, "/repos/acme/widgets", token).await.status, 502);
    assert_eq!(get(&sim, "/repos/acme/widgets", token).await.status, 200);

    let state: Value = client
        .get(format!("{base}/_sim/state"))
        .send()
        .await
        .expect("control API")
        .json()
        .await
        .expect("JSON");
    assert_eq!(state["comments"][0]["author"], "octo-lead");
    assert!(state.get("tokens").is_none(), "tokens are not dumped");
    let raw = client
        .get(format!(
            "{base}/_sim/raw/acme/widgets/src/index.js?ref=main"
        ))
        .send()
        .await
        .expect("control API");
    assert!(raw.text().await.unwrap_or_default().contains("lodash"));
}

#[tokio::test]
async fn seeding_api_builds_other_worlds() {
    let sim = GitHubSim::start(SimConfig::default())
        .await
        .expect("starts");
    let installation = sim.add_installation("initech");
    let repo = sim
        .add_repository(
            installation,
            "initech",
            "tps",
            &[("reports/cover.txt", b"cover sheet\n")],
        )
        .await
        .expect("repo");
    assert_eq!(repo.full_name(), "initech/tps");
    assert!(repo.git_dir.join("HEAD").is_file());
    let duplicate = sim
        .add_repository(installation, "initech", "tps", &[])
        .await;
    assert!(duplicate.is_err());
    sim.add_user("peter");
    sim.set_permission("initech/tps", "peter", Some(Role::Write))
        .expect("role");
    let number = sim
        .create_issue("initech/tps", "Fix the printer", "PC load letter", "peter")
        .expect("issue");
    assert_eq!(number, 1);
    let permissions = Permissions::new([("issues", Access::Read)]);
    let token = sim
        .mint_token(installation, Some(&[repo.id]), Some(permissions))
        .expect("token");
    let issue = get(&sim, "/repos/initech/tps/issues/1", &token).await;
    assert_eq!(issue.body["title"], "Fix the printer");
    assert_eq!(issue.body["author_association"], "COLLABORATOR");
    let file = get(
        &sim,
        "/repos/initech/tps/contents/reports/cover.txt",
        &token,
    )
    .await;
    assert_eq!(file.status, 403, "no contents permission");
    assert!(
        sim.mint_token(installation, Some(&[world::WIDGETS_ID]), None)
            .is_err()
    );
}

#[tokio::test]
async fn octocrab_itself_talks_to_the_sim() {
    use octocrab::models::{AppId, InstallationId, reactions::ReactionContent};
    use octocrab::params::checks::{CheckRunConclusion, CheckRunOutput, CheckRunStatus};
    use octocrab::params::repos::Reference;

    let (sim, seeded) = start().await;
    let key = EncodingKey::from_rsa_pem(sim.app_private_key_pem().as_bytes()).expect("key");
    let app = octocrab::Octocrab::builder()
        .base_uri(sim.base_url())
        .expect("base URI")
        .app(AppId(world::APP_ID), key)
        .build()
        .expect("client");
    let installations = app
        .apps()
        .installations()
        .send()
        .await
        .expect("installations");
    assert_eq!(installations.items.len(), 1);
    let crab = app
        .installation(InstallationId(seeded.installation_id))
        .expect("installation client");
    let repo = crab
        .repos("acme", "widgets")
        .get()
        .await
        .expect("repository");
    assert_eq!(repo.default_branch.as_deref(), Some("main"));
    let main = crab
        .repos("acme", "widgets")
        .get_ref(&Reference::Branch("main".into()))
        .await
        .expect("ref");
    let sha = match main.object {
        octocrab::models::repos::Object::Commit { sha, .. } => sha,
        other => panic!("unexpected {other:?}"),
    };
    let mut files = crab
        .repos("acme", "widgets")
        .get_content()
        .path("package.json")
        .r#ref("main")
        .send()
        .await
        .expect("contents");
    let file = files.take_items().pop().expect("one file");
    assert!(
        file.decoded_content()
            .unwrap_or_default()
            .contains("lodash")
    );

    let issues = crab.issues("acme", "widgets");
    assert_eq!(issues.get(17).await.expect("issue").title, "Upgrade lodash");
    let comment = issues.create_comment(17, "On it").await.expect("comment");
    issues
        .create_comment_reaction(comment.id, ReactionContent::Rocket)
        .await
        .expect("reaction");
    issues
        .add_labels(17, &["bg-agent:running".to_owned()])
        .await
        .expect("labels");

    let checks = crab.checks("acme", "widgets");
    let run = checks
        .create_check_run("bg-agent", sha.clone())
        .status(CheckRunStatus::InProgress)
        .send()
        .await
        .expect("check run");
    let output = CheckRunOutput {
        title: "upgrade lodash".into(),
        summary: "done".into(),
        text: None,
        annotations: Vec::new(),
        images: Vec::new(),
    };
    checks
        .update_check_run(run.id)
        .conclusion(CheckRunConclusion::Success)
        .output(output)
        .send()
        .await
        .expect("update");
    let listed = checks
        .list_check_runs_for_git_ref(Reference::Branch("main".into()).into())
        .send()
        .await
        .expect("check runs by branch");
    assert_eq!(listed.total_count, 1);
    let pulls = crab
        .pulls("acme", "widgets")
        .list()
        .send()
        .await
        .expect("pulls");
    assert!(pulls.items.is_empty());

    let snapshot = sim.snapshot();
    assert_eq!(snapshot.comments_on(world::WIDGETS, 17).len(), 1);
    assert_eq!(snapshot.check_runs[0].history.len(), 2);
    assert!(
        snapshot.requests.iter().all(|r| r.status < 400),
        "{:?}",
        snapshot.requests
    );
}
