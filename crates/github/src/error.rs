//! The one error type of the GitHub client.

use std::time::Duration;

use serde::Deserialize;

use super::limits::ActionError;
use super::types::CheckRun;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("invalid GitHub client configuration: {0}")]
    Config(String),
    #[error("cannot sign the App JWT: {0}")]
    Jwt(String),
    /// The request was refused before sending because GitHub would reject it.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid check-run action: {0}")]
    InvalidAction(#[from] ActionError),
    #[error("GitHub: 401 Unauthorized on {endpoint}: {message}")]
    Unauthorized { endpoint: String, message: String },
    #[error("GitHub: 403 Forbidden on {endpoint}: {message}")]
    Forbidden { endpoint: String, message: String },
    #[error("GitHub: 404 Not Found on {endpoint}: {message}")]
    NotFound { endpoint: String, message: String },
    #[error("GitHub: 422 Unprocessable on {endpoint}: {message}{}", render_details(.errors))]
    Unprocessable {
        endpoint: String,
        message: String,
        errors: Vec<ValidationErrorDetail>,
    },
    /// Another 4xx (400, 409, 410, ...).
    #[error("GitHub: {status} on {endpoint}: {message}")]
    Client {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// GitHub asked for a longer wait than allowed, or was still rate-limiting after the
    /// last attempt.
    #[error("GitHub rate limit on {endpoint}: asked to wait {retry_after:?}")]
    RateLimited {
        endpoint: String,
        retry_after: Duration,
    },
    #[error("GitHub: {status} on {endpoint} after {attempts} attempt(s): {message}")]
    Server {
        endpoint: String,
        status: u16,
        message: String,
        attempts: u32,
    },
    #[error("cannot reach GitHub for {endpoint} after {attempts} attempt(s): {message}")]
    Network {
        endpoint: String,
        message: String,
        attempts: u32,
    },
    #[error("GitHub did not answer {endpoint} within {timeout:?} ({attempts} attempt(s))")]
    Timeout {
        endpoint: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("unexpected response from GitHub to {endpoint}: {message}")]
    Decode { endpoint: String, message: String },
    /// The check run was created (or updated) but a follow-up request carrying more
    /// annotations failed; `check_run` is the run as last seen, so it is not created twice.
    #[error(
        "check run {} was saved but only {sent} of {total} annotations were sent: {source}",
        .check_run.id
    )]
    AnnotationsIncomplete {
        check_run: Box<CheckRun>,
        sent: usize,
        total: usize,
        source: Box<GitHubError>,
    },
}

impl GitHubError {
    /// The HTTP status GitHub answered, when the error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::Unprocessable { .. } => Some(422),
            Self::Client { status, .. } | Self::Server { status, .. } => Some(*status),
            Self::AnnotationsIncomplete { source, .. } => source.status(),
            _ => None,
        }
    }

    /// Whether trying the same call again later may succeed (the client has already
    /// retried within its bounds).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::Network { .. }
            | Self::Timeout { .. } => true,
            Self::AnnotationsIncomplete { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// One entry of a 422 response's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidationErrorDetail {
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

fn render_details(errors: &[ValidationErrorDetail]) -> String {
    errors
        .iter()
        .map(|e| {
            let parts: Vec<&str> = [&e.resource, &e.field, &e.code, &e.message]
                .into_iter()
                .filter_map(|p| p.as_deref())
                .collect();
            format!(" [{}]", parts.join(" "))
        })
        .collect()
}
