//! From a `/bg-agent` comment to a validated pull request, for real: the fake GitHub
//! (real git repositories over smart HTTP, a tiny npm registry, strict schemas) sends
//! signed webhooks to the real server, which creates tasks in a real database, runs the
//! real `bg-agent runner` through the local executor, and reports on the fake GitHub
//! through the real client.

use std::time::Duration;

use bg_agent_core::task::{Phase, TaskState};
use bg_agent_testkit::fixtures::picky_test;
use bg_agent_testkit::harness::{LEAD, PROJECT, REPO_ID, Scenario};
use github_fake::{Fault, FaultKind, Role};

/// The engine, running tasks with this very binary.
fn scenario() -> Scenario {
    Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
}

/// Validation that never ends, so a test can act while the task runs.
const SLOW_VALIDATION: &str = "validation:\n  - node -e \"setTimeout(() => {}, 600000)\"\n";

/// Scenarios 1–3: the upgrade becomes a validated pull request; progress moves forward;
/// everything links back and the audit trail is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_comment_ends_in_a_validated_pull_request() {
    let h = scenario().start().await;
    let comment = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let proxy = h.only_task().await;
    let task = proxy.expect_state(TaskState::Succeeded).await;
    assert_eq!(task.changed, Some(true));
    assert_eq!(task.phase, Phase::Finished);
    assert_eq!(task.progress, 100);

    // 👀 on the command.
    assert!(h.reacted(comment.id, "eyes") > 0);

    // The check run went queued → in_progress → completed/success, forward only.
    let run = proxy.check_run();
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert_eq!(run.head_sha, task.head_sha.clone().unwrap());
    assert_eq!(
        run.details_url.as_deref(),
        Some(format!("{}/tasks/{}", h.public_url(), task.id).as_str())
    );
    let statuses: Vec<&str> = run.history.iter().map(|r| r.status.as_str()).collect();
    let first = |s: &str| statuses.iter().position(|x| *x == s).unwrap();
    assert!(first("queued") < first("in_progress"), "{statuses:?}");
    assert!(first("in_progress") < first("completed"), "{statuses:?}");
    let progress: Vec<u32> = run
        .history
        .iter()
        .filter(|r| r.status == "in_progress")
        .filter_map(|r| r.output.title.as_deref())
        .filter_map(|t| t.split(" — ").nth(1))
        .filter_map(|p| p.trim_end_matches(" %").parse().ok())
        .collect();
    assert!(!progress.is_empty(), "{:#?}", run.history);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(run.actions.is_empty(), "no buttons after success");

    // The pull request: changed package.json and lockfile, validation table, links.
    let pulls = h.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pr = h.pr(pulls[0].number);
    assert_eq!(pr.title, "[bg-agent] upgrade lodash 4.17.21");
    assert_eq!(Some(pr.head.as_str()), task.branch.as_deref());
    assert!(
        pr.head.starts_with(&format!("bg-agent/{}-", task.id)),
        "{}",
        pr.head
    );
    assert!(
        pr.labels.contains(&"bg-agent".to_owned()),
        "{:?}",
        pr.labels
    );
    assert!(
        pr.body.contains(&format!("/tasks/{}", task.id)),
        "{}",
        pr.body
    );
    assert!(pr.body.contains("#17"), "{}", pr.body);
    assert!(
        pr.body.contains("| `npm test` | ✅ passed |"),
        "{}",
        pr.body
    );
    assert!(
        pr.body
            .contains("| `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed |"),
        "{}",
        pr.body
    );
    assert!(pr.body.contains("@octo-lead"), "{}", pr.body);
    assert!(
        h.show(&pr.head, "package.json")
            .contains("\"lodash\": \"4.17.21\"")
    );
    assert!(
        h.show(&pr.head, "package-lock.json")
            .contains("lodash-4.17.21.tgz")
    );
    assert!(h.show("main", "package.json").contains("4.17.20"));
    assert_eq!(task.pr_number, Some(i32::try_from(pr.number).unwrap()));
    // The validation results also sit on the PR's head commit.
    let pr_run = h.validation_check(task.id);
    assert_eq!(Some(pr_run.head_sha.as_str()), task.commit_sha.as_deref());
    assert_eq!(pr_run.conclusion.as_deref(), Some("success"));

    // One tracking comment, edited to the end: state, PR link, page link.
    let comments = h.bot_comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("**succeeded**"), "{}", comments[0]);
    assert!(comments[0].contains("Pull request: "), "{}", comments[0]);
    assert!(comments[0].contains(&format!("/tasks/{}", task.id)));

    // All of it as people read it.
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(comments[0], @"
        **bg-agent** task [#[task 1]]([bg-agent]/tasks/[task 1]) — `upgrade lodash 4.17.21` — **succeeded** after [elapsed]

        Pull request: [github]/acme/widgets/pull/18

        Requested by @octo-lead · attempt 1 · [details]([bg-agent]/tasks/[task 1])
        ");
        insta::assert_snapshot!(format!("{}\n\n{}", pr.title, pr.body), @"
        [bg-agent] upgrade lodash 4.17.21

        This pull request was made by **bg-agent** task [#[task 1]]([bg-agent]/tasks/[task 1]) (attempt 1), asked for by @octo-lead in #17.

        **Template:** `upgrade` with `package=lodash`, `version=4.17.21`

        ### Instructions

        ```text
        Upgrade the npm dependency lodash to version 4.17.21, updating package.json and the lockfile, and make the repository's checks pass.
        ```

        ### Changed files

        - `package-lock.json`
        - `package.json`

        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | [duration] |
        | `npm test` | ✅ passed | [duration] |

        Related: #17
        ");
        let output = &run.output;
        insta::assert_snapshot!(
            format!(
                "# {}\n\n{}\n\n---- text ----\n{}",
                output.title.as_deref().unwrap_or_default(),
                output.summary.as_deref().unwrap_or_default(),
                output.text.as_deref().unwrap_or_default()
            ),
            @"
        # Succeeded

        **upgrade lodash 4.17.21** · task [#[task 1]]([bg-agent]/tasks/[task 1]) · attempt 1 · requested by @octo-lead

        Finished after [elapsed].

        Pull request: [github]/acme/widgets/pull/18

        ---- text ----
        ### Validation

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | [duration] |
        | `npm test` | ✅ passed | [duration] |
        "
        );
        insta::assert_snapshot!(
            format!(
                "{}: {}\n# {}\n\n{}",
                pr_run.name,
                pr_run.conclusion.as_deref().unwrap_or_default(),
                pr_run.output.title.as_deref().unwrap_or_default(),
                pr_run.output.summary.as_deref().unwrap_or_default()
            ),
            @"
        bg-agent / validation: success
        # 2 validation commands passed

        | command | result | duration |
        | --- | --- | --- |
        | `npm ci --ignore-scripts --no-audit --no-fund` | ✅ passed | [duration] |
        | `npm test` | ✅ passed | [duration] |
        "
        );
    });

    // The audit trail, in order.
    let actions = proxy.audit().await;
    let expected = [
        "created:queued",
        "queued->starting",
        "starting->running",
        "phase cloning",
        "phase applying",
        "phase validating",
        "validated `npm test`: passed",
        "phase pushing",
        "running->succeeded",
        "opened pull request",
    ];
    let mut at = 0;
    for step in expected {
        let found = actions[at..]
            .iter()
            .position(|a| a.starts_with(step))
            .unwrap_or_else(|| panic!("{step} missing after position {at} in {actions:?}"));
        at += found + 1;
    }
    let events = proxy.events().await;
    assert_eq!(events[0].actor, LEAD);
    assert!(events[0].delivery_guid.is_some());

    // The task page shows it all.
    let page = reqwest::get(format!("{}/tasks/{}", h.public_url(), task.id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("succeeded"), "{page}");
    assert!(page.contains("npm test"), "{page}");
    h.finish().await;
}

/// Scenario 4: tests fail after the change → no PR, `failure` naming the command; the
/// Retry button makes attempt 2, linked to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_validation_opens_no_pull_request_and_retry_makes_a_linked_attempt() {
    let h = scenario().tests(picky_test(PROJECT)).start().await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let proxy = h.only_task().await;
    let first = proxy.expect_state(TaskState::Failed).await;
    assert_eq!(first.failing_command.as_deref(), Some("npm test"));
    assert!(
        first.error.as_deref().unwrap().contains("npm test"),
        "{first:?}"
    );
    assert!(h.pulls().is_empty());
    let run = proxy.check_run();
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert!(
        run.output
            .summary
            .as_deref()
            .unwrap()
            .contains("Failing command: `npm test`"),
        "{:?}",
        run.output
    );
    let retry: Vec<&str> = run.actions.iter().map(|a| a.identifier.as_str()).collect();
    assert_eq!(retry, ["retry"]);
    let validations = proxy.validations().await;
    let commands: Vec<&str> = validations.iter().map(|v| v.command.as_str()).collect();
    assert_eq!(
        commands,
        ["npm ci --ignore-scripts --no-audit --no-fund", "npm test"]
    );
    assert_eq!(validations[1].exit_code, Some(1));
    assert!(validations[1].output_tail.contains("breaks the widgets"));
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(h.last_reply(), @"
        **bg-agent** task [#[task 1]]([bg-agent]/tasks/[task 1]) — `upgrade lodash 4.17.21` — **failed** after [elapsed]

        > validation failed: npm test exited with 1

        Requested by @octo-lead · attempt 1 · [details]([bg-agent]/tasks/[task 1])

        Comment `/bg-agent retry [task 1]` or press **Retry** on the check run to try again.
        ");
        insta::assert_snapshot!(
            format!(
                "# {}\n\n{}",
                run.output.title.as_deref().unwrap_or_default(),
                run.output.summary.as_deref().unwrap_or_default()
            ),
            @"
        # Failed

        **upgrade lodash 4.17.21** · task [#[task 1]]([bg-agent]/tasks/[task 1]) · attempt 1 · requested by @octo-lead

        Finished after [elapsed].

        Failing command: `npm test`

        > validation failed: npm test exited with 1
        "
        );
    });

    // Retry from the button.
    h.click(first.id, LEAD, "retry").await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    let second = &tasks[1];
    assert_eq!(second.retry_of, Some(first.id));
    assert_eq!(second.attempt, 2);
    assert_eq!(second.trigger, "retry_button");
    let second = h.task(second.id).expect_state(TaskState::Failed).await;
    // The original is kept as it was.
    let original = proxy.get().await;
    assert_eq!(original.state, TaskState::Failed);
    assert_eq!(original.attempt, 1);
    // Clicking Retry on the first again does not make a third attempt.
    h.click(first.id, LEAD, "retry").await;
    assert_eq!(h.tasks().await.len(), 2);
    // GitHub's own "Re-run" on the second attempt's check run makes attempt 3.
    h.rerun(second.id, LEAD).await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 3, "{tasks:#?}");
    assert_eq!(tasks[2].retry_of, Some(second.id));
    assert_eq!(tasks[2].attempt, 3);
    assert_eq!(tasks[2].trigger, "rerun");
    h.task(tasks[2].id).expect_state(TaskState::Failed).await;
    h.finish().await;
}

/// Scenario 5: a repository template with parameters, used twice with different values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_template_is_used_twice_and_counted() {
    let config = "templates:\n  - name: note\n    description: Leave a note for the team\n    parameters:\n      - { name: topic, pattern: \"[a-z]+\" }\n    instructions: Write a note about {{topic}}.\n";
    let h = scenario()
        .file(".github/bg-agent.yml", config)
        .agent(&["sh", "-c", "cat > NOTE.md"])
        .start()
        .await;
    h.comment(LEAD, "/bg-agent note cats").await;
    let first = h.tasks().await[0].id;
    let first = h.task(first).expect_state(TaskState::Succeeded).await;
    h.comment(LEAD, "/bg-agent note dogs").await;
    let second = h.tasks().await[1].id;
    let second = h.task(second).expect_state(TaskState::Succeeded).await;
    assert!(
        h.show(first.branch.as_deref().unwrap(), "NOTE.md")
            .contains("Write a note about cats.")
    );
    assert!(
        h.show(second.branch.as_deref().unwrap(), "NOTE.md")
            .contains("Write a note about dogs.")
    );
    let (uses, last) = h.store().template_usage(REPO_ID, "note").await.unwrap();
    assert_eq!(uses, 2);
    assert!(last.is_some());
    assert_eq!(h.pulls().len(), 2);
    // A value that does not match the pattern is refused with the expected form.
    h.comment(LEAD, "/bg-agent note C4TS").await;
    let last_reply = h.last_reply();
    assert!(last_reply.contains("topic"), "{last_reply}");
    insta::assert_snapshot!(last_reply, @r#"
    **bg-agent:** parameter topic is "C4TS", which does not match the expected form for `note`.

    Usage: `/bg-agent note <topic>`

    Expected `<topic>`: text matching `[a-z]+`
    "#);
    assert_eq!(h.tasks().await.len(), 2);
    h.finish().await;
}

/// Limits: a second task by the same user is refused; a second user's task on the same
/// repository waits queued (with its position) and runs after. Cancel stops a running
/// task, a duplicate delivery makes no second task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_queueing_cancel_and_duplicates() {
    let h = scenario()
        .file(".github/bg-agent.yml", SLOW_VALIDATION)
        .start()
        .await;
    let other = "octo-dev";
    h.add_user(other, Role::Write);

    let comment = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let first = h.only_task().await;
    first.wait_phase(Phase::Validating).await;

    // The same delivery again: still one task.
    let redelivered = h.redeliver(comment.delivery).await;
    assert!(matches!(redelivered, 200 | 202), "{redelivered}");
    assert_eq!(h.tasks().await.len(), 1);

    // Same user again: refused, naming the running task.
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let refusal = h.last_reply();
    assert!(refusal.contains(&format!("#{}", first.id)), "{refusal}");
    assert_eq!(h.tasks().await.len(), 1);

    // Another user: queued behind it.
    h.comment(other, "/bg-agent upgrade lodash 4.17.21").await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 2);
    let second = h.task(tasks[1].id);
    second.expect_state(TaskState::Queued).await;
    let queued = h.last_reply();
    assert!(queued.contains("position 1"), "{:?}", h.bot_comments());
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(refusal, @"**bg-agent:** @octo-lead you already have an active task, #[task 1]; one at a time. Use `/bg-agent status` to see it.");
        insta::assert_snapshot!(queued, @"
        **bg-agent** task [#[task 2]]([bg-agent]/tasks/[task 2]) — `upgrade lodash 4.17.21` — **queued**, position 1 in this repository's queue

        Requested by @octo-dev · attempt 1 · [details]([bg-agent]/tasks/[task 2])
        ");
    });

    // Cancel the running one: it ends cancelled, and the queued one starts.
    h.comment(LEAD, "/bg-agent cancel").await;
    first.expect_state(TaskState::Cancelled).await;
    assert_eq!(first.check_run().conclusion.as_deref(), Some("cancelled"));
    second.wait_phase(Phase::Validating).await;

    // Cancel the second from its check run's button.
    second.wait_button("cancel").await;
    h.click(second.id, other, "cancel").await;
    second.expect_state(TaskState::Cancelled).await;
    assert!(h.pulls().is_empty());
    let run = first.check_run();
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(h.bot_comments()[0], @"
        **bg-agent** task [#[task 1]]([bg-agent]/tasks/[task 1]) — `upgrade lodash 4.17.21` — **cancelled** after [elapsed]

        > cancelled by @<zwsp>octo-lead

        Requested by @octo-lead · attempt 1 · [details]([bg-agent]/tasks/[task 1])

        Comment `/bg-agent retry [task 1]` or press **Retry** on the check run to try again.
        ");
        insta::assert_snapshot!(
            format!(
                "# {}\n\n{}\n\n---- text ----\n{}",
                run.output.title.as_deref().unwrap_or_default(),
                run.output.summary.as_deref().unwrap_or_default(),
                run.output.text.as_deref().unwrap_or_default()
            ),
            @"
        # Cancelled

        **upgrade lodash 4.17.21** · task [#[task 1]]([bg-agent]/tasks/[task 1]) · attempt 1 · requested by @octo-lead

        Finished after [elapsed].

        > cancelled by @<zwsp>octo-lead

        ---- text ----
        Comment `/bg-agent retry [task 1]` or press **Retry** on the check run to try again.
        "
        );
    });
    h.finish().await;
}

/// A GitHub outage while reporting delays the reports but loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_github_errors() {
    let h = scenario().start().await;
    h.sim.inject_fault(
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::ServerError(502),
        )
        .times(6),
    );
    h.sim
        .inject_fault(Fault::new("POST", "/repos/*/*/pulls", FaultKind::ServerError(500)).times(2));
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await;
    task.expect_state(TaskState::Succeeded).await;
    assert_eq!(h.pulls().len(), 1, "exactly one pull request");
    assert_eq!(task.check_run().conclusion.as_deref(), Some("success"));
    h.finish().await;
}

