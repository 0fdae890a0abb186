//! `/_sim/`: a small control API for driving a standalone simulator with curl
//! (and later `bg-agent demo`): act as users, which sends webhooks, mint
//! tokens, inject faults, and dump the state. Local use only: no auth.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::actions::{self, Triggered};
use super::faults::{Fault, FaultId, FaultKind, FaultRule};
use super::render::error_body;
use super::server::{Shared, next_fault_id};
use super::state::{Access, Permissions};
use super::{SimError, mint_token};

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/state", get(dump_state))
        .route("/violations", get(violations))
        .route("/app", get(app_info))
        .route("/tokens", post(create_token))
        .route("/ping", post(ping))
        .route("/oauth/approver", post(set_approver))
        .route("/oauth/tokens", post(user_token))
        .route("/repos/{owner}/{repo}/issues", post(open_issue))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(comment),
        )
        .route("/repos/{owner}/{repo}/issues/{number}/labels", post(label))
        .route("/comments/{id}", patch(edit_comment))
        .route("/check-runs/{id}/rerequest", post(rerequest))
        .route("/check-runs/{id}/requested-action", post(requested_action))
        .route("/installations/{id}/created", post(installation_created))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/raw/{owner}/{repo}/{*path}", get(raw))
}

struct ControlError(SimError);

impl From<SimError> for ControlError {
    fn from(err: SimError) -> Self {
        Self(err)
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            SimError::UnknownRepository(_)
            | SimError::UnknownInstallation(_)
            | SimError::UnknownUser(_)
            | SimError::UnknownIssue(_)
            | SimError::UnknownComment(_)
            | SimError::UnknownCheckRun(_)
            | SimError::UnknownDelivery(_) => StatusCode::NOT_FOUND,
            SimError::Invalid(_) | SimError::InvalidWebhook(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(error_body(&self.0.to_string()))).into_response()
    }
}

type ControlResult = Result<Json<Value>, ControlError>;

fn triggered(result: Triggered) -> ControlResult {
    Ok(Json(json!(result)))
}

async fn dump_state(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.read(|s| json!(s)))
}

async fn violations(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.read(|s| json!(s.violations)))
}

async fn app_info(State(shared): State<Arc<Shared>>) -> ControlResult {
    let (id, slug) = shared.read(|s| (s.app.id, s.app.slug.clone()));
    let jwt = shared
        .keys
        .sign_app_jwt(id)
        .map_err(|e| SimError::Keys(e.to_string()))?;
    Ok(Json(json!({
        "id": id,
        "slug": slug,
        "private_key_pem": shared.keys.private_pem(),
        "jwt": jwt,
        "installations": shared.read(|s| s.installations.keys().copied().collect::<Vec<_>>()),
    })))
}

#[derive(Deserialize)]
struct TokenRequest {
    installation_id: u64,
    repository_ids: Option<Vec<u64>>,
    permissions: Option<std::collections::BTreeMap<String, Access>>,
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<TokenRequest>,
) -> ControlResult {
    let permissions = request.permissions.map(Permissions);
    let token = mint_token(
        &shared,
        request.installation_id,
        request.repository_ids.as_deref(),
        permissions,
    )?;
    Ok(Json(json!({"token": token})))
}

#[derive(Deserialize)]
struct ApproverRequest {
    /// Who is "signed in to GitHub" and approves sign-ins; `null`: nobody.
    login: Option<String>,
}

/// Who approves `/login/oauth/authorize` from now on.
async fn set_approver(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<ApproverRequest>,
) -> ControlResult {
    shared.mutate(|s| s.oauth.approver = request.login.clone());
    Ok(Json(json!({"approver": request.login})))
}

#[derive(Deserialize)]
struct UserTokenRequest {
    login: String,
}

/// A `ghu_` user token for a user, as sign-in would give.
async fn user_token(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<UserTokenRequest>,
) -> ControlResult {
    let token = shared.mutate(|s| s.oauth.mint(&request.login));
    Ok(Json(json!({"token": token})))
}

async fn ping(State(shared): State<Arc<Shared>>) -> ControlResult {
    triggered(actions::ping(&shared).await?)
}

#[derive(Deserialize)]
struct NewIssue {
    user: String,
    title: String,
    #[serde(default)]
    body: Option<String>,
}

async fn open_issue(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    Json(request): Json<NewIssue>,
) -> ControlResult {
    let full_name = format!("{owner}/{repo}");
    let result = actions::open_issue(
        &shared,
        &full_name,
        &request.title,
        request.body.as_deref(),
        &request.user,
    )
    .await?;
    triggered(result)
}

