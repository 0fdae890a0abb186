//! What people read about a task, rendered from its stored state alone: the tracking
//! comment, the check run's output and buttons, the pull request, and the task page.
//! Pure functions, so every report can be re-rendered after a restart.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{TaskId, TaskRecord, TaskState, check_run_conclusion};
use crate::protocol::ValidationResult;

/// The check run's name on GitHub.
pub const CHECK_RUN_NAME: &str = "bg-agent";
/// Check-run button identifiers (they come back in `check_run.requested_action`).
pub const RETRY_ACTION: &str = "retry";
pub const CANCEL_ACTION: &str = "cancel";
/// Log lines shown in the check run while it runs.
pub const CHECK_RUN_LOG_LINES: usize = 15;

/// What the renderers need besides the task.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    /// The task's page, e.g. `https://bg-agent.example.com/tasks/42`.
    pub page_url: &'a str,
    pub now: DateTime<Utc>,
    pub validations: &'a [ValidationResult],
    pub log_tail: &'a [String],
    /// Position in the repository's queue while queued.
    pub queue_position: Option<i64>,
}

/// What the renderers read about a task besides its record (the store loads it).
#[derive(Debug, Clone, Default)]
pub struct TaskDetails {
    pub validations: Vec<ValidationResult>,
    pub log_tail: Vec<String>,
    pub queue_position: Option<i64>,
}

impl TaskDetails {
    pub fn context<'a>(&'a self, page_url: &'a str) -> RenderContext<'a> {
        RenderContext {
            page_url,
            now: Utc::now(),
            validations: &self.validations,
            log_tail: &self.log_tail,
            queue_position: self.queue_position,
        }
    }
}

/// The task's page: `{base}/tasks/{id}`.
pub fn page_url(public_url: &str, task_id: TaskId) -> String {
    format!("{}/tasks/{task_id}", public_url.trim_end_matches('/'))
}

/// `▓▓▓▓▓░░░░░ 50 %`
pub fn progress_bar(progress: i16) -> String {
    let progress = progress.clamp(0, 100);
    let filled = usize::try_from(progress / 10).unwrap_or(0);
    format!(
        "{}{} {progress} %",
        "▓".repeat(filled),
        "░".repeat(10 - filled)
    )
}

/// `1 min 05 s`, `12 s`.
pub fn elapsed(task: &TaskRecord, now: DateTime<Utc>) -> String {
    let since = task.started_at.unwrap_or(task.created_at);
    let until = task.finished_at.unwrap_or(now);
    let secs = (until - since).num_seconds().max(0);
    if secs >= 60 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{secs} s")
    }
}

/// `Phase **validating** ▓▓▓▓▓▓▓░░░ 72 % · 1 min 05 s elapsed`
fn running_line(task: &TaskRecord, now: DateTime<Utc>) -> String {
    format!(
        "Phase **{}** {} · {} elapsed",
        task.phase,
        progress_bar(task.progress),
        elapsed(task, now)
    )
}

fn state_word(task: &TaskRecord) -> &'static str {
    match task.state {
        TaskState::Queued => "queued",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Succeeded if task.changed == Some(false) => "done: no changes needed",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
        TaskState::TimedOut => "timed out",
    }
}

fn retry_hint(task: &TaskRecord) -> Option<String> {
    task.state.is_retryable().then(|| {
        format!(
            "Comment `/bg-agent retry {}` or press **Retry** on the check run to try again.",
            task.id
        )
    })
}

/// The tracking comment on the issue, edited in place as the task moves.
pub fn tracking_comment(task: &TaskRecord, cx: &RenderContext<'_>) -> String {
    let mut body = format!(
        "**bg-agent** task [#{}]({}) — `{}` — **{}**",
        task.id,
        cx.page_url,
        task.summary,
        state_word(task)
    );
    match task.state {
        TaskState::Queued => {
            if let Some(position) = cx.queue_position {
                let _ = write!(body, ", position {position} in this repository's queue");
            }
        }
        TaskState::Starting | TaskState::Running => {
            let _ = write!(body, "\n\n{}", running_line(task, cx.now));
        }
        _ => {
            let _ = write!(body, " after {}", elapsed(task, cx.now));
        }
    }
    if let Some(url) = &task.pr_url {
        let _ = write!(body, "\n\nPull request: {url}");
    } else if task.state == TaskState::Succeeded && task.changed == Some(true) {
        body.push_str("\n\nOpening the pull request…");
    }
    if let Some(error) = &task.error {
        let _ = write!(body, "\n\n> {}", one_line(error, 300));
    }
    let _ = write!(
        body,
        "\n\nRequested by @{} · attempt {} · [details]({})",
        task.creator_login, task.attempt, cx.page_url
    );
    if let Some(hint) = retry_hint(task) {
        let _ = write!(body, "\n\n{hint}");
    }
    body
}

