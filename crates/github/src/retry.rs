//! The client's one retry policy: what a response means (done, wait as told, back off,
//! give up) and how long to wait. Pure functions; the loop is `GitHubApp`'s, the backoff
//! arithmetic in `bg_agent_core::backoff`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderMap;

use bg_agent_core::backoff::Backoff;

/// Backoff after the first failure; doubles per attempt up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// GitHub's advice for a secondary rate limit that names no wait: at least a minute.
pub const SECONDARY_RATE_LIMIT_DEFAULT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Success,
    /// Rate-limited: the same request may succeed after this wait.
    RateLimited {
        wait: Duration,
    },
    /// 5xx: retry with backoff.
    ServerError,
    /// Any other 4xx: retrying cannot help.
    ClientError,
}

/// What a response means for the retry loop. `message` is the body's `message`, used to
/// recognise a secondary rate limit that comes without headers.
pub fn classify(
    status: u16,
    headers: &HeaderMap,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> Classification {
    match status {
        100..=399 => Classification::Success,
        403 | 429 => match rate_limit_wait(headers, now) {
            Some(wait) => Classification::RateLimited { wait },
            None if status == 429 || message.is_some_and(mentions_rate_limit) => {
                Classification::RateLimited {
                    wait: SECONDARY_RATE_LIMIT_DEFAULT_WAIT,
                }
            }
            None => Classification::ClientError,
        },
        500..=599 => Classification::ServerError,
        _ => Classification::ClientError,
    }
}

fn mentions_rate_limit(message: &str) -> bool {
    message.to_ascii_lowercase().contains("rate limit")
}

/// The wait GitHub asks for: `Retry-After` first, else `x-ratelimit-reset` when
/// `x-ratelimit-remaining` is 0.
pub fn rate_limit_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(wait) = header("retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(wait);
    }
    if header("x-ratelimit-remaining") == Some("0") {
        return header("x-ratelimit-reset").and_then(|v| parse_ratelimit_reset(v, now));
    }
    None
}

/// `Retry-After`: delay seconds (what GitHub sends) or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(until(at.with_timezone(&Utc), now))
}

/// `x-ratelimit-reset`: epoch seconds at which the limit resets.
pub fn parse_ratelimit_reset(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let epoch_seconds = value.trim().parse::<i64>().ok()?;
    let at = DateTime::from_timestamp(epoch_seconds, 0)?;
    Some(until(at, now))
}

/// Time from `now` to `at`, zero if `at` has passed.
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

/// Waits for `asked` only within `max`; beyond it the caller fails fast instead.
pub fn bounded_wait(asked: Duration, max: Duration) -> Option<Duration> {
    (asked <= max).then_some(asked)
}

/// The client's backoff: 1 s, 2 s, 4 s … up to [`BACKOFF_CAP`], with "equal jitter"
/// (half of each delay fixed, half random), so retries of many clients spread out but
/// never collapse to zero.
pub const BACKOFF: Backoff = Backoff::new(BACKOFF_BASE, 2, BACKOFF_CAP).with_jitter(0.5);

/// The backoff after `failures` consecutive failures (1 for the first), `jitter` (in
/// `[0, 1]`) choosing where it falls between half the exponential delay and all of it.
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    BACKOFF.delay(failures, jitter)
}

/// [`backoff_delay`] with a random jitter.
pub fn random_backoff(failures: u32) -> Duration {
    use rand::Rng as _;
    backoff_delay(failures, rand::thread_rng().gen_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn statuses_are_classified() {
        let none = HeaderMap::new();
        let c = |status| classify(status, &none, None, now());
        assert_eq!(c(200), Classification::Success);
        assert_eq!(c(201), Classification::Success);
        assert_eq!(c(204), Classification::Success);
        assert_eq!(c(304), Classification::Success);
        for status in [500, 502, 503, 504] {
            assert_eq!(c(status), Classification::ServerError, "{status}");
        }
        for status in [400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(c(status), Classification::ClientError, "{status}");
        }
        // A 429 always means "slow down", even without a hint of how long.
        assert_eq!(
            c(429),
            Classification::RateLimited {
                wait: SECONDARY_RATE_LIMIT_DEFAULT_WAIT
            }
        );
    }

    #[test]
    fn retry_after_wins_on_403_and_429() {
        for status in [403, 429] {
            let h = headers(&[
                ("retry-after", "7"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000100"),
            ]);
            assert_eq!(
                classify(status, &h, None, now()),
                Classification::RateLimited {
                    wait: Duration::from_secs(7)
                }
            );
        }
    }

    #[test]
    fn exhausted_primary_limit_waits_until_reset() {
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000042"),
        ]);
        assert_eq!(
            classify(403, &h, None, now()),
            Classification::RateLimited {
                wait: Duration::from_secs(42)
            }
        );
        // Remaining quota: a 403 is a real permission error.
        let h = headers(&[
            ("x-ratelimit-remaining", "12"),
            ("x-ratelimit-reset", "1700000042"),
        ]);
        assert_eq!(
            classify(
                403,
                &h,
                Some("Resource not accessible by integration"),
                now()
            ),
            Classification::ClientError
        );
    }

    #[test]
    fn secondary_limit_message_without_headers_waits_a_minute() {
        assert_eq!(
            classify(
                403,
                &HeaderMap::new(),
                Some("You have exceeded a secondary rate limit."),
                now()
            ),
            Classification::RateLimited {
                wait: SECONDARY_RATE_LIMIT_DEFAULT_WAIT
            }
        );
    }

    #[test]
    fn retry_after_and_reset_parsing() {
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 120 ", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(
            parse_ratelimit_reset("1700000060", now()),
            Some(Duration::from_secs(60))
        );
        // A reset already in the past means "go ahead".
        assert_eq!(
            parse_ratelimit_reset("1699999000", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_ratelimit_reset("tomorrow", now()), None);
        // An unparsable Retry-After falls back to the reset header.
        let h = headers(&[
            ("retry-after", "soon"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000005"),
        ]);
        assert_eq!(rate_limit_wait(&h, now()), Some(Duration::from_secs(5)));
    }

    #[test]
    fn waits_are_bounded() {
        let max = Duration::from_secs(60);
        assert_eq!(
            bounded_wait(Duration::from_secs(60), max),
            Some(Duration::from_secs(60))
        );
        assert_eq!(bounded_wait(Duration::from_secs(61), max), None);
        assert_eq!(
            bounded_wait(Duration::ZERO, Duration::ZERO),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        for failures in 1..=5u32 {
            let nominal = BACKOFF_BASE * 2u32.pow(failures - 1);
            assert_eq!(backoff_delay(failures, 0.0), nominal / 2);
            assert_eq!(backoff_delay(failures, 1.0), nominal);
            for _ in 0..100 {
                let d = random_backoff(failures);
                assert!(nominal / 2 <= d && d <= nominal, "{failures}: {d:?}");
            }
        }
        assert_eq!(backoff_delay(6, 1.0), BACKOFF_CAP);
        assert_eq!(backoff_delay(1_000, 1.0), BACKOFF_CAP);
        assert_eq!(backoff_delay(1_000, 0.0), BACKOFF_CAP / 2);
        // Out-of-range jitter is clamped.
        assert_eq!(backoff_delay(1, 7.0), BACKOFF_BASE);
        assert_eq!(backoff_delay(0, 0.5), backoff_delay(1, 0.5));
    }
}
