//! Credentials over HTTP: the JSON API (`/api/v1/installations/{id}/credentials`) and the
//! `/settings` page, against the real server, database and fake GitHub (sign-in and user
//! tokens), with the scripted model API answering `test`. The value is write-only: no
//! answer, page or log line carries it; and the session table holds no GitHub token in
//! the clear.

use std::io;
use std::sync::{Arc, Mutex};

use bg_agent::credentials::{ProviderEndpoints, fingerprint};
use bg_agent_testkit::harness::{Harness, LEAD, REPO, Scenario};
use bg_agent_testkit::model_api::ModelApi;
use github_fake::Role;
use github_fake::world::{DRIVE_BY, GADGETS, INSTALLATION_ID};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{ConnectOptions as _, Row as _};

use crate::web_auth::{Browser, csrf_of, sign_in};

const VALUE: &str = "sk-ant-api03-settings-secret-0123456789";
const WRONG: &str = "sk-proj-settings-wrong-9876543210";

/// The server's log, as a subscriber of this test's thread writes it.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Everything the server logs, down to trace, while the guard lives. The tests run on
    /// a current-thread runtime, so the in-process server's tasks log here too.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let log = Self::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "bg_agent=trace,tower_http=trace,info",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The engine with sign-in, every provider's API at the scripted model API.
fn scenario(model: &ModelApi) -> Scenario {
    let url = model.url();
    Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .sign_in()
        .configure(move |config| {
            config.run.provider_endpoints = ProviderEndpoints {
                anthropic: url.clone(),
                openai: url.clone(),
                gemini: url,
            };
        })
}

fn installation() -> i64 {
    INSTALLATION_ID as i64
}

/// The API as users with GitHub tokens call it; every answer's text is kept.
struct Api<'h> {
    h: &'h Harness,
    http: reqwest::Client,
    answers: Mutex<String>,
}

impl<'h> Api<'h> {
    fn new(h: &'h Harness) -> Self {
        Self {
            h,
            // A connection per request: the server closes one whose body it refused unread.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            answers: Mutex::new(String::new()),
        }
    }

    async fn call(
        &self,
        login: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.h.public_url()));
        if let Some(login) = login {
            request = request.bearer_auth(self.h.sim.user_token(login));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        self.answers.lock().unwrap().push_str(&text);
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, body)
    }

    async fn put(&self, login: &str, path: &str, value: &str) -> (StatusCode, Value) {
        self.call(
            Some(login),
            Method::PUT,
            path,
            Some(json!({"value": value})),
        )
        .await
    }
}

#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body:#}");
    assert!(body["error"].as_str().is_some(), "{body:#}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
    assert_eq!(body["field"].as_str(), field, "{body:#}");
}