fn one_line(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    } else {
        line
    }
}

/// Markdown table of validation results.
pub fn validation_table(validations: &[ValidationResult]) -> String {
    if validations.is_empty() {
        return "No validation commands ran.".to_owned();
    }
    let mut table = "| command | result | duration |\n| --- | --- | --- |".to_owned();
    for v in validations {
        let result = match v.exit_code {
            Some(0) => "✅ passed".to_owned(),
            Some(code) => format!("❌ exit {code}"),
            None => "❌ killed".to_owned(),
        };
        let _ = write!(
            table,
            "\n| `{}` | {result} | {:.1} s |",
            v.command.replace('|', "\\|").replace('`', "'"),
            v.duration_ms as f64 / 1000.0
        );
    }
    table
}

/// (status, conclusion) for the check run: `queued`, `in_progress` or `completed`.
pub fn check_run_status(task: &TaskRecord) -> (&'static str, Option<&'static str>) {
    match task.state {
        TaskState::Queued => ("queued", None),
        TaskState::Starting | TaskState::Running => ("in_progress", None),
        state => (
            "completed",
            check_run_conclusion(state, task.changed.unwrap_or(false)),
        ),
    }
}

/// The check run's output: (title, summary, text).
pub fn check_run_output(task: &TaskRecord, cx: &RenderContext<'_>) -> (String, String, String) {
    let title = match task.state {
        TaskState::Queued => "Queued".to_owned(),
        TaskState::Starting | TaskState::Running => {
            format!("{} — {} %", capitalise(task.phase.as_str()), task.progress)
        }
        _ => capitalise(state_word(task)),
    };
    let mut summary = format!(
        "**{}** · task [#{}]({}) · attempt {} · requested by @{}",
        task.summary, task.id, cx.page_url, task.attempt, task.creator_login
    );
    match task.state {
        TaskState::Queued => {
            if let Some(position) = cx.queue_position {
                let _ = write!(summary, "\n\nWaiting: position {position} in the queue.");
            }
        }
        TaskState::Starting | TaskState::Running => {
            let _ = write!(summary, "\n\n{}", running_line(task, cx.now));
        }
        _ => {
            let _ = write!(summary, "\n\nFinished after {}.", elapsed(task, cx.now));
            if let Some(command) = &task.failing_command {
                let _ = write!(summary, "\n\nFailing command: `{command}`");
            }
            if let Some(error) = &task.error {
                let _ = write!(summary, "\n\n> {}", one_line(error, 500));
            }
            if let Some(url) = &task.pr_url {
                let _ = write!(summary, "\n\nPull request: {url}");
            }
        }
    }
    let mut text = String::new();
    if !cx.validations.is_empty() {
        let _ = write!(
            text,
            "### Validation\n\n{}\n\n",
            validation_table(cx.validations)
        );
    }
    if !cx.log_tail.is_empty() {
        let start = cx.log_tail.len().saturating_sub(CHECK_RUN_LOG_LINES);
        let _ = write!(
            text,
            "### Last log lines\n\n```\n{}\n```\n",
            cx.log_tail[start..].join("\n").replace("```", "'''")
        );
    }
    if let Some(hint) = retry_hint(task) {
        let _ = write!(text, "\n{hint}\n");
    }
    (title, summary, text)
}

