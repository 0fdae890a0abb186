//! The JSON API (`/api/v1`), its generated OpenAPI document, the MCP tools and
//! `/metrics`, against the real server, database, runner and fake GitHub.

use std::collections::BTreeSet;

use bg_agent_core::task::TaskState;
use bg_agent_testkit::harness::{Harness, LEAD, Scenario, WAIT};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn scenario() -> Scenario {
    Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
}

/// Validation that prints a few lines, then never ends: the task stays running (and
/// active) while a test acts.
const CHATTY_SLOW_VALIDATION: &str = "validation:\n  - node -e \"for (let i = 0; i < 5; i++) console.log('tick ' + i); setTimeout(() => {}, 600000)\"\n";

fn upgrade() -> Value {
    json!({"template": "upgrade", "parameters": {"package": "lodash", "version": "4.17.21"}})
}

struct Api<'h> {
    h: &'h Harness,
    client: reqwest::Client,
}

impl<'h> Api<'h> {
    fn new(h: &'h Harness) -> Self {
        Self {
            h,
            // A connection per request: the server closes one whose oversized body it
            // refused unread, and a pooled connection reused just then fails to send.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.h.public_url())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    async fn create(&self, body: &Value) -> (StatusCode, Value) {
        self.post("/api/v1/repos/acme/widgets/tasks", body).await
    }
}

/// The error shape every failure has, with the field named when there is one.
#[track_caller]
fn assert_error(
    answer: &(StatusCode, Value),
    status: StatusCode,
    error: &str,
    field: Option<&str>,
) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body:#}");
    assert_eq!(body["error"], error, "{body:#}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
    assert_eq!(body["field"].as_str(), field, "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_made_through_the_api_becomes_a_pull_request_like_a_comment_task() {
    let h = scenario().start().await;
    let api = Api::new(&h);
    let (status, task) = api.create(&upgrade()).await;
    assert_eq!(status, StatusCode::CREATED, "{task:#}");
    assert_eq!(task["state"], "queued");
    assert_eq!(task["trigger"], "api");
    assert_eq!(task["template"], "upgrade");
    assert_eq!(task["parameters"]["version"], "4.17.21");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1);
    let id = task["id"].as_i64().unwrap();

    let done = h.task(id).expect_state(TaskState::Succeeded).await;
    assert_eq!(done.issue_number, None);
    // Reported like any other task: the check run, the pull request; no issue comment.
    assert_eq!(h.check_run(id).conclusion.as_deref(), Some("success"));
    let pr = h.pr(u64::try_from(done.pr_number.unwrap()).unwrap());
    assert_eq!(pr.title, "[bg-agent] upgrade lodash 4.17.21");
    assert!(
        h.show(&pr.head, "package.json")
            .contains("\"lodash\": \"4.17.21\"")
    );
    assert!(h.bot_comments().is_empty(), "{:?}", h.bot_comments());

    let (status, read) = api.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["state"], "succeeded");
    assert_eq!(read["phase"], "finished");
    assert_eq!(read["progress"], 100);
    assert_eq!(read["pr_url"].as_str(), done.pr_url.as_deref());
    assert!(read["duration_secs"].as_f64().unwrap() >= 0.0);
    assert!(
        !read["validations"].as_array().unwrap().is_empty(),
        "{read:#}"
    );
    let actions: Vec<&str> = read["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"created"), "{actions:?}");
    assert!(!read["log_tail"].as_array().unwrap().is_empty(), "{read:#}");

    // The whole log, numbered.
    let (status, log) = api.get(&format!("/api/v1/tasks/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<i64> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert!(!seqs.is_empty());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // By level: the runner's own lines (the commands it ran among them), without what
    // the commands printed.
    let (status, own) = api
        .get(&format!("/api/v1/tasks/{id}/logs?level=info"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let own = own["lines"].as_array().unwrap();
    assert!(
        own.iter()
            .all(|l| ["info", "warn", "error"].contains(&l["level"].as_str().unwrap())),
        "{own:#?}"
    );
    assert!(
        own.iter()
            .any(|l| l["line"].as_str().unwrap().starts_with("$ npm")),
        "{own:#?}"
    );
    let levels: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert!(levels.contains(&"output"), "{levels:?}");
    assert!(own.len() < levels.len());
    let (status, error) = api
        .get(&format!("/api/v1/tasks/{id}/logs?level=loud"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["field"], "level", "{error:#}");

    // Listed, newest first, with filters, paging and the total.
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let second = h
        .tasks()
        .await
        .into_iter()
        .map(|t| t.id.get())
        .max()
        .unwrap();
    h.task(second).expect_state(TaskState::Succeeded).await;
    let (status, page) = api.get("/api/v1/tasks?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page:#}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["tasks"][0]["id"], second);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = api
        .get(&format!("/api/v1/tasks?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(next["tasks"][0]["id"], id);
    assert!(next["next_cursor"].is_null());
    let (_, api_made) = api
        .get("/api/v1/tasks?repo=acme/widgets&state=succeeded&template=upgrade&creator=local")
        .await;
    assert_eq!(api_made["total"], 1, "{api_made:#}");
    let (_, searched) = api.get("/api/v1/tasks?q=LODASH").await;
    assert_eq!(searched["total"], 2);
    let (_, none) = api.get("/api/v1/tasks?since=2999-01-01T00:00:00Z").await;
    assert_eq!(none["total"], 0);
    assert_error(
        &api.get("/api/v1/tasks?state=sleeping").await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("state"),
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_in_json_naming_the_field() {
    let h = scenario().start().await;
    let api = Api::new(&h);
    assert_error(
        &api.create(&json!({"instructions": "  "})).await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("instructions"),
    );
    assert_error(
        &api.create(&json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("instructions"),
    );
    assert_error(
        &api.create(&json!({"template": "nope"})).await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("template"),
    );
    assert_error(
        &api
            .create(&json!({"template": "upgrade", "parameters": {"package": "lodash", "version": "$(reboot)"}}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("parameters.version"),
    );
    assert_error(
        &api.create(&json!({"template": "upgrade", "parameters": {"package": "lodash"}}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("parameters.version"),
    );
    assert_error(
        &api.create(&json!({"instructions": "x", "template": "upgrade"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("template"),
    );
    // Hostile bodies: unknown fields, not JSON, not an object, too large.
    let unknown = api
        .create(&json!({"instructions": "x", "admin": true}))
        .await;
    assert_error(
        &unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid request",
        None,
    );
    assert!(
        unknown.1["message"].as_str().unwrap().contains("admin"),
        "{:#}",
        unknown.1
    );
    let not_json = api
        .send(
            api.client
                .post(api.url("/api/v1/repos/acme/widgets/tasks"))
                .header("content-type", "application/json")
                .body("{\"instructions\": "),
        )
        .await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, "invalid request", None);
    let no_type = api
        .send(
            api.client
                .post(api.url("/api/v1/repos/acme/widgets/tasks"))
                .body("{}"),
        )
        .await;
    assert_error(
        &no_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported media type",
        None,
    );
    let huge = json!({"instructions": "x".repeat(200 * 1024)});
    assert_error(
        &api.create(&huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload too large",
        None,
    );
    // Where the App is not installed, and what does not exist.
    assert_error(
        &api.post(
            "/api/v1/repos/acme/not-installed/tasks",
            &json!({"instructions": "x"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );
    assert_error(
        &api.get("/api/v1/tasks/424242").await,
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );
    assert_error(
        &api.get("/api/v1/tasks/not-a-number").await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        None,
    );
    assert_error(
        &api.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );
    assert_error(
        &api.get("/api/v2/tasks").await,
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );
    assert_error(
        &api.send(api.client.delete(api.url("/api/v1/tasks"))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        None,
    );
    assert!(h.tasks().await.is_empty());
    // The messages as people read them.
    let mut texts = Vec::new();
    for body in [
        json!({"instructions": ""}),
        json!({"template": "nope"}),
        json!({"template": "upgrade", "parameters": {"package": "lodash", "version": "$(reboot)"}}),
        json!({"template": "upgrade", "parameters": {"package": "lodash", "version": "1", "extra": "x"}}),
    ] {
        let (_, answer) = api.create(&body).await;
        texts.push(format!(
            "{}: {}",
            answer["field"].as_str().unwrap_or("-"),
            answer["message"].as_str().unwrap()
        ));
    }
    insta::assert_snapshot!(texts.join("\n"), @r#"
    instructions: instructions are empty
    template: no template named "nope" here (available: upgrade)
    parameters.version: parameter version is "$(reboot)", which does not match the expected form
    parameters.extra: unknown parameter extra
    "#);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_task_per_caller_and_retry_and_cancel_as_the_buttons_do() {
    let h = scenario()
        .file(".github/bg-agent.yml", CHATTY_SLOW_VALIDATION)
        .start()
        .await;
    let api = Api::new(&h);
    let (status, first) = api.create(&upgrade()).await;
    assert_eq!(status, StatusCode::CREATED, "{first:#}");
    let id = first["id"].as_i64().unwrap();
    assert_error(
        &api.create(&upgrade()).await,
        StatusCode::CONFLICT,
        "concurrent task limit reached",
        None,
    );
    h.task(id).expect_state(TaskState::Running).await;
    assert_error(
        &api.post(&format!("/api/v1/tasks/{id}/retry"), &json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "not retryable",
        None,
    );
    let (status, cancelled) = api
        .post(&format!("/api/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled:#}");
    h.task(id).expect_state(TaskState::Cancelled).await;
    assert_error(
        &api.post(&format!("/api/v1/tasks/{id}/cancel"), &json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "already ended",
        None,
    );

    // A new attempt, linked; asking again finds it.
    let (status, retry) = api
        .post(&format!("/api/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{retry:#}");
    assert_eq!(retry["attempt"], 2);
    assert_eq!(retry["retry_of"], id);
    let retry_id = retry["id"].as_i64().unwrap();
    let chain: Vec<i64> = retry["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(chain, vec![id, retry_id]);
    let (status, again) = api
        .post(&format!("/api/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again:#}");
    assert_eq!(again["id"], retry_id);
    let (_, cancelled) = api
        .post(&format!("/api/v1/tasks/{retry_id}/cancel"), &json!({}))
        .await;
    assert!(
        ["cancelled", "queued", "starting", "running"]
            .contains(&cancelled["state"].as_str().unwrap())
    );
    h.task(retry_id).expect_state(TaskState::Cancelled).await;
    // The check run shows who retried and how, as for a button.
    let audit = h.task(retry_id).audit().await;
    assert_eq!(
        audit.first().map(String::as_str),
        Some("retried:queued"),
        "{audit:?}"
    );
    h.finish().await;
}

/// Reads server-sent events until `until` holds for the events so far: `(event, id, data)`.
async fn read_events(
    response: &mut reqwest::Response,
    until: impl Fn(&[(String, Option<i64>, String)]) -> bool,
) -> Vec<(String, Option<i64>, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !until(&events) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the stream went quiet")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = ("message".to_owned(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim_start().to_owned();
                }
            }
            // Keep-alive comments carry no event.
            if block.lines().any(|l| !l.starts_with(':')) {
                events.push((event, id, data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_streams_live_and_resumes_after_the_last_event_id() {
    let h = scenario()
        .file(".github/bg-agent.yml", CHATTY_SLOW_VALIDATION)
        .start()
        .await;
    let api = Api::new(&h);
    let (_, task) = api.create(&upgrade()).await;
    let id = task["id"].as_i64().unwrap();
    let stream = || {
        api.client
            .get(api.url(&format!("/api/v1/tasks/{id}/logs")))
            .header("accept", "text/event-stream")
    };
    let mut live = stream().send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Lines arrive while the task runs, numbered in order.
    let seen = read_events(&mut live, |e| {
        e.iter().any(|(_, _, d)| d.contains("tick 4"))
    })
    .await;
    drop(live);
    assert!(seen.iter().all(|(event, _, _)| event == "log"), "{seen:?}");
    let ids: Vec<i64> = seen.iter().map(|(_, id, _)| id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert_eq!(ids[0], 0);

    // A client that saw up to the second line resumes after it; then the task ends and
    // the stream says how.
    let resume_after = ids[1];
    let mut resumed = stream()
        .header("last-event-id", resume_after.to_string())
        .send()
        .await
        .unwrap();
    let first = read_events(&mut resumed, |e| !e.is_empty()).await;
    assert_eq!(first[0].1, Some(resume_after + 1), "{first:?}");
    assert_eq!(first[0].2, seen[2].2);
    let (status, _) = api
        .post(&format!("/api/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rest = read_events(&mut resumed, |e| {
        e.iter().any(|(event, _, _)| event == "end")
    })
    .await;
    let end = rest.last().unwrap();
    assert_eq!(
        (end.0.as_str(), end.2.as_str()),
        ("end", "cancelled"),
        "{rest:?}"
    );
    // The stream closes after `end`.
    assert!(
        tokio::time::timeout(WAIT, resumed.chunk())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
    // A stream of an ended task sends what is left and ends at once.
    let mut ended = stream().header("last-event-id", "0").send().await.unwrap();
    let all = read_events(&mut ended, |e| e.iter().any(|(event, _, _)| event == "end")).await;
    assert_eq!(all[0].1, Some(1));
    h.finish().await;
}

/// Every operation the document describes, as `METHOD path`.
fn operations(document: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3_1_and_describes_every_route() {
    let h = scenario().start().await;
    let api = Api::new(&h);
    let (status, document) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );

    let meta: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/openapi/schema-3.1.json"
    ))
    .unwrap();
    let validator = jsonschema::validator_for(&meta).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // The routes the router serves, as the document lists them (both come from the same
    // list in `web::api`; this pins the surface).
    let expected: BTreeSet<String> = [
        "POST /api/v1/repos/{owner}/{repo}/tasks",
        "GET /api/v1/tasks",
        "GET /api/v1/tasks/{id}",
        "GET /api/v1/tasks/{id}/logs",
        "POST /api/v1/tasks/{id}/retry",
        "POST /api/v1/tasks/{id}/cancel",
        "POST /api/v1/tasks/{id}/template",
        "GET /api/v1/templates",
        "POST /api/v1/templates",
        "GET /api/v1/templates/{name}",
        "PUT /api/v1/templates/{name}",
        "DELETE /api/v1/templates/{name}",
        "GET /api/v1/installations/{id}/credentials",
        "GET /api/v1/installations/{id}/credentials/{provider}",
        "PUT /api/v1/installations/{id}/credentials/{provider}",
        "DELETE /api/v1/installations/{id}/credentials/{provider}",
        "POST /api/v1/installations/{id}/credentials/{provider}/test",
        "GET /api/v1/openapi.json",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(operations(&document), expected);

    // Every described operation is routed: it answers anything but the unknown-route 404
    // and the wrong-method 405.
    for operation in &expected {
        let (method, path) = operation.split_once(' ').unwrap();
        let path = path
            .replace("{owner}", "acme")
            .replace("{repo}", "widgets")
            .replace("{id}", "424242")
            .replace("{name}", "nope")
            .replace("{provider}", "anthropic");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = api
            .client
            .request(method, api.url(&format!("{path}?repo=acme/widgets")))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{operation}: {body}"
        );
        assert!(
            !body.contains("no such API route"),
            "{operation}: {status} {body}"
        );
    }
    h.finish().await;
}

/// The value of a Prometheus sample whose line starts with `prefix` (0 when absent).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_and_move_with_deliveries_and_tasks() {
    let mut h = scenario().start().await;
    let client = reqwest::Client::new();
    // Off without a token.
    let off = client
        .get(format!("{}/metrics", h.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), StatusCode::NOT_FOUND);
    h.stop_server().await;
    h.config.metrics_token = Some("scrape-me".to_owned().into());
    h.start_server().await;
    let url = format!("{}/metrics", h.public_url());
    let refused = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let scrape = || async {
        let response = client
            .get(&url)
            .bearer_auth("scrape-me")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    };
    let before = scrape().await;

    let comment = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let _ = comment;
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    let after = scrape().await;
    let moved = |prefix: &str| sample(&after, prefix) - sample(&before, prefix);
    assert!(
        moved(r#"bg_agent_deliveries_received_total{outcome="stored""#) >= 1.0,
        "{after}"
    );
    assert!(
        moved(r#"bg_agent_tasks_created_total{trigger="comment"}"#) >= 1.0,
        "{after}"
    );
    assert!(
        moved(r#"bg_agent_tasks_finished_total{state="succeeded"}"#) >= 1.0,
        "{after}"
    );
    assert!(
        moved("bg_agent_task_duration_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        moved(r#"bg_agent_runner_reports_total{outcome="applied"}"#) >= 1.0,
        "{after}"
    );
    assert!(moved("bg_agent_github_requests_total{") >= 1.0, "{after}");
    assert!(
        sample(&after, r#"bg_agent_tasks{state="succeeded"}"#) >= 1.0,
        "{after}"
    );
    assert!(
        after.contains("# TYPE bg_agent_task_duration_seconds histogram"),
        "{after}"
    );
    let _ = task;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_templates_belong_to_the_installation_and_run_like_any_other() {
    let h = scenario().start().await;
    let api = Api::new(&h);
    let definition = json!({
        "name": "bump",
        "description": "Upgrade one package",
        "parameters": [
            {"name": "package", "pattern": "[a-z][a-z0-9._-]*", "description": "npm package"},
            {"name": "version", "pattern": "[0-9]+\\.[0-9]+\\.[0-9]+"}
        ],
        "instructions": "Upgrade {{package}} to {{version}}.",
        "recipe": "npm_upgrade"
    });
    let (status, made) = api
        .post("/api/v1/templates?repo=acme/widgets", &definition)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made:#}");
    assert_eq!(made["source"], "database");
    assert_eq!(made["uses"], 0);
    assert_error(
        &api.post("/api/v1/templates?repo=acme/widgets", &definition)
            .await,
        StatusCode::CONFLICT,
        "already exists",
        Some("name"),
    );
    let mut bad = definition.clone();
    bad["instructions"] = json!("Upgrade {{pkg}}.");
    assert_error(
        &api.send(
            api.client
                .put(api.url("/api/v1/templates/bump?repo=acme/widgets"))
                .json(&bad),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("instructions"),
    );
    // Used by a task through the API: its pattern checked, its use counted.
    assert_error(
        &api.create(
            &json!({"template": "bump", "parameters": {"package": "lodash", "version": "latest"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid request",
        Some("parameters.version"),
    );
    let (status, task) = api
        .create(
            &json!({"template": "bump", "parameters": {"package": "lodash", "version": "4.17.21"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task:#}");
    assert_eq!(task["template_source"], "database");
    let id = task["id"].as_i64().unwrap();
    h.task(id).expect_state(TaskState::Succeeded).await;
    let (_, listed) = api.get("/api/v1/templates?repo=acme/widgets").await;
    let bump = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bump")
        .unwrap();
    assert_eq!(bump["uses"], 1);
    assert!(bump["last_used_at"].is_string());
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "upgrade" && t["source"] == "built_in")
    );

    // Save as template from the succeeded task.
    let (status, saved) = api
        .post(
            &format!("/api/v1/tasks/{id}/template"),
            &json!({"name": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{saved:#}");
    assert_eq!(saved["instructions"], "Upgrade lodash to 4.17.21.");
    let (status, one) = api.get("/api/v1/templates/again?repo=acme/widgets").await;
    assert_eq!(status, StatusCode::OK, "{one:#}");

    // Replaced and deleted; another installation's repository does not see them.
    let mut replaced = definition.clone();
    replaced["description"] = json!("Upgrade a package");
    let (status, put) = api
        .send(
            api.client
                .put(api.url("/api/v1/templates/bump?repo=acme/widgets"))
                .json(&replaced),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put:#}");
    assert_eq!(put["description"], "Upgrade a package");
    let (status, _) = api
        .send(
            api.client
                .delete(api.url("/api/v1/templates/bump?repo=acme/widgets")),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get("/api/v1/templates/bump?repo=acme/widgets").await,
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );
    assert!(
        h.store()
            .database_templates(i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_drives_tasks_with_the_same_rules_as_the_api() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParam;
    use rmcp::transport::StreamableHttpClientTransport;

    let h = scenario()
        .file(".github/bg-agent.yml", CHATTY_SLOW_VALIDATION)
        .start()
        .await;
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", h.public_url()));
    let client = ().serve(transport).await.unwrap();
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.name, "bg-agent");
    let tools: BTreeSet<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    let expected: BTreeSet<String> = [
        "create_task",
        "get_task",
        "list_tasks",
        "cancel_task",
        "retry_task",
        "get_task_logs",
        "list_templates",
        "list_providers",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(tools, expected);

    let call = |name: &'static str, args: Value| {
        let client = &client;
        async move {
            client
                .call_tool(CallToolRequestParam {
                    name: name.into(),
                    arguments: args.as_object().cloned(),
                })
                .await
        }
    };
    let json_of = |result: rmcp::model::CallToolResult| -> Value {
        let text = result.content[0].as_text().unwrap().text.clone();
        serde_json::from_str(&text).unwrap()
    };

    let created = json_of(
        call(
            "create_task",
            json!({"repo": "acme/widgets", "template": "upgrade", "parameters": {"package": "lodash", "version": "4.17.21"}}),
        )
        .await
        .unwrap(),
    );
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["trigger"], "api");
    // The same limit as the API, as an MCP error carrying the API's error.
    let busy = call(
        "create_task",
        json!({"repo": "acme/widgets", "instructions": "another"}),
    )
    .await
    .unwrap_err();
    let rmcp::ServiceError::McpError(busy) = busy else {
        panic!("{busy:?}")
    };
    assert_eq!(busy.data.unwrap()["error"], "concurrent task limit reached");

    h.task(id).expect_state(TaskState::Running).await;
    let got = json_of(call("get_task", json!({"id": id})).await.unwrap());
    assert_eq!(got["id"], id);
    let listed = json_of(
        call("list_tasks", json!({"state": "running"}))
            .await
            .unwrap(),
    );
    assert_eq!(listed["total"], 1);
    let logs = json_of(
        call("get_task_logs", json!({"id": id, "contains": "tick"}))
            .await
            .unwrap(),
    );
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["line"].as_str().unwrap().contains("tick"))
    );
    // The runner's own lines only (the first arrive within a report's batching delay).
    let started = std::time::Instant::now();
    let own = loop {
        let own = json_of(
            call("get_task_logs", json!({"id": id, "level": "info"}))
                .await
                .unwrap(),
        );
        let own = own["lines"].as_array().unwrap().clone();
        if !own.is_empty() {
            break own;
        }
        assert!(started.elapsed() < WAIT, "no line of the runner's own");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(own.iter().all(|l| l["level"] != "output"), "{own:#?}");
    let bad = call("get_task_logs", json!({"id": id, "level": "loud"}))
        .await
        .unwrap_err();
    let rmcp::ServiceError::McpError(bad) = bad else {
        panic!("{bad:?}")
    };
    assert_eq!(bad.data.unwrap()["field"], "level");
    let templates = json_of(
        call("list_templates", json!({"repo": "acme/widgets"}))
            .await
            .unwrap(),
    );
    assert!(
        templates
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "upgrade")
    );
    let providers = json_of(call("list_providers", json!({})).await.unwrap());
    assert!(
        providers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "npm_upgrade")
    );
    let cancelled = json_of(call("cancel_task", json!({"id": id})).await.unwrap());
    assert_eq!(cancelled["id"], id);
    h.task(id).expect_state(TaskState::Cancelled).await;
    let retried = json_of(call("retry_task", json!({"id": id})).await.unwrap());
    assert_eq!(retried["retry_of"], id);
    let retry_id = retried["id"].as_i64().unwrap();
    call("cancel_task", json!({"id": retry_id})).await.unwrap();
    h.task(retry_id).expect_state(TaskState::Cancelled).await;

    // Errors are MCP errors: unknown task, bad arguments.
    let missing = call("get_task", json!({"id": 424242})).await.unwrap_err();
    let rmcp::ServiceError::McpError(missing) = missing else {
        panic!("{missing:?}")
    };
    assert_eq!(missing.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND);
    assert_eq!(missing.data.unwrap()["error"], "not found");
    let bad = call("create_task", json!({"repo": "acme/widgets", "template": "upgrade", "parameters": {"package": "lodash", "version": "$(x)"}}))
        .await
        .unwrap_err();
    let rmcp::ServiceError::McpError(bad) = bad else {
        panic!("{bad:?}")
    };
    assert_eq!(bad.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    assert_eq!(bad.data.unwrap()["field"], "parameters.version");
    client.cancel().await.unwrap();
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_mcp_need_a_github_token_and_the_comment_paths_permission() {
    use bg_agent_testkit::harness::{DRIVE_BY, REPO};
    use github_fake::Role;

    let h = scenario().sign_in().start().await;
    h.add_user("reader", Role::Read);
    h.sim.set_permission(REPO, DRIVE_BY, None).unwrap();
    let api = Api::new(&h);
    let as_user = |login: &str, request: reqwest::RequestBuilder| {
        request.bearer_auth(h.sim.user_token(login))
    };
    let create = |login: &str| {
        as_user(
            login,
            api.client.post(api.url("/api/v1/repos/acme/widgets/tasks")),
        )
        .json(&upgrade())
    };

    // No token: 401 in JSON, for the API and for MCP.
    assert_error(
        &api.get("/api/v1/tasks").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
    assert_error(
        &api.send(api.client.post(api.url("/mcp")).json(&json!({})))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
    // Read access is not enough to start a task; no access at all is "not found".
    assert_error(
        &api.send(create("reader")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &api.send(create(DRIVE_BY)).await,
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );

    let (status, task) = api.send(create(LEAD)).await;
    assert_eq!(status, StatusCode::CREATED, "{task:#}");
    assert_eq!(task["creator"], LEAD);
    let id = task["id"].as_i64().unwrap();
    let path = format!("/api/v1/tasks/{id}");
    // Someone who cannot read the repository sees neither the task nor its log.
    for path in [path.clone(), format!("{path}/logs")] {
        assert_error(
            &api.send(as_user(DRIVE_BY, api.client.get(api.url(&path))))
                .await,
            StatusCode::NOT_FOUND,
            "not found",
            None,
        );
    }
    let (_, listed) = api
        .send(as_user(DRIVE_BY, api.client.get(api.url("/api/v1/tasks"))))
        .await;
    assert_eq!(listed["total"], 0, "{listed:#}");
    // A reader sees it, but may not cancel it.
    let (status, _) = api
        .send(as_user("reader", api.client.get(api.url(&path))))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &api.send(as_user(
            "reader",
            api.client.post(api.url(&format!("{path}/cancel"))),
        ))
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    let (status, _) = api
        .send(as_user(
            LEAD,
            api.client.post(api.url(&format!("{path}/cancel"))),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    h.task(id).reported_end().await;
    h.finish().await;
}
