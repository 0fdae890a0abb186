//! The HTTP front: every request is classified by credential, counted in
//! flight, offered to the injected faults, then routed to git smart HTTP or to
//! the REST handlers, with request and response bodies held to GitHub's schema.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;
use tokio::sync::watch;

use super::auth::{AppKeys, Presented, presented};
use super::faults::{FaultId, FaultKind, FaultRule};
use super::git::{CgiRequest, GitStore};
use super::render::{Render, error_body};
use super::rest;
use super::state::{
    Access, Credential, RequestRecord, SimState, TokenGrant, TokenScope, ViolationKind,
    ViolationRecord,
};
use crate::openapi::{OpenApiDoc, OpenApiError, SchemaViolations};

/// Largest request body accepted (git pushes included).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// GitHub's hourly request budget per installation, reported in `x-ratelimit-*`.
const RATE_LIMIT: usize = 5000;

/// What every part of the sim shares.
pub(crate) struct Shared {
    pub base_url: String,
    /// Where the REST API is served: `base_url` plus [`Self::api_prefix`].
    pub api_url: String,
    /// Empty, or a path prefix the REST API is served under (`/api/v3`, as on GitHub
    /// Enterprise Server); git and `/_sim` stay at the root.
    pub api_prefix: String,
    state: Mutex<SimState>,
    changes: watch::Sender<u64>,
    pub git: GitStore,
    pub keys: AppKeys,
    pub webhook_url: Mutex<Option<String>>,
    pub webhook_secret: Vec<u8>,
    pub http: reqwest::Client,
    pub next_fault_id: AtomicU64,
    pub npm: super::npm::NpmRegistry,
    /// Standalone mode logs violations instead of failing a test.
    pub panic_on_violations: bool,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base_url: String,
        api_prefix: String,
        state: SimState,
        git: GitStore,
        keys: AppKeys,
        webhook_url: Option<String>,
        webhook_secret: Vec<u8>,
        panic_on_violations: bool,
    ) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            api_url: format!("{base_url}{api_prefix}"),
            base_url,
            api_prefix,
            state: Mutex::new(state),
            changes,
            git,
            keys,
            webhook_url: Mutex::new(webhook_url),
            webhook_secret,
            // GitHub gives a webhook receiver 10 s to answer.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            next_fault_id: AtomicU64::new(1),
            npm: Default::default(),
            panic_on_violations,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn read<R>(&self, f: impl FnOnce(&SimState) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and wakes everyone waiting for a change.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        let result = f(&mut self.lock());
        self.changes.send_modify(|version| *version += 1);
        result
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn render<R>(&self, f: impl FnOnce(&Render<'_>) -> R) -> R {
        let state = self.lock();
        f(&Render {
            base: &self.base_url,
            state: &state,
        })
    }

    pub fn record_violation(&self, violation: ViolationRecord) {
        tracing::warn!(%violation, "github-sim: schema violation");
        self.mutate(|s| s.violations.push(violation));
    }

    /// The REST API path of a request path: the path itself, or what follows the API
    /// prefix; `None` outside the prefix.
    pub fn api_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.api_prefix.is_empty() {
            return Some(path);
        }
        path.strip_prefix(self.api_prefix.as_str())
            .filter(|rest| rest.starts_with('/'))
    }

    pub fn webhook_url(&self) -> Option<String> {
        self.webhook_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Who is calling, with credentials already checked.
    pub fn caller(&self, presented: &Presented) -> Caller {
        match presented {
            Presented::Nothing => Caller::Anonymous,
            Presented::Malformed => Caller::Rejected("Bad credentials".into()),
            Presented::Jwt(jwt) => {
                let app_id = self.read(|s| s.app.id);
                match self.keys.verify(jwt, app_id) {
                    Ok(()) => Caller::App,
                    Err(e) => Caller::Rejected(e.to_string()),
                }
            }
            Presented::Token(token) => {
                let (grant, user) = self.read(|s| {
                    (
                        s.tokens.get(token).cloned(),
                        s.oauth
                            .token_user(token)
                            .and_then(|login| s.user(login))
                            .cloned(),
                    )
                });
                match (grant, user) {
                    (Some(grant), _) if grant.expires_at > Utc::now() => {
                        Caller::Installation(grant)
                    }
                    (_, Some(user)) => Caller::User(user),
                    _ => Caller::Rejected("Bad credentials".into()),
                }
            }
        }
    }
}

/// A request's authenticated identity.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Anonymous,
    App,
    Installation(TokenGrant),
    /// A user-to-server token (`ghu_`) from sign-in.
    User(super::state::UserRecord),
    /// Credentials were presented and refused, with GitHub's message.
    Rejected(String),
}