/// The check run's buttons: Cancel while active, Retry once it failed, was cancelled or
/// timed out. (label, description, identifier), within GitHub's limits.
pub fn check_run_actions(task: &TaskRecord) -> Vec<(&'static str, &'static str, &'static str)> {
    if task.state.is_active() {
        vec![("Cancel", "Stop this task", CANCEL_ACTION)]
    } else if task.state.is_retryable() {
        vec![("Retry", "Run this task again", RETRY_ACTION)]
    } else {
        Vec::new()
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `[bg-agent] upgrade lodash 4.17.21`
pub fn pull_request_title(task: &TaskRecord) -> String {
    format!("[bg-agent] {}", task.summary)
}

/// The pull request's body: what was asked, by whom, how it was validated, and links back.
pub fn pull_request_body(task: &TaskRecord, cx: &RenderContext<'_>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "This pull request was made by **bg-agent** task [#{}]({}) (attempt {}), asked for by @{}",
        task.id, cx.page_url, task.attempt, task.creator_login
    );
    if let Some(issue) = task.issue_number {
        let _ = write!(body, " in #{issue}");
    }
    body.push_str(".\n\n");
    match &task.template {
        Some(template) => {
            let _ = write!(body, "**Template:** `{template}`");
            if !task.params.is_empty() {
                let params: Vec<String> = task
                    .params
                    .iter()
                    .map(|(k, v)| format!("`{k}={v}`"))
                    .collect();
                let _ = write!(body, " with {}", params.join(", "));
            }
            body.push_str("\n\n");
        }
        None => body.push_str("**Free-text task**\n\n"),
    }
    let _ = write!(
        body,
        "### Instructions\n\n{}\n\n",
        task.instructions
            .lines()
            .map(|l| format!("> {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if !task.changed_files.is_empty() {
        body.push_str("### Changed files\n\n");
        for file in &task.changed_files {
            let _ = writeln!(body, "- `{file}`");
        }
        body.push('\n');
    }
    let _ = write!(
        body,
        "### Validation\n\n{}\n",
        validation_table(cx.validations)
    );
    if let Some(issue) = task.issue_number {
        let _ = write!(body, "\nRelated: #{issue}\n");
    }
    body
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The read-only task page, plain HTML. It refreshes itself while the task is active.
pub fn task_page(task: &TaskRecord, cx: &RenderContext<'_>) -> String {
    let e = html_escape;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">{}\
         <title>bg-agent task #{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}\
         pre{{background:#f6f8fa;padding:1rem;overflow:auto}}progress{{width:20rem}}</style></head><body>",
        if task.state.is_active() {
            "<meta http-equiv=\"refresh\" content=\"3\">"
        } else {
            ""
        },
        task.id
    );
    let _ = write!(
        html,
        "<h1>Task #{} — {}</h1><p><strong>{}</strong> in <code>{}</code>, requested by @{} (attempt {}{})</p>",
        task.id,
        e(&task.summary),
        e(state_word(task)),
        e(&task.repository),
        e(&task.creator_login),
        task.attempt,
        task.retry_of
            .map(|id| format!(", retry of <a href=\"{id}\">#{id}</a>"))
            .unwrap_or_default()
    );
    let _ = write!(
        html,
        "<p>Phase <strong id=\"phase\">{}</strong> <progress id=\"progress\" max=\"100\" value=\"{}\"></progress> {} % · {} elapsed</p>",
        task.phase,
        task.progress,
        task.progress,
        elapsed(task, cx.now)
    );
    if let Some(url) = &task.pr_url {
        let _ = write!(
            html,
            "<p>Pull request: <a id=\"pr\" href=\"{0}\">{0}</a></p>",
            e(url)
        );
    }
    if let Some(error) = &task.error {
        let _ = write!(
            html,
            "<p id=\"error\"><strong>Error:</strong> {}</p>",
            e(error)
        );
    }
    if !cx.validations.is_empty() {
        html.push_str(
            "<h2>Validation</h2><table><tr><th>command</th><th>result</th><th>duration</th></tr>",
        );
        for v in cx.validations {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{:.1} s</td></tr>",
                e(&v.command),
                if v.passed() {
                    "passed".to_owned()
                } else {
                    format!(
                        "failed ({})",
                        v.exit_code.map_or("killed".into(), |c| format!("exit {c}"))
                    )
                },
                v.duration_ms as f64 / 1000.0
            );
        }
        html.push_str("</table>");
    }
    let _ = write!(
        html,
        "<h2>Instructions</h2><pre>{}</pre><h2>Log</h2><pre id=\"log\">{}</pre></body></html>",
        e(&task.instructions),
        e(&cx.log_tail.join("\n"))
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Phase, Recipe, TaskId};
    use std::collections::BTreeMap;

    fn task(state: TaskState) -> TaskRecord {
        let at = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        TaskRecord {
            id: TaskId::new(42),
            installation_id: 1,
            repository_id: 2,
            repository: "acme/widgets".into(),
            issue_number: Some(17),
            creator_login: "octo-lead".into(),
            creator_id: 3,
            template: Some("upgrade".into()),
            instructions: "Upgrade lodash to 4.17.21.".into(),
            state,
            phase: Phase::Validating,
            progress: 72,
            attempt: 2,
            retry_of: Some(TaskId::new(41)),
            timeout_secs: 3600,
            error: None,
            tracking_comment_id: None,
            created_at: at,
            started_at: Some(at),
            finished_at: None,
            comment_id: Some(9),
            trigger: "comment".into(),
            params: BTreeMap::from([
                ("package".into(), "lodash".into()),
                ("version".into(), "4.17.21".into()),
            ]),
            recipe: Recipe::NpmUpgrade,
            check_run_id: None,
            pr_check_run_id: None,
            base_branch: None,
            head_sha: None,
            branch: None,
            commit_sha: None,
            pr_number: None,
            pr_url: None,
            changed: None,
            changed_files: vec![],
            failing_command: None,
            execution_id: None,
            cancel_requested_by: None,
            log_lines: 0,
            version: 1,
            summary: "upgrade lodash 4.17.21".into(),
            template_source: None,
            clone_url: None,
            launched_by: None,
        }
    }

    fn cx<'a>(validations: &'a [ValidationResult], log: &'a [String]) -> RenderContext<'a> {
        RenderContext {
            page_url: "http://127.0.0.1:3000/tasks/42",
            now: DateTime::parse_from_rfc3339("2026-11-21T10:01:05Z")
                .unwrap()
                .with_timezone(&Utc),
            validations,
            log_tail: log,
            queue_position: None,
        }
    }

    #[test]
    fn running_task_shows_phase_progress_and_elapsed_time() {
        let t = task(TaskState::Running);
        let body = tracking_comment(&t, &cx(&[], &[]));
        assert!(body.contains("**running**"), "{body}");
        assert!(
            body.contains("Phase **validating** ▓▓▓▓▓▓▓░░░ 72 %"),
            "{body}"
        );
        assert!(body.contains("1 min 05 s elapsed"), "{body}");
        assert_eq!(check_run_status(&t), ("in_progress", None));
        assert_eq!(check_run_actions(&t)[0].2, CANCEL_ACTION);
    }

    #[test]
    fn failed_task_names_the_command_and_offers_a_retry() {
        let mut t = task(TaskState::Failed);
        t.failing_command = Some("npm test".into());
        t.error = Some("validation failed: npm test exited with 1".into());
        let validations = [ValidationResult {
            command: "npm test".into(),
            exit_code: Some(1),
            duration_ms: 1500,
            output_tail: "boom".into(),
        }];
        let (title, summary, text) = check_run_output(&t, &cx(&validations, &[]));
        assert_eq!(title, "Failed");
        assert!(summary.contains("Failing command: `npm test`"), "{summary}");
        assert!(
            text.contains("| `npm test` | ❌ exit 1 | 1.5 s |"),
            "{text}"
        );
        assert!(text.contains("/bg-agent retry 42"), "{text}");
        assert_eq!(check_run_status(&t), ("completed", Some("failure")));
        assert_eq!(check_run_actions(&t)[0].2, RETRY_ACTION);
    }

    #[test]
    fn pull_request_body_links_back_and_tabulates_validation() {
        let mut t = task(TaskState::Succeeded);
        t.changed = Some(true);
        t.changed_files = vec!["package.json".into(), "package-lock.json".into()];
        let validations = [ValidationResult {
            command: "npm test".into(),
            exit_code: Some(0),
            duration_ms: 250,
            output_tail: String::new(),
        }];
        let body = pull_request_body(&t, &cx(&validations, &[]));
        assert!(
            body.contains("[#42](http://127.0.0.1:3000/tasks/42)"),
            "{body}"
        );
        assert!(body.contains("in #17"), "{body}");
        assert!(
            body.contains("`package=lodash`, `version=4.17.21`"),
            "{body}"
        );
        assert!(
            body.contains("| `npm test` | ✅ passed | 0.2 s |")
                || body.contains("| `npm test` | ✅ passed | 0.3 s |"),
            "{body}"
        );
        assert!(body.contains("- `package-lock.json`"), "{body}");
        assert_eq!(pull_request_title(&t), "[bg-agent] upgrade lodash 4.17.21");
        assert_eq!(check_run_status(&t), ("completed", Some("success")));
    }

    #[test]
    fn the_page_escapes_what_users_wrote() {
        let mut t = task(TaskState::Running);
        t.instructions = "<script>alert(1)</script>".into();
        let page = task_page(&t, &cx(&[], &["a < b".into()]));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a &lt; b"));
        assert!(page.contains("http-equiv=\"refresh\""));
    }
}
