//! What people read about a task, rendered from its stored state alone: the tracking
//! comment, the check run's output and buttons, and the pull request. (The task page is
//! HTML, built by the server's web module from the same pieces.) Pure functions, so every
//! report can be re-rendered after a restart.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{TaskId, TaskRecord, TaskState, check_run_conclusion};
use crate::markdown::{code_block, inert, inert_plain, inline_code};
use crate::protocol::ValidationResult;

/// Longest parameter (`key=value`) and failing command shown in full.
const MAX_PARAM_CHARS: usize = 200;
const MAX_ERROR_CHARS: usize = 200;

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
    /// GitHub refused the task's pull request for good (the reason is on the task page).
    pub pr_refused: bool,
    /// What the scope guard found in the change (refused or flagged).
    pub scope_findings: &'a [String],
}

/// What the renderers read about a task besides its record (the store loads it).
#[derive(Debug, Clone, Default)]
pub struct TaskDetails {
    pub validations: Vec<ValidationResult>,
    pub log_tail: Vec<String>,
    pub queue_position: Option<i64>,
    pub scope_findings: Vec<String>,
}

impl TaskDetails {
    pub fn context<'a>(&'a self, page_url: &'a str) -> RenderContext<'a> {
        RenderContext {
            page_url,
            now: Utc::now(),
            validations: &self.validations,
            log_tail: &self.log_tail,
            queue_position: self.queue_position,
            pr_refused: false,
            scope_findings: &self.scope_findings,
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

/// The task's state in a word or three, e.g. `done: no changes needed`.
pub fn state_word(task: &TaskRecord) -> &'static str {
    match task.state {
        TaskState::Succeeded if task.changed == Some(false) => "done: no changes needed",
        TaskState::TimedOut => "timed out",
        state => state.as_str(),
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
/// What a changed, succeeded task without a pull request says about it.
fn pr_pending(cx: &RenderContext<'_>) -> &'static str {
    if cx.pr_refused {
        "\n\nGitHub refused the pull request; the change is on the task's branch (the reason is on the task page)."
    } else {
        "\n\nOpening the pull request…"
    }
}

pub fn tracking_comment(task: &TaskRecord, cx: &RenderContext<'_>) -> String {
    let mut body = format!(
        "**bg-agent** task [#{}]({}) — {} — **{}**",
        task.id,
        cx.page_url,
        inline_code(&task.summary, MAX_PARAM_CHARS),
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
        body.push_str(pr_pending(cx));
    }
    if let Some(error) = &task.error {
        let _ = write!(body, "\n\n> {}", inert(&one_line(error, 300)));
    }
    if let Some(wip) = wip_line(task) {
        let _ = write!(body, "\n\n{wip}");
    }
    if let Some(usage) = agent_usage(task).filter(|_| task.state.is_terminal()) {
        let _ = write!(body, "\n\nAgent: {usage}");
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

/// What the coding agent used, e.g. "Claude Code, 2 rounds: 1,200 input and 340 output
/// tokens, $0.0123"; `None` when no agent ran or it reported no usage.
pub fn agent_usage(task: &TaskRecord) -> Option<String> {
    let provider = task.agent_provider.as_deref()?;
    // A CLI that reported nothing (the generic command) has nothing to show.
    if task.agent_input_tokens == 0
        && task.agent_output_tokens == 0
        && task.agent_cost_microusd.is_none()
    {
        return None;
    }
    let name: &str = match crate::protocol::AgentProvider::parse(provider) {
        Some(known) => known.display(),
        None => provider,
    };
    let rounds = match task.agent_rounds {
        1 => "1 round".to_owned(),
        n => format!("{n} rounds"),
    };
    let cost = task
        .agent_cost_microusd
        .map(|micros| format!(", ${:.4}", micros as f64 / 1_000_000.0))
        .unwrap_or_default();
    Some(format!(
        "{name}, {rounds}: {} input and {} output tokens{cost}",
        thousands(task.agent_input_tokens),
        thousands(task.agent_output_tokens)
    ))
}

/// `12400` → `12,400`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The line that points at a failed task's kept change.
fn wip_line(task: &TaskRecord) -> Option<String> {
    task.wip_branch.as_deref().map(|branch| {
        format!(
            "The agent's unvalidated change is kept on branch {} (no pull request).",
            inline_code(branch, MAX_PARAM_CHARS)
        )
    })
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
        // In a table a `|` ends the cell even inside code, unless escaped.
        let command = inline_code(&v.command.replace('`', "'"), MAX_ERROR_CHARS);
        let _ = write!(
            table,
            "\n| {} | {result} | {:.1} s |",
            command.replace('|', "\\|"),
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
        inert(&task.summary),
        task.id,
        cx.page_url,
        task.attempt,
        task.creator_login
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
                let _ = write!(
                    summary,
                    "\n\nFailing command: {}",
                    inline_code(command, MAX_ERROR_CHARS)
                );
            }
            if let Some(error) = &task.error {
                let _ = write!(summary, "\n\n> {}", inert(&one_line(error, 500)));
            }
            if let Some(wip) = wip_line(task) {
                let _ = write!(summary, "\n\n{wip}");
            }
            if let Some(url) = &task.pr_url {
                let _ = write!(summary, "\n\nPull request: {url}");
            } else if cx.pr_refused && task.changed == Some(true) {
                summary.push_str(pr_pending(cx));
            }
        }
    }
    let mut text = scope_section(cx.scope_findings);
    if let Some(usage) = agent_usage(task) {
        let _ = write!(text, "### Coding agent\n\n{usage}\n\n");
    }
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

/// The check run with the validation results, on the pull request's head commit.
pub const VALIDATION_CHECK_NAME: &str = "bg-agent / validation";

/// The validation check's output: (title, summary).
pub fn validation_check_output(validations: &[ValidationResult]) -> (String, String) {
    let title = if validations.is_empty() {
        "No validation commands".to_owned()
    } else {
        format!("{} validation commands passed", validations.len())
    };
    (title, validation_table(validations))
}

/// `[bg-agent] upgrade lodash 4.17.21`. Plain text on GitHub, but a squash merge makes it
/// the commit's title, where a closing keyword would close an issue: inert.
pub fn pull_request_title(task: &TaskRecord) -> String {
    format!("[bg-agent] {}", inert_plain(&task.summary))
}

/// The commit the runner makes, (title, body): the pull request's title, and which task
/// made it. A commit message is plain text that GitHub still reads: pushed to the default
/// branch, its closing keywords close issues. So it holds no user text but the inert
/// summary, and no `#` (`task #42` would reference issue 42).
pub fn commit_message(task: &TaskRecord, page_url: &str) -> (String, String) {
    let body = format!(
        "Made by bg-agent task {} (attempt {}), asked for by {}.\n\nDetails: {page_url}",
        task.id, task.attempt, task.creator_login
    );
    (pull_request_title(task), body)
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
            let _ = write!(
                body,
                "**Template:** {}",
                inline_code(template, MAX_PARAM_CHARS)
            );
            if !task.params.is_empty() {
                let params: Vec<String> = task
                    .params
                    .iter()
                    .map(|(k, v)| inline_code(&format!("{k}={v}"), MAX_PARAM_CHARS))
                    .collect();
                let _ = write!(body, " with {}", params.join(", "));
            }
            body.push_str("\n\n");
        }
        None => body.push_str("**Free-text task**\n\n"),
    }
    // In a code block: instructions are shown, never read as Markdown (no mention, no
    // "fixes #N" that would close an issue when the pull request is merged).
    let _ = write!(
        body,
        "### Instructions\n\n{}\n\n",
        code_block(&task.instructions)
    );
    if !task.changed_files.is_empty() {
        body.push_str("### Changed files\n\n");
        for file in &task.changed_files {
            let _ = writeln!(body, "- {}", inline_code(file, MAX_PARAM_CHARS));
        }
        body.push('\n');
    }
    body.push_str(&scope_section(cx.scope_findings));
    let _ = write!(
        body,
        "### Validation\n\n{}\n",
        validation_table(cx.validations)
    );
    if let Some(usage) = agent_usage(task) {
        let _ = write!(body, "\n### Coding agent\n\n{usage}\n");
    }
    if let Some(issue) = task.issue_number {
        let _ = write!(body, "\nRelated: #{issue}\n");
    }
    body
}

/// The scope guard's findings (deleted or skipped tests, CI files, diff budget), one per
/// line; empty when there are none. Findings name paths an agent chose: made inert.
pub fn scope_section(findings: &[String]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let mut text = String::from(
        "### Scope guard\n\nThe change goes beyond what a task is expected to touch:\n\n",
    );
    for finding in findings {
        let _ = writeln!(text, "- {}", inert(&one_line(finding, 300)));
    }
    text.push('\n');
    text
}

/// The label on a pull request whose change no validation command checked.
pub const UNVALIDATED_LABEL: &str = "bg-agent:unvalidated";

/// Heads the body of a pull request no validation command checked (it is opened as a
/// draft, labelled [`UNVALIDATED_LABEL`]).
pub fn unvalidated_note() -> String {
    format!(
        "> [!WARNING]\n\
         > **Not validated.** This repository declares no validation commands (no `validation:` \
         in `.github/bg-agent.yml`, and no `lint`, `format:check` or `test` script in \
         `package.json`), so nothing checked this change before it was pushed. This pull \
         request is a draft labelled `{UNVALIDATED_LABEL}`: check the change yourself before \
         marking it ready for review.\n"
    )
}

#[cfg(test)]
mod unvalidated_tests {
    #[test]
    fn an_unvalidated_pull_request_says_so_first() {
        insta::assert_snapshot!(super::unvalidated_note(), @r"
        > [!WARNING]
        > **Not validated.** This repository declares no validation commands (no `validation:` in `.github/bg-agent.yml`, and no `lint`, `format:check` or `test` script in `package.json`), so nothing checked this change before it was pushed. This pull request is a draft labelled `bg-agent:unvalidated`: check the change yourself before marking it ready for review.
        ");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::markdown::check::{
        Allowed, HOSTILE, assert_inert_markdown, assert_inert_plain, hostile_text, very_long_line,
    };
    use crate::task::Phase;
    use std::collections::BTreeMap;

    /// Task #42, attempt 2, started at 10:00:00 and seen at 10:01:05 (see [`cx`]).
    pub(crate) fn task(state: TaskState) -> TaskRecord {
        TaskRecord::sample(state)
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
            pr_refused: false,
            scope_findings: &[],
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

    fn at(time: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-21T{time}Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn passed(command: &str, duration_ms: u64) -> ValidationResult {
        ValidationResult {
            command: command.into(),
            exit_code: Some(0),
            duration_ms,
            output_tail: String::new(),
        }
    }

    /// Everything GitHub shows of the task, as a person reads it: the tracking comment,
    /// then the check run (status, title, summary, text, buttons).
    /// Both texts of a task, with the zero-width spaces that keep user text inert shown
    /// as `<zwsp>`.
    fn shown(t: &TaskRecord, cx: &RenderContext<'_>) -> String {
        let (status, conclusion) = check_run_status(t);
        let (title, summary, text) = check_run_output(t, cx);
        let buttons: Vec<String> = check_run_actions(t)
            .into_iter()
            .map(|(label, description, id)| format!("[{label}] {description} ({id})"))
            .collect();
        let shown = format!(
            "{}\n\n======== check run: {status} {} ========\n# {title}\n\n{summary}\n\n---- text ----\n{text}\n---- buttons: {} ----",
            tracking_comment(t, cx),
            conclusion.unwrap_or("-"),
            if buttons.is_empty() {
                "none".to_owned()
            } else {
                buttons.join(", ")
            }
        );
        shown.replace('\u{200B}', "<zwsp>")
    }

    fn ended(state: TaskState) -> TaskRecord {
        let mut t = task(state);
        t.finished_at = Some(at("10:02:30"));
        t
    }

    #[test]
    fn a_queued_task_shows_its_place_in_the_queue() {
        let mut t = task(TaskState::Queued);
        t.phase = Phase::Queued;
        t.progress = 0;
        t.started_at = None;
        let mut cx = cx(&[], &[]);
        cx.queue_position = Some(2);
        insta::assert_snapshot!(shown(&t, &cx), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **queued**, position 2 in this repository's queue

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        ======== check run: queued - ========
        # Queued

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Waiting: position 2 in the queue.

        ---- text ----

        ---- buttons: [Cancel] Stop this task (cancel) ----
        ");
    }

    #[test]
    fn a_starting_task_shows_its_first_phase() {
        let mut t = task(TaskState::Starting);
        t.phase = Phase::Starting;
        t.progress = 5;
        insta::assert_snapshot!(shown(&t, &cx(&[], &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **starting**

        Phase **starting** ░░░░░░░░░░ 5 % · 1 min 05 s elapsed

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        ======== check run: in_progress - ========
        # Starting — 5 %

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Phase **starting** ░░░░░░░░░░ 5 % · 1 min 05 s elapsed

        ---- text ----

        ---- buttons: [Cancel] Stop this task (cancel) ----
        ");
    }

    #[test]
    fn a_running_task_shows_progress_validation_so_far_and_its_log() {
        let t = task(TaskState::Running);
        let validations = [passed("npm ci --ignore-scripts --no-audit --no-fund", 4200)];
        let log: Vec<String> = (1..=20).map(|n| format!("line {n}")).collect();
        insta::assert_snapshot!(shown(&t, &cx(&validations, &log)), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **running**

        Phase **validating** ▓▓▓▓▓▓▓░░░ 72 % · 1 min 05 s elapsed

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        ======== check run: in_progress - ========
        # Validating — 72 %

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Phase **validating** ▓▓▓▓▓▓▓░░░ 72 % · 1 min 05 s elapsed

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | 4.2 s |

        ### Last log lines

        ```
        line 6
        line 7
        line 8
        line 9
        line 10
        line 11
        line 12
        line 13
        line 14
        line 15
        line 16
        line 17
        line 18
        line 19
        line 20
        ```

        ---- buttons: [Cancel] Stop this task (cancel) ----
        ");
    }

    #[test]
    fn a_succeeded_task_links_its_pull_request() {
        let mut t = ended(TaskState::Succeeded);
        t.phase = Phase::Finished;
        t.progress = 100;
        t.changed = Some(true);
        let validations = [passed("npm test", 1250)];
        // Before the pull request is open, then after.
        insta::assert_snapshot!(tracking_comment(&t, &cx(&validations, &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **succeeded** after 2 min 30 s

        Opening the pull request…

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)
        ");
        // GitHub refused it for good: said so, not "opening" for ever.
        let mut refused = cx(&validations, &[]);
        refused.pr_refused = true;
        insta::assert_snapshot!(shown(&t, &refused), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **succeeded** after 2 min 30 s

        GitHub refused the pull request; the change is on the task's branch (the reason is on the task page).

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        ======== check run: completed success ========
        # Succeeded

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        GitHub refused the pull request; the change is on the task's branch (the reason is on the task page).

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm test` | ✅ passed | 1.2 s |


        ---- buttons: none ----
        ");
        t.pr_number = Some(18);
        t.pr_url = Some("https://github.com/acme/widgets/pull/18".into());
        insta::assert_snapshot!(shown(&t, &cx(&validations, &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **succeeded** after 2 min 30 s

        Pull request: https://github.com/acme/widgets/pull/18

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        ======== check run: completed success ========
        # Succeeded

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        Pull request: https://github.com/acme/widgets/pull/18

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm test` | ✅ passed | 1.2 s |


        ---- buttons: none ----
        ");
    }

    #[test]
    fn a_task_that_needed_no_change_says_so() {
        let mut t = ended(TaskState::Succeeded);
        t.phase = Phase::Finished;
        t.progress = 100;
        t.changed = Some(false);
        insta::assert_snapshot!(shown(&t, &cx(&[], &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **done: no changes needed** after 2 min 30 s

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        ======== check run: completed neutral ========
        # Done: no changes needed

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        ---- text ----

        ---- buttons: none ----
        ");
    }

    /// A free-text agent task that ran Claude Code for two rounds.
    fn agent_task(state: TaskState) -> TaskRecord {
        let mut t = ended(state);
        t.template = None;
        t.params = BTreeMap::new();
        t.recipe = crate::task::Recipe::Agent;
        t.summary = "Make hello.txt say fixed".into();
        t.instructions = "Make hello.txt say fixed".into();
        t.agent_provider = Some("claude_code".into());
        t.agent_rounds = 2;
        t.agent_input_tokens = 12_400;
        t.agent_output_tokens = 1_830;
        t.agent_cost_microusd = Some(41_250);
        t
    }

    #[test]
    fn a_failed_agent_task_links_its_wip_branch_and_shows_what_the_agent_used() {
        let mut t = agent_task(TaskState::Failed);
        t.failing_command = Some("npm test".into());
        t.error = Some("validation failed: npm test exited with 1".into());
        t.wip_branch = Some("bg-agent/wip/42".into());
        insta::assert_snapshot!(shown(&t, &cx(&[], &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `Make hello.txt say fixed` — **failed** after 2 min 30 s

        > validation failed: npm test exited with 1

        The agent's unvalidated change is kept on branch `bg-agent/wip/42` (no pull request).

        Agent: Claude Code, 2 rounds: 12,400 input and 1,830 output tokens, $0.0413

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ======== check run: completed failure ========
        # Failed

        **Make hello.txt say fixed** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        Failing command: `npm test`

        > validation failed: npm test exited with 1

        The agent's unvalidated change is kept on branch `bg-agent/wip/42` (no pull request).

        ---- text ----
        ### Coding agent

        Claude Code, 2 rounds: 12,400 input and 1,830 output tokens, $0.0413


        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ---- buttons: [Retry] Run this task again (retry) ----
        ");
    }

    #[test]
    fn an_agent_pull_request_shows_what_the_agent_used() {
        let mut t = agent_task(TaskState::Succeeded);
        t.changed = Some(true);
        t.changed_files = vec!["hello.txt".into()];
        let validations = [passed("node test.js", 300)];
        insta::assert_snapshot!(pull_request_body(&t, &cx(&validations, &[])), @"
        This pull request was made by **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) (attempt 2), asked for by @octo-lead in #17.

        **Free-text task**

        ### Instructions

        ```text
        Make hello.txt say fixed
        ```

        ### Changed files

        - `hello.txt`

        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `node test.js` | ✅ passed | 0.3 s |

        ### Coding agent

        Claude Code, 2 rounds: 12,400 input and 1,830 output tokens, $0.0413

        Related: #17
        ");
    }

    #[test]
    fn a_failed_task_names_the_command_and_how_to_retry() {
        let mut t = ended(TaskState::Failed);
        t.failing_command = Some("npm test".into());
        t.error = Some("validation failed: npm test exited with 1".into());
        let validations = [
            passed("npm ci --ignore-scripts --no-audit --no-fund", 4200),
            ValidationResult {
                command: "npm test".into(),
                exit_code: Some(1),
                duration_ms: 800,
                output_tail: "lodash 4.17.21 breaks the widgets".into(),
            },
        ];
        let log = [
            "npm test".to_owned(),
            "lodash 4.17.21 breaks the widgets".to_owned(),
        ];
        insta::assert_snapshot!(shown(&t, &cx(&validations, &log)), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **failed** after 2 min 30 s

        > validation failed: npm test exited with 1

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ======== check run: completed failure ========
        # Failed

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        Failing command: `npm test`

        > validation failed: npm test exited with 1

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | 4.2 s |
        | `npm test` | ❌ exit 1 | 0.8 s |

        ### Last log lines

        ```
        npm test
        lodash 4.17.21 breaks the widgets
        ```

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ---- buttons: [Retry] Run this task again (retry) ----
        ");
    }

    #[test]
    fn a_cancelled_task_says_who_stopped_it() {
        let mut t = ended(TaskState::Cancelled);
        t.error = Some("cancelled by @octo-lead".into());
        insta::assert_snapshot!(shown(&t, &cx(&[], &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **cancelled** after 2 min 30 s

        > cancelled by @<zwsp>octo-lead

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ======== check run: completed cancelled ========
        # Cancelled

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        > cancelled by @<zwsp>octo-lead

        ---- text ----

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ---- buttons: [Retry] Run this task again (retry) ----
        ");
    }

    #[test]
    fn a_timed_out_task_says_after_how_long() {
        let mut t = ended(TaskState::TimedOut);
        t.finished_at = Some(at("11:00:00"));
        t.error = Some("timed out after 3600 s".into());
        let validations = [ValidationResult {
            command: "node -e \"setTimeout(() => {}, 600000)\"".into(),
            exit_code: None,
            duration_ms: 3_540_000,
            output_tail: String::new(),
        }];
        insta::assert_snapshot!(shown(&t, &cx(&validations, &[])), @r#"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **timed out** after 60 min 00 s

        > timed out after 3600 s

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ======== check run: completed timed_out ========
        # Timed out

        **upgrade lodash 4.17.21** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 60 min 00 s.

        > timed out after 3600 s

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `node -e "setTimeout(() => {}, 600000)"` | ❌ killed | 3540.0 s |


        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ---- buttons: [Retry] Run this task again (retry) ----
        "#);
    }

    #[test]
    fn a_long_error_is_one_shortened_line() {
        let mut t = ended(TaskState::Failed);
        t.error = Some(format!("the runner said:\n\n{}", "very long ".repeat(60)));
        insta::assert_snapshot!(tracking_comment(&t, &cx(&[], &[])), @"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — `upgrade lodash 4.17.21` — **failed** after 2 min 30 s

        > the runner said: very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long very long ve…

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.
        ");
    }

    #[test]
    fn the_pull_request_of_a_template_task() {
        let mut t = ended(TaskState::Succeeded);
        t.changed = Some(true);
        t.changed_files = vec!["package.json".into(), "package-lock.json".into()];
        t.instructions = "Upgrade lodash to 4.17.21.\nKeep the lockfile in step.".into();
        let validations = [
            passed("npm ci --ignore-scripts --no-audit --no-fund", 4200),
            passed("npm test", 1250),
        ];
        insta::assert_snapshot!(pull_request_title(&t), @"[bg-agent] upgrade lodash 4.17.21");
        insta::assert_snapshot!(pull_request_body(&t, &cx(&validations, &[])), @"
        This pull request was made by **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) (attempt 2), asked for by @octo-lead in #17.

        **Template:** `upgrade` with `package=lodash`, `version=4.17.21`

        ### Instructions

        ```text
        Upgrade lodash to 4.17.21.
        Keep the lockfile in step.
        ```

        ### Changed files

        - `package.json`
        - `package-lock.json`

        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | 4.2 s |
        | `npm test` | ✅ passed | 1.2 s |

        Related: #17
        ");
    }

    #[test]
    fn the_pull_request_of_a_free_text_task_without_validation() {
        let mut t = ended(TaskState::Succeeded);
        t.changed = Some(true);
        t.template = None;
        t.params = BTreeMap::new();
        t.issue_number = None;
        t.summary = "tidy the README".into();
        t.instructions = "tidy the README".into();
        t.changed_files = vec!["README.md".into()];
        insta::assert_snapshot!(pull_request_title(&t), @"[bg-agent] tidy the README");
        insta::assert_snapshot!(pull_request_body(&t, &cx(&[], &[])), @"
        This pull request was made by **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) (attempt 2), asked for by @octo-lead.

        **Free-text task**

        ### Instructions

        ```text
        tidy the README
        ```

        ### Changed files

        - `README.md`

        ### Validation

        No validation commands ran.
        ");
    }

    #[test]
    fn the_validation_check_on_the_pull_request() {
        let validations = [
            passed("npm ci --ignore-scripts --no-audit --no-fund", 4200),
            passed("npm test | tee `log`", 1250),
        ];
        let (title, summary) = validation_check_output(&validations);
        insta::assert_snapshot!(format!("# {title}\n\n{summary}"), @r"
        # 2 validation commands passed

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | 4.2 s |
        | `npm test \| tee 'log'` | ✅ passed | 1.2 s |
        ");
        let (title, summary) = validation_check_output(&[]);
        insta::assert_snapshot!(format!("# {title}\n\n{summary}"), @"
        # No validation commands

        No validation commands ran.
        ");
    }

    /// What our own texts may mention (the requester), reference (the issue) and link to
    /// (the task's page).
    const OURS: Allowed<'static> = Allowed {
        mentions: &["octo-lead"],
        references: &["#17"],
        links: &["http://127.0.0.1:3000/tasks/42"],
    };

    /// An ended task whose every piece of user text is `text`.
    fn hostile_task(text: &str, state: TaskState) -> TaskRecord {
        let mut t = ended(state);
        t.summary = text.into();
        t.instructions = text.into();
        t.template = Some("note".into());
        t.params = BTreeMap::from([("topic".into(), text.into())]);
        t.error = Some(text.into());
        t.failing_command = Some(text.into());
        t.changed = Some(true);
        t.changed_files = vec![text.into()];
        t
    }

    /// Every text a person reads about a task whose user text is `text`, checked as GitHub
    /// reads each: Markdown (comment, check-run summary and text, PR body, validation
    /// check) or plain text (titles, commit message).
    fn assert_every_text_is_inert(text: &str) {
        let validations = [ValidationResult {
            command: text.into(),
            exit_code: Some(1),
            duration_ms: 10,
            output_tail: text.into(),
        }];
        let log = [text.to_owned(), format!("npm: {text}")];
        for state in [TaskState::Running, TaskState::Failed, TaskState::Succeeded] {
            let t = hostile_task(text, state);
            let cx = cx(&validations, &log);
            assert_inert_markdown(&tracking_comment(&t, &cx), &OURS);
            let (title, summary, text_) = check_run_output(&t, &cx);
            assert_inert_plain(&title, &OURS);
            assert_inert_markdown(&summary, &OURS);
            assert_inert_markdown(&text_, &OURS);
            assert_inert_plain(&pull_request_title(&t), &OURS);
            assert_inert_markdown(&pull_request_body(&t, &cx), &OURS);
            let (commit_title, commit_body) = commit_message(&t, cx.page_url);
            assert_inert_plain(&commit_title, &OURS);
            // The task's page is ours; a URL in plain text is a link, so it is left out.
            assert_inert_plain(&commit_body.replace(cx.page_url, "[page]"), &OURS);
            let (title, summary) = validation_check_output(&validations);
            assert_inert_plain(&title, &OURS);
            assert_inert_markdown(&summary, &OURS);
        }
    }

    #[test]
    fn hostile_user_text_is_inert_in_every_text_about_a_task() {
        for text in HOSTILE {
            assert_every_text_is_inert(text);
        }
        assert_every_text_is_inert(&very_long_line());
    }

    proptest::proptest! {
        #[test]
        fn no_text_about_a_task_makes_user_text_live(text in hostile_text()) {
            assert_every_text_is_inert(&text);
        }
    }

    /// Hostile text, as people read it in each place.
    #[test]
    fn hostile_user_text_as_people_read_it() {
        let text = "Fixes #1, closes acme/widgets#2 @everyone <img src=x onerror=alert(1)> [x](javascript:alert(1)) ``` `a` \u{202E}deadbeefcafe";
        let mut t = hostile_task(text, TaskState::Failed);
        t.params = BTreeMap::from([("topic".into(), "@octo-lead `x`".into())]);
        t.changed_files = vec!["`@everyone`.md".into()];
        let validations = [ValidationResult {
            command: "npm test | grep `#1`\nFixes #2".into(),
            exit_code: Some(1),
            duration_ms: 800,
            output_tail: String::new(),
        }];
        insta::assert_snapshot!(shown(&t, &cx(&validations, &[])), @r"
        **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) — ````Fixes #1, closes acme/widgets#2 @everyone <img src=x onerror=alert(1)> [x](javascript:alert(1)) ``` `a` deadbeefcafe```` — **failed** after 2 min 30 s

        > Fixes #<zwsp>1, closes acme/widgets#<zwsp>2 @<zwsp>everyone \<img src=x onerror=alert(1)\> \[x\](javascript:alert(1)) \`\`\` \`a\` deadbe<zwsp>efcafe

        Requested by @octo-lead · attempt 2 · [details](http://127.0.0.1:3000/tasks/42)

        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ======== check run: completed failure ========
        # Failed

        **Fixes #<zwsp>1, closes acme/widgets#<zwsp>2 @<zwsp>everyone \<img src=x onerror=alert(1)\> \[x\](javascript:alert(1)) \`\`\` \`a\` deadbe<zwsp>efcafe** · task [#42](http://127.0.0.1:3000/tasks/42) · attempt 2 · requested by @octo-lead

        Finished after 2 min 30 s.

        Failing command: ````Fixes #1, closes acme/widgets#2 @everyone <img src=x onerror=alert(1)> [x](javascript:alert(1)) ``` `a` deadbeefcafe````

        > Fixes #<zwsp>1, closes acme/widgets#<zwsp>2 @<zwsp>everyone \<img src=x onerror=alert(1)\> \[x\](javascript:alert(1)) \`\`\` \`a\` deadbe<zwsp>efcafe

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm test \| grep '#1' Fixes #2` | ❌ exit 1 | 0.8 s |


        Comment `/bg-agent retry 42` or press **Retry** on the check run to try again.

        ---- buttons: [Retry] Run this task again (retry) ----
        ");
        let (title, body) = commit_message(&t, "http://127.0.0.1:3000/tasks/42");
        let pr = format!(
            "{}\n\n{}\n\n======== commit ========\n{title}\n\n{body}",
            pull_request_title(&t),
            pull_request_body(&t, &cx(&validations, &[]))
        );
        insta::assert_snapshot!(pr.replace('\u{200B}', "<zwsp>"), @r"
        [bg-agent] Fixes #<zwsp>1, closes acme/widgets#<zwsp>2 @<zwsp>everyone <img src=x onerror=alert(1)> [x](javascript:alert(1)) ``` `a` deadbe<zwsp>efcafe

        This pull request was made by **bg-agent** task [#42](http://127.0.0.1:3000/tasks/42) (attempt 2), asked for by @octo-lead in #17.

        **Template:** `note` with `` topic=@octo-lead `x` ``

        ### Instructions

        ````text
        Fixes #1, closes acme/widgets#2 @everyone <img src=x onerror=alert(1)> [x](javascript:alert(1)) ``` `a` deadbeefcafe
        ````

        ### Changed files

        - `` `@everyone`.md ``

        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm test \| grep '#1' Fixes #2` | ❌ exit 1 | 0.8 s |

        Related: #17


        ======== commit ========
        [bg-agent] Fixes #<zwsp>1, closes acme/widgets#<zwsp>2 @<zwsp>everyone <img src=x onerror=alert(1)> [x](javascript:alert(1)) ``` `a` deadbe<zwsp>efcafe

        Made by bg-agent task 42 (attempt 2), asked for by octo-lead.

        Details: http://127.0.0.1:3000/tasks/42
        ");
    }
}
