//! `GET /tasks/{id}`: a read-only page per task (state, phase, progress, validation, log
//! tail, pull request), where check runs and comments link.
//!
//! Built with maud, which escapes every interpolated value: instructions, log lines,
//! parameters and validation output are whatever people and their repositories wrote.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::store::Store;
use crate::store::reports::ReportErrorRecord;
use bg_agent_core::task::TaskRecord;
use bg_agent_core::task::render::{self, RenderContext};

const PAGE_LOG_LINES: i64 = 200;

/// Seconds between reloads while the task is active.
const REFRESH_SECS: u32 = 3;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}\
pre{background:#f6f8fa;padding:1rem;overflow:auto}progress{width:20rem}";

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
        let refused = state.store.report_errors(task.id).await?;
        Ok::<_, crate::store::StoreError>(Some((task, details, refused)))
    }
    .await;
    match loaded {
        Ok(Some((task, details, refused))) => {
            let page_url = render::page_url(&state.public_url, id.into());
            render_task_page(&task, &details.context(&page_url), &refused).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, not_found_page(id)).into_response(),
        Err(e) => {
            tracing::error!(task = id, error = %e, "cannot load task page");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// The head every page shares; `refresh` reloads it while something still moves.
fn head(title: &str, refresh: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width";
            @if refresh {
                meta http-equiv="refresh" content=(REFRESH_SECS);
            }
            title { (title) }
            style { (PreEscaped(STYLE)) }
        }
    }
}

fn not_found_page(id: i64) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("bg-agent: no task #{id}"), false))
            body { p { "No task #" (id) "." } }
        }
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

/// The task page. It refreshes itself while the task is active. `refused` are the parts
/// of the task's report that GitHub refused for good.
pub fn render_task_page(
    task: &TaskRecord,
    cx: &RenderContext<'_>,
    refused: &[ReportErrorRecord],
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("bg-agent task #{}", task.id), task.state.is_active()))
            body {
                h1 { "Task #" (task.id) " — " (task.summary) }
                p {
                    strong { (render::state_word(task)) }
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
                    progress #progress max="100" value=(task.progress) {}
                    " " (task.progress) " % · " (render::elapsed(task, cx.now)) " elapsed"
                }
                @if let Some(url) = &task.pr_url {
                    p { "Pull request: " a #pr href=(url) { (url) } }
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
                    table {
                        tr { th { "command" } th { "result" } th { "duration" } }
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
                    @for v in cx.validations.iter().filter(|v| !v.output_tail.is_empty()) {
                        details {
                            summary { "Output of " code { (v.command) } }
                            pre { (v.output_tail) }
                        }
                    }
                }
                h2 { "Instructions" }
                pre { (task.instructions) }
                h2 { "Log" }
                pre #log { (cx.log_tail.join("\n")) }
            }
        }
    }
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

    fn page(task: &TaskRecord, cx: &RenderContext<'_>) -> String {
        render_task_page(task, cx, &[]).into_string()
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
        insta::assert_snapshot!(outline(&page(&t, &cx(&[], &log))), @r#"
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <meta http-equiv="refresh" content="3">
        <title>bg-agent task #42</title>
        <style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}pre{background:#f6f8fa;padding:1rem;overflow:auto}progress{width:20rem}</style>
        </head>
        <body>
        <h1>Task #42 — upgrade lodash 4.17.21</h1>
        <p>
        <strong>running</strong> in <code>acme/widgets</code>, requested by @octo-lead (attempt 2, retry of <a href="41">#41</a>)</p>
        <p id="template">Template <code>upgrade</code> with <code>package=lodash</code>, <code>version=4.17.21</code>
        </p>
        <p>Phase <strong id="phase">validating</strong> <progress id="progress" max="100" value="72">
        </progress> 72 % · 1 min 05 s elapsed</p>
        <h2>Instructions</h2>
        <pre>Upgrade lodash to 4.17.21.</pre>
        <h2>Log</h2>
        <pre id="log">$ npm install lodash@4.17.21
        added 1 package in 2s
        $ npm test</pre>
        </body>
        </html>
        "#);
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
        insta::assert_snapshot!(outline(&page(&t, &cx(&validations, &log))), @r#"
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <title>bg-agent task #42</title>
        <style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}pre{background:#f6f8fa;padding:1rem;overflow:auto}progress{width:20rem}</style>
        </head>
        <body>
        <h1>Task #42 — upgrade lodash 4.17.21</h1>
        <p>
        <strong>succeeded</strong> in <code>acme/widgets</code>, requested by @octo-lead (attempt 2, retry of <a href="41">#41</a>)</p>
        <p id="template">Template <code>upgrade</code> with <code>package=lodash</code>, <code>version=4.17.21</code>
        </p>
        <p>Phase <strong id="phase">finished</strong> <progress id="progress" max="100" value="100">
        </progress> 100 % · 2 min 30 s elapsed</p>
        <p>Pull request: <a id="pr" href="https://github.com/acme/widgets/pull/7">https://github.com/acme/widgets/pull/7</a>
        </p>
        <h2>Validation</h2>
        <table>
        <tr>
        <th>command</th>
        <th>result</th>
        <th>duration</th>
        </tr>
        <tr>
        <td>
        <code>npm ci</code>
        </td>
        <td>passed</td>
        <td>4.2 s</td>
        </tr>
        <tr>
        <td>
        <code>npm test</code>
        </td>
        <td>passed</td>
        <td>1.3 s</td>
        </tr>
        </table>
        <details>
        <summary>Output of <code>npm test</code>
        </summary>
        <pre>12 passing</pre>
        </details>
        <h2>Instructions</h2>
        <pre>Upgrade lodash to 4.17.21.</pre>
        <h2>Log</h2>
        <pre id="log">$ npm test
        12 passing</pre>
        </body>
        </html>
        "#);
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
        let html = render_task_page(&t, &cx(&[], &[]), &refused).into_string();
        let start = html.find("<h2>Not shown").unwrap();
        let end = html[start..].find("</ul>").unwrap() + start + 5;
        insta::assert_snapshot!(outline(&html[start..end]), @r#"
        <h2>Not shown on GitHub</h2>
        <p>GitHub refused these updates for good; they are not tried again.</p>
        <ul id="report-errors">
        <li>
        <strong>Tracking comment</strong>: GitHub: 404 Not Found on PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}: Not Found (2026-11-21 10:02 UTC)</li>
        <li>
        <strong>Pull request</strong>: GitHub: 422 Unprocessable on POST /repos/{owner}/{repo}/pulls: &lt;b&gt;Validation Failed&lt;/b&gt; (2026-11-21 10:02 UTC)</li>
        </ul>
        "#);
    }

    #[test]
    fn the_page_escapes_what_users_wrote() {
        let mut t = task(TaskState::Running);
        t.instructions = "<script>alert(1)</script>".into();
        let page = page(&t, &cx(&[], &["a < b".into()]));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a &lt; b"));
        assert!(page.contains("http-equiv=\"refresh\""));
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
            "style",
            "/style",
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
        insta::assert_snapshot!(outline(&not_found_page(7).into_string()), @r#"
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <title>bg-agent: no task #7</title>
        <style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}pre{background:#f6f8fa;padding:1rem;overflow:auto}progress{width:20rem}</style>
        </head>
        <body>
        <p>No task #7.</p>
        </body>
        </html>
        "#);
    }
}