impl Caller {
    fn credential(&self) -> Credential {
        match self {
            Self::Anonymous => Credential::Anonymous,
            Self::App => Credential::AppJwt,
            Self::Installation(grant) => Credential::InstallationToken {
                installation_id: grant.installation_id,
            },
            Self::User(user) => Credential::UserToken { user_id: user.id },
            Self::Rejected(_) => Credential::Rejected,
        }
    }

    fn installation_id(&self) -> Option<u64> {
        match self {
            Self::Installation(grant) => Some(grant.installation_id),
            _ => None,
        }
    }
}

/// Counts a request in flight for its installation while alive.
struct InFlightGuard {
    shared: Arc<Shared>,
    installation_id: u64,
}

impl InFlightGuard {
    fn enter(shared: &Arc<Shared>, installation_id: u64) -> Self {
        shared.mutate(|s| {
            let entry = s.in_flight.entry(installation_id).or_default();
            entry.current += 1;
            entry.max = entry.max.max(entry.current);
        });
        Self {
            shared: Arc::clone(shared),
            installation_id,
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.shared.mutate(|s| {
            if let Some(entry) = s.in_flight.get_mut(&self.installation_id) {
                entry.current = entry.current.saturating_sub(1);
            }
        });
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/_sim", super::control::router())
        .nest("/npm", super::npm::router())
        .route(
            "/login/oauth/authorize",
            axum::routing::get(super::oauth::authorize),
        )
        .route(
            "/login/oauth/access_token",
            axum::routing::post(super::oauth::access_token),
        )
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let received = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let caller = shared.caller(&presented(&parts.headers));
    let _in_flight = caller
        .installation_id()
        .map(|id| InFlightGuard::enter(&shared, id));

    let fault_path = shared.api_path(&path).unwrap_or(&path);
    let fault = take_fault(&shared, method.as_str(), fault_path);
    let fault_note = fault.as_ref().map(|(_, kind)| kind.describe());
    let mut response = match fault {
        Some((_, FaultKind::Latency(delay))) => {
            tokio::time::sleep(delay).await;
            route(&shared, &parts, body, &caller, remote).await
        }
        Some((id, FaultKind::Hold)) => {
            wait_until_released(&shared, id).await;
            route(&shared, &parts, body, &caller, remote).await
        }
        Some((_, kind)) => fault_response(&kind, &caller),
        None => route(&shared, &parts, body, &caller, remote).await,
    };
    add_standard_headers(&shared, &caller, response.headers_mut());
    let status = response.status().as_u16();
    tracing::debug!(%method, path = %path_and_query, status, "github-sim request");
    shared.mutate(|s| {
        s.requests.push(RequestRecord {
            at: Utc::now(),
            duration_secs: received.elapsed().as_secs_f64(),
            method: method.to_string(),
            path: path_and_query,
            status,
            credential: caller.credential(),
            token_scope: match &caller {
                Caller::Installation(grant) => Some(TokenScope {
                    repository_ids: grant
                        .repository_ids
                        .as_ref()
                        .map(|ids| ids.iter().copied().collect()),
                    permissions: grant.permissions.clone(),
                }),
                _ => None,
            },
            fault: fault_note,
        });
    });
    response
}

/// Reads the body and hands the request to git smart HTTP or the REST API.
async fn route(
    shared: &Arc<Shared>,
    parts: &axum::http::request::Parts,
    body: Body,
    caller: &Caller,
    remote: SocketAddr,
) -> Response {
    // Fails over the limit (or when the client went away, and then nobody reads the answer).
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").into_response();
    };
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    match git_route(path) {
        Some(route) => {
            git_http(
                shared,
                &parts.method,
                route,
                query,
                &parts.headers,
                &bytes,
                caller,
                remote,
            )
            .await
        }
        None => match shared.api_path(path) {
            Some(api_path) => {
                rest_call(shared, &parts.method, api_path, query, &bytes, caller).await
            }
            None => Reply::not_found().into_response(),
        },
    }
}

/// Takes one firing of the first fault that matches, if any.
fn take_fault(shared: &Shared, method: &str, path: &str) -> Option<(FaultId, FaultKind)> {
    let matches = shared.read(|s| s.faults.iter().any(|f| f.matches(method, path)));
    if !matches {
        return None;
    }
    shared.mutate(|s| {
        let rule: &mut FaultRule = s.faults.iter_mut().find(|f| f.matches(method, path))?;
        rule.remaining -= 1;
        rule.fired += 1;
        Some((rule.id, rule.kind.clone()))
    })
}

/// Waits until fault `id` is released or removed, re-checking on every state change.
async fn wait_until_released(shared: &Shared, id: FaultId) {
    let mut changes = shared.subscribe();
    loop {
        // Marked seen before checking, so a release after the check wakes us.
        changes.borrow_and_update();
        let held = shared.read(|s| s.faults.iter().any(|f| f.id == id && !f.released));
        if !held || changes.changed().await.is_err() {
            return;
        }
    }
}

fn fault_response(kind: &FaultKind, caller: &Caller) -> Response {
    const SECONDARY: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.";
    let secondary_docs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
    let body = |message: String, docs: &str| serde_json::json!({"message": message, "documentation_url": docs});
    let (status, json, headers): (StatusCode, Value, Vec<(&str, String)>) = match kind {
        FaultKind::ServerError(code) | FaultKind::Refuse(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = status
                .canonical_reason()
                .unwrap_or("Server Error")
                .to_owned();
            (status, error_body(&message), Vec::new())
        }
        FaultKind::SecondaryRateLimit { retry_after_secs } => (
            StatusCode::FORBIDDEN,
            body(SECONDARY.to_owned(), secondary_docs),
            vec![("retry-after", retry_after_secs.to_string())],
        ),
        FaultKind::TooManyRequests { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            body(SECONDARY.to_owned(), secondary_docs),
            vec![("retry-after", retry_after_secs.to_string())],
        ),
        FaultKind::PrimaryRateLimit { reset_after_secs } => {
            let subject = match caller {
                Caller::Installation(grant) => {
                    format!("installation ID {}", grant.installation_id)
                }
                _ => "this client".to_owned(),
            };
            let reset = super::auth::unix_now()
                .saturating_add(i64::try_from(*reset_after_secs).unwrap_or(i64::MAX));
            (
                StatusCode::FORBIDDEN,
                body(
                    format!("API rate limit exceeded for {subject}."),
                    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits",
                ),
                vec![
                    ("x-ratelimit-limit", RATE_LIMIT.to_string()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-used", RATE_LIMIT.to_string()),
                    ("x-ratelimit-reset", reset.to_string()),
                    ("x-ratelimit-resource", "core".to_owned()),
                ],
            )
        }
        // Delays, handled before a response is built.
        FaultKind::Latency(_) | FaultKind::Hold => (StatusCode::OK, Value::Null, Vec::new()),
    };
    let mut reply = Reply::json(status, json);
    for (name, value) in headers {
        reply = reply.header(name, &value);
    }
    reply.into_response()
}

fn add_standard_headers(shared: &Shared, caller: &Caller, headers: &mut HeaderMap) {
    let request_id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    if let Ok(value) = HeaderValue::from_str(&request_id[..20]) {
        headers.insert("x-github-request-id", value);
    }
    if headers.contains_key("x-ratelimit-remaining") {
        return;
    }
    let Some(installation_id) = caller.installation_id() else {
        return;
    };
    let used = shared.read(|s| {
        s.requests
            .iter()
            .filter(|r| r.credential == Credential::InstallationToken { installation_id })
            .count()
    }) + 1;
    let reset = super::auth::unix_now() + 3600;
    for (name, value) in [
        ("x-ratelimit-limit", RATE_LIMIT.to_string()),
        (
            "x-ratelimit-remaining",
            RATE_LIMIT.saturating_sub(used).to_string(),
        ),
        ("x-ratelimit-used", used.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// A JSON (or empty) answer with extra headers.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub fn created(body: Value) -> Self {
        Self::json(StatusCode::CREATED, body)
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn error(status: StatusCode, message: &str) -> Self {
        Self::json(status, error_body(message))
    }

    pub fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "Not Found")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.push((name, value));
        }
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => {
                let mut response = (self.status, axum::Json(body)).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                response
            }
            None => self.status.into_response(),
        };
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Why a REST call failed, rendered as GitHub renders it.
#[derive(Debug)]
pub(crate) enum ApiError {
    NotFound,
    Unauthorized(String),
    /// 403 `Resource not accessible by integration` and the like.
    Forbidden(String),
    /// 422 with GitHub's `Validation Failed` shape.
    Validation {
        message: String,
        errors: Vec<Value>,
    },
    Internal(String),
}

impl ApiError {
    pub fn not_accessible() -> Self {
        Self::Forbidden("Resource not accessible by integration".into())
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// `Validation Failed` with one `{resource, field, code}` error.
    pub fn invalid_field(resource: &str, field: &str, code: &str, message: Option<&str>) -> Self {
        let mut error = serde_json::json!({"resource": resource, "field": field, "code": code});
        if let Some(message) = message {
            error["message"] = message.into();
        }
        Self::Validation {
            message: "Validation Failed".into(),
            errors: vec![error],
        }
    }

    pub fn into_reply(self) -> Reply {
        match self {
            Self::NotFound => Reply::not_found(),
            Self::Unauthorized(message) => Reply::error(StatusCode::UNAUTHORIZED, &message),
            Self::Forbidden(message) => Reply::error(StatusCode::FORBIDDEN, &message),
            Self::Validation { message, errors } => {
                let mut body = error_body(&message);
                if !errors.is_empty() {
                    body["errors"] = Value::Array(errors);
                }
                Reply::json(StatusCode::UNPROCESSABLE_ENTITY, body)
            }
            Self::Internal(message) => {
                tracing::error!(%message, "github-sim internal error");
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, &message)
            }
        }
    }
}

impl From<super::git::GitError> for ApiError {
    fn from(err: super::git::GitError) -> Self {
        Self::Internal(format!("git: {err}"))
    }
}

/// A REST request: schema check of the body, the handler, schema check of the answer.
async fn rest_call(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    bytes: &[u8],
    caller: &Caller,
) -> Response {
    let doc = OpenApiDoc::github_rest();
    let routed_path = route_multi_segment_ref(path);
    let path = routed_path.as_deref().unwrap_or(path);
    let Some(matched) = doc.match_path(path) else {
        return Reply::not_found().into_response();
    };
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(bytes) {
            Ok(body) => body,
            Err(e) => {
                let message = format!("Problems parsing JSON: {e}");
                return Reply::error(StatusCode::BAD_REQUEST, &message).into_response();
            }
        }
    };
    if let Some(reply) = check_request_body(shared, method, path, &body) {
        return reply.into_response();
    }
    let ctx = rest::Ctx {
        shared,
        method: method.as_str(),
        path,
        query: parse_query(query),
        matched: &matched,
        caller,
        body,
    };
    let reply = match rest::handle(&ctx).await {
        Ok(reply) => reply,
        Err(err) => err.into_reply(),
    };
    check_response_body(shared, method, path, &reply);
    reply.into_response()
}

/// A 422 when the body breaks the operation's schema (the violation is recorded).
fn check_request_body(shared: &Shared, method: &Method, path: &str, body: &Value) -> Option<Reply> {
    let doc = OpenApiDoc::github_rest();
    match doc.validate_request(method.as_str(), path, body) {
        Ok(()) => None,
        // Operations without a JSON body ignore what was sent, like GitHub.
        Err(SchemaViolations::Lookup(_)) => None,
        Err(violations) => {
            let details: Vec<String> = violations
                .violations()
                .iter()
                .map(ToString::to_string)
                .collect();
            shared.record_violation(ViolationRecord {
                kind: ViolationKind::Request,
                method: method.to_string(),
                path: path.to_owned(),
                message: violations.to_string(),
            });
            let message = format!("Invalid request.\n\n{}", details.join("\n"));
            Some(Reply::error(StatusCode::UNPROCESSABLE_ENTITY, &message))
        }
    }
}

/// Records a violation when the fake's own answer does not match the schema.
fn check_response_body(shared: &Shared, method: &Method, path: &str, reply: &Reply) {
    let doc = OpenApiDoc::github_rest();
    let status = reply.status.as_u16();
    let body = reply.body.clone().unwrap_or(Value::Null);
    let result = match doc.validate_response(method.as_str(), path, status, &body) {
        // Errors GitHub may answer anywhere (401, 403, 404, 422...) are not
        // always declared per operation; they still have GitHub's error shape.
        Err(SchemaViolations::Lookup(OpenApiError::UnknownStatus { .. })) if status >= 400 => {
            let component = if status == 422 {
                "validation-error"
            } else {
                "basic-error"
            };
            doc.validate_component(component, &body)
        }
        other => other,
    };
    if let Err(violations) = result {
        shared.record_violation(ViolationRecord {
            kind: ViolationKind::Response,
            method: method.to_string(),
            path: path.to_owned(),
            message: violations.to_string(),
        });
    }
}

/// GitHub routes `/commits/heads/main/check-runs` (a ref with slashes in the
/// middle of the path, as octocrab sends branch refs); the description's
/// matcher only lets a trailing parameter span segments, so the ref is
/// folded into one percent-encoded segment first.
fn route_multi_segment_ref(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/repos/")?;
    let mut parts = rest.splitn(4, '/');
    let (owner, repo, commits, tail) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let git_ref = tail.strip_suffix("/check-runs")?;
    (commits == "commits" && git_ref.contains('/')).then(|| {
        format!(
            "/repos/{owner}/{repo}/commits/{}/check-runs",
            git_ref.replace('/', "%2F")
        )
    })
}

pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let plus_decoded = |s: &str| super::render::decode_segment(&s.replace('+', " "));
            (plus_decoded(name), plus_decoded(value))
        })
        .collect()
}

