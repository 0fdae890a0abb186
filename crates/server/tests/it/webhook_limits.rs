//! What unauthenticated senders can make `/webhook` hold: bodies received at once are
//! limited (more wait, then 503) and a body must arrive within the read timeout (else 408),
//! through the real server and PostgreSQL, with raw connections that send bodies slowly.

use std::time::Duration;

use bg_agent::config::Config;
use bg_agent::store::DeliveryState;
use bg_agent::webhook::sign;
use bg_agent_testkit::fixtures::{SECRET, fixture};
use bg_agent_testkit::recording::{TestApp, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const COMMENT: &str = "issue_comment.created.json";

fn limited(concurrency: usize, wait: Duration, read_timeout: Duration) -> Config {
    let mut config = test_config();
    config.intake.unverified_concurrency = concurrency;
    config.intake.unverified_wait = wait;
    config.intake.read_timeout = read_timeout;
    config
}

/// A `POST /webhook` on a raw connection whose body is sent in parts, when the test says.
struct SlowDelivery {
    stream: TcpStream,
    body: Vec<u8>,
    sent: usize,
}

impl SlowDelivery {
    /// Sends the headers (the signature of the whole body) and the first `first` bytes.
    async fn start(app: &TestApp, guid: &str, body: Vec<u8>, first: usize) -> Self {
        let addr = app.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             x-github-event: issue_comment\r\nx-github-delivery: {guid}\r\n\
             x-hub-signature-256: {}\r\ncontent-length: {}\r\n\r\n",
            sign(SECRET.as_bytes(), &body),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..first]).await.unwrap();
        Self {
            stream,
            body,
            sent: first,
        }
    }

    /// Sends the rest of the body.
    async fn finish(&mut self) {
        self.stream
            .write_all(&self.body[self.sent..])
            .await
            .unwrap();
        self.sent = self.body.len();
    }

    /// The answer's status code (bounded wait, so a hanging server fails the test).
    async fn status(&mut self) -> u16 {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = self.stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed without an answer");
                answer.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("an answer within 30 s");
        let text = String::from_utf8_lossy(&answer);
        text.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

#[tokio::test]
async fn a_body_trickling_in_is_cut_off_with_408_and_its_turn_given_back() {
    // One turn: the valid delivery afterwards shows the slow one gave it back.
    let app = TestApp::start_with(limited(1, Duration::from_secs(5), Duration::from_secs(1))).await;
    let mut slow = SlowDelivery::start(&app, "slow-1", fixture(COMMENT), 10).await;
    assert_eq!(slow.status().await, 408);
    assert!(app.db.store().delivery("slow-1").await.unwrap().is_none());

    let answer = app.deliver_fixture(COMMENT).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(
        app.processed(&answer.guid).await.state,
        DeliveryState::Processed
    );
}

#[tokio::test]
async fn bodies_beyond_the_limit_get_503_and_every_acknowledged_delivery_is_kept() {
    let app = TestApp::start_with(limited(
        2,
        Duration::from_millis(300),
        Duration::from_secs(60),
    ))
    .await;
    let body = fixture(COMMENT);
    // Two deliveries whose bodies are slow to come hold both turns.
    let mut holding = Vec::new();
    for n in 0..2 {
        holding.push(SlowDelivery::start(&app, &format!("held-{n}"), body.clone(), 10).await);
    }
    // Unsigned junk probes until one is refused for want of a turn: from then on both turns
    // are held by the slow deliveries (a probe that got a turn was answered 401 and gave
    // it back), and they keep them until their bodies are complete.
    let mut probes = 0;
    loop {
        probes += 1;
        assert!(probes <= 50, "no probe was ever refused with 503");
        let probe = app
            .deliver_as("issue_comment", &format!("probe-{probes}"), b"junk", None)
            .await;
        match probe.status {
            503 => break,
            401 => continue,
            other => panic!("probe answered {other}: {}", probe.body),
        }
    }
    let refused = app.deliver_fixture(COMMENT).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let message = refused.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("deliver it again later"), "{message}");
    assert!(
        app.db
            .store()
            .delivery(&refused.guid)
            .await
            .unwrap()
            .is_none()
    );

    // The slow ones complete and are acknowledged; every turn is free again.
    for delivery in &mut holding {
        delivery.finish().await;
        assert_eq!(delivery.status().await, 202);
    }
    let signature = sign(SECRET.as_bytes(), &body);
    let again = app
        .deliver_as("issue_comment", &refused.guid, &body, Some(&signature))
        .await;
    assert_eq!(
        again.status, 202,
        "the refused delivery, redelivered: {}",
        again.body
    );
    let later = app.deliver_fixture(COMMENT).await;
    assert_eq!(later.status, 202, "{}", later.body);

    // Nothing acknowledged was lost; nothing refused was stored.
    for guid in ["held-0", "held-1", &refused.guid, &later.guid] {
        assert_eq!(
            app.processed(guid).await.state,
            DeliveryState::Processed,
            "{guid}"
        );
    }
    let counts = app.db.store().delivery_counts().await.unwrap();
    assert_eq!(counts.total(), 4, "{counts:?}");
}
