//! The status pages, server-rendered: `/` (the task list: filters, search, paging,
//! today's counts), `/tasks/{id}` (progress, timeline, live log, Retry/Cancel),
//! `/templates`, and one stylesheet. Check runs and comments link to `/tasks/{id}`.
//!
//! Built with maud, which escapes every interpolated value: instructions, log lines,
//! parameters and validation output are whatever people and their repositories wrote.
//! Who sees what: a task of a repository the viewer cannot read is a 404 (its log
//! stream too); lists are filtered in SQL to the repositories the viewer can read.
//! Retry/Cancel are form posts carrying the session's CSRF token, allowed with the
//! permission the comment path requires.

use axum::Router;
use axum::extract::{Form, FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::auth::{AuthError, AuthState, Viewer, percent_encode};
use crate::engine::Signal;
use crate::engine::tasks::{Requester, RetryOutcome, cancel_task, retry_task};
use crate::store::Store;
use crate::store::agent_rounds::AgentRoundRecord;
use crate::store::listing::{self, TaskCounts, TaskFilter, TaskPage, TemplateStats};
use crate::store::reports::ReportErrorRecord;
use crate::store::tasks::TaskEvent;
use bg_agent_core::protocol::AgentProvider;
use bg_agent_core::task::render::{self, RenderContext};
use bg_agent_core::task::{
    Permission, PrState, TaskRecord, TaskState, Template, builtin_templates,
};

const PAGE_LOG_LINES: i64 = 200;
/// Tasks per page of the list.
const LIST_PAGE: i64 = 50;

/// Seconds between reloads while the task is active, without JavaScript.
const REFRESH_SECS: u32 = 3;

/// The one stylesheet (`/style.css`): readable on a laptop and a phone, AA contrast.
const STYLE: &str = "\
:root{color-scheme:light;--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--bg2:#f6f8fa;--link:#0550ae}\
*{box-sizing:border-box}\
body{font:16px/1.5 system-ui,sans-serif;color:var(--fg);max-width:72rem;margin:0 auto;padding:0 1rem 2rem}\
a{color:var(--link)}a:focus,button:focus,input:focus,select:focus{outline:3px solid #0969da;outline-offset:2px}\
header nav{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;padding:.75rem 0;border-bottom:1px solid var(--line);margin-bottom:1rem}\
header nav .me{margin-left:auto;color:var(--muted)}\
form.inline{display:inline}\
button{font:inherit;padding:.3rem .8rem;border:1px solid var(--line);border-radius:6px;background:var(--bg2);color:var(--fg);cursor:pointer}\
button.danger{border-color:#cf222e;color:#a40e26}\
input,select{font:inherit;padding:.25rem .4rem;border:1px solid var(--muted);border-radius:6px;max-width:100%}\
.filters{display:flex;flex-wrap:wrap;gap:.75rem;align-items:end;margin:1rem 0}\
.filters label{display:flex;flex-direction:column;font-size:.875rem;color:var(--muted)}\
.counts{display:flex;flex-wrap:wrap;gap:1.5rem;padding:0;list-style:none}\
.counts strong{font-size:1.25rem}\
.table{overflow-x:auto}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid var(--line);padding:.4rem .5rem;text-align:left;vertical-align:top}\
pre{background:var(--bg2);padding:1rem;overflow:auto;white-space:pre-wrap;word-break:break-word}\
pre#log{max-height:32rem}\
progress{width:min(20rem,100%)}\
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;font-size:.875rem;font-weight:600;border:1px solid}\
.queued,.starting{color:#6e4b00;border-color:#9a6700;background:#fff8c5}\
.running{color:#0550ae;border-color:#0969da;background:#ddf4ff}\
.succeeded{color:#116329;border-color:#1a7f37;background:#dafbe1}\
.failed,.timed_out{color:#a40e26;border-color:#cf222e;background:#ffebe9}\
.cancelled{color:#424a53;border-color:#6e7781;background:#f6f8fa}\
.pr-open{color:#116329;border-color:#1a7f37;background:#dafbe1}\
.pr-merged{color:#6639ba;border-color:#8250df;background:#fbefff}\
.pr-closed{color:#a40e26;border-color:#cf222e;background:#ffebe9}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
.muted{color:var(--muted)}\
ol.timeline{padding-left:1.25rem}\
.actions{display:flex;gap:.75rem;margin:1rem 0}";

/// Follows the log live (Server-Sent Events), scrolling along unless the reader scrolled
/// up; reloads once the task ends. Without JavaScript the page refreshes itself instead.
const LIVE_LOG_JS: &str = "(function(){var log=document.getElementById('log');\
if(!log||!window.EventSource)return;\
var es=new EventSource(log.getAttribute('data-stream'));\
es.addEventListener('log',function(e){var end=log.scrollTop+log.clientHeight>=log.scrollHeight-8;\
log.textContent+=(log.textContent?'\\n':'')+e.data;if(end)log.scrollTop=log.scrollHeight;});\
es.addEventListener('end',function(){es.close();location.reload();});})();";

#[derive(Clone)]
pub struct PagesState {
    pub store: Store,
    pub public_url: String,
    pub auth: AuthState,
    /// Wakes the engine after a retry or cancel, and live logs when a runner reports.
    pub signal: Signal,
    /// Ends live logs when the server stops.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl FromRef<PagesState> for AuthState {
    fn from_ref(state: &PagesState) -> Self {
        state.auth.clone()
    }
}

/// The pages and sign-in routes.
pub fn routes() -> Router<PagesState> {
    Router::new()
        .route("/", get(task_list))
        .route("/style.css", get(stylesheet))
        .route("/templates", get(templates_page))
        .route("/tasks/{id}", get(task_page))
        .route("/tasks/{id}/logs/stream", get(log_stream))
        .route("/tasks/{id}/retry", post(retry))
        .route("/tasks/{id}/cancel", post(cancel))
        .route("/login", get(super::login::login))
        .route("/login/callback", get(super::login::callback))
        .route("/logout", post(super::login::logout))
        .route("/signed-out", get(super::login::signed_out))
}

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(AuthError::SignedOut) => Redirect::to("/login").into_response(),
            Self::Auth(e @ AuthError::GitHub(_)) => {
                tracing::warn!(error = %e, "cannot make a page");
                (StatusCode::BAD_GATEWAY, "GitHub did not answer; try again").into_response()
            }
            Self::Store(e) | Self::Auth(AuthError::Store(e)) => {
                tracing::error!(error = %e, "cannot make a page");
                (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
            }
        }
    }
}

