//! `GET /tasks/{id}`: a read-only page per task (state, phase, progress, validation, log
//! tail, pull request), where check runs and comments link.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;

use crate::store::Store;
use crate::task::render::{self, RenderContext};

const PAGE_LOG_LINES: i64 = 200;

#[derive(Clone)]
pub struct PagesState {
    pub store: Store,
    pub public_url: String,
}

pub async fn task_page(State(state): State<PagesState>, Path(id): Path<i64>) -> Response {
    let loaded = async {
        let Some(task) = state.store.task(id).await? else {
            return Ok(None);
        };
        let validations = state.store.validations(id).await?;
        let log_tail = state.store.log_tail(id, PAGE_LOG_LINES).await?;
        let position = state.store.queue_position(id).await?;
        Ok::<_, crate::store::StoreError>(Some((task, validations, log_tail, position)))
    }
    .await;
    match loaded {
        Ok(Some((task, validations, log_tail, queue_position))) => {
            let page_url = render::page_url(&state.public_url, id);
            let cx = RenderContext {
                page_url: &page_url,
                now: Utc::now(),
                validations: &validations,
                log_tail: &log_tail,
                queue_position,
            };
            Html(render::task_page(&task, &cx)).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Html(format!("<p>No task #{id}.</p>")),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(task = id, error = %e, "cannot load task page");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}
