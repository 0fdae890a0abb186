//! The HTTP router: webhook intake, the runners' reports, task pages and health.

pub mod pages;
pub mod runner_api;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::config::WebhookSecrets;
use crate::engine::Signal;
use crate::store::Store;
use crate::webhook::MAX_PAYLOAD_BYTES;
use crate::webhook::inbox::{IntakeWriter, WebhookState, receive};
use pages::PagesState;
use runner_api::RunnerApiState;

pub fn router(
    store: Store,
    secrets: Arc<WebhookSecrets>,
    writer: IntakeWriter,
    signal: Signal,
    public_url: String,
) -> Router {
    let webhook = Router::new()
        .route("/webhook", post(receive))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .with_state(WebhookState { secrets, writer });
    let runners = Router::new()
        .route(
            "/internal/tasks/{id}/events",
            post(runner_api::receive_report),
        )
        .layer(DefaultBodyLimit::max(runner_api::MAX_REPORT_BYTES))
        .with_state(RunnerApiState {
            store: store.clone(),
            signal,
        });
    let pages = Router::new()
        .route("/tasks/{id}", get(pages::task_page))
        .with_state(PagesState {
            store: store.clone(),
            public_url,
        });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(store)
        .merge(webhook)
        .merge(runners)
        .merge(pages)
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The database answers (within 2 s).
async fn readyz(State(store): State<Store>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer within 2 s");
            (StatusCode::SERVICE_UNAVAILABLE, "database did not answer")
        }
    }
}
