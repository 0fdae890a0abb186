//! The short comments bg-agent answers a command with when it makes no task, or before
//! one: refusals, status, help. Built here, in one place, so their wording is reviewed
//! together (the tests below show each one as a person reads it).
//!
//! Two kinds of reply live next to what they explain and are shown here too: a command
//! that does not parse ([`crate::command::ParseError::render_markdown`], and the help,
//! [`crate::command::help_markdown`]) and a template's own complaints
//! ([`super::template::unknown_template_reply`], [`super::Template::render_param_error`]).
//! What a task itself looks like (tracking comment, check run, pull request) is in
//! [`super::render`].

use std::fmt::Write as _;

use super::{Permission, TaskId, TaskRecord, TaskState};
use crate::markdown::inert;

/// Every reply starts with this, so people see who is talking in a thread.
pub const PREFIX: &str = "**bg-agent:** ";

fn access(required: Permission) -> &'static str {
    match required {
        Permission::Admin => "admin",
        Permission::Write => "write",
        Permission::Read => "read",
        Permission::None => "some",
    }
}

/// The sender may not use the app here.
pub fn no_permission(login: &str, required: Permission) -> String {
    let access = access(required);
    format!(
        "{PREFIX}@{login} only people with {access} access to this repository can ask me for tasks."
    )
}

/// A label asked for a task from an issue whose author may not ask for tasks: the issue's
/// text would become the agent's instructions. Answers the labeller; names the author
/// without notifying them.
pub fn untrusted_issue_author(
    labeller: &str,
    author: Option<&str>,
    required: Permission,
) -> String {
    let access = access(required);
    let author = match author {
        Some(author) => format!("its author, {},", inert(&format!("@{author}"))),
        None => "its author".to_owned(),
    };
    format!(
        "{PREFIX}@{labeller} I did not start a task from this issue: its title and body would \
         become my instructions, and {author} does not have {access} access to this \
         repository. To go ahead, write what should be done in a `/bg-agent run` comment \
         of your own."
    )
}

/// The repository's `.github/bg-agent.yml` cannot be used; `problem` says why (it quotes
/// the file, which people wrote).
pub fn unusable_repo_config(problem: &str) -> String {
    format!("{PREFIX}{}", inert(problem))
}

/// One active task per person.
pub fn already_active(login: &str, active_task: TaskId) -> String {
    format!(
        "{PREFIX}@{login} you already have an active task, #{active_task}; one at a time. \
         Use `/bg-agent status` to see it."
    )
}

/// `/bg-agent retry|cancel [id]` about a task that is not there. `task` is the id the
/// command named, if any.
pub fn no_such_task(verb: &str, task: Option<TaskId>) -> String {
    let what = task.map_or("you have no task".to_owned(), |id| {
        format!("there is no task #{id}")
    });
    format!("{PREFIX}nothing to {verb}: {what} in this repository.")
}

/// `is running`, `succeeded`, `was cancelled`: a state as the end of a sentence.
fn state_phrase(state: TaskState) -> &'static str {
    match state {
        TaskState::Queued => "is still queued",
        TaskState::Starting => "is starting",
        TaskState::Running => "is still running",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "was cancelled",
        TaskState::TimedOut => "timed out",
    }
}

/// A state in a table: words, not the stored name.
/// `/bg-agent retry` of a task that has not failed.
pub fn not_retryable(task: TaskId, state: TaskState) -> String {
    format!(
        "{PREFIX}task #{task} {}; only failed, cancelled or timed-out tasks can be retried.",
        state_phrase(state)
    )
}

/// `/bg-agent cancel` of a task that has ended.
pub fn already_ended(task: TaskId, state: TaskState) -> String {
    format!(
        "{PREFIX}task #{task} has already ended: it {}.",
        state_phrase(state)
    )
}

/// `/bg-agent status`: the sender's latest tasks in the repository, newest first.
pub fn status(login: &str, repository: &str, tasks: &[TaskRecord]) -> String {
    let mut reply = format!("{PREFIX}@{login}'s tasks in `{repository}`");
    if tasks.is_empty() {
        reply.push_str(": none yet. Try `/bg-agent help`.");
        return reply;
    }
    reply
        .push_str(" (newest first):\n\n| task | what | state | since |\n| --- | --- | --- | --- |");
    for task in tasks {
        let _ = write!(
            reply,
            "\n| #{} | {} | {} | {} |",
            task.id,
            task.template.as_deref().unwrap_or("run"),
            super::render::state_word(task),
            task.created_at.format("%Y-%m-%d %H:%M UTC")
        );
    }
    reply
}