/// The server stops mid-task and starts again: the task whose execution is gone ends
/// `failed` (lost, retryable), nothing is duplicated, and a retry completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_task_leaves_nothing_stuck() {
    let mut h = scenario()
        .file(".github/bg-agent.yml", SLOW_VALIDATION)
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    h.task(task).wait_phase(Phase::Validating).await;
    h.stop_server().await;
    h.start_server().await;
    let lost = h.task(task).expect_state(TaskState::Failed).await;
    assert!(lost.error.as_deref().unwrap().contains("lost"), "{lost:?}");
    assert_eq!(h.tasks().await.len(), 1, "no duplicate task");
    assert!(h.pulls().is_empty(), "no pull request");
    let run = h.check_run(task);
    assert!(run.actions.iter().any(|a| a.identifier == "retry"));
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(h.bot_comments()[0], @"
        **bg-agent** task [#[task 1]]([bg-agent]/tasks/[task 1]) — `upgrade lodash 4.17.21` — **failed** after [elapsed]

        > lost: its execution is gone (the server restarted while it ran); retry to run it again

        Requested by @octo-lead · attempt 1 · [details]([bg-agent]/tasks/[task 1])

        Comment `/bg-agent retry [task 1]` or press **Retry** on the check run to try again.
        ");
    });
    h.finish().await;
}

