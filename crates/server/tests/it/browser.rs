//! The status pages in a real browser: Debian's `chromium`, driven by `chromedriver`
//! over the W3C WebDriver protocol (a few JSON calls, made here with reqwest). A person
//! signs in through the fake GitHub, sees only their repositories' tasks, filters the
//! list, follows a running task's log live (Server-Sent Events), presses Cancel on it,
//! presses Retry on a failed task and sees the new attempt, and cannot open a task of a repository they cannot read. Screenshots of the
//! list and of a task page go to `target/tmp/screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bg_agent::store::tasks::CreatedTask;
use bg_agent_core::task::TaskState;
use bg_agent_testkit::fixtures::agent_task;
use bg_agent_testkit::harness::{LEAD, LEAD_ID, Scenario, WAIT};
use github_fake::world::{DRIVE_BY, GADGETS, GADGETS_ID, INSTALLATION_ID};
use serde_json::{Value, json};

/// How long the browser may take to show something: a bound, not an expectation.
const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// `chromedriver` and one headless Chromium session; both end when dropped.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver) must be installed; .ci/run installs it",
            );
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready {
                let status: Value = response.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < BROWSER_WAIT,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let binary = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("Debian's chromium must be installed; .ci/run installs it");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"))
            .to_owned();
        Self {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = response["value"].get("error") {
            panic!("WebDriver {path}: {error} {}", response["value"]["message"]);
        }
        response["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of the first element matching `css`, or `None`.
    async fn text(&self, css: &str) -> Option<String> {
        let script = format!(
            "var e = document.querySelector({}); return e ? e.textContent : null;",
            serde_json::to_string(css).unwrap()
        );
        self.script(&script).await.as_str().map(str::to_owned)
    }

    async fn click(&self, css: &str) {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits until `check` holds for the page's text of `css`.
    async fn wait_text(&self, css: &str, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            if let Some(text) = self.text(css).await
                && check(&text)
            {
                return text;
            }
            assert!(
                started.elapsed() < BROWSER_WAIT,
                "{css} never matched; page: {:?}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_a_person_signs_in_follows_a_log_live_cancels_and_retries_a_failed_task()
{
    // The agent writes a line a second, long enough to watch it live and cancel it;
    // asked to fail (its instructions arrive on standard input), it fails at once.
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .agent(&[
            "sh",
            "-c",
            "if grep -q 'Fail at once'; then echo 'agent: giving up'; exit 3; fi; \
             for i in $(seq 1 120); do echo \"agent line $i\"; sleep 1; done",
        ])
        .sign_in()
        .start()
        .await;
    // octo-lead reads both repositories; a task in gadgets they will not be shown once
    // their access is gone.
    let mut hidden = agent_task("hidden", LEAD_ID + 1000, GADGETS_ID as i64);
    hidden.installation_id = INSTALLATION_ID as i64;
    hidden.repository = GADGETS.to_owned();
    hidden.creator_login = DRIVE_BY.to_owned();
    hidden.summary = "secret gadget work".into();
    let CreatedTask::Created(hidden) = h.store().create_task(&hidden).await.unwrap() else {
        panic!("hidden task not created");
    };
    // It is only there to be looked for: stopped before (or as soon as) it runs.
    let by = bg_agent::store::tasks::AuditActor {
        name: "test",
        delivery_guid: None,
    };
    h.store().request_cancel(hidden.id, by).await.unwrap();
    h.sim.set_permission(GADGETS, LEAD, None).unwrap();

    h.comment(LEAD, "/bg-agent run Write many lines.").await;
    let task = h.only_task().await;
    let id = task.get().await.id;
    let base = h.public_url().to_owned();

    // Sign in: the list, then through the fake GitHub, back to the list.
    h.sim.approve_sign_in_as(Some(LEAD));
    let browser = Browser::start().await;
    browser.go(&format!("{base}/")).await;
    browser.wait_text("h1", |t| t == "Tasks").await;
    assert_eq!(browser.url().await, format!("{base}/"));
    let rows = browser
        .wait_text("#tasks", |t| t.contains("Write many lines"))
        .await;
    assert!(!rows.contains("secret gadget work"), "{rows}");
    assert!(!rows.contains("acme/gadgets"), "{rows}");
    assert_eq!(browser.text(".me").await.as_deref(), Some("@octo-lead"));

    // Filter: nothing succeeded; the running task is found by a word of it.
    browser.go(&format!("{base}/?state=succeeded")).await;
    browser
        .wait_text("#empty", |t| t == "No tasks to show.")
        .await;
    browser.go(&format!("{base}/")).await;
    browser.type_into("input[name=q]", "many").await;
    browser.click("form.filters button").await;
    browser.wait_text("#total", |t| t == "1 task").await;
    assert!(browser.url().await.contains("q=many"));

    // The task page: log lines arrive without reloading the page.
    task.wait(|t| t.log_lines >= 2).await;
    browser.go(&format!("{base}/tasks/{id}")).await;
    browser
        .wait_text("#log", |t| t.contains("agent line"))
        .await;
    browser
        .script("window.sameDocument = 'yes'; return null;")
        .await;
    let before = browser.text("#log").await.unwrap();
    let shown_before = before.matches("agent line").count();
    let later = browser
        .wait_text("#log", |t| {
            t.matches("agent line").count() >= shown_before + 3
        })
        .await;
    assert_eq!(
        browser.script("return window.sameDocument || null;").await,
        "yes"
    );
    // Each line once, in order.
    let numbers: Vec<u32> = later
        .lines()
        .filter_map(|l| l.strip_prefix("agent line "))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // A reconnecting browser sends Last-Event-ID: the stream goes on after that line.
    let token = h.sim.user_token(LEAD);
    let mut stream = reqwest::Client::new()
        .get(format!("{base}/tasks/{id}/logs/stream"))
        .bearer_auth(&token)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), reqwest::StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let first = loop {
        let chunk = stream
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended early");
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Only whole events: the last piece may still be arriving.
        let pieces: Vec<&str> = text.split("\n\n").collect();
        if let Some(event) = pieces[..pieces.len() - 1]
            .iter()
            .find(|e| e.contains("id: "))
        {
            break (*event).to_owned();
        }
    };
    assert!(first.lines().any(|l| l == "id: 4"), "{first}");
    drop(stream);
    let list_shot = {
        browser.go(&format!("{base}/")).await;
        browser.wait_text("#tasks", |t| t.contains("running")).await;
        browser.screenshot("task-list").await
    };
    browser.go(&format!("{base}/tasks/{id}")).await;
    browser
        .wait_text("#log", |t| t.contains("agent line"))
        .await;
    let task_shot = browser.screenshot("task-page-running").await;

    // Cancel: the task stops; the page shows it.
    browser.click("#cancel").await;
    task.expect_state(TaskState::Cancelled).await;
    browser.go(&format!("{base}/tasks/{id}")).await;
    browser.wait_text("#state", |t| t == "cancelled").await;

    // A failed task: Retry makes a new attempt, linked to this one, shown at once.
    h.comment(LEAD, "/bg-agent run Fail at once.").await;
    let failed = h.tasks().await.last().unwrap().id;
    assert_ne!(failed, id);
    let failed = h.task(failed);
    failed.expect_state(TaskState::Failed).await;
    let failed = failed.get().await.id;
    browser.go(&format!("{base}/tasks/{failed}")).await;
    browser.wait_text("#state", |t| t == "failed").await;
    browser.click("#retry").await;
    let started = Instant::now();
    while browser.url().await == format!("{base}/tasks/{failed}") {
        assert!(
            started.elapsed() < WAIT,
            "retry did not lead to the new attempt"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let attempt = browser
        .wait_text("main p", |t| t.contains("attempt 2"))
        .await;
    assert!(
        attempt.contains(&format!("retry of #{failed}")),
        "{attempt}"
    );
    let new_id: i64 = browser
        .url()
        .await
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let retried = h.task(new_id).get().await;
    assert_eq!(retried.retry_of, Some(failed));
    // The new attempt fails as the first did (same instructions): let it end.
    h.task(new_id).expect_state(TaskState::Failed).await;

    // A task of a repository they cannot read: the same 404 as no task at all.
    browser.go(&format!("{base}/tasks/{}", hidden.id)).await;
    let body = browser.wait_text("main", |t| t.contains("No task")).await;
    assert!(!body.contains("secret"), "{body}");

    eprintln!(
        "screenshots: {} {}",
        list_shot.display(),
        task_shot.display()
    );
    drop(browser);
    h.finish().await;
}