#[derive(Deserialize)]
struct NewComment {
    user: String,
    body: String,
}

async fn comment(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Json(request): Json<NewComment>,
) -> ControlResult {
    let full_name = format!("{owner}/{repo}");
    triggered(actions::comment(&shared, &full_name, number, &request.user, &request.body).await?)
}

#[derive(Deserialize)]
struct CommentEdit {
    body: String,
}

async fn edit_comment(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(request): Json<CommentEdit>,
) -> ControlResult {
    triggered(actions::edit_comment(&shared, id, &request.body).await?)
}

#[derive(Deserialize)]
struct NewLabel {
    user: String,
    label: String,
}

async fn label(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Json(request): Json<NewLabel>,
) -> ControlResult {
    let full_name = format!("{owner}/{repo}");
    triggered(
        actions::label_issue(&shared, &full_name, number, &request.user, &request.label).await?,
    )
}

#[derive(Deserialize)]
struct Sender {
    user: String,
}

async fn rerequest(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(request): Json<Sender>,
) -> ControlResult {
    triggered(actions::rerequest_check_run(&shared, id, &request.user).await?)
}

#[derive(Deserialize)]
struct ActionClick {
    user: String,
    identifier: String,
}

async fn requested_action(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(request): Json<ActionClick>,
) -> ControlResult {
    let result =
        actions::request_check_run_action(&shared, id, &request.user, &request.identifier).await?;
    triggered(result)
}

async fn installation_created(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(request): Json<Sender>,
) -> ControlResult {
    triggered(actions::installation_created(&shared, id, &request.user).await?)
}

/// `{"method": "POST", "path": "/repos/*/*/check-runs", "times": 2, "kind": "server_error", "status": 502}`;
/// kinds: `server_error` (`status`), `secondary_rate_limit` / `too_many_requests`
/// (`retry_after`), `primary_rate_limit` (`reset_after`), `latency` (`latency_ms`).
#[derive(Deserialize)]
struct FaultRequest {
    #[serde(default = "any")]
    method: String,
    #[serde(default = "any")]
    path: String,
    #[serde(default = "once")]
    times: usize,
    kind: String,
    status: Option<u16>,
    retry_after: Option<u64>,
    reset_after: Option<u64>,
    latency_ms: Option<u64>,
}

fn any() -> String {
    "*".into()
}

fn once() -> usize {
    1
}

async fn add_fault(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<FaultRequest>,
) -> ControlResult {
    let kind = match request.kind.as_str() {
        "server_error" => FaultKind::ServerError(request.status.unwrap_or(500)),
        "secondary_rate_limit" => FaultKind::SecondaryRateLimit {
            retry_after_secs: request.retry_after.unwrap_or(60),
        },
        "too_many_requests" => FaultKind::TooManyRequests {
            retry_after_secs: request.retry_after.unwrap_or(60),
        },
        "primary_rate_limit" => FaultKind::PrimaryRateLimit {
            reset_after_secs: request.reset_after.unwrap_or(60),
        },
        "latency" => FaultKind::Latency(Duration::from_millis(request.latency_ms.unwrap_or(500))),
        other => return Err(SimError::Invalid(format!("unknown fault kind {other:?}")).into()),
    };
    let id = FaultId(next_fault_id(&shared));
    let fault = Fault::new(&request.method, &request.path, kind).times(request.times);
    shared.mutate(|s| s.faults.push(FaultRule::new(id, fault)));
    Ok(Json(json!({"id": id})))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.mutate(|s| s.faults.clear());
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RawQuery {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// A file's bytes (the `download_url` of contents responses).
async fn raw(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo, path)): Path<(String, String, String)>,
    Query(query): Query<RawQuery>,
) -> Response {
    let Some(record) = shared.read(|s| s.repo_by_name(&owner, &repo).cloned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let git_ref = query.git_ref.unwrap_or(record.default_branch.clone());
    let git = &shared.git;
    let blob = async {
        let commit = git.resolve_commit(&record.git_dir, &git_ref).await?;
        let Some(commit) = commit else {
            return Ok(None);
        };
        match git.entry(&record.git_dir, &commit, &path).await? {
            Some(entry) if entry.kind == "blob" => {
                git.blob(&record.git_dir, &entry.sha).await.map(Some)
            }
            _ => Ok(None),
        }
    };
    match blob.await {
        Ok(Some(bytes)) => bytes.into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err::<_, super::git::GitError>(e) => {
            tracing::error!(error = %e, "github-sim raw file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