/// A task that runs past its timeout is stopped and ends `timed_out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_ends_timed_out() {
    let config = format!(
        "{SLOW_VALIDATION}templates:\n  - name: slow\n    parameters: []\n    instructions: Take your time.\n    timeout_secs: 60\n"
    );
    let h = scenario()
        .file(".github/bg-agent.yml", config)
        .agent(&["sh", "-c", "cat > SLOW.md"])
        .start()
        .await;
    h.comment(LEAD, "/bg-agent slow").await;
    let task = h.only_task().await;
    assert_eq!(task.get().await.timeout_secs, 60);
    task.expect_state(TaskState::TimedOut).await;
    let run = task.check_run();
    assert_eq!(run.conclusion.as_deref(), Some("timed_out"));
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(h.bot_comments()[0], @"
        **bg-agent** task [#[task 1]]([bg-agent]/tasks/[task 1]) — `slow` — **timed out** after [elapsed]

        > timed out after 60 s

        Requested by @octo-lead · attempt 1 · [details]([bg-agent]/tasks/[task 1])

        Comment `/bg-agent retry [task 1]` or press **Retry** on the check run to try again.
        ");
        insta::assert_snapshot!(
            format!(
                "# {}\n\n{}",
                run.output.title.as_deref().unwrap_or_default(),
                run.output.summary.as_deref().unwrap_or_default()
            ),
            @"
        # Timed out

        **slow** · task [#[task 1]]([bg-agent]/tasks/[task 1]) · attempt 1 · requested by @octo-lead

        Finished after [elapsed].

        > timed out after 60 s
        "
        );
    });
    h.finish().await;
}