/// A state-changing form without a valid CSRF token or from another origin.
pub fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        page(
            "Forbidden",
            None,
            html! {
                h1 { "Forbidden" }
                p { "This form is stale or was not sent from this site. Reload the page and try again." }
            },
        ),
    )
        .into_response()
}

/// Who is signed in, as the navigation shows it.
#[derive(Debug, Clone, Copy)]
pub struct Nav<'a> {
    pub login: &'a str,
    /// The token the page's forms carry.
    pub csrf: Option<&'a str>,
    /// Signed in (a sign-out button), rather than the local admin of `BG_AGENT_AUTH=none`.
    pub signed_in: bool,
}

impl<'a> Nav<'a> {
    pub fn of(viewer: &'a Viewer) -> Self {
        Self {
            login: &viewer.login,
            csrf: viewer.csrf_token(),
            signed_in: !viewer.is_local(),
        }
    }
}

/// `GET /style.css`.
async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLE,
    )
}

fn head(title: &str, refresh: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if refresh {
                // Only without JavaScript: with it, the live log reloads the page at the end.
                noscript { meta http-equiv="refresh" content=(REFRESH_SECS); }
            }
            title { (title) }
            link rel="stylesheet" href="/style.css";
        }
    }
}

fn nav(nav: Option<Nav<'_>>) -> Markup {
    html! {
        header {
            nav aria-label="Main" {
                a href="/" { "Tasks" }
                a href="/templates" { "Templates" }
                a href="/settings" { "Settings" }
                @if let Some(nav) = nav {
                    span.me { "@" (nav.login) }
                    @if let (true, Some(csrf)) = (nav.signed_in, nav.csrf) {
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
            }
        }
    }
}

/// A page with the shared head and navigation.
pub fn page(title: &str, who: Option<Nav<'_>>, body: Markup) -> Markup {
    page_with(title, who, false, body)
}

fn page_with(title: &str, who: Option<Nav<'_>>, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, refresh))
            body {
                (nav(who))
                main { (body) }
            }
        }
    }
}

fn not_found_page(id: i64, who: Option<Nav<'_>>) -> Markup {
    page(
        &format!("bg-agent: no task #{id}"),
        who,
        html! { p { "No task #" (id) "." } },
    )
}

fn not_found(id: i64, viewer: &Viewer) -> Response {
    (
        StatusCode::NOT_FOUND,
        not_found_page(id, Some(Nav::of(viewer))),
    )
        .into_response()
}

/// The task, if it exists and the viewer can read its repository, with their permission.
async fn readable_task(
    state: &PagesState,
    viewer: &Viewer,
    id: i64,
) -> Result<Option<(TaskRecord, Permission)>, PageError> {
    let Some(task) = state.store.task(id.into()).await? else {
        return Ok(None);
    };
    let permission = viewer.task_permission(&state.auth, &task).await?;
    // A task of a repository the viewer cannot read does not exist for them.
    Ok((permission >= Permission::Read).then_some((task, permission)))
}

// ---- The task list ----

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    repo: Option<String>,
    state: Option<String>,
    creator: Option<String>,
    /// `YYYY-MM-DD`, UTC, inclusive.
    since: Option<String>,
    /// `YYYY-MM-DD`, UTC, inclusive.
    until: Option<String>,
    q: Option<String>,
    cursor: Option<i64>,
}

impl ListQuery {
    fn filter(&self, readable: Option<Vec<i64>>) -> TaskFilter {
        let day = |text: &Option<String>| {
            text.as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        };
        TaskFilter {
            readable,
            repository: self.repo.clone(),
            states: self
                .state
                .as_deref()
                .and_then(|s| TaskState::ALL.into_iter().find(|t| t.as_str() == s))
                .into_iter()
                .collect(),
            creator: self
                .creator
                .as_deref()
                .map(|c| c.trim_start_matches('@').to_owned()),
            template: None,
            since: day(&self.since),
            until: day(&self.until).map(|d| d + TimeDelta::days(1)),
            q: self.q.clone(),
        }
    }

    /// The query string of the next page: these filters, that cursor.
    fn next_href(&self, cursor: i64) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("repo", &self.repo),
            ("state", &self.state),
            ("creator", &self.creator),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                parts.push(format!("{name}={}", percent_encode(value)));
            }
        }
        parts.push(format!("cursor={cursor}"));
        format!("/?{}", parts.join("&"))
    }
}

