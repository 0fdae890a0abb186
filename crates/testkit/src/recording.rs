//! A webhook server under test: the real router and workers on a random loopback port, a
//! fresh database, and a trigger handler that records what it is given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bg_agent::app::RunningServer;
use bg_agent::config::Config;
use bg_agent::engine::{DeliveryMeta, HandlerError, TriggerHandler};
use bg_agent::store::{DeliveryRecord, DeliveryState};
use bg_agent::webhook::Trigger;
use github_fake::sign;

use crate::db::TestDb;
use crate::fixtures::{APP_ID, ROTATED_SECRET, SECRET, fixture};

/// What the recording handler answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerMode {
    Accept,
    FailTransiently,
    FailPermanently,
}

pub struct RecordingHandler {
    calls: Mutex<Vec<(DeliveryMeta, Trigger)>>,
    mode: Mutex<HandlerMode>,
}

impl RecordingHandler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
            mode: Mutex::new(HandlerMode::Accept),
        })
    }

    pub fn set_mode(&self, mode: HandlerMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> Vec<(DeliveryMeta, Trigger)> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_for(&self, guid: &str) -> Vec<Trigger> {
        self.calls()
            .into_iter()
            .filter(|(meta, _)| meta.guid == guid)
            .map(|(_, trigger)| trigger)
            .collect()
    }
}

impl TriggerHandler for RecordingHandler {
    async fn handle(&self, delivery: &DeliveryMeta, trigger: &Trigger) -> Result<(), HandlerError> {
        self.calls
            .lock()
            .unwrap()
            .push((delivery.clone(), trigger.clone()));
        match *self.mode.lock().unwrap() {
            HandlerMode::Accept => Ok(()),
            HandlerMode::FailTransiently => Err(HandlerError::Transient("GitHub is down".into())),
            HandlerMode::FailPermanently => Err(HandlerError::Permanent("cannot ever work".into())),
        }
    }
}

/// The server's configuration in tests, read the way `bg-agent serve` reads its
/// environment (the process environment is not looked at): both webhook secrets, the
/// fixtures' App, and idle workers that look again soon.
pub fn test_config() -> Config {
    let vars = HashMap::from([
        (
            "GITHUB_WEBHOOK_SECRET".to_owned(),
            format!("{SECRET},{ROTATED_SECRET}"),
        ),
        ("GITHUB_APP_ID".to_owned(), APP_ID.to_string()),
        ("BG_AGENT_WORKER_POLL_MS".to_owned(), "50".to_owned()),
    ]);
    Config::from_vars(&vars).expect("test config")
}

pub struct TestApp {
    pub db: TestDb,
    pub handler: Arc<RecordingHandler>,
    pub url: String,
    pub client: reqwest::Client,
    server: Option<RunningServer>,
}

pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub guid: String,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let db = TestDb::new().await;
        let store = db.store().clone();
        Self::start_on(config, db, store).await
    }

    /// The server on `store` (e.g. a pool reaching `db` through a [`crate::tcp_proxy`]).
    pub async fn start_on(config: Config, db: TestDb, store: bg_agent::store::Store) -> Self {
        let handler = RecordingHandler::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = RunningServer::start(&config, store, handler.clone(), listener).unwrap();
        let url = format!("http://{}", server.addr);
        Self {
            db,
            handler,
            url,
            client: reqwest::Client::new(),
            server: Some(server),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }

    /// Delivers `body` signed with the current secret under a fresh delivery id.
    pub async fn deliver(&self, event: &str, body: &[u8]) -> Answer {
        let guid = uuid::Uuid::new_v4().to_string();
        self.deliver_as(event, &guid, body, Some(&sign(SECRET.as_bytes(), body)))
            .await
    }

    pub async fn deliver_fixture(&self, name: &str) -> Answer {
        let event = name.split('.').next().unwrap();
        self.deliver(event, &fixture(name)).await
    }

    pub async fn deliver_as(
        &self,
        event: &str,
        guid: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/webhook", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", guid)
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            body,
            guid: guid.to_owned(),
        }
    }

    /// Waits (bounded) until the delivery has left `pending`, and returns it.
    pub async fn processed(&self, guid: &str) -> DeliveryRecord {
        self.wait_for_delivery(guid, |d| d.state != DeliveryState::Pending)
            .await
    }

    pub async fn wait_for_delivery(
        &self,
        guid: &str,
        done: impl Fn(&DeliveryRecord) -> bool,
    ) -> DeliveryRecord {
        wait_for_delivery(self.db.store(), guid, done).await
    }
}

/// Waits (bounded) until the stored delivery satisfies `done`, and returns it.
pub async fn wait_for_delivery(
    store: &bg_agent::store::Store,
    guid: &str,
    done: impl Fn(&DeliveryRecord) -> bool,
) -> DeliveryRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let record = store.delivery(guid).await.unwrap();
        if let Some(record) = record.filter(&done) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery {guid} did not reach the expected state in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
