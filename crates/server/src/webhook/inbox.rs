//! `POST /webhook`: verify, store durably, answer. Stores are group-committed: concurrent
//! requests are written by a few writer tasks in one multi-row INSERT and one commit, so
//! throughput is not bounded by one fsync per delivery. Once committed, new deliveries are
//! also handed to this process's workers in memory ([`FreshDeliveries`]), so they need
//! not be read back from the database; anything that does not fit is found by polling.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use super::unverified::UnverifiedBodies;
use super::verify_signature;
use crate::background::Background;
use crate::config::{IntakeConfig, WebhookSecrets};
use crate::store::{ClaimedDelivery, NewDelivery, Store, StoreError};

/// Requests waiting for a writer; past this, callers wait (backpressure).
const QUEUE_CAPACITY: usize = 4096;
/// Stored deliveries waiting for a local worker; past this they wait for a poll instead.
const FRESH_CAPACITY: usize = 8192;
/// How long a new delivery is left to this process's workers before any poller may take
/// it (which happens only if this process dies or its hand-over queue overflowed).
pub const LOCAL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_DELIVERY_ID_LEN: usize = 128;
const MAX_EVENT_LEN: usize = 64;
/// GitHub gives up on a delivery after 10 s and marks it failed. While the database is
/// unreachable (the pool keeps trying to connect), intake answers 503 well before that,
/// so the answer GitHub records is ours. A write that completes after the deadline is
/// kept; GitHub's redelivery of it is then a duplicate, processed once.
const STORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the delivery could not be stored: {0}")]
    Store(Arc<StoreError>),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the database did not store the delivery within {STORE_DEADLINE:?}")]
    TooSlow,
}

struct Job {
    delivery: NewDelivery,
    reply: oneshot::Sender<Result<bool, Arc<StoreError>>>,
}

/// Handle to the writer tasks. Cloned into every request.
#[derive(Clone)]
pub struct IntakeWriter {
    jobs: mpsc::Sender<Job>,
}

/// Deliveries stored by this process, shared by its workers. Closed (and then always
/// empty) once the writers have stopped.
#[derive(Clone)]
pub struct FreshDeliveries(Arc<Mutex<mpsc::Receiver<ClaimedDelivery>>>);

impl FreshDeliveries {
    /// An already closed source: its workers only poll (a process without intake).
    pub fn none() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self(Arc::new(Mutex::new(rx)))
    }

    /// Waits for fresh deliveries and moves up to `max` into `buf`. When several are
    /// waiting already, gathers more for at most `window`: one transaction for many
    /// deliveries costs the database far less than one each.
    /// Returns 0 once closed.
    ///
    /// Cancel-safe: what was received is already in `buf` (which the caller keeps), and
    /// a call with a non-empty `buf` does not wait for more before gathering.
    pub async fn recv_batch(
        &self,
        buf: &mut Vec<ClaimedDelivery>,
        max: usize,
        window: std::time::Duration,
    ) -> usize {
        let mut queue = self.0.lock().await;
        if buf.is_empty() && queue.recv_many(buf, max).await == 0 {
            return 0;
        }
        if buf.len() == 1 {
            // A delivery arriving alone is a quiet moment: it goes at once, since waiting
            // for company would only delay its task. Under load, deliveries queue up while
            // the previous batch is processed and arrive together.
            return 1;
        }
        let deadline = tokio::time::Instant::now() + window;
        while buf.len() < max {
            let more = tokio::time::timeout_at(deadline, queue.recv_many(buf, max - buf.len()));
            match more.await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        buf.len()
    }
}

impl IntakeWriter {
    /// Starts `config.writers` writer tasks in `background`. They ignore its stop
    /// request: they stop once every `IntakeWriter` clone is dropped and the queue is
    /// drained, so wait for `background` after the last request for a clean shutdown.
    pub fn spawn(
        store: Store,
        config: &IntakeConfig,
        background: &Background,
    ) -> (Self, FreshDeliveries) {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        let (fresh_tx, fresh_rx) = mpsc::channel(FRESH_CAPACITY);
        for _ in 0..config.writers {
            background.spawn(
                "intake writer",
                write_batches(
                    store.clone(),
                    queue.clone(),
                    config.batch_max,
                    fresh_tx.clone(),
                ),
            );
        }
        (
            Self { jobs },
            FreshDeliveries(Arc::new(Mutex::new(fresh_rx))),
        )
    }

