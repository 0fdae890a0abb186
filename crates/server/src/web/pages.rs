//! `GET /tasks/{id}`: a read-only page per task (state, phase, progress, validation, log
//! tail, pull request), where check runs and comments link.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::store::Store;
use bg_agent_core::task::render;

const PAGE_LOG_LINES: i64 = 200;

#[derive(Clone)]
pub struct PagesState {
    pub store: Store,
    pub public_url: String,
}

pub async fn task_page(State(state): State<PagesState>, Path(id): Path<i64>) -> Response {
    let loaded = async {
        let Some(task) = state.store.task(id.into()).await? else {
            return Ok(None);
        };
        let details = state.store.task_details(&task, PAGE_LOG_LINES).await?;
        Ok::<_, crate::store::StoreError>(Some((task, details)))
    }
    .await;
    match loaded {
        Ok(Some((task, details))) => {
            let page_url = render::page_url(&state.public_url, id.into());
            Html(render::task_page(&task, &details.context(&page_url))).into_response()
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
