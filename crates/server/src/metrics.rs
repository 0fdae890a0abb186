//! Metrics in Prometheus' text format at `GET /metrics`, behind a bearer token
//! (`BG_AGENT_METRICS_TOKEN`; unset, the route answers 404).
//!
//! Counters and histograms are recorded where things happen, through the `metrics`
//! facade (a process-wide recorder, installed once); gauges of stored state (tasks by
//! state, deliveries by state) are read from the database at each scrape, so every
//! replica reports the same truth. Labels are low-cardinality names only.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::store::Store;
use crate::store::tasks::TaskTrigger;
use bg_agent_core::task::TaskState;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Task durations, start to end, in seconds: from a quick recipe to the one-hour cap.
const DURATION_BUCKETS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// The process's recorder, installed on first use. `None` if another recorder was
/// installed first (then `/metrics` says so rather than serving nothing).
pub fn handle() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "bg_agent_task_duration_seconds".into(),
                    ),
                    DURATION_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "bg_agent_deliveries_received_total",
        "Webhook deliveries received, by outcome (stored, refused) and reason"
    );
    metrics::describe_counter!(
        "bg_agent_tasks_created_total",
        "Tasks created, by what asked (comment, label, rerun, retry_button, retry_command, api)"
    );
    metrics::describe_counter!(
        "bg_agent_tasks_finished_total",
        "Tasks that ended, by state"
    );
    metrics::describe_histogram!(
        "bg_agent_task_duration_seconds",
        "Task durations from start to end, in seconds"
    );
    metrics::describe_counter!(
        "bg_agent_runner_reports_total",
        "Runner reports received, by outcome (applied, duplicate, ended, refused)"
    );
    metrics::describe_counter!(
        "bg_agent_redelivery_requests_total",
        "Missed deliveries asked of GitHub again, by outcome (requested, failed)"
    );
    metrics::describe_counter!(
        "bg_agent_report_permanent_errors_total",
        "Report steps GitHub refused for good, by step"
    );
    metrics::describe_counter!(
        "bg_agent_background_panics_total",
        "Panics of background work"
    );
    metrics::describe_gauge!("bg_agent_tasks", "Stored tasks, by state");
    metrics::describe_gauge!("bg_agent_deliveries", "Stored deliveries, by state");
}

fn trigger_name(trigger: TaskTrigger) -> &'static str {
    match trigger {
        TaskTrigger::Comment => "comment",
        TaskTrigger::Label => "label",
        TaskTrigger::Rerun => "rerun",
        TaskTrigger::RetryButton => "retry_button",
        TaskTrigger::RetryCommand => "retry_command",
        TaskTrigger::Api => "api",
    }
}

pub fn task_created(trigger: TaskTrigger) {
    handle();
    metrics::counter!("bg_agent_tasks_created_total", "trigger" => trigger_name(trigger))
        .increment(1);
}

/// A task ended in `state` after `ran` (from its start; `None` if it never started).
pub fn task_finished(state: TaskState, ran: Option<Duration>) {
    handle();
    metrics::counter!("bg_agent_tasks_finished_total", "state" => state.as_str()).increment(1);
    if let Some(ran) = ran {
        metrics::histogram!("bg_agent_task_duration_seconds").record(ran.as_secs_f64());
    }
}

/// A delivery the inbox stored (`reason` "stored") or refused (`reason` says why).
pub fn delivery(outcome: &'static str, reason: &'static str) {
    handle();
    metrics::counter!("bg_agent_deliveries_received_total", "outcome" => outcome, "reason" => reason)
        .increment(1);
}

pub fn runner_report(outcome: &'static str) {
    handle();
    metrics::counter!("bg_agent_runner_reports_total", "outcome" => outcome).increment(1);
}

pub fn redelivery_request(outcome: &'static str) {
    handle();
    metrics::counter!("bg_agent_redelivery_requests_total", "outcome" => outcome).increment(1);
}

pub fn report_permanent_error(step: &'static str) {
    handle();
    metrics::counter!("bg_agent_report_permanent_errors_total", "step" => step).increment(1);
}

pub fn background_panic() {
    handle();
    metrics::counter!("bg_agent_background_panics_total").increment(1);
}

/// What `/metrics` needs.
#[derive(Clone)]
pub struct MetricsState {
    pub store: Store,
    pub token: Option<SecretString>,
}

/// `GET /metrics`: 404 when no token is configured, 401 without the right one.
pub async fn serve(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    let Some(token) = &state.token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required",
        )
            .into_response();
    }
    let Some(handle) = handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process",
        )
            .into_response();
    };
    match state.store.task_state_counts().await {
        Ok(counts) => {
            for task_state in TaskState::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == task_state)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("bg_agent_tasks", "state" => task_state.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: task counts unavailable"),
    }
    match state.store.delivery_counts().await {
        Ok(c) => {
            for (name, n) in [
                ("pending", c.pending),
                ("processed", c.processed),
                ("ignored", c.ignored),
                ("failed", c.failed),
            ] {
                metrics::gauge!("bg_agent_deliveries", "state" => name).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: delivery counts unavailable"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