    /// Stores one delivery; `Ok(true)` when new, `Ok(false)` for a redelivery.
    pub async fn store(&self, delivery: NewDelivery) -> Result<bool, IntakeError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { delivery, reply })
            .await
            .map_err(|_| IntakeError::ShuttingDown)?;
        answer
            .await
            .map_err(|_| IntakeError::ShuttingDown)?
            .map_err(IntakeError::Store)
    }
}

async fn write_batches(
    store: Store,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    batch_max: usize,
    fresh: mpsc::Sender<ClaimedDelivery>,
) {
    let mut jobs = Vec::with_capacity(batch_max);
    loop {
        {
            // Whoever holds the queue takes everything waiting (up to batch_max); the
            // other writers commit meanwhile.
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut jobs, batch_max).await == 0 {
                return;
            }
        }
        // Taken apart rather than cloned: the batch is bound for the database, the replies
        // for the waiting requests.
        let (deliveries, replies): (Vec<NewDelivery>, Vec<_>) =
            jobs.drain(..).map(|job| (job.delivery, job.reply)).unzip();
        let result = store.insert_deliveries(&deliveries, LOCAL_GRACE).await;
        match result {
            Ok(is_new) => {
                for ((reply, new), delivery) in replies.into_iter().zip(is_new).zip(deliveries) {
                    let _ = reply.send(Ok(new));
                    if new {
                        let handed = fresh.try_send(ClaimedDelivery::from(delivery));
                        if handed.is_err() {
                            tracing::debug!("workers are busy; the delivery waits for a poll");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = replies.len(), "storing deliveries failed");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// What the webhook route needs.
#[derive(Clone)]
pub struct WebhookState {
    pub secrets: Arc<WebhookSecrets>,
    pub writer: IntakeWriter,
    pub bodies: UnverifiedBodies,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn acknowledge(status: StatusCode, label: &str, guid: &str) -> Response {
    let answer = Answer {
        status: Some(label),
        delivery: Some(guid),
        error: None,
    };
    (status, Json(answer)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::warn!(status = status.as_u16(), %message, "webhook rejected");
    let body = Answer {
        status: None,
        delivery: None,
        error: Some(message),
    };
    (status, Json(body)).into_response()
}

pub async fn receive(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(event) = header("x-github-event") else {
        crate::metrics::delivery("refused", "bad_headers");
        return error(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Event header is missing",
        );
    };
    let Some(guid) = header("x-github-delivery") else {
        crate::metrics::delivery("refused", "bad_headers");
        return error(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Delivery header is missing",
        );
    };
    if event.is_empty()
        || event.len() > MAX_EVENT_LEN
        // GitHub's names are lowercase words, some with digits (`projects_v2_item`); any
        // token-like name is stored (and ignored if unused), never refused.
        || !event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        crate::metrics::delivery("refused", "bad_headers");
        return error(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Event header is not an event name",
        );
    }
    if guid.is_empty()
        || guid.len() > MAX_DELIVERY_ID_LEN
        || !guid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        crate::metrics::delivery("refused", "bad_headers");
        return error(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Delivery header is not a delivery id",
        );
    }
    let span = tracing::info_span!("delivery", %guid, %event);
    let (event, guid) = (event.to_owned(), guid.to_owned());
    async move {
        // The headers were checked first: a request that is no delivery takes no turn.
        let received = match state.bodies.receive(&headers, body).await {
            Ok(received) => received,
            Err(e) => {
                crate::metrics::delivery("refused", "body");
                return error(e.status(), e.to_string());
            }
        };
        let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
        let verified = verify_signature(&state.secrets, &received.body, signature);
        let body = received.checked();
        if let Err(e) = verified {
            crate::metrics::delivery("refused", "signature");
            return error(StatusCode::UNAUTHORIZED, e.to_string());
        }
        // The body is not parsed here: the worker does that, and marks a non-JSON one failed.
        let delivery = NewDelivery {
            guid: guid.clone(),
            event,
            body,
        };
        let stored = tokio::time::timeout(STORE_DEADLINE, state.writer.store(delivery))
            .await
            .unwrap_or(Err(IntakeError::TooSlow));
        match stored {
            Ok(true) => {
                crate::metrics::delivery("stored", "new");
                tracing::debug!("delivery stored");
                acknowledge(StatusCode::ACCEPTED, "accepted", &guid)
            }
            Ok(false) => {
                crate::metrics::delivery("stored", "duplicate");
                tracing::info!("redelivery of a stored delivery; not processed again");
                acknowledge(StatusCode::OK, "duplicate", &guid)
            }
            Err(e) => {
                crate::metrics::delivery("refused", "not_stored");
                tracing::error!(error = %e, "delivery not stored");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the delivery could not be stored; redeliver it later",
                )
            }
        }
    }
    .instrument(span)
    .await
}