/// Two replicas with local executors: neither takes the other's running task for lost
/// while the other is alive; once it stops, the survivor settles the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_leave_each_others_runs_alone_until_one_stops() {
    let mut h = scenario()
        .file(".github/bg-agent.yml", SLOW_VALIDATION)
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    h.task(task).wait_phase(Phase::Validating).await;
    h.start_replica().await;
    // Nothing may happen: give the second replica's supervisor about ten passes (200 ms
    // apart) in which it could wrongly judge the first one's runner lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = h.task(task).get().await;
    assert_eq!(still.state, TaskState::Running, "{still:?}");
    // The first replica stops (its runner with it): the second settles the task.
    h.stop_server().await;
    let lost = h.task(task).expect_state(TaskState::Failed).await;
    assert!(lost.error.as_deref().unwrap().contains("lost"), "{lost:?}");
    h.finish().await;
}

/// A repository's tests that flood their output: a 10 MB line without a newline and
/// 200,000 lines, then the failure at the very end. The task ends, the stored log is
/// bounded in lines and bytes, and its end (the failure) is there behind a marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_is_bounded_and_keeps_its_end() {
    use bg_agent_core::output::{CUT_MARKER, MAX_LINE_CHARS};
    use bg_agent_core::protocol::MAX_LOG_LINES;
    let flood = r#"