/// `GET /`.
pub async fn task_list(
    State(state): State<PagesState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Response {
    let loaded = async {
        let readable = viewer.readable_repositories(&state.auth).await?;
        let readable = readable.map(|ids| ids.as_ref().clone());
        let filter = query.filter(readable.clone());
        let list = listing::list_tasks(
            &state.store,
            &filter,
            query.cursor.map(Into::into),
            LIST_PAGE,
        )
        .await?;
        let today = Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or_else(Utc::now, |d| d.and_utc());
        let counts = listing::task_counts(&state.store, readable.as_deref(), today).await?;
        Ok::<_, PageError>((list, counts))
    }
    .await;
    match loaded {
        Ok((list, counts)) => {
            render_task_list(Nav::of(&viewer), &query, &list, counts, Utc::now()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// How long ago, in the largest unit that fits.
fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

fn badge(state: TaskState) -> Markup {
    let word = match state {
        TaskState::TimedOut => "timed out",
        other => other.as_str(),
    };
    html! { span class={"badge " (state.as_str())} { (word) } }
}

/// A pull request's state as a badge (`None`: opened before states were recorded).
fn pr_badge(state: Option<PrState>) -> Markup {
    html! {
        @if let Some(state) = state {
            " " span class={"badge pr-" (state.as_str())} { (state.as_str()) }
        }
    }
}

/// The link to a task's pull request and its state, or a dash.
fn pr_cell(task: &TaskRecord) -> Markup {
    html! {
        @if let (Some(url), Some(n)) = (&task.pr_url, task.pr_number) {
            a href=(url) { "#" (n) } (pr_badge(task.pr_state))
        } @else { "—" }
    }
}

/// How people call a provider: `claude_code` → "Claude Code"; an unknown name as is.
fn provider_name(name: &str) -> &str {
    AgentProvider::parse(name)
        .map(AgentProvider::display)
        .unwrap_or(name)
}

/// Millionths of a dollar as dollars, to a hundredth of a cent: `$0.0413`.
fn dollars(microusd: i64) -> String {
    format!("${:.4}", microusd as f64 / 1_000_000.0)
}

pub fn render_task_list(
    who: Nav<'_>,
    query: &ListQuery,
    list: &TaskPage,
    counts: TaskCounts,
    now: DateTime<Utc>,
) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    page(
        "bg-agent tasks",
        Some(who),
        html! {
            h1 { "Tasks" }
            ul.counts aria-label="Today" {
                li { strong #count-running { (counts.running) } " running" }
                li { strong #count-queued { (counts.queued) } " queued" }
                li { strong #count-succeeded { (counts.succeeded) } " succeeded today" }
                li { strong #count-failed { (counts.failed) } " failed today" }
            }
            form.filters method="get" action="/" role="search" {
                label { "Search" input type="search" name="q" value=(text(&query.q)); }
                label { "Repository" input type="text" name="repo" placeholder="owner/name" value=(text(&query.repo)); }
                label {
                    "State"
                    select name="state" {
                        option value="" { "any" }
                        @for s in TaskState::ALL {
                            option value=(s.as_str()) selected[query.state.as_deref() == Some(s.as_str())] { (s.as_str()) }
                        }
                    }
                }
                label { "Creator" input type="text" name="creator" value=(text(&query.creator)); }
                label { "From" input type="date" name="since" value=(text(&query.since)); }
                label { "To" input type="date" name="until" value=(text(&query.until)); }
                button type="submit" { "Filter" }
            }
            p.muted #total {
                (render::thousands(list.total)) @if !list.total_exact { "+" }
                " task" @if list.total != 1 || !list.total_exact { "s" }
            }
            @if list.tasks.is_empty() {
                p #empty { "No tasks to show." }
            } @else {
                div.table {
                    table #tasks {
                        thead {
                            tr {
                                th scope="col" { "Task" }
                                th scope="col" { "State" }
                                th scope="col" { "Repository" }
                                th scope="col" { "Who" }
                                th scope="col" { "Template" }
                                th scope="col" { "Agent" }
                                th scope="col" { "Age" }
                                th scope="col" { "Duration" }
                                th.num scope="col" { "Cost" }
                                th scope="col" { "Pull request" }
                            }
                        }
                        tbody {
                            @for t in &list.tasks {
                                tr {
                                    td { a href={"/tasks/" (t.id)} { "#" (t.id) " " (t.summary) } }
                                    td { (badge(t.state)) }
                                    td { code { (t.repository) } }
                                    td { "@" (t.creator_login) }
                                    td { (t.template.as_deref().unwrap_or("free text")) }
                                    td { (t.agent_provider.as_deref().map(provider_name).unwrap_or("—")) }
                                    td { time datetime=(t.created_at.to_rfc3339()) { (ago(t.created_at, now)) } }
                                    td { @if t.started_at.is_some() { (render::elapsed(t, now)) } @else { "—" } }
                                    td.num { (t.agent_cost_microusd.map_or_else(|| "—".to_owned(), dollars)) }
                                    td { (pr_cell(t)) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(cursor) = list.next_cursor {
                p { a #older href=(query.next_href(cursor.get())) rel="next" { "Older tasks →" } }
            }
        },
    )
}

// ---- One task ----

/// What the task page shows beyond the task itself.
pub struct TaskPageExtras<'a> {
    pub who: Option<Nav<'a>>,
    pub events: &'a [TaskEvent],
    /// Retry/Cancel buttons are shown (the viewer has the permission they need).
    pub can_act: bool,
    /// The log's last line number, where the live stream goes on from.
    pub last_seq: Option<i32>,
    /// The coding agent's rounds, first to last.
    pub rounds: &'a [AgentRoundRecord],
}

pub async fn task_page(
    State(state): State<PagesState>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Response {
    let loaded = async {
        let Some((task, permission)) = readable_task(&state, &viewer, id).await? else {
            return Ok(None);
        };
        // The last line number first: a line arriving meanwhile is shown twice, not lost.
        let last_seq = listing::last_log_seq(&state.store, task.id).await?;
        let details = state.store.task_details(&task, PAGE_LOG_LINES).await?;
        let refused = state.store.report_errors(task.id).await?;
        let events = state.store.task_events(task.id).await?;
        let rounds = state.store.agent_rounds(task.id).await?;
        Ok::<_, PageError>(Some((
            task, permission, details, refused, events, last_seq, rounds,
        )))
    }
    .await;
    match loaded {
        Ok(Some((task, permission, details, refused, events, last_seq, rounds))) => {
            let page_url = render::page_url(&state.public_url, id.into());
            let extras = TaskPageExtras {
                who: Some(Nav::of(&viewer)),
                events: &events,
                can_act: permission >= state.auth.required_permission(),
                last_seq,
                rounds: &rounds,
            };
            render_task_page(&task, &details.context(&page_url), &refused, &extras).into_response()
        }
        Ok(None) => not_found(id, &viewer),
        Err(e) => e.into_response(),
    }
}

/// What each report step is called on the page.
fn step_title(step: &str) -> &str {
    match step {
        "check_run" => "Check run",
        "tracking_comment" => "Tracking comment",
        "pull_request" => "Pull request",
        "labels" => "Pull request labels",
        "validation_check" => "Validation check",
        other => other,
    }
}

/// One audit event, as the timeline says it.
fn event_text(event: &TaskEvent) -> String {
    match (&event.from_state, &event.to_state) {
        (Some(from), Some(to)) => format!("{} → {}", from.replace('_', " "), to.replace('_', " ")),
        (None, Some(to)) => format!(
            "{} ({})",
            event.action.replace('_', " "),
            to.replace('_', " ")
        ),
        _ => event.action.replace('_', " "),
    }
}

/// The task page. Without JavaScript it refreshes itself while the task is active; with
/// it, the log follows live. `refused` are the parts of the task's report that GitHub
/// refused for good.
pub fn render_task_page(
    task: &TaskRecord,
    cx: &RenderContext<'_>,
    refused: &[ReportErrorRecord],
    extras: &TaskPageExtras<'_>,
) -> Markup {
    let active = task.state.is_active();
    let csrf = extras.who.and_then(|w| w.csrf).unwrap_or_default();
    let stream = match extras.last_seq {
        Some(seq) => format!("/tasks/{}/logs/stream?after={seq}", task.id),
        None => format!("/tasks/{}/logs/stream", task.id),
    };
    page_with(
        &format!("bg-agent task #{}", task.id),
        extras.who,
        active,
        html! {
            h1 { "Task #" (task.id) " — " (task.summary) }
            p {
                (badge(task.state)) " "
                strong #state { (render::state_word(task)) }
                " in " code { (task.repository) }
                ", requested by @" (task.creator_login)
                " (attempt " (task.attempt)
                @if let Some(retry_of) = task.retry_of {
                    // Relative: `/tasks/41` from `/tasks/42`.
                    ", retry of " a href=(retry_of) { "#" (retry_of) }
                }
                ")"
            }
            @if let Some(template) = &task.template {
                p #template {
                    "Template " code { (template) }
                    @for (i, (name, value)) in task.params.iter().enumerate() {
                        (if i == 0 { " with " } else { ", " })
                        code { (name) "=" (value) }
                    }
                }
            }
            p {
                "Phase " strong #phase { (task.phase) } " "
                progress #progress max="100" value=(task.progress) aria-label="Progress" {}
                " " (task.progress) " % · " (render::elapsed(task, cx.now)) " elapsed"
            }
            @if extras.can_act && (task.state.is_retryable() || active) {
                div.actions {
                    @if task.state.is_retryable() {
                        form.inline method="post" action={"/tasks/" (task.id) "/retry"} {
                            input type="hidden" name="csrf" value=(csrf);
                            button #retry type="submit" { "Retry" }
                        }
                    }
                    @if active {
                        form.inline method="post" action={"/tasks/" (task.id) "/cancel"} {
                            input type="hidden" name="csrf" value=(csrf);
                            button.danger #cancel type="submit" { "Cancel" }
                        }
                    }
                }
            }
            @if let Some(url) = &task.pr_url {
                p { "Pull request: " a #pr href=(url) { (url) } (pr_badge(task.pr_state)) }
            }
            @if let Some(error) = &task.error {
                p #error { strong { "Error:" } " " (error) }
            }
            @if !refused.is_empty() {
                h2 { "Not shown on GitHub" }
                p { "GitHub refused these updates for good; they are not tried again." }
                ul #report-errors {
                    @for e in refused {
                        li {
                            strong { (step_title(&e.step)) } ": " (e.message)
                            " (" (e.created_at.format("%Y-%m-%d %H:%M UTC")) ")"
                        }
                    }
                }
            }
            (agent_section(task, extras.rounds))
            @if !cx.scope_findings.is_empty() {
                h2 { "Scope guard" }
                ul #scope-findings {
                    @for finding in cx.scope_findings {
                        li { (finding) }
                    }
                }
            }
            @if !cx.validations.is_empty() {
                h2 { "Validation" }
                div.table {
                    table {
                        tr { th scope="col" { "command" } th scope="col" { "result" } th scope="col" { "duration" } }
                        @for v in cx.validations {
                            tr {
                                td { code { (v.command) } }
                                td {
                                    @if v.passed() {
                                        "passed"
                                    } @else {
                                        "failed ("
                                        @match v.exit_code {
                                            Some(code) => { "exit " (code) }
                                            None => "killed",
                                        }
                                        ")"
                                    }
                                }
                                td { (format!("{:.1} s", v.duration_ms as f64 / 1000.0)) }
                            }
                        }
                    }
                }
                @for v in cx.validations.iter().filter(|v| !v.output_tail.is_empty()) {
                    details {
                        summary { "Output of " code { (v.command) } }
                        pre { (v.output_tail) }
                    }
                }
            }
            @if !extras.events.is_empty() {
                h2 { "Timeline" }
                ol.timeline #timeline {
                    @for e in extras.events {
                        li {
                            time datetime=(e.at.to_rfc3339()) { (e.at.format("%Y-%m-%d %H:%M:%S UTC")) }
                            " — " (event_text(e)) " · " span.muted { (e.actor) }
                        }
                    }
                }
            }
            h2 { "Instructions" }
            pre { (task.instructions) }
            h2 #log-heading { "Log" }
            pre #log aria-labelledby="log-heading" aria-live="off" tabindex="0" data-stream=(stream) { (cx.log_tail.join("\n")) }
            @if active {
                script { (PreEscaped(LIVE_LOG_JS)) }
            }
        },
    )
}

/// The coding agent: which one and which model, what it used in all, and each round of
/// the verifier loop. Nothing for a recipe, or before its launch.
fn agent_section(task: &TaskRecord, rounds: &[AgentRoundRecord]) -> Markup {
    let Some(provider) = task.agent_provider.as_deref() else {
        return html! {};
    };
    let model = rounds.iter().rev().find_map(|r| r.model.as_deref());
    let cost = |c: Option<i64>| c.map_or_else(|| "not reported".to_owned(), dollars);
    // The generic command reports nothing: no table of zeros.
    let reported = task.agent_input_tokens > 0
        || task.agent_output_tokens > 0
        || task.agent_cost_microusd.is_some();
    html! {
        h2 #agent-heading { "Coding agent" }
        p #agent {
            strong { (provider_name(provider)) }
            @match model {
                Some(model) => { ", model " code { (model) } }
                None if provider != "command" => { ", its default model" }
                None => {}
            }
            " · " (task.agent_rounds) " round" @if task.agent_rounds != 1 { "s" }
        }
        @if !reported {
            p.muted #usage { "It reported no tokens or cost." }
        } @else {
            div.table {
                table #usage aria-labelledby="agent-heading" {
                    thead {
                        tr {
                            th scope="col" { "round" }
                            th scope="col" { "why" }
                            th.num scope="col" { "input tokens" }
                            th.num scope="col" { "output tokens" }
                            th.num scope="col" { "cost" }
                        }
                    }
                    tbody {
                        @for r in rounds {
                            tr {
                                td { (r.round) }
                                td {
                                    @if r.round == 1 { "the change" } @else { "answering the failed validation" }
                                    @if r.model.as_deref() != model { " (" code { (r.model.as_deref().unwrap_or("default model")) } ")" }
                                }
                                td.num { (render::thousands(r.input_tokens)) }
                                td.num { (render::thousands(r.output_tokens)) }
                                td.num { (cost(r.cost_microusd)) }
                            }
                        }
                        tr #usage-total {
                            th scope="row" colspan="2" { "total" }
                            td.num { (render::thousands(task.agent_input_tokens)) }
                            td.num { (render::thousands(task.agent_output_tokens)) }
                            td.num { (cost(task.agent_cost_microusd)) }
                        }
                    }
                }
            }
        }
    }
}

// ---- Live log ----

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    after: Option<i32>,
}

/// `GET /tasks/{id}/logs/stream`: new log lines as Server-Sent Events (`id` = the line's
/// number, so a reconnecting browser resumes with `Last-Event-ID`), then `event: end`
/// once the task has ended and every line was sent.
pub async fn log_stream(
    State(state): State<PagesState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    match readable_task(&state, &viewer, id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(id, &viewer),
        Err(e) => return e.into_response(),
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i32>().ok());
    let after = resume.or(query.after).map(i64::from);
    let events = crate::web::live_log::events(
        state.store.clone(),
        &state.signal,
        state.shutdown.clone(),
        id.into(),
        after,
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ---- Retry and cancel ----

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
}

/// The task and the viewer's permission, if they may act on it (the CSRF token, the
/// origin, then read (else 404) and the permission the comment path needs (else 403)).
async fn actionable(
    state: &PagesState,
    viewer: &Viewer,
    headers: &HeaderMap,
    form: &ActionForm,
    id: i64,
) -> Result<TaskRecord, Response> {
    if !state.auth.check_form(viewer, headers, form.csrf.as_deref()) {
        return Err(forbidden());
    }
    match readable_task(state, viewer, id).await {
        Ok(Some((task, permission))) if permission >= state.auth.required_permission() => {
            Ok(task)
        }
        Ok(Some(_)) => Err((
            StatusCode::FORBIDDEN,
            page(
                "Forbidden",
                Some(Nav::of(viewer)),
                html! { h1 { "Forbidden" } p { "You need write access to this repository to retry or cancel its tasks." } },
            ),
        )
            .into_response()),
        Ok(None) => Err(not_found(id, viewer)),
        Err(e) => Err(e.into_response()),
    }
}

fn requester(viewer: &Viewer) -> Requester<'_> {
    Requester {
        login: &viewer.login,
        user_id: viewer.user_id,
    }
}

fn notice(viewer: &Viewer, status: StatusCode, title: &str, text: Markup) -> Response {
    (
        status,
        page(
            title,
            Some(Nav::of(viewer)),
            html! { h1 { (title) } p { (text) } },
        ),
    )
        .into_response()
}

/// `POST /tasks/{id}/retry`: what the check run's Retry button does.
pub async fn retry(
    State(state): State<PagesState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let task = match actionable(&state, &viewer, &headers, &form, id).await {
        Ok(task) => task,
        Err(response) => return response,
    };
    match retry_task(&state.store, &state.signal, &task, requester(&viewer)).await {
        Ok(RetryOutcome::Created(new) | RetryOutcome::AlreadyRetried(new)) => {
            Redirect::to(&format!("/tasks/{}", new.id)).into_response()
        }
        Ok(RetryOutcome::NotRetryable) => notice(
            &viewer,
            StatusCode::BAD_REQUEST,
            "Not retried",
            html! { "Task #" (task.id) " is " (render::state_word(&task)) "; only failed, cancelled or timed-out tasks are retried." },
        ),
        Ok(RetryOutcome::CreatorBusy { active_task }) => notice(
            &viewer,
            StatusCode::CONFLICT,
            "Not retried",
            html! { "You already have an active task: " a href={"/tasks/" (active_task)} { "#" (active_task) } "." },
        ),
        Err(e) => PageError::from(e).into_response(),
    }
}

/// `POST /tasks/{id}/cancel`: what the check run's Cancel button does.
pub async fn cancel(
    State(state): State<PagesState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let task = match actionable(&state, &viewer, &headers, &form, id).await {
        Ok(task) => task,
        Err(response) => return response,
    };
    match cancel_task(&state.store, &state.signal, &task, requester(&viewer)).await {
        Ok(_) => Redirect::to(&format!("/tasks/{}", task.id)).into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

// ---- Templates ----

/// `GET /templates`: the built-in and stored templates, with their use among the
/// repositories the viewer can read. (A repository's own templates live in it.)
pub async fn templates_page(State(state): State<PagesState>, viewer: Viewer) -> Response {
    let loaded = async {
        let readable = viewer.readable_repositories(&state.auth).await?;
        let stats =
            listing::template_stats(&state.store, readable.as_deref().map(|v| v.as_slice()))
                .await?;
        let mut templates = builtin_templates();
        // Installations' own templates are listed per repository by the API.
        templates.extend(state.store.shared_templates().await?);
        Ok::<_, PageError>((templates, stats))
    }
    .await;
    match loaded {
        Ok((templates, stats)) => {
            render_templates(Nav::of(&viewer), &templates, &stats).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub fn render_templates(who: Nav<'_>, templates: &[Template], stats: &[TemplateStats]) -> Markup {
    page(
        "bg-agent templates",
        Some(who),
        html! {
            h1 { "Templates" }
            p.muted { "Built-in and stored templates. A repository may add its own in " code { ".github/bg-agent.yml" } "." }
            @for t in templates {
                @let stat = stats.iter().find(|s| s.name == t.name);
                section.template id={"template-" (t.name)} {
                    h2 { code { (t.name) } " " span.muted { "(" (format!("{:?}", t.source).to_lowercase()) ")" } }
                    @if !t.description.is_empty() { p { (t.description) } }
                    @if let Some(stat) = stat {
                        p.muted {
                            "Used " (stat.uses) " time" @if stat.uses != 1 { "s" }
                            @if let Some(at) = stat.last_used_at { ", last " (at.format("%Y-%m-%d")) }
                            @if stat.finished > 0 {
                                " · " (stat.succeeded * 100 / stat.finished) " % succeeded"
                            }
                        }
                    } @else {
                        p.muted { "Not used yet" }
                    }
                    @if !t.parameters.is_empty() {
                        div.table {
                            table {
                                tr { th scope="col" { "parameter" } th scope="col" { "required" } th scope="col" { "default" } th scope="col" { "pattern" } th scope="col" { "description" } }
                                @for p in &t.parameters {
                                    tr {
                                        td { code { (p.name) } }
                                        td { @if p.required { "yes" } @else { "no" } }
                                        td { @if let Some(d) = &p.default { code { (d) } } }
                                        td { @if let Some(pat) = &p.pattern { code { (pat) } } }
                                        td { (p.description) }
                                    }
                                }
                            }
                        }
                    }
                    details {
                        summary { "Instructions" }
                        pre { (t.instructions) }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bg_agent_core::protocol::ValidationResult;
    use bg_agent_core::task::{Phase, TaskState};
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;

    fn at(time: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(time)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn task(state: TaskState) -> TaskRecord {
        TaskRecord::sample(state)
    }

    fn cx<'a>(validations: &'a [ValidationResult], log: &'a [String]) -> RenderContext<'a> {
        RenderContext {
            page_url: "http://127.0.0.1:3000/tasks/42",
            now: at("2026-11-21T10:01:05Z"),
            validations,
            log_tail: log,
            queue_position: None,
            pr_refused: false,
            scope_findings: &[],
        }
    }

    const NO_EXTRAS: TaskPageExtras<'static> = TaskPageExtras {
        who: None,
        events: &[],
        can_act: false,
        last_seq: None,
        rounds: &[],
    };

    fn page(task: &TaskRecord, cx: &RenderContext<'_>) -> String {
        render_task_page(task, cx, &[], &NO_EXTRAS).into_string()
    }

    /// One element per line, so a snapshot reads like the page's outline. (The test data
    /// has no `><` of its own, so this only splits between tags.)
    fn outline(html: &str) -> String {
        html.replace("><", ">\n<")
    }

    #[test]
    fn a_running_task_page_shows_phase_progress_and_log_and_refreshes() {
        let t = task(TaskState::Running);
        let log = [
            "$ npm install lodash@4.17.21".to_owned(),
            "added 1 package in 2s".to_owned(),
            "$ npm test".to_owned(),
        ];
        insta::assert_snapshot!(outline(&page(&t, &cx(&[], &log))));
    }

    #[test]
    fn a_succeeded_task_page_shows_validation_and_the_pull_request() {
        let mut t = task(TaskState::Succeeded);
        t.phase = Phase::Finished;
        t.progress = 100;
        t.changed = Some(true);
        t.finished_at = Some(at("2026-11-21T10:02:30Z"));
        t.pr_number = Some(7);
        t.pr_url = Some("https://github.com/acme/widgets/pull/7".into());
        let validations = [
            ValidationResult {
                command: "npm ci".into(),
                exit_code: Some(0),
                duration_ms: 4200,
                output_tail: String::new(),
            },
            ValidationResult {
                command: "npm test".into(),
                exit_code: Some(0),
                duration_ms: 1300,
                output_tail: "12 passing".into(),
            },
        ];
        let log = ["$ npm test".to_owned(), "12 passing".to_owned()];
        insta::assert_snapshot!(outline(&page(&t, &cx(&validations, &log))));
    }

    #[test]
    fn what_github_refused_for_good_is_shown() {
        let mut t = task(TaskState::Succeeded);
        t.finished_at = Some(at("2026-11-21T10:02:30Z"));
        let refused = [
            ReportErrorRecord {
                step: "tracking_comment".into(),
                status: Some(404),
                message: "GitHub: 404 Not Found on PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}: Not Found".into(),
                created_at: at("2026-11-21T10:02:31Z"),
            },
            ReportErrorRecord {
                step: "pull_request".into(),
                status: Some(422),
                message: "GitHub: 422 Unprocessable on POST /repos/{owner}/{repo}/pulls: <b>Validation Failed</b>".into(),
                created_at: at("2026-11-21T10:02:32Z"),
            },
        ];
        let html = render_task_page(&t, &cx(&[], &[]), &refused, &NO_EXTRAS).into_string();
        let start = html.find("<h2>Not shown").unwrap();
        let end = html[start..].find("</ul>").unwrap() + start + 5;
        insta::assert_snapshot!(outline(&html[start..end]));
    }

    #[test]
    fn the_page_escapes_what_users_wrote() {
        let mut t = task(TaskState::Running);
        t.instructions = "<script>alert(1)</script>".into();
        let page = page(&t, &cx(&[], &["a < b".into()]));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a &lt; b"));
        assert!(page.contains("<noscript><meta http-equiv=\"refresh\""));
    }

    #[test]
    fn hostile_text_everywhere_is_escaped_and_never_raw() {
        const SCRIPT: &str = "<script>alert(1)</script>";
        const IMG: &str = "\"><img src=x onerror=alert(2)>";
        let hostile = format!("{SCRIPT} {IMG} & more");
        let mut t = task(TaskState::Failed);
        t.instructions = hostile.clone();
        t.summary = hostile.clone();
        t.repository = hostile.clone();
        t.creator_login = hostile.clone();
        t.error = Some(hostile.clone());
        t.template = Some(hostile.clone());
        t.params = BTreeMap::from([(hostile.clone(), hostile.clone())]);
        t.pr_url = Some(hostile.clone());
        let validations = [ValidationResult {
            command: hostile.clone(),
            exit_code: Some(1),
            duration_ms: 10,
            output_tail: hostile.clone(),
        }];
        let log = [hostile.clone()];
        let page = page(&t, &cx(&validations, &log));

        assert!(!page.contains(SCRIPT), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("& more"), "{page}");
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp; more";
        // Summary, repository, login, template, parameter name and value, PR link and its
        // text, error, command (table and output heading), output, instructions, log.
        assert_eq!(page.matches(escaped).count(), 14, "{page}");
        // The only tags are the page's own.
        let tags: std::collections::BTreeSet<&str> = page
            .split('<')
            .skip(1)
            .map(|t| t.split([' ', '>']).next().unwrap_or(""))
            .collect();
        let own = [
            "!DOCTYPE",
            "html",
            "/html",
            "head",
            "/head",
            "meta",
            "title",
            "/title",
            "link",
            "header",
            "/header",
            "nav",
            "/nav",
            "main",
            "/main",
            "span",
            "/span",
            "div",
            "/div",
            "body",
            "/body",
            "h1",
            "/h1",
            "p",
            "/p",
            "strong",
            "/strong",
            "code",
            "/code",
            "a",
            "/a",
            "progress",
            "/progress",
            "h2",
            "/h2",
            "table",
            "/table",
            "tr",
            "/tr",
            "th",
            "/th",
            "td",
            "/td",
            "details",
            "/details",
            "summary",
            "/summary",
            "pre",
            "/pre",
        ];
        for tag in &tags {
            assert!(own.contains(tag), "unexpected tag <{tag}> in {page}");
        }
    }

    #[test]
    fn an_unknown_task_gets_a_short_page() {
        insta::assert_snapshot!(outline(&not_found_page(7, None).into_string()));
    }

    const HOSTILE: &str = "<script>alert(1)</script> \"><img src=x onerror=alert(2)> & more";

    fn nav() -> Nav<'static> {
        Nav {
            login: "octo-lead",
            csrf: Some("csrf-token-of-the-session"),
            signed_in: true,
        }
    }

    fn list_of(tasks: Vec<TaskRecord>, next: Option<i64>) -> TaskPage {
        TaskPage {
            total: i64::try_from(tasks.len()).unwrap() + if next.is_some() { 50 } else { 0 },
            total_exact: true,
            tasks,
            next_cursor: next.map(Into::into),
        }
    }

    #[test]
    fn a_total_past_the_cap_says_at_least() {
        let mut list = list_of(vec![task(TaskState::Succeeded)], Some(7));
        list.total = listing::TOTAL_CAP;
        list.total_exact = false;
        let html = render_task_list(
            nav(),
            &ListQuery::default(),
            &list,
            TaskCounts::default(),
            at("2026-11-21T10:01:05Z"),
        )
        .into_string();
        assert!(
            html.contains(r#"<p class="muted" id="total">1,000+ tasks</p>"#),
            "{html}"
        );
    }

    #[test]
    fn the_task_list_shows_counts_filters_rows_and_the_next_page() {
        let mut running = task(TaskState::Running);
        running.started_at = Some(at("2026-11-21T10:00:05Z"));
        let mut done = task(TaskState::Succeeded);
        done.id = 41.into();
        done.retry_of = None;
        done.attempt = 1;
        done.created_at = at("2026-11-21T08:00:00Z");
        done.started_at = Some(at("2026-11-21T08:00:10Z"));
        done.finished_at = Some(at("2026-11-21T08:03:10Z"));
        done.pr_number = Some(7);
        done.pr_url = Some("https://github.com/acme/widgets/pull/7".into());
        done.pr_state = Some(PrState::Merged);
        done.template = None;
        done.agent_provider = Some("claude_code".into());
        done.agent_rounds = 2;
        done.agent_input_tokens = 12_400;
        done.agent_output_tokens = 1_830;
        done.agent_cost_microusd = Some(41_250);
        let query = ListQuery {
            repo: Some("acme/widgets".into()),
            state: None,
            q: Some("lodash & co".into()),
            ..ListQuery::default()
        };
        let counts = TaskCounts {
            running: 1,
            queued: 2,
            succeeded: 3,
            failed: 4,
        };
        let html = render_task_list(
            nav(),
            &query,
            &list_of(vec![running, done], Some(41)),
            counts,
            at("2026-11-21T10:01:05Z"),
        )
        .into_string();
        insta::assert_snapshot!(outline(&html));
    }

    /// An agent task that needed the verifier loop: round 2 answered a failed check.
    fn agent_rounds() -> Vec<AgentRoundRecord> {
        let round = |round: i32, input: i64, output: i64, cost: i64| AgentRoundRecord {
            round,
            provider: "claude_code".into(),
            model: Some("claude-sonnet-4-5".into()),
            input_tokens: input,
            output_tokens: output,
            cost_microusd: Some(cost),
            reported_at: at("2026-11-21T10:01:00Z"),
        };
        vec![round(1, 9_000, 1_500, 30_000), round(2, 3_400, 330, 11_300)]
    }

    fn agent_task() -> TaskRecord {
        let mut t = task(TaskState::Succeeded);
        t.template = None;
        t.params.clear();
        t.instructions = "Make hello.txt say fixed".into();
        t.summary = "Make hello.txt say fixed".into();
        t.finished_at = Some(at("2026-11-21T10:02:30Z"));
        t.agent_provider = Some("claude_code".into());
        t.agent_rounds = 2;
        t.agent_input_tokens = 12_400;
        t.agent_output_tokens = 1_830;
        t.agent_cost_microusd = Some(41_300);
        t.pr_number = Some(18);
        t.pr_url = Some("https://github.com/acme/widgets/pull/18".into());
        t.pr_state = Some(PrState::Merged);
        t
    }

    #[test]
    fn an_agent_task_page_shows_the_agent_its_model_usage_per_round_and_the_pull_requests_state() {
        let t = agent_task();
        let rounds = agent_rounds();
        let extras = TaskPageExtras {
            rounds: &rounds,
            ..NO_EXTRAS
        };
        let html = render_task_page(&t, &cx(&[], &[]), &[], &extras).into_string();
        let start = html.find("<p>Pull request:").unwrap();
        let end = html.find("<h2>Instructions").unwrap();
        insta::assert_snapshot!(outline(&html[start..end]));
    }

    #[test]
    fn each_pull_request_state_has_its_badge_and_a_command_agent_without_usage_says_so() {
        let mut t = agent_task();
        for (state, badge) in [
            (PrState::Open, r#"<span class="badge pr-open">open</span>"#),
            (
                PrState::Merged,
                r#"<span class="badge pr-merged">merged</span>"#,
            ),
            (
                PrState::Closed,
                r#"<span class="badge pr-closed">closed</span>"#,
            ),
        ] {
            t.pr_state = Some(state);
            let html = page(&t, &cx(&[], &[]));
            assert!(html.contains(badge), "{html}");
        }
        // Opened before states were recorded: the link alone.
        t.pr_state = None;
        assert!(!page(&t, &cx(&[], &[])).contains("pr-"));
        // The generic command reports no tokens or cost, and no model.
        t.agent_provider = Some("command".into());
        t.agent_rounds = 1;
        t.agent_input_tokens = 0;
        t.agent_output_tokens = 0;
        t.agent_cost_microusd = None;
        let html = render_task_page(&t, &cx(&[], &[]), &[], &NO_EXTRAS).into_string();
        let start = html.find("<h2 id=\"agent-heading\">").unwrap();
        let end = html.find("<h2>Instructions").unwrap();
        insta::assert_snapshot!(outline(&html[start..end]), @r#"
        <h2 id="agent-heading">Coding agent</h2>
        <p id="agent">
        <strong>agent command</strong> · 1 round</p>
        <p class="muted" id="usage">It reported no tokens or cost.</p>
        "#);
        // No agent, no section.
        let recipe = task(TaskState::Succeeded);
        assert!(!page(&recipe, &cx(&[], &[])).contains("agent-heading"));
    }

    #[test]
    fn a_hostile_model_or_provider_name_is_escaped() {
        let mut t = agent_task();
        t.agent_provider = Some(HOSTILE.into());
        let mut rounds = agent_rounds();
        rounds[1].model = Some(HOSTILE.into());
        let extras = TaskPageExtras {
            rounds: &rounds,
            ..NO_EXTRAS
        };
        let html = render_task_page(&t, &cx(&[], &[]), &[], &extras).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp; more";
        // The provider, and the model (the last round's, named once at the top).
        assert_eq!(html.matches(escaped).count(), 2, "{html}");
        let list = render_task_list(
            nav(),
            &ListQuery::default(),
            &list_of(vec![t], None),
            TaskCounts::default(),
            at("2026-11-21T10:01:05Z"),
        )
        .into_string();
        assert!(!list.contains("<script>alert"), "{list}");
        assert_eq!(list.matches(escaped).count(), 1, "{list}");
    }

    #[test]
    fn an_empty_task_list_says_so() {
        let html = render_task_list(
            nav(),
            &ListQuery::default(),
            &list_of(vec![], None),
            TaskCounts::default(),
            at("2026-11-21T10:01:05Z"),
        )
        .into_string();
        let start = html.find("<main>").unwrap();
        insta::assert_snapshot!(outline(&html[start..]));
    }

    #[test]
    fn the_task_list_escapes_hostile_text() {
        let mut t = task(TaskState::Failed);
        t.summary = HOSTILE.into();
        t.repository = HOSTILE.into();
        t.creator_login = HOSTILE.into();
        t.template = Some(HOSTILE.into());
        t.pr_url = Some(HOSTILE.into());
        t.pr_number = Some(1);
        let query = ListQuery {
            repo: Some(HOSTILE.into()),
            q: Some(HOSTILE.into()),
            creator: Some(HOSTILE.into()),
            ..ListQuery::default()
        };
        let who = Nav {
            login: HOSTILE,
            csrf: Some(HOSTILE),
            signed_in: true,
        };
        let html = render_task_list(
            who,
            &query,
            &list_of(vec![t], Some(7)),
            TaskCounts::default(),
            at("2026-11-21T10:01:05Z"),
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp; more";
        // Summary, repository, login (row and nav), template, PR href, the three filter
        // values, the sign-out token.
        assert_eq!(html.matches(escaped).count(), 10, "{html}");
        // The next page's link carries the filters percent-encoded.
        assert!(
            html.contains("repo=%3Cscript%3Ealert%281%29%3C/script%3E%20%22%3E%3Cimg"),
            "{html}"
        );
    }

    #[test]
    fn a_task_page_for_a_writer_has_the_timeline_buttons_and_live_log() {
        let t = task(TaskState::Running);
        let events = [
            TaskEvent {
                actor: "octo-lead".into(),
                action: "created".into(),
                from_state: None,
                to_state: Some("queued".into()),
                delivery_guid: None,
                at: at("2026-11-21T09:59:58Z"),
            },
            TaskEvent {
                actor: "engine".into(),
                action: "transition".into(),
                from_state: Some("queued".into()),
                to_state: Some("starting".into()),
                delivery_guid: None,
                at: at("2026-11-21T10:00:00Z"),
            },
            TaskEvent {
                actor: HOSTILE.into(),
                action: "cancel_requested".into(),
                from_state: None,
                to_state: None,
                delivery_guid: None,
                at: at("2026-11-21T10:00:30Z"),
            },
        ];
        let extras = TaskPageExtras {
            who: Some(nav()),
            events: &events,
            can_act: true,
            last_seq: Some(2),
            rounds: &[],
        };
        let log = ["one".to_owned(), "two".to_owned(), "three".to_owned()];
        let html = render_task_page(&t, &cx(&[], &log), &[], &extras).into_string();
        assert!(!html.contains("<script>alert"));
        insta::assert_snapshot!(outline(&html));
    }

    #[test]
    fn a_reader_gets_no_buttons_and_a_finished_task_no_live_log() {
        let mut t = task(TaskState::Failed);
        t.finished_at = Some(at("2026-11-21T10:02:30Z"));
        let reader = TaskPageExtras {
            who: Some(nav()),
            events: &[],
            can_act: false,
            last_seq: None,
            rounds: &[],
        };
        let html = render_task_page(&t, &cx(&[], &[]), &[], &reader).into_string();
        assert!(
            !html.contains("<form method=\"post\" action=\"/tasks/42/"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("refresh"), "{html}");
        let writer = TaskPageExtras {
            can_act: true,
            ..reader
        };
        let html = render_task_page(&t, &cx(&[], &[]), &[], &writer).into_string();
        let start = html.find("<div class=\"actions\">").unwrap();
        let end = html[start..].find("</div>").unwrap() + start + 6;
        insta::assert_snapshot!(outline(&html[start..end]), @r#"
        <div class="actions">
        <form class="inline" method="post" action="/tasks/42/retry">
        <input type="hidden" name="csrf" value="csrf-token-of-the-session">
        <button id="retry" type="submit">Retry</button>
        </form>
        </div>
        "#);
    }

    #[test]
    fn the_templates_page_lists_parameters_and_use() {
        let templates = builtin_templates();
        let stats = [TemplateStats {
            name: "upgrade".into(),
            uses: 12,
            last_used_at: Some(at("2026-11-20T12:00:00Z")),
            succeeded: 9,
            finished: 10,
        }];
        let html = render_templates(nav(), &templates, &stats).into_string();
        insta::assert_snapshot!(outline(&html));
        let mut hostile = builtin_templates().remove(0);
        hostile.description = HOSTILE.into();
        hostile.instructions = HOSTILE.into();
        let html = render_templates(nav(), &[hostile], &[]).into_string();
        assert!(
            !html.contains("<script>alert") && !html.contains("<img"),
            "{html}"
        );
    }

    #[test]
    fn time_ago_uses_the_largest_unit() {
        let now = at("2026-11-21T10:00:00Z");
        assert_eq!(ago(at("2026-11-21T09:59:30Z"), now), "30 s ago");
        assert_eq!(ago(at("2026-11-21T09:30:00Z"), now), "30 min ago");
        assert_eq!(ago(at("2026-11-21T07:00:00Z"), now), "3 h ago");
        assert_eq!(ago(at("2026-11-19T10:00:00Z"), now), "2 d ago");
        assert_eq!(ago(at("2026-11-21T10:00:05Z"), now), "0 s ago");
    }

    #[tokio::test]
    async fn a_refused_form_gets_a_short_forbidden_page() {
        let response = forbidden();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        let start = html.find("<main>").unwrap();
        insta::assert_snapshot!(outline(&html[start..]), @r#"
        <main>
        <h1>Forbidden</h1>
        <p>This form is stale or was not sent from this site. Reload the page and try again.</p>
        </main>
        </body>
        </html>
        "#);
    }
}
