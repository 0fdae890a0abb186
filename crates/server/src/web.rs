//! The HTTP router: webhook intake, the runners' reports, task pages and health.

pub mod api;
pub mod auth;
pub mod github_user;
pub mod live_log;
pub mod login;
pub mod mcp;
pub mod pages;
pub mod runner_api;
pub mod settings;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::config::WebhookSecrets;
use crate::engine::Signal;
use crate::store::Store;
use crate::webhook::inbox::{IntakeWriter, WebhookState, receive};
use crate::webhook::unverified::UnverifiedBodies;
use auth::AuthState;
use pages::PagesState;
use runner_api::RunnerApiState;

/// The core routes; the caller adds the API, MCP and metrics and wraps them all in [`observed`].
// Each argument is one part's state, built by `app`; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn router(
    store: Store,
    secrets: Arc<WebhookSecrets>,
    writer: IntakeWriter,
    bodies: UnverifiedBodies,
    signal: Signal,
    public_url: String,
    credential_keys: Option<crate::credentials::Keyring>,
    auth: AuthState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Router {
    // The handler receives the body itself, under `bodies`' limits (size included).
    let webhook = Router::new()
        .route("/webhook", post(receive))
        .with_state(WebhookState {
            secrets,
            writer,
            bodies,
        });
    let runners = Router::new()
        .route(
            "/internal/tasks/{id}/events",
            post(runner_api::receive_report),
        )
        .layer(DefaultBodyLimit::max(runner_api::MAX_REPORT_BYTES))
        .with_state(RunnerApiState {
            store: store.clone(),
            signal: signal.clone(),
            credential_keys,
        });
    let pages = pages::routes().with_state(PagesState {
        store: store.clone(),
        public_url,
        auth,
        signal,
        shutdown,
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(store)
        .merge(webhook)
        .merge(runners)
        .merge(pages)
}

/// One `request` span per request (method, matched route, then status and latency), and
/// a handler's panic answered with a 500 instead of dropping the connection.
///
/// The span is at info so that what handlers log carries the route; the request itself
/// is logged at debug only: a delivery already logs in its own `delivery` span, and
/// failures are logged where they happen (the panic handler below included).
pub fn observed(routes: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            // The route, not the URI: `/tasks/{id}`, one value per route, and no query
            // strings in logs.
            let path = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("<no route>", MatchedPath::as_str);
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %path,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(|response: &Response, latency: Duration, span: &Span| {
            span.record("status", response.status().as_u16());
            span.record(
                "latency_ms",
                u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            );
            tracing::debug!("answered");
        })
        .on_failure(());
    // Inside the trace layer, so the 500 is what the span records.
    routes.layer(CatchPanicLayer::custom(panicked)).layer(trace)
}

/// The answer to a request whose handler panicked. The panic's message goes to the log
/// (inside the request's span), not to the client.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The database answers (within 2 s).
async fn readyz(State(store): State<Store>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer within 2 s");
            (StatusCode::SERVICE_UNAVAILABLE, "database did not answer")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Mutex;

    /// The log, as the test subscriber writes it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    async fn boom() -> &'static str {
        panic!("boom on purpose")
    }

    // Current-thread runtime: the server, the client and the thread-local subscriber share
    // the one thread, so the log sees the server's spans.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("bg_agent=debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let app = observed(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/panic/{id}", get(boom)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        // One client, so the second request may reuse the first one's connection.
        let client = reqwest::Client::new();
        let panicked = client.get(format!("{base}/panic/7")).send().await.unwrap();
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panicked.text().await.unwrap(), "internal error");
        let next = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(next.status(), StatusCode::OK);
        assert_eq!(next.text().await.unwrap(), "ok");
        server.abort();

        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
        // The panic is logged in its request's span, which names the route, not the URI.
        assert!(
            has(&[
                "ERROR",
                "request{method=GET path=/panic/{id}",
                "handler panicked",
                "boom on purpose"
            ]),
            "{log}"
        );
        assert!(
            has(&["path=/panic/{id} status=500 latency_ms=", "answered"]),
            "{log}"
        );
        assert!(
            has(&[
                "request{method=GET path=/healthz status=200 latency_ms=",
                "answered"
            ]),
            "{log}"
        );
        assert!(!log.contains("/panic/7"), "{log}");
    }
}
