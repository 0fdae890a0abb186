//! Failures on demand: the next N matching requests fail (or slow down) the way
//! GitHub fails, so a client's retries and rate-limit handling meet the real thing.

use std::time::Duration;

use serde::Serialize;

/// How a matching request misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// Answer with this server error status (500, 502, 503...).
    ServerError(u16),
    /// Refuse with this client error status (404, 410, 422...) and GitHub's error body:
    /// what a deleted object, a removed installation or an invalid request gets.
    Refuse(u16),
    /// 403 with `Retry-After` and GitHub's secondary-rate-limit message.
    SecondaryRateLimit { retry_after_secs: u64 },
    /// 429 with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` this far ahead.
    PrimaryRateLimit { reset_after_secs: u64 },
    /// Wait this long, then handle the request normally.
    Latency(Duration),
    /// Hold the request unanswered until [`crate::RunningSim::release`]
    /// releases this fault (or `clear_faults` removes it), then handle it normally.
    /// Never released, it is a request that never answers.
    Hold,
}

impl FaultKind {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::ServerError(status) => format!("server error {status}"),
            Self::Refuse(status) => format!("refused with {status}"),
            Self::SecondaryRateLimit { retry_after_secs } => {
                format!("secondary rate limit (retry after {retry_after_secs} s)")
            }
            Self::TooManyRequests { retry_after_secs } => {
                format!("429 (retry after {retry_after_secs} s)")
            }
            Self::PrimaryRateLimit { reset_after_secs } => {
                format!("primary rate limit (reset in {reset_after_secs} s)")
            }
            Self::Latency(delay) => format!("latency {delay:?}"),
            Self::Hold => "held until released".to_owned(),
        }
    }
}

/// A fault to inject: `kind` for the next `times` requests matching `method` and `path`.
///
/// `method` is an HTTP method or `*`. `path` is matched segment by segment
/// against the request path (query excluded): `*` matches one segment, a
/// trailing `**` matches any rest (also nothing), and `*` or `**` alone match
/// every path. Example: `Fault::new("POST", "/repos/*/*/check-runs", FaultKind::ServerError(502)).times(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub method: String,
    pub path: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// Fires once; see [`Fault::times`].
    pub fn new(method: &str, path: &str, kind: FaultKind) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            kind,
            times: 1,
        }
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }
}

/// Identifies an injected fault, to ask how often it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FaultId(pub(crate) u64);

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultRule {
    pub id: FaultId,
    pub fault: FaultSummary,
    pub remaining: usize,
    pub fired: usize,
    /// For [`FaultKind::Hold`]: the requests it holds may go on.
    pub released: bool,
    #[serde(skip)]
    pub kind: FaultKind,
    #[serde(skip)]
    pub method: String,
    #[serde(skip)]
    pub segments: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultSummary {
    pub method: String,
    pub path: String,
    pub kind: String,
}

impl FaultRule {
    pub fn new(id: FaultId, fault: Fault) -> Self {
        Self {
            id,
            fault: FaultSummary {
                method: fault.method.clone(),
                path: fault.path.clone(),
                kind: fault.kind.describe(),
            },
            remaining: fault.times,
            fired: 0,
            released: false,
            kind: fault.kind,
            method: fault.method,
            segments: split(&fault.path),
        }
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.remaining == 0 {
            return false;
        }
        if self.method != "*" && !self.method.eq_ignore_ascii_case(method) {
            return false;
        }
        // `*` or `**` alone: every path.
        let any = matches!(self.segments.as_slice(), [only] if only == "*" || only == "**");
        any || path_matches(&self.segments, &split(path))
    }
}

fn split(path: &str) -> Vec<String> {
    let path = path.split('?').next().unwrap_or_default();
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn path_matches(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" && rest.is_empty() => true,
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                (first == "*" || first == segment) && path_matches(rest, path_rest)
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, path: &str) -> FaultRule {
        FaultRule::new(
            FaultId(1),
            Fault::new(method, path, FaultKind::ServerError(500)),
        )
    }

    #[test]
    fn patterns_match_segments() {
        let r = rule("POST", "/repos/*/*/check-runs");
        assert!(r.matches("post", "/repos/acme/widgets/check-runs"));
        assert!(r.matches("POST", "/repos/acme/widgets/check-runs?x=1"));
        assert!(!r.matches("PATCH", "/repos/acme/widgets/check-runs"));
        assert!(!r.matches("POST", "/repos/acme/widgets/check-runs/1"));
        assert!(!r.matches("POST", "/repos/acme/check-runs"));
        let any = rule("*", "*");
        assert!(any.matches("GET", "/app"));
        assert!(any.matches("GET", "/repos/acme/widgets"));
        assert!(any.matches("GET", "/"));
        let rest = rule("GET", "/repos/acme/**");
        assert!(rest.matches("GET", "/repos/acme"));
        assert!(rest.matches("GET", "/repos/acme/widgets/pulls/1"));
        assert!(!rest.matches("GET", "/repos/other/widgets"));
    }
}