/// Why a reply was a refusal, as the audit records it: the reply without its prefix,
/// cut short.
pub fn refusal_reason(reply: &str) -> String {
    reply.trim_start_matches(PREFIX).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::parse_comment;
    use crate::task::render::tests::task;
    use crate::task::template::unknown_template_reply;
    use crate::task::{RepoConfig, builtin_templates};

    #[test]
    fn refusals_name_the_person_and_the_rule() {
        insta::assert_snapshot!(no_permission("drive-by", Permission::Write), @"**bg-agent:** @drive-by only people with write access to this repository can ask me for tasks.");
        insta::assert_snapshot!(no_permission("drive-by", Permission::Admin), @"**bg-agent:** @drive-by only people with admin access to this repository can ask me for tasks.");
        insta::assert_snapshot!(already_active("octo-lead", 42.into()), @"**bg-agent:** @octo-lead you already have an active task, #42; one at a time. Use `/bg-agent status` to see it.");
        insta::assert_snapshot!(
            unusable_repo_config(&RepoConfig::parse("templates: 3").unwrap_err().to_string()),
            @r"**bg-agent:** .github/bg-agent.yml is not valid YAML for bg-agent: templates: invalid type: integer \`3\`, expected a sequence at line 1 column 12"
        );
    }

    #[test]
    fn retry_and_cancel_explain_why_nothing_happened() {
        insta::assert_snapshot!(no_such_task("retry", None), @"**bg-agent:** nothing to retry: you have no task in this repository.");
        insta::assert_snapshot!(no_such_task("cancel", Some(7.into())), @"**bg-agent:** nothing to cancel: there is no task #7 in this repository.");
        insta::assert_snapshot!(not_retryable(42.into(), TaskState::Running), @"**bg-agent:** task #42 is still running; only failed, cancelled or timed-out tasks can be retried.");
        insta::assert_snapshot!(not_retryable(42.into(), TaskState::Succeeded), @"**bg-agent:** task #42 succeeded; only failed, cancelled or timed-out tasks can be retried.");
        insta::assert_snapshot!(already_ended(42.into(), TaskState::TimedOut), @"**bg-agent:** task #42 has already ended: it timed out.");
        insta::assert_snapshot!(already_ended(42.into(), TaskState::Cancelled), @"**bg-agent:** task #42 has already ended: it was cancelled.");
    }

    #[test]
    fn status_lists_the_latest_tasks_or_points_to_help() {
        insta::assert_snapshot!(status("octo-lead", "acme/widgets", &[]), @"**bg-agent:** @octo-lead's tasks in `acme/widgets`: none yet. Try `/bg-agent help`.");
        let mut free_text = task(TaskState::Failed);
        free_text.id = 41.into();
        free_text.template = None;
        let mut timed_out = task(TaskState::TimedOut);
        timed_out.id = 40.into();
        let tasks = [task(TaskState::Queued), free_text, timed_out];
        insta::assert_snapshot!(status("octo-lead", "acme/widgets", &tasks), @"
        **bg-agent:** @octo-lead's tasks in `acme/widgets` (newest first):

        | task | what | state | since |
        | --- | --- | --- | --- |
        | #42 | upgrade | queued | 2026-11-21 10:00 UTC |
        | #41 | run | failed | 2026-11-21 10:00 UTC |
        | #40 | upgrade | timed out | 2026-11-21 10:00 UTC |
        ");
    }

    #[test]
    fn template_replies_suggest_and_show_the_expected_form() {
        let upgrade = builtin_templates()
            .into_iter()
            .find(|t| t.name == "upgrade")
            .unwrap();
        insta::assert_snapshot!(
            unknown_template_reply("upgarde", &["upgrade", "bump-node"]),
            @"
        **bg-agent:** there is no template `upgarde`. Did you mean `upgrade`?

        Available templates: `bump-node`, `upgrade`.
        "
        );
        insta::assert_snapshot!(unknown_template_reply("anything", &[]), @"**bg-agent:** there is no template `anything`. No templates are available here; use `/bg-agent run <instructions>`.");
        let error = upgrade
            .bind(&["lodash".into(), "latest".into()], &Default::default())
            .unwrap_err();
        insta::assert_snapshot!(upgrade.render_param_error(&error), @r#"
        **bg-agent:** parameter version is "latest", which does not match the expected form for `upgrade`.

        Usage: `/bg-agent upgrade <package> <version>`

        Expected `<version>`: text matching `[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}(-[0-9A-Za-z.-]{1,64})?(\+[0-9A-Za-z.-]{1,64})?` — an exact version, e.g. 4.17.21
        "#);
        let error = upgrade
            .bind(&["lodash".into()], &Default::default())
            .unwrap_err();
        insta::assert_snapshot!(upgrade.render_param_error(&error), @r"
        **bg-agent:** missing parameter version for `upgrade`.

        Usage: `/bg-agent upgrade <package> <version>`

        Expected `<version>`: text matching `[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}(-[0-9A-Za-z.-]{1,64})?(\+[0-9A-Za-z.-]{1,64})?` — an exact version, e.g. 4.17.21
        ");
    }

    #[test]
    fn a_command_that_does_not_parse_is_explained() {
        let reply = |comment: &str| match parse_comment(comment) {
            Some(Err(e)) => e.render_markdown(),
            other => panic!("{comment} parsed as {other:?}"),
        };
        insta::assert_snapshot!(reply("/bg-agent upgrade lodash \"4.17.21"), @r#"
        Unclosed quote `"`: add the closing quote.

        Usage: `/bg-agent <template> [args...] [key=value...]`

        See `/bg-agent help` for all commands.
        "#);
        insta::assert_snapshot!(reply("/bg-agent retry soon"), @"
        `soon` is not a task id; use a number such as `42` or `#42`.

        Usage: `/bg-agent retry [task-id]`

        See `/bg-agent help` for all commands.
        ");
        insta::assert_snapshot!(reply("/bg-agent stauts"), @"
        Unknown command `stauts`. Did you mean `status`?

        Usage: `/bg-agent status`

        See `/bg-agent help` for all commands.
        ");
    }

    #[test]
    fn the_audit_keeps_the_reason_without_the_prefix() {
        assert_eq!(
            refusal_reason(&already_ended(42.into(), TaskState::Cancelled)),
            "task #42 has already ended: it was cancelled."
        );
        assert_eq!(refusal_reason(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn a_label_on_an_untrusted_authors_issue_is_refused_with_the_reason() {
        insta::assert_snapshot!(
            untrusted_issue_author("octo-lead", Some("drive-by"), Permission::Write).replace('\u{200B}', "<zwsp>"),
            @"**bg-agent:** @octo-lead I did not start a task from this issue: its title and body would become my instructions, and its author, @<zwsp>drive-by, does not have write access to this repository. To go ahead, write what should be done in a `/bg-agent run` comment of your own."
        );
        insta::assert_snapshot!(
            untrusted_issue_author("octo-lead", None, Permission::Admin),
            @"**bg-agent:** @octo-lead I did not start a task from this issue: its title and body would become my instructions, and its author does not have admin access to this repository. To go ahead, write what should be done in a `/bg-agent run` comment of your own."
        );
    }

    /// Every reply that quotes what someone wrote, with `text` as what they wrote.
    fn assert_every_reply_is_inert(text: &str) {
        use crate::markdown::check::{Allowed, assert_inert_markdown};
        use crate::task::ParamError;
        let ours = Allowed {
            mentions: &["octo-lead"],
            ..Allowed::default()
        };
        let upgrade = builtin_templates().remove(0);
        let mut replies = vec![
            unusable_repo_config(text),
            unknown_template_reply(text, &["upgrade"]),
            upgrade.render_param_error(&ParamError::Invalid {
                name: "version".into(),
                value: text.into(),
            }),
            upgrade.render_param_error(&ParamError::Unknown {
                name: text.into(),
                suggestion: None,
            }),
            upgrade.render_param_error(&ParamError::TooMany { extra: text.into() }),
            untrusted_issue_author("octo-lead", Some(text), Permission::Write),
        ];
        if let Some(Err(e)) = parse_comment(&format!("/bg-agent {text}")) {
            replies.push(e.render_markdown());
        }
        if let Some(Err(e)) = parse_comment(&format!("/bg-agent retry {text}")) {
            replies.push(e.render_markdown());
        }
        let mut custom = upgrade.clone();
        custom.parameters[0].pattern = Some(text.into());
        custom.parameters[0].default = Some(text.into());
        custom.parameters[0].description = text.into();
        replies.push(custom.render_param_error(&ParamError::Missing {
            name: "package".into(),
        }));
        for reply in replies {
            assert_inert_markdown(&reply, &ours);
        }
    }

    #[test]
    fn hostile_text_quoted_in_a_reply_is_inert() {
        use crate::markdown::check::{HOSTILE, very_long_line};
        for text in HOSTILE {
            assert_every_reply_is_inert(text);
        }
        assert_every_reply_is_inert(&very_long_line());
    }

    proptest::proptest! {
        #[test]
        fn no_reply_makes_quoted_text_live(text in crate::markdown::check::hostile_text()) {
            assert_every_reply_is_inert(&text);
        }
    }
}