/// `/{owner}/{repo}[.git]/{info/refs | git-upload-pack | git-receive-pack}`.
#[derive(Debug, Clone, Copy)]
struct GitRoute<'a> {
    owner: &'a str,
    repo: &'a str,
    service_path: &'a str,
}

fn git_route(path: &str) -> Option<GitRoute<'_>> {
    let trimmed = path.strip_prefix('/')?;
    let (owner, rest) = trimmed.split_once('/')?;
    let (repo, service_path) = rest.split_once('/')?;
    matches!(
        service_path,
        "info/refs" | "git-upload-pack" | "git-receive-pack"
    )
    .then_some(GitRoute {
        owner,
        repo: repo.strip_suffix(".git").unwrap_or(repo),
        service_path,
    })
}

fn git_error(status: StatusCode, message: &str, challenge: bool) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    if challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"GitHub\""),
        );
    }
    response
}

/// git smart HTTP: GitHub's auth rules in front of `git http-backend`.
#[allow(clippy::too_many_arguments)]
async fn git_http(
    shared: &Arc<Shared>,
    method: &Method,
    route: GitRoute<'_>,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    caller: &Caller,
    remote: SocketAddr,
) -> Response {
    let service = match (method, route.service_path) {
        (&Method::GET, "info/refs") => parse_query(query)
            .into_iter()
            .find(|(name, _)| name == "service")
            .map(|(_, value)| value),
        (&Method::POST, "git-upload-pack" | "git-receive-pack") => {
            Some(route.service_path.to_owned())
        }
        _ => None,
    };
    let push = match service.as_deref() {
        Some("git-upload-pack") => false,
        Some("git-receive-pack") => true,
        // GitHub speaks only the smart protocol.
        _ => {
            return git_error(
                StatusCode::FORBIDDEN,
                "Only the smart HTTP protocol is supported",
                false,
            );
        }
    };
    let grant = match caller {
        Caller::Installation(grant) => grant,
        Caller::Anonymous => {
            return git_error(StatusCode::UNAUTHORIZED, "Authentication required", true);
        }
        Caller::App | Caller::User(_) | Caller::Rejected(_) => {
            return git_error(
                StatusCode::UNAUTHORIZED,
                "Invalid username or token. Password authentication is not supported for Git operations.",
                true,
            );
        }
    };
    let repo = shared.read(|s| s.repo_by_name(route.owner, route.repo).cloned());
    let Some(repo) = repo.filter(|r| grant.covers_repo(r)) else {
        return git_error(StatusCode::NOT_FOUND, "Repository not found.", false);
    };
    let needed = if push { Access::Write } else { Access::Read };
    if !grant.permissions.allows("contents", needed) {
        let message = if push {
            "Write access to repository not granted."
        } else {
            "Read access to repository not granted."
        };
        return git_error(StatusCode::FORBIDDEN, message, false);
    }
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = CgiRequest {
        method: method.as_str(),
        path_info: format!("/{}/{}.git/{}", repo.owner, repo.name, route.service_path),
        query,
        content_type: header_text("content-type"),
        content_encoding: header_text("content-encoding"),
        git_protocol: header_text("git-protocol"),
        remote_user: "x-access-token",
        remote_addr: remote.ip().to_string(),
        body,
    };
    let cgi = match shared.git.http_backend(request).await {
        Ok(cgi) => cgi,
        Err(e) => {
            tracing::error!(error = %e, "git http-backend failed");
            return git_error(StatusCode::INTERNAL_SERVER_ERROR, "git failed", false);
        }
    };
    if push && method == Method::POST && cgi.status == 200 {
        shared.mutate(|s| {
            *s.pushes.entry(repo.id).or_default() += 1;
            if let Some(record) = s.repos.get_mut(&repo.id) {
                record.pushed_at = Utc::now();
            }
        });
    }
    let status = StatusCode::from_u16(cgi.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(cgi.body));
    *response.status_mut() = status;
    for (name, value) in cgi.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Next id for an injected fault.
pub(crate) fn next_fault_id(shared: &Shared) -> u64 {
    shared.next_fault_id.fetch_add(1, Ordering::Relaxed)
}
