//! What becomes of a task's pull request, and what its coding agent used, as people read
//! them: GitHub's own `pull_request` payloads (`tests/fixtures/webhooks`) arrive signed
//! through the real `POST /webhook`, and the state shows on the task page, in the list
//! and in the API; an agent's rounds show with their provider and model.

use bg_agent::store::DeliveryState;
use bg_agent_core::task::{PrState, TaskRecord, TaskState};
use bg_agent_testkit::fixtures::{SECRET, fixture};
use bg_agent_testkit::harness::{Harness, LEAD, REPO_ID, Scenario};
use bg_agent_testkit::recording::wait_for_delivery;
use serde_json::Value;

/// GitHub's payload `name`, about pull request `number`, updated at `updated_at` (RFC
/// 3339) when given.
fn pull_request_event(name: &str, number: i32, updated_at: Option<&str>) -> Vec<u8> {
    let mut payload: Value = serde_json::from_slice(&fixture(name)).unwrap();
    payload["number"] = number.into();
    payload["pull_request"]["number"] = number.into();
    if let Some(at) = updated_at {
        payload["pull_request"]["updated_at"] = at.into();
    }
    serde_json::to_vec(&payload).unwrap()
}

/// Signs `body` as GitHub does and POSTs it to the server's webhook; returns the stored
/// delivery's state and reason once processed.
async fn deliver(h: &Harness, event: &str, body: &[u8]) -> (DeliveryState, Option<String>) {
    let guid = uuid::Uuid::new_v4().to_string();
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", h.public_url()))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", &guid)
        .header(
            "x-hub-signature-256",
            bg_agent::webhook::sign(SECRET.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let record = wait_for_delivery(h.store(), &guid, |d| d.state != DeliveryState::Pending).await;
    (record.state, record.reason)
}

async fn get_json(h: &Harness, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", h.public_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn get_text(h: &Harness, path: &str) -> String {
    reqwest::get(format!("{}{path}", h.public_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn state_of(h: &Harness, task: &TaskRecord) -> Option<PrState> {
    h.task(task.id).get().await.pr_state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_closed_or_reopened_pull_request_shows_on_the_page_the_list_and_the_api() {
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    let task = h.task(task.id).reported_end().await;
    let number = task.pr_number.unwrap();
    assert_eq!(task.pr_state, Some(PrState::Open), "opened, so open");

    // octo-lead closes it without merging.
    let closed = pull_request_event("pull_request.closed.unmerged.json", number, None);
    let (outcome, reason) = deliver(&h, "pull_request", &closed).await;
    assert_eq!(outcome, DeliveryState::Processed, "{reason:?}");
    assert_eq!(state_of(&h, &task).await, Some(PrState::Closed));

    // ...reopens it (later), and a late retry of the older `closed` changes nothing.
    let reopened = pull_request_event("pull_request.reopened.json", number, None);
    assert_eq!(
        deliver(&h, "pull_request", &reopened).await.0,
        DeliveryState::Processed
    );
    assert_eq!(state_of(&h, &task).await, Some(PrState::Open));
    let (outcome, reason) = deliver(&h, "pull_request", &closed).await;
    assert_eq!(outcome, DeliveryState::Ignored);
    assert!(reason.unwrap().contains("newer"));
    assert_eq!(state_of(&h, &task).await, Some(PrState::Open));

    // ...and merges it.
    let merged = pull_request_event(
        "pull_request.closed.json",
        number,
        Some("2025-06-02T09:50:00Z"),
    );
    assert_eq!(
        deliver(&h, "pull_request", &merged).await.0,
        DeliveryState::Processed
    );
    assert_eq!(state_of(&h, &task).await, Some(PrState::Merged));
    let audit = h.task(task.id).audit().await;
    let told: Vec<&String> = audit
        .iter()
        .filter(|a| a.contains(&format!("pull request #{number} ")))
        .collect();
    assert_eq!(told.len(), 3, "{audit:#?}");

    // A pull request bg-agent did not open is ignored, quietly.
    let foreign = pull_request_event("pull_request.closed.json", number + 100, None);
    let (outcome, reason) = deliver(&h, "pull_request", &foreign).await;
    assert_eq!(outcome, DeliveryState::Ignored);
    assert!(
        reason
            .as_deref()
            .unwrap()
            .contains("not opened by bg-agent"),
        "{reason:?}"
    );
    // Other actions are not used.
    let mut synchronize: Value = serde_json::from_slice(&merged).unwrap();
    synchronize["action"] = "synchronize".into();
    let (outcome, _) = deliver(
        &h,
        "pull_request",
        &serde_json::to_vec(&synchronize).unwrap(),
    )
    .await;
    assert_eq!(outcome, DeliveryState::Ignored);
    assert_eq!(state_of(&h, &task).await, Some(PrState::Merged));

    // Shown everywhere a person or a program reads the task.
    let detail = get_json(&h, &format!("/api/v1/tasks/{}", task.id)).await;
    assert_eq!(detail["pr_state"], "merged", "{detail:#}");
    assert!(detail["usage"].is_null(), "a recipe has no agent usage");
    let list = get_json(&h, "/api/v1/tasks").await;
    assert_eq!(list["tasks"][0]["pr_state"], "merged", "{list:#}");
    let page = get_text(&h, &format!("/tasks/{}", task.id)).await;
    assert!(
        page.contains(r#"<span class="badge pr-merged">merged</span>"#),
        "{page}"
    );
    let listed = get_text(&h, "/").await;
    assert!(
        listed.contains(&format!(
            r#">#{number}</a> <span class="badge pr-merged">merged</span>"#
        )),
        "{listed}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_tasks_provider_model_and_rounds_reach_the_page_the_list_and_the_api() {
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .agent(&["sh", "-c", "echo fixed > hello.txt"])
        .configure(|config| config.run.agent.model = Some("house-model-1".into()))
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    assert_eq!(task.agent_provider.as_deref(), Some("command"));
    let rounds = h.store().agent_rounds(task.id).await.unwrap();
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    assert_eq!(rounds[0].round, 1);
    assert_eq!(rounds[0].provider, "command");
    assert_eq!(rounds[0].model.as_deref(), Some("house-model-1"));
    // The generic command reports no tokens and no cost.
    assert_eq!((rounds[0].input_tokens, rounds[0].cost_microusd), (0, None));

    let detail = get_json(&h, &format!("/api/v1/tasks/{}", task.id)).await;
    assert_eq!(detail["provider"], "command", "{detail:#}");
    assert_eq!(detail["usage"]["model"], "house-model-1", "{detail:#}");
    assert_eq!(detail["usage"]["rounds"], 1);
    assert_eq!(detail["usage"]["per_round"][0]["round"], 1);
    assert!(detail["cost_usd"].is_null());
    assert_eq!(detail["pr_state"], "open");
    let list = get_json(
        &h,
        &format!("/api/v1/tasks?repo=acme/widgets&creator={LEAD}"),
    )
    .await;
    assert_eq!(list["tasks"][0]["provider"], "command", "{list:#}");
    let page = get_text(&h, &format!("/tasks/{}", task.id)).await;
    assert!(
        page.contains("<strong>agent command</strong>, model <code>house-model-1</code>"),
        "{page}"
    );
    assert!(page.contains(r#"<span class="badge pr-open">open</span>"#));
    assert_eq!(REPO_ID, task.repository_id);
    h.finish().await;
}
