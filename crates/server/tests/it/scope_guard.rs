//! The scope guard, end to end: an agent that deletes a test file has its change refused
//! (the task fails with the reason in the check run, no pull request), or, with `flag`,
//! pushed with the finding in the pull request's body and the check run.

use bg_agent_core::protocol::ScopeMode;
use bg_agent_core::task::TaskState;
use bg_agent_testkit::harness::{LEAD, Scenario};

/// A repository with a second test file, and an agent that deletes it.
fn deleting_agent(mode: ScopeMode) -> Scenario {
    Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .file("test/extra.test.js", "console.log('extra');\n")
        .agent(&["sh", "-c", "cat > NOTE.md; rm test/extra.test.js"])
        .configure(move |config| config.run.scope.mode = mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_deletes_a_test_is_refused_with_the_reason_and_no_pull_request() {
    let h = deleting_agent(ScopeMode::Refuse).start().await;
    h.comment(LEAD, "/bg-agent run write a note").await;
    let task = h.only_task().await.expect_state(TaskState::Failed).await;
    assert!(h.pulls().is_empty(), "nothing was pushed for review");
    assert_eq!(task.commit_sha, None);
    let run = h.check_run(task.id);
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    let summary = run.output.summary.clone().unwrap_or_default();
    let text = run.output.text.clone().unwrap_or_default();
    let scope = text.split("### Validation").next().unwrap_or_default();
    let scope = scope.split("### Last log lines").next().unwrap_or_default();
    // The task page lists the finding too (escaped by the template engine).
    let page = reqwest::get(format!("{}/tasks/{}", h.public_url(), task.id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<li>deletes the test file test/extra.test.js</li>"),
        "{page}"
    );
    h.snapshot_settings().await.bind(|| {
        insta::assert_snapshot!(summary.lines().last().unwrap_or_default(), @"> the scope guard refused this change: deletes the test file test/extra.test.js");
        insta::assert_snapshot!(scope.trim(), @"
        ### Scope guard

        The change goes beyond what a task is expected to touch:

        - deletes the test file test/extra.test.js
        ");
    });
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_flag_the_change_is_pushed_and_the_pull_request_lists_the_finding() {
    let h = deleting_agent(ScopeMode::Flag).start().await;
    h.comment(LEAD, "/bg-agent run write a note").await;
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    let pr = h.pr(u64::try_from(task.pr_number.unwrap()).unwrap());
    let section = pr
        .body
        .split("### Scope guard")
        .nth(1)
        .and_then(|rest| rest.split("###").next())
        .unwrap_or_default();
    insta::assert_snapshot!(section.trim(), @"
    The change goes beyond what a task is expected to touch:

    - deletes the test file test/extra.test.js
    ");
    let run = h.check_run(task.id);
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert!(
        run.output
            .text
            .unwrap_or_default()
            .contains("deletes the test file test/extra.test.js")
    );
    h.finish().await;
}