process.stdout.write("x".repeat(10 * 1024 * 1024));
process.stdout.write("\n");
let chunk = "";
for (let i = 0; i < 200000; i++) {
  chunk += "flood line " + i + "\n";
  if (chunk.length > 65536) { process.stdout.write(chunk); chunk = ""; }
}
process.stdout.write(chunk);
process.stdout.write("FAIL: the failure is at the end");
process.exitCode = 1;
"#;
    let h = scenario().tests(flood).start().await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let proxy = h.only_task().await;
    let task = proxy.expect_state(TaskState::Failed).await;
    assert_eq!(task.failing_command.as_deref(), Some("npm test"));
    let log = h.store().log_tail(task.id, i64::MAX).await.unwrap();
    assert!(log.len() <= MAX_LOG_LINES + 1, "{} lines", log.len());
    let bytes: usize = log.iter().map(String::len).sum();
    assert!(
        bytes <= MAX_LOG_LINES * (MAX_LINE_CHARS * 4 + CUT_MARKER.len()),
        "{bytes} bytes"
    );
    let long = log
        .iter()
        .find(|l| l.starts_with("xxxx"))
        .expect("the long line");
    assert_eq!(long, &format!("{}{CUT_MARKER}", "x".repeat(MAX_LINE_CHARS)));
    assert!(
        log.iter().any(|l| l.contains("lines left out; the last")),
        "no marker"
    );
    let end = log
        .iter()
        .position(|l| l == "FAIL: the failure is at the end")
        .expect("the last line");
    assert_eq!(log[end - 1], "flood line 199999");
    // The validation's output tail ends with the failure too.
    let validations = proxy.validations().await;
    assert!(
        validations[1]
            .output_tail
            .contains("FAIL: the failure is at the end"),
        "{:?}",
        validations[1].output_tail
    );
    h.finish().await;
}
