//! Receiving a webhook's body before its signature is checked: what anyone who can reach
//! `/webhook` can make the server hold.
//!
//! At most `concurrency` bodies are received at once; a request waits up to `wait` for its
//! turn, then gets 503 (GitHub does not retry by itself, so a burst waits a little rather
//! than failing at once). Once its turn came, a body has `read_timeout` to arrive in full,
//! else 408: a client trickling bytes holds its turn no longer. No body may exceed GitHub's
//! 25 MB. So the bytes held for unverified senders stay under `concurrency` × 25 MB however
//! many connect; the turn is given back as soon as the signature is checked.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::MAX_PAYLOAD_BYTES;
use crate::config::IntakeConfig;

/// The turns to receive unverified bodies, shared by every request to `/webhook`.
#[derive(Clone)]
pub struct UnverifiedBodies {
    turns: Arc<Semaphore>,
    wait: Duration,
    read_timeout: Duration,
    max_bytes: usize,
}

/// A body received in full whose signature is not checked yet; it holds its turn until
/// [`Unverified::checked`] (or until dropped).
pub struct Unverified {
    pub body: Bytes,
    turn: OwnedSemaphorePermit,
}

impl Unverified {
    /// The signature was checked (either way): the turn goes to the next request.
    pub fn checked(self) -> Bytes {
        drop(self.turn);
        self.body
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("too many webhook bodies are being received; deliver it again later")]
    Busy,
    #[error("the body did not arrive in full within {0} s")]
    TimedOut(u64),
    #[error("payload exceeds GitHub's limit of {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    Read(String),
}

impl ReceiveError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl UnverifiedBodies {
    pub fn new(config: &IntakeConfig) -> Self {
        Self::with_max_bytes(config, MAX_PAYLOAD_BYTES)
    }

    fn with_max_bytes(config: &IntakeConfig, max_bytes: usize) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(config.unverified_concurrency)),
            wait: config.unverified_wait,
            read_timeout: config.read_timeout,
            max_bytes,
        }
    }

    /// Waits for a turn, then receives the whole body within the read timeout.
    pub async fn receive(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Unverified, ReceiveError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Refused before it takes a turn or a byte of it is read.
        if declared.is_some_and(|n| n > self.max_bytes) {
            return Err(ReceiveError::TooLarge(self.max_bytes));
        }
        let turn = tokio::time::timeout(self.wait, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| ReceiveError::Busy)?
            .map_err(|_| ReceiveError::Busy)?;
        let body = tokio::time::timeout(self.read_timeout, self.read(declared, body))
            .await
            .map_err(|_| ReceiveError::TimedOut(self.read_timeout.as_secs()))??;
        Ok(Unverified { body, turn })
    }

    async fn read(&self, declared: Option<usize>, body: Body) -> Result<Bytes, ReceiveError> {
        // One allocation of the declared size (pages are touched only as bytes arrive), so
        // a body costs its size, not the doubling of a growing buffer.
        let mut buf = Vec::with_capacity(declared.unwrap_or(0));
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| ReceiveError::Read(e.to_string()))?;
            if buf.len() + chunk.len() > self.max_bytes {
                return Err(ReceiveError::TooLarge(self.max_bytes));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;

    fn bodies(concurrency: usize) -> UnverifiedBodies {
        let config = IntakeConfig {
            batch_max: 1,
            writers: 1,
            unverified_concurrency: concurrency,
            unverified_wait: Duration::from_secs(1),
            read_timeout: Duration::from_secs(10),
        };
        UnverifiedBodies::with_max_bytes(&config, 100)
    }

    /// A body whose first bytes come and the rest never does.
    fn trickle() -> Body {
        let first = stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{\"a\"")) });
        Body::from_stream(first.chain(stream::pending()))
    }

    fn whole(bytes: &'static [u8]) -> Body {
        Body::from(bytes)
    }

    // Paused time: the runtime jumps to the next timer when every task is idle, so the
    // timeouts below fire without the test waiting for them.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_cut_off_and_its_turn_freed() {
        let bodies = bodies(1);
        let headers = HeaderMap::new();
        let err = bodies.receive(&headers, trickle()).await.err();
        assert_eq!(err, Some(ReceiveError::TimedOut(10)));
        assert_eq!(err.unwrap().status(), StatusCode::REQUEST_TIMEOUT);
        let received = bodies.receive(&headers, whole(b"{}")).await.ok().unwrap();
        assert_eq!(received.checked().as_ref(), b"{}");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_concurrency_wait_their_turn_then_get_503() {
        let bodies = bodies(2);
        let headers = HeaderMap::new();
        let first = bodies.receive(&headers, whole(b"1")).await.ok().unwrap();
        let second = bodies.receive(&headers, whole(b"2")).await.ok().unwrap();
        // Both turns are held until the signatures are checked.
        let third = bodies.receive(&headers, whole(b"3")).await.err();
        assert_eq!(third, Some(ReceiveError::Busy));
        assert_eq!(third.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);

        // A request waiting for its turn gets it when one is given back within the wait.
        let waiting = tokio::spawn({
            let bodies = bodies.clone();
            async move { bodies.receive(&HeaderMap::new(), whole(b"4")).await.ok() }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(first.checked().as_ref(), b"1");
        let fourth = waiting.await.unwrap().unwrap();
        assert_eq!(fourth.body.as_ref(), b"4");
        drop((second, fourth));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_limit_is_refused_declared_or_not() {
        let bodies = bodies(1);
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "101".parse().unwrap());
        // Refused by its Content-Length alone: the body is never read.
        let err = bodies.receive(&declared, trickle()).await.err();
        assert_eq!(err, Some(ReceiveError::TooLarge(100)));
        let err = bodies
            .receive(&HeaderMap::new(), whole(&[b' '; 101]))
            .await
            .err();
        assert_eq!(err, Some(ReceiveError::TooLarge(100)));
        assert!(
            bodies
                .receive(&HeaderMap::new(), whole(&[b' '; 100]))
                .await
                .is_ok()
        );
    }
}
