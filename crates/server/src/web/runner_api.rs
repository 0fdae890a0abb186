//! `POST /internal/tasks/{id}/events`: where runners report. Authenticated by the task's
//! own secret (only its hash is stored, and it is cleared when the task ends, so a leaked
//! secret is useless afterwards); each report is applied once, by sequence number.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::engine::Signal;
use crate::store::Store;
use crate::store::runs::ReportApplied;
use bg_agent_core::protocol::{Redactor, RunnerEvent, RunnerReport};

/// Largest report accepted (a batch of log lines, a validation output tail).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct RunnerApiState {
    pub store: Store,
    pub signal: Signal,
    /// Opens the task's agent credential, whose value is redacted from its reports too.
    pub credential_keys: Option<crate::credentials::Keyring>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn receive_report(
    State(state): State<RunnerApiState>,
    Path(task_id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = tracing::info_span!("runner_report", task = task_id);
    handle_report(state, task_id, headers, body)
        .instrument(span)
        .await
}

async fn handle_report(
    state: RunnerApiState,
    task_id: i64,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|s| !s.is_empty())
    else {
        tracing::warn!("runner report without a bearer secret");
        return error(StatusCode::UNAUTHORIZED, "missing bearer secret");
    };
    let stored = match state.store.runner_secret_hash(task_id.into()).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the runner secret");
            return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
        }
    };
    let Some(stored) = stored else {
        // Unknown or ended: either way the runner has nothing more to say.
        return error(StatusCode::GONE, "this task is not running");
    };
    if !bool::from(Sha256::digest(secret.as_bytes()).as_slice().ct_eq(&stored)) {
        tracing::warn!("runner report with a wrong secret");
        return error(StatusCode::UNAUTHORIZED, "wrong secret for this task");
    }
    let report: RunnerReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(error = %e, "malformed runner report");
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("malformed report: {e}"),
            );
        }
    };
    let finished = matches!(report.event, RunnerEvent::Finished(_));
    let mut secrets = vec![SecretString::from(secret.to_owned())];
    if !matches!(report.event, RunnerEvent::Phase { .. })
        && let Some(credential) = agent_credential(&state, task_id).await
    {
        secrets.push(credential);
    }
    let redactor = Redactor::new(secrets.iter().map(|s| s.expose_secret()));
    let applied = state
        .store
        .apply_runner_report(task_id.into(), &report, |line| redactor.redact(line))
        .await;
    match applied {
        Ok(ReportApplied::Applied(task)) => {
            if finished {
                tracing::info!(task = task_id, state = %task.state, "runner finished");
            }
            state.signal.wake();
            crate::metrics::runner_report("applied");
            Json(json!({ "applied": true, "state": task.state })).into_response()
        }
        Ok(ReportApplied::Duplicate) => {
            crate::metrics::runner_report("duplicate");
            Json(json!({ "applied": false, "duplicate": true })).into_response()
        }
        Ok(ReportApplied::Ended) => {
            crate::metrics::runner_report("ended");
            error(StatusCode::GONE, "this task is not running")
        }
        Err(e) => {
            tracing::error!(task = task_id, error = %e, "cannot apply a runner report");
            error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// The value of the agent credential the task was given, if any: the runner redacts it,
/// and the server does again, as with its other secrets. A credential that cannot be read
/// is logged (never its value) and the report goes on with the other redactions.
async fn agent_credential(state: &RunnerApiState, task_id: i64) -> Option<SecretString> {
    let keys = state.credential_keys.as_ref()?;
    let stored = match state.store.task_credential(task_id.into()).await {
        Ok(stored) => stored?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the task's agent credential to redact it");
            return None;
        }
    };
    match keys.open(&stored.scope, &stored.sealed) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the task's agent credential to redact it");
            None
        }
    }
}
