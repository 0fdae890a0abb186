//! MCP tools at `/mcp` (streamable HTTP, the official SDK `rmcp`), so other agents can
//! drive background tasks: each tool calls the same function as its API route
//! ([`super::api::tasks`], [`super::api::templates`]), with the same authentication (the
//! request's `Authorization: Bearer`, checked per HTTP request before the SDK sees it)
//! and the same rules. An API error becomes an MCP error whose `data` is the API's
//! `{error, message, field?}`.
//!
//! Stateless: every POST stands alone (no session held in memory), so any replica can
//! answer any request.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Content, Implementation, ServerCapabilities, ServerInfo};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::api::tasks::{CreateTask, ListQuery, LogQuery, ParamValue};
use super::api::{ApiError, ApiState, MAX_BODY_BYTES, tasks, templates};
use super::auth::Viewer;

/// The MCP endpoint's router.
pub fn router(state: ApiState) -> Router {
    let tools = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(tools.clone())),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig {
            stateful_mode: false,
            cancellation_token: state.shutdown.child_token(),
            ..Default::default()
        },
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(state, authenticate))
}

/// Who is asking, checked as for the API and handed to the tools in the request's
/// extensions; the body bounded as the API's are.
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let viewer = match Viewer::from_request_parts(&mut parts, &state).await {
        Ok(viewer) => viewer,
        Err(rejection) => return rejection.into_response(),
    };
    parts.extensions.insert(viewer);
    let body = Body::new(http_body_util::Limited::new(body, MAX_BODY_BYTES));
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    }
    response
}

fn mcp_error(e: ApiError) -> ErrorData {
    let data = serde_json::to_value(&e.body).ok();
    let message = e.body.message.clone();
    match e.status {
        StatusCode::BAD_REQUEST => ErrorData::invalid_params(message, data),
        StatusCode::NOT_FOUND => ErrorData::resource_not_found(message, data),
        s if s.is_client_error() => ErrorData::invalid_request(message, data),
        _ => ErrorData::internal_error(message, data),
    }
}

fn json_result(value: &impl Serialize) -> Result<CallToolResult, ErrorData> {
    let value =
        serde_json::to_value(value).map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(CallToolResult::success(vec![Content::text(
        value.to_string(),
    )]))
}

fn viewer(parts: &axum::http::request::Parts) -> Result<&Viewer, ErrorData> {
    parts
        .extensions
        .get::<Viewer>()
        .ok_or_else(|| ErrorData::invalid_request("not signed in", None))
}

fn owner_name(repo: &str) -> Result<(&str, &str), ErrorData> {
    repo.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .ok_or_else(|| mcp_error(ApiError::invalid("repo", "must be owner/name")))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateTaskArgs {
    /// The repository, `owner/name`.
    pub repo: String,
    /// Free text for the coding agent (or give `template`).
    #[serde(default)]
    pub instructions: Option<String>,
    /// A template's name (see `list_templates`).
    #[serde(default)]
    pub template: Option<String>,
    /// The template's parameters by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskArgs {
    /// The task's number.
    pub id: i64,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ListTasksArgs {
    /// `owner/name`.
    #[serde(default)]
    pub repo: Option<String>,
    /// `queued`, `starting`, `running`, `succeeded`, `failed`, `cancelled` or `timed_out`.
    #[serde(default)]
    pub state: Option<String>,
    /// The creator's GitHub login.
    #[serde(default)]
    pub creator: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    /// Created at or after (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// A substring of the summary, the instructions or the repository, without case.
    #[serde(default)]
    pub q: Option<String>,
    /// A previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// 1 to 100 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogArgs {
    /// The task's number.
    pub id: i64,
    /// Only lines after this sequence number.
    #[serde(default)]
    pub after: Option<i64>,
    /// Only lines logged at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Only lines containing this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// Only lines of this level and above: `output` (all), `info` (the runner's own
    /// lines), `warn`, `error` (why a step failed).
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RepoArgs {
    /// The repository, `owner/name`.
    pub repo: String,
}

fn time(
    field: &str,
    value: Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ErrorData> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.to_utc())
                .map_err(|_| mcp_error(ApiError::invalid(field, "must be an RFC 3339 time")))
        })
        .transpose()
}