#[tokio::test]
async fn credentials_through_the_api_are_write_only_and_need_admin_on_the_installation() {
    let (log, _guard) = Log::capture();
    let model = ModelApi::start(VALUE, Vec::new()).await;
    let h = scenario(&model).start().await;
    h.add_user("writer", Role::Write);
    for repo in [REPO, GADGETS] {
        h.sim.set_permission(repo, DRIVE_BY, None).unwrap();
    }
    let api = Api::new(&h);
    let base = format!("/api/v1/installations/{}/credentials", installation());
    let anthropic = format!("{base}/anthropic");

    // Set (an agent's name works as its provider's), replace, read back: fingerprints only.
    let (status, set) = api.put(LEAD, &anthropic, VALUE).await;
    assert_eq!(status, StatusCode::CREATED, "{set:#}");
    assert_eq!(set["provider"], "anthropic");
    assert_eq!(set["fingerprint"], fingerprint(VALUE));
    assert_eq!(set["user_id"], Value::Null);
    assert_eq!(set["last_used_at"], Value::Null);
    assert!(set.get("value").is_none(), "{set:#}");
    let (status, replaced) = api.put(LEAD, &format!("{base}/claude_code"), VALUE).await;
    assert_eq!(status, StatusCode::OK, "{replaced:#}");
    let (status, one) = api.call(Some(LEAD), Method::GET, &anthropic, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["fingerprint"], fingerprint(VALUE));
    // A user's own credential sits beside the installation's.
    let (status, own) = api.put(LEAD, &format!("{base}/gemini?user=7"), VALUE).await;
    assert_eq!(status, StatusCode::CREATED, "{own:#}");
    assert_eq!(own["user_id"], 7);
    let (status, listed) = api.call(Some(LEAD), Method::GET, &base, None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(String, Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap().to_owned(),
                c["user_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("anthropic".to_owned(), Value::Null),
            ("gemini".to_owned(), json!(7))
        ]
    );
    assert_error(
        &api.call(
            Some(LEAD),
            Method::GET,
            &format!("{anthropic}?user=7"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        None,
    );

    // Test: the one request reaches the provider with the stored value; a wrong value is
    // refused there, and that is an answer too.
    let (status, tested) = api
        .call(Some(LEAD), Method::POST, &format!("{anthropic}/test"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{tested:#}");
    assert_eq!(tested["outcome"], "accepted", "{tested:#}");
    assert_eq!(tested["endpoint"], model.url());
    let asked = model.requests();
    let last = asked.last().unwrap();
    assert!(
        last.path.ends_with("/v1/models") && last.authorized,
        "{last:?}"
    );
    assert_eq!(last.header("x-api-key"), Some(VALUE));
    let openai = format!("{base}/openai");
    assert_eq!(api.put(LEAD, &openai, WRONG).await.0, StatusCode::CREATED);
    let (status, refused) = api
        .call(Some(LEAD), Method::POST, &format!("{openai}/test"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{refused:#}");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["status"], 401);

    // Bad requests name the field; bodies are bounded.
    assert_error(
        &api.put(LEAD, &format!("{base}/mistral"), VALUE).await,
        StatusCode::BAD_REQUEST,
        Some("provider"),
    );
    assert_error(
        &api.put(LEAD, &format!("{base}/gemini"), "").await,
        StatusCode::BAD_REQUEST,
        Some("value"),
    );
    assert_error(
        &api.put(LEAD, &format!("{base}/gemini"), &"k".repeat(5000))
            .await,
        StatusCode::BAD_REQUEST,
        Some("value"),
    );
    assert_error(
        &api.put(LEAD, &format!("{base}/gemini"), &"k".repeat(100_000))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );

    // Who may: no token 401; a writer 403; someone who sees none of its repositories,
    // or an installation that is not there, 404.
    assert_error(
        &api.call(None, Method::GET, &base, None).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    for (method, path) in [
        (Method::GET, base.clone()),
        (Method::PUT, anthropic.clone()),
        (Method::POST, format!("{anthropic}/test")),
        (Method::DELETE, anthropic.clone()),
    ] {
        let body = (method == Method::PUT).then(|| json!({"value": WRONG}));
        assert_error(
            &api.call(Some("writer"), method.clone(), &path, body.clone())
                .await,
            StatusCode::FORBIDDEN,
            None,
        );
        assert_error(
            &api.call(Some(DRIVE_BY), method, &path, body).await,
            StatusCode::NOT_FOUND,
            None,
        );
    }
    assert_error(
        &api.call(
            Some(LEAD),
            Method::GET,
            "/api/v1/installations/999999/credentials",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        None,
    );
    // Nothing they tried changed it.
    let (_, still) = api.call(Some(LEAD), Method::GET, &anthropic, None).await;
    assert_eq!(still["fingerprint"], fingerprint(VALUE));

    // Delete, then it is gone.
    let (status, _) = api.call(Some(LEAD), Method::DELETE, &openai, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for method in [Method::DELETE, Method::GET] {
        assert_error(
            &api.call(Some(LEAD), method, &openai, None).await,
            StatusCode::NOT_FOUND,
            None,
        );
    }

    let answers = api.answers.lock().unwrap().clone();
    let log = log.text();
    assert!(log.contains("credential set"), "{log}");
    for secret in [VALUE, WRONG] {
        assert!(!answers.contains(secret), "{answers}");
        assert!(!log.contains(secret), "{log}");
    }
    h.finish().await;
}

/// A form post from `origin`; the status and the page.
async fn post(
    browser: &mut Browser,
    url: &str,
    fields: &[(&'static str, String)],
    origin: &str,
) -> (StatusCode, String) {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = browser.post(url, &fields, origin).await;
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_settings_page_sets_tests_and_deletes_behind_csrf_and_sessions_hold_no_plaintext_token()
{
    let (log, _guard) = Log::capture();
    let model = ModelApi::start(VALUE, Vec::new()).await;
    let h = scenario(&model).start().await;
    h.add_user("writer", Role::Write);
    let base = h.public_url().to_owned();
    let id = installation().to_string();
    let mut pages = String::new();

    let mut browser = Browser::new();
    sign_in(&h, &mut browser, LEAD).await;
    let page = browser.get(&format!("{base}/settings")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(&format!("acme (installation {id})")),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"type="password""#), "{}", page.body);
    let csrf = csrf_of(&page.body);
    let set = format!("{base}/settings/credentials/set");
    let form = |provider: &'static str, value: &'static str| {
        vec![
            ("installation", id.clone()),
            ("provider", provider.to_owned()),
            ("value", value.to_owned()),
        ]
    };
    let with_csrf = |csrf: &str, mut fields: Vec<(&'static str, String)>| {
        fields.push(("csrf", csrf.to_owned()));
        fields
    };
    // Set: the page says so, with the fingerprint, never the value.
    let (status, saved) = post(
        &mut browser,
        &set,
        &with_csrf(&csrf, form("anthropic", VALUE)),
        &base,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(
        saved.contains(&format!(
            "Saved the anthropic credential of installation {id} (fingerprint {})",
            fingerprint(VALUE)
        )),
        "{saved}"
    );
    pages.push_str(&saved);

    // Without the token, with a forged one, or from another site: refused, unchanged.
    for (fields, origin) in [
        (form("anthropic", WRONG), base.as_str()),
        (with_csrf("forged", form("anthropic", WRONG)), base.as_str()),
        (
            with_csrf(&csrf, form("anthropic", WRONG)),
            "http://evil.example",
        ),
    ] {
        let (status, refused) = post(&mut browser, &set, &fields, origin).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
        pages.push_str(&refused);
    }
    let stored = h.store().credentials(Some(installation())).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].fingerprint, fingerprint(VALUE));

    // Test shows the provider's answer; an unknown provider is refused naming it.
    let one = |provider: &'static str| {
        with_csrf(
            &csrf,
            vec![
                ("installation", id.clone()),
                ("provider", provider.to_owned()),
            ],
        )
    };
    let (status, tested) = post(
        &mut browser,
        &format!("{base}/settings/credentials/test"),
        &one("anthropic"),
        &base,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert!(tested.contains("was accepted"), "{tested}");
    pages.push_str(&tested);
    let (status, unknown) = post(
        &mut browser,
        &format!("{base}/settings/credentials/test"),
        &one("mistral"),
        &base,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{unknown}");
    assert!(unknown.contains("expected `anthropic`"), "{unknown}");

    // The page lists it: fingerprint and when, never the value.
    let listed = browser.get(&format!("{base}/settings")).await;
    assert!(listed.body.contains(&fingerprint(VALUE)), "{}", listed.body);
    pages.push_str(&listed.body);

    // Delete.
    let (status, deleted) = post(
        &mut browser,
        &format!("{base}/settings/credentials/delete"),
        &one("anthropic"),
        &base,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert!(
        deleted.contains(&format!(
            "Deleted the anthropic credential of installation {id}."
        )),
        "{deleted}"
    );
    assert!(
        h.store()
            .credentials(Some(installation()))
            .await
            .unwrap()
            .is_empty()
    );

    // A writer manages no installation: the page says so and a post is refused.
    let mut writer = Browser::new();
    sign_in(&h, &mut writer, "writer").await;
    let theirs = writer.get(&format!("{base}/settings")).await;
    assert!(
        theirs.body.contains("You manage no installation"),
        "{}",
        theirs.body
    );
    let (status, refused) = post(
        &mut writer,
        &set,
        &with_csrf(&csrf_of(&theirs.body), form("anthropic", WRONG)),
        &base,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused.contains("needs admin permission"), "{refused}");
    assert!(
        h.store()
            .credentials(Some(installation()))
            .await
            .unwrap()
            .is_empty()
    );

    // Sessions: the GitHub user tokens (`ghu_...`) are nowhere in the table in the clear.
    let mut db = h.db.connect_options().connect().await.unwrap();
    let rows =
        sqlx::query("SELECT row_to_json(s)::text AS row, token_ciphertext FROM web_sessions s")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let text: String = row.get("row");
        let sealed: Vec<u8> = row.get("token_ciphertext");
        assert!(!text.contains("ghu_"), "{text}");
        assert!(!sealed.windows(4).any(|w| w == b"ghu_"), "{text}");
        assert!(text.contains(r#""token_key_id":"test""#), "{text}");
    }
    let _ = sqlx::Connection::close(db).await;

    let log = log.text();
    assert!(log.contains("credential deleted"), "{log}");
    for secret in [VALUE, WRONG] {
        assert!(!pages.contains(secret), "{pages}");
        assert!(!log.contains(secret), "{log}");
    }
    assert!(!log.contains("ghu_"), "{log}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_encryption_key_sign_in_is_refused_saying_why() {
    let h = Scenario::intake()
        .sign_in()
        .configure(|config| config.run.encryption_keys = None)
        .start()
        .await;
    let mut browser = Browser::new();
    h.sim.approve_sign_in_as(Some(LEAD));
    let page = browser.get(&format!("{}/settings", h.public_url())).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    let start = page.body.find("<main>").unwrap();
    insta::assert_snapshot!(page.body[start..].replace("><", ">\n<"), @r#"
    <main>
    <h1>Sign-in refused</h1>
    <p>This server cannot keep sessions yet: its operator has not set BG_AGENT_ENCRYPTION_KEY.</p>
    <p>
    <a href="/login">Try again</a>
    </p>
    </main>
    </body>
    </html>
    "#);
    let mut db = h.db.connect_options().connect().await.unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM web_sessions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    let _ = sqlx::Connection::close(db).await;
    h.finish().await;
}
