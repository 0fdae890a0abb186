//! The JSON API, `/api/v1`: tasks (create, list, read, logs with a live stream, retry,
//! cancel), an installation's templates and its model-provider credentials. The OpenAPI 3.1 document at
//! `/api/v1/openapi.json` is generated from the handlers' annotations ([`document`]), so
//! the router and the document are one list of routes.
//!
//! Handlers are thin: each parses, calls the function of the same name in [`tasks`],
//! [`templates`] or [`credentials`] (which the MCP tools and the settings page call too)
//! and answers. Errors are always
//! `{error, message, field?}` ([`ApiError`]); unknown `/api` routes answer 404 and a
//! wrong method 405, both in that shape; request bodies are bounded ([`MAX_BODY_BYTES`]).

pub mod credentials;
pub mod tasks;
pub mod templates;

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::Signal;
use crate::engine::tasks::{RequestError, TaskIntake};
use crate::store::{Store, StoreError};
use crate::web::auth::{AuthError, AuthState};

/// The largest request body the API reads: instructions, a template, parameters.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the API's handlers (and the MCP tools) work with.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// The same intake webhooks go through: one way to make, retry and cancel a task.
    pub intake: Arc<TaskIntake>,
    pub auth: AuthState,
    /// Wakes a live log stream when a runner reports.
    pub signal: Signal,
    pub public_url: String,
    /// Whether a coding agent is configured (`BG_AGENT_AGENT_COMMAND`).
    pub agent_available: bool,
    /// Ends live streams when the server stops, so shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// Model-provider credentials (the same manager as `bg-agent credentials`).
    pub credentials: crate::credentials::Manager,
}

impl FromRef<ApiState> for AuthState {
    fn from_ref(state: &ApiState) -> Self {
        state.auth.clone()
    }
}

/// Every error the API answers: a short, stable `error`, a sentence for people, and the
/// request field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Short and stable, e.g. `not found`, `invalid request`, `concurrent task limit reached`.
    pub error: String,
    pub message: String,
    /// The request field at fault (`instructions`, `template`, `parameters.version`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.to_owned(),
                message: message.into(),
                field: None,
            },
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid request", message).field(field)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        // The detail goes to the log, not to the client.
        tracing::error!(%error, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "the server could not answer; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        tracing::warn!(error = %e, "permission look-up failed");
        Self::new(
            StatusCode::BAD_GATEWAY,
            "GitHub unavailable",
            "could not check your permission with GitHub; try again",
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        match e {
            RequestError::NotInstalled => Self::new(
                StatusCode::NOT_FOUND,
                "not found",
                "the App is not installed on this repository",
            ),
            RequestError::EmptyInstructions => Self::invalid("instructions", message),
            RequestError::UnknownTemplate { .. } => Self::invalid("template", message),
            RequestError::BadParameter { name, .. } => Self::invalid(
                &name.map_or_else(|| "parameters".to_owned(), |n| format!("parameters.{n}")),
                message,
            ),
            RequestError::RepoConfig(_) => {
                Self::invalid(bg_agent_core::task::repo_config::PATH, message)
            }
            RequestError::Busy { .. } => Self::new(
                StatusCode::CONFLICT,
                "concurrent task limit reached",
                message,
            ),
            RequestError::NotRetryable { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "not retryable", message)
            }
            RequestError::AlreadyEnded { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "already ended", message)
            }
            RequestError::GitHub(e) => {
                tracing::warn!(error = %e, "GitHub call failed for an API request");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "GitHub unavailable",
                    "GitHub did not answer as expected; try again",
                )
            }
            RequestError::Store(e) => Self::internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                status,
                "payload too large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            );
        }
        let error = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported media type"
        } else {
            "invalid request"
        };
        Self::new(status, error, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid request",
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid request",
            rejection.body_text(),
        )
    }
}

/// `axum::Json` whose rejections answer in the API's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` whose rejections answer in the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejections answer in the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bg-agent",
        description = "Background coding tasks on GitHub repositories: create, follow, retry and cancel them, and manage an installation's templates and model-provider credentials. Authenticate with `Authorization: Bearer <GitHub user token>` (or the session cookie of the status page).",
        license(name = "MIT", identifier = "MIT"),
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "tasks", description = "Tasks: what was asked, how far it got, its log"),
        (name = "templates", description = "An installation's templates"),
        (name = "credentials", description = "An installation's model-provider credentials (write-only values)"),
    ),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A GitHub user access token (verified with GitHub)"))
                    .build(),
            ),
        );
    }
}

/// The API's routes with their descriptions: the one list both the router and the
/// document come from.
fn described() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::create_task))
        .routes(routes!(tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::get_task_logs))
        .routes(routes!(tasks::retry_task))
        .routes(routes!(tasks::cancel_task))
        .routes(routes!(templates::save_as_template))
        .routes(routes!(
            templates::list_templates,
            templates::create_template
        ))
        .routes(routes!(
            templates::get_template,
            templates::put_template,
            templates::delete_template
        ))
        .routes(routes!(credentials::list_credentials))
        .routes(routes!(
            credentials::get_credential,
            credentials::put_credential,
            credentials::delete_credential
        ))
        .routes(routes!(credentials::test_credential))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document of the API, generated from the handlers.
pub fn document() -> OpenApiDoc {
    described().split_for_parts().1
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_json()
        .unwrap_or_else(|e| format!(r#"{{"error":"internal error","message":"{e}"}}"#))
});

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "tasks",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
)]
async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// The API's router: its routes, a JSON 404 for any other `/api` path, JSON 405s, and
/// the body limit.
pub fn router(state: ApiState) -> Router {
    let (routes, _) = described().split_for_parts();
    routes
        .route("/api", any(unknown_route))
        .route("/api/{*rest}", any(unknown_route))
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found",
        "no such API route; see /api/v1/openapi.json",
    )
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        "this route does not take that method; see /api/v1/openapi.json",
    )
}
