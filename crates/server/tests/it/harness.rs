//! The scenario harness itself: what every scenario relies on it to check.

use bg_agent_core::task::TaskState;
use bg_agent_testkit::harness::{LEAD, Scenario};
use github_fake::world;

/// A request GitHub would refuse, sent to the fake as the App: `finish` must fail.
#[tokio::test]
#[should_panic(expected = "schema violation")]
async fn finish_fails_the_test_when_the_fake_recorded_a_schema_violation() {
    let h = Scenario::intake().start().await;
    let token = h
        .sim
        .mint_token(world::INSTALLATION_ID, None, None)
        .unwrap();
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/repos/{}/issues/{}/comments",
            h.sim.api_url(),
            world::WIDGETS,
            world::ISSUE_NUMBER
        ))
        .header("authorization", format!("token {token}"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 422);
    h.finish().await;
}

/// A scenario cannot skip the final checks by forgetting them.
#[tokio::test]
#[should_panic(expected = "must end with `h.finish().await`")]
async fn a_scenario_that_does_not_finish_fails() {
    let _h = Scenario::intake().start().await;
}

/// A clean scenario finishes quietly, and the proxies read what the server did.
#[tokio::test]
async fn a_clean_scenario_finishes_quietly() {
    let h = Scenario::intake().start().await;
    h.comment(LEAD, "/bg-agent run tidy the README").await;
    let task = h.only_task().await.expect_state(TaskState::Queued).await;
    assert_eq!(task.summary, "tidy the README");
    assert_eq!(h.bot_comments().len(), 1);
    h.finish().await;
}