/// What an agent can do here, with who is asking in each request's extensions.
#[derive(Clone)]
pub struct Tools {
    state: ApiState,
    tool_router: ToolRouter<Tools>,
}

type Parts = axum::http::request::Parts;

#[tool_router]
impl Tools {
    fn new(state: ApiState) -> Self {
        Self {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Start a background task in a repository: free-text instructions for the coding agent, or a template with parameters. The task clones the repository, makes the change, runs its checks and opens a pull request if they pass. Returns the task."
    )]
    async fn create_task(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<CreateTaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let viewer = viewer(&parts)?;
        let (owner, name) = owner_name(&args.repo)?;
        let body = CreateTask {
            instructions: args.instructions,
            template: args.template,
            parameters: args
                .parameters
                .into_iter()
                .map(|(k, v)| (k, ParamValue::Text(v)))
                .collect(),
        };
        let (_, task) = tasks::create(&self.state, viewer, owner, name, body, None)
            .await
            .map_err(mcp_error)?;
        json_result(&task)
    }

    #[tool(
        description = "A task in full: state, phase, progress, timings, template and parameters, instructions, attempts, pull request, error, validation results, audit events and the log's last lines."
    )]
    async fn get_task(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let task = tasks::get(&self.state, viewer(&parts)?, args.id)
            .await
            .map_err(mcp_error)?;
        json_result(&task)
    }

    #[tool(
        description = "Tasks of repositories you can read, newest first, filtered by repository, state, creator, template, creation time or words; page on with next_cursor."
    )]
    async fn list_tasks(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ListTasksArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let query = ListQuery {
            repo: args.repo,
            state: args.state,
            creator: args.creator,
            template: args.template,
            since: time("since", args.since)?,
            until: time("until", args.until)?,
            q: args.q,
            cursor: args.cursor,
            limit: args.limit,
        };
        let page = tasks::list(&self.state, viewer(&parts)?, query)
            .await
            .map_err(mcp_error)?;
        json_result(&page)
    }

    #[tool(description = "Cancel a queued or running task.")]
    async fn cancel_task(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let task = tasks::cancel(&self.state, viewer(&parts)?, args.id)
            .await
            .map_err(mcp_error)?;
        json_result(&task)
    }

    #[tool(
        description = "Make a new attempt of a failed, cancelled or timed-out task. Returns the new attempt."
    )]
    async fn retry_task(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (_, task) = tasks::retry(&self.state, viewer(&parts)?, args.id)
            .await
            .map_err(mcp_error)?;
        json_result(&task)
    }

    #[tool(
        description = "A task's log lines (redacted), oldest first; filter by level, sequence number, time or text."
    )]
    async fn get_task_logs(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<LogArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let query = LogQuery {
            after: args.after,
            since: time("since", args.since)?,
            contains: args.contains,
            level: args.level,
        };
        let log = tasks::logs(&self.state, viewer(&parts)?, args.id, &query)
            .await
            .map_err(mcp_error)?;
        json_result(&log)
    }

    #[tool(
        description = "Templates usable in a repository (its own, its installation's, built-in), with their parameters."
    )]
    async fn list_templates(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<RepoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let list = templates::list(&self.state, viewer(&parts)?, &args.repo)
            .await
            .map_err(mcp_error)?;
        json_result(&list)
    }

    #[tool(
        description = "How tasks can make their change here: the coding agent (free text and agent templates) and the npm upgrade recipe, and whether each is available."
    )]
    async fn list_providers(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        viewer(&parts)?;
        json_result(&tasks::providers(&self.state))
    }
}

#[tool_handler]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerInfo {
        ServerInfo {
            capabilities: ServerCapabilities::builder().enable_tools().build(),
            server_info: Implementation {
                name: "bg-agent".to_owned(),
                title: Some("bg-agent background tasks".to_owned()),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                icons: None,
                website_url: None,
            },
            instructions: Some(
                "Start background coding tasks on GitHub repositories and follow them: create_task, then get_task or get_task_logs until it ends; a succeeded task has a pr_url.".to_owned(),
            ),
            ..Default::default()
        }
    }
}
