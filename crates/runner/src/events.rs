//! Reports to the server: `POST {callback}/internal/tasks/{id}/events` with the task's
//! bearer secret, one [`RunnerReport`] per request, `seq` = 1, 2, 3... in order.
//!
//! A background task owns the HTTP client so that log lines from child processes can be
//! batched (a report per [`BATCH_LINES`] lines or per [`BATCH_DELAY`], whichever comes
//! first) while the run goes on; every other event first flushes the pending lines, so the
//! server sees things in the order they happened.

use std::time::Duration;

use bg_agent_core::backoff::Backoff;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Redactor;
use bg_agent_core::output;
use bg_agent_core::protocol::{
    AgentProvider, CALLBACK_CA_ENV, LogLevel, MAX_LOG_LINES, RunOutcome, RunnerEvent, RunnerReport,
    Usage, ValidationResult,
};
use bg_agent_core::task::Phase;

/// Lines per log report.
pub const BATCH_LINES: usize = 20;
/// Longest a line waits before it is sent.
pub const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Total time spent retrying one report before giving up on it.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Between attempts to deliver one report: 200 ms doubling to 4 s (the shared policy).
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), 2, Duration::from_secs(4));
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the callback URL is not usable: {0}")]
    BadUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("the event sender stopped")]
    Closed,
    #[error("the final report was not accepted: {0}")]
    NotDelivered(String),
}

enum Message {
    Log(LogLevel, String),
    Event(RunnerEvent),
    Finish(RunOutcome, oneshot::Sender<Result<(), EventError>>),
}

/// A handle on the reporting task. Cloning is cheap; [`EventSender::finish`] ends it.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Message>,
    redactor: Redactor,
}

impl EventSender {
    /// Starts reporting for task `task_id` to the server at `callback_url`, trusting the
    /// PEM certificates `callback_ca` (besides the system's) if it is `https`.
    pub fn start(
        callback_url: &str,
        callback_ca: Option<&str>,
        task_id: i64,
        secret: SecretString,
        redactor: Redactor,
    ) -> Result<Self, EventError> {
        let url = events_url(callback_url, task_id)?;
        let client = http_client(callback_ca)?;
        let (tx, rx) = mpsc::channel(256);
        let sender = Sender {
            client,
            url,
            secret,
            redactor: redactor.clone(),
            seq: 0,
            degraded: false,
        };
        tokio::spawn(run(rx, sender, redactor.clone()));
        Ok(Self { tx, redactor })
    }

    async fn send(&self, message: Message) -> Result<(), EventError> {
        self.tx.send(message).await.map_err(|_| EventError::Closed)
    }

    /// One line a command printed (redacted here; cut if very long).
    pub async fn log(&self, line: impl AsRef<str>) -> Result<(), EventError> {
        self.line(LogLevel::Output, line.as_ref()).await
    }

    /// One line of the runner's own: what it does.
    pub async fn info(&self, line: impl AsRef<str>) -> Result<(), EventError> {
        self.line(LogLevel::Info, line.as_ref()).await
    }

    /// One line of the runner's own that a person should look at.
    pub async fn warn(&self, line: impl AsRef<str>) -> Result<(), EventError> {
        self.line(LogLevel::Warn, line.as_ref()).await
    }

    /// One line of the runner's own saying why a step failed.
    pub async fn error(&self, line: impl AsRef<str>) -> Result<(), EventError> {
        self.line(LogLevel::Error, line.as_ref()).await
    }

    async fn line(&self, level: LogLevel, line: &str) -> Result<(), EventError> {
        self.send(Message::Log(level, clip(&self.redactor.redact(line))))
            .await
    }

    pub async fn phase(&self, phase: Phase, progress: u8) -> Result<(), EventError> {
        self.send(Message::Event(RunnerEvent::Phase {
            phase,
            progress: Some(progress.min(100)),
        }))
        .await
    }

    pub async fn validation(&self, result: ValidationResult) -> Result<(), EventError> {
        self.send(Message::Event(RunnerEvent::Validation(result)))
            .await
    }

    /// What the scope guard found in the change (redacted like everything else).
    pub async fn scope_findings(&self, findings: Vec<String>) -> Result<(), EventError> {
        self.send(Message::Event(RunnerEvent::ScopeFindings { findings }))
            .await
    }

    pub async fn agent_round(
        &self,
        round: u32,
        provider: AgentProvider,
        model: Option<String>,
        usage: Usage,
    ) -> Result<(), EventError> {
        self.send(Message::Event(RunnerEvent::AgentRound {
            round,
            provider,
            model,
            usage,
        }))
        .await
    }

    /// Sends the pending lines and the final outcome, and waits until the server has it.
    pub async fn finish(self, outcome: RunOutcome) -> Result<(), EventError> {
        let (ack, done) = oneshot::channel();
        self.send(Message::Finish(outcome, ack)).await?;
        done.await.map_err(|_| EventError::Closed)?
    }
}

fn events_url(callback_url: &str, task_id: i64) -> Result<reqwest::Url, EventError> {
    let url = format!(
        "{}/internal/tasks/{task_id}/events",
        callback_url.trim().trim_end_matches('/')
    );
    let url = reqwest::Url::parse(&url).map_err(|e| EventError::BadUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EventError::BadUrl(format!(
            "only http:// and https:// callback URLs are supported, not {}://",
            url.scheme()
        )));
    }
    Ok(url)
}

/// The client for the reports: rustls with the system's roots plus `extra_ca` (PEM), no
/// proxy from the environment (reqwest is built without it).
fn http_client(extra_ca: Option<&str>) -> Result<reqwest::Client, EventError> {
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    if let Some(pem) = extra_ca {
        let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| EventError::Client(format!("{CALLBACK_CA_ENV}: {e}")))?;
        if certificates.is_empty() {
            return Err(EventError::Client(format!(
                "{CALLBACK_CA_ENV} holds no PEM certificate"
            )));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| EventError::Client(e.to_string()))
}

fn clip(line: &str) -> String {
    output::clip_line(line, output::MAX_LINE_CHARS).into_owned()
}

/// Redacts every string an event carries (lines were redacted already; this catches
/// error messages and output tails).
fn redact_event(event: RunnerEvent, redactor: &Redactor) -> RunnerEvent {
    match event {
        RunnerEvent::Log { lines, level } => RunnerEvent::Log {
            lines: lines.iter().map(|l| redactor.redact(l)).collect(),
            level,
        },
        RunnerEvent::Validation(result) => RunnerEvent::Validation(ValidationResult {
            command: redactor.redact(&result.command),
            output_tail: redactor.redact(&result.output_tail),
            ..result
        }),
        RunnerEvent::Finished(RunOutcome::Failed {
            error,
            failing_command,
            wip_branch,
        }) => RunnerEvent::Finished(RunOutcome::Failed {
            error: redactor.redact(&error),
            failing_command: failing_command.map(|c| redactor.redact(&c)),
            wip_branch,
        }),
        RunnerEvent::ScopeFindings { findings } => RunnerEvent::ScopeFindings {
            findings: findings.iter().map(|f| redactor.redact(f)).collect(),
        },
        other => other,
    }
}

/// Lines reported as they come; after them, only the last [`TAIL_LINES`] lines before
/// each event (a validation result, the final outcome) are reported, behind a line saying
/// how many were left out: the failure is usually at the end. Together they fit within
/// what the server keeps ([`MAX_LOG_LINES`]).
const LIVE_LINES: usize = MAX_LOG_LINES / 2;
const TAIL_LINES: usize = MAX_LOG_LINES / 2 - 1;

/// The lines past the live budget: the last [`TAIL_LINES`] and how many were left out.
#[derive(Default)]
struct Overflow {
    lines: std::collections::VecDeque<(LogLevel, String)>,
    omitted: u64,
}

impl Overflow {
    fn push(&mut self, level: LogLevel, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
            self.omitted += 1;
        }
        self.lines.push_back((level, line));
    }

    /// The marker (if lines were left out) and the kept lines, in batches of one level.
    fn drain(&mut self) -> Vec<Batch> {
        let mut batches: Vec<Batch> = Vec::new();
        if self.omitted > 0 {
            let marker = format!(
                "[bg-agent runner: {} lines left out; the last {} follow]",
                self.omitted,
                self.lines.len()
            );
            batches.push(Batch::of(LogLevel::Warn, marker));
        }
        for (level, line) in self.lines.drain(..) {
            match batches.last_mut() {
                Some(batch) if batch.level == level && batch.lines.len() < BATCH_LINES => {
                    batch.lines.push(line);
                }
                _ => batches.push(Batch::of(level, line)),
            }
        }
        self.omitted = 0;
        batches
    }
}

/// Lines waiting to be sent in one report: all of one level.
struct Batch {
    level: LogLevel,
    lines: Vec<String>,
}

impl Batch {
    fn of(level: LogLevel, line: String) -> Self {
        Self {
            level,
            lines: vec![line],
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Message>, mut sender: Sender, redactor: Redactor) {
    let mut pending = Batch {
        level: LogLevel::Output,
        lines: Vec::new(),
    };
    let mut flush_at: Option<Instant> = None;
    let mut live = 0usize;
    let mut overflow = Overflow::default();
    loop {
        let message = tokio::select! {
            message = rx.recv() => message,
            () = sleep_until(flush_at), if flush_at.is_some() => {
                sender.flush(&mut pending).await;
                flush_at = None;
                continue;
            }
        };
        match message {
            Some(Message::Log(level, line)) => {
                eprintln!("{line}");
                if live >= LIVE_LINES {
                    overflow.push(level, line);
                    continue;
                }
                live += 1;
                // A report holds lines of one level.
                if pending.level != level {
                    sender.flush(&mut pending).await;
                    pending.level = level;
                }
                pending.lines.push(line);
                if pending.lines.len() == 1 {
                    flush_at = Some(Instant::now() + BATCH_DELAY);
                }
                if pending.lines.len() >= BATCH_LINES {
                    sender.flush(&mut pending).await;
                    flush_at = None;
                }
            }
            Some(Message::Event(event)) => {
                sender.flush(&mut pending).await;
                sender.flush_overflow(&mut overflow).await;
                flush_at = None;
                let event = redact_event(event, &redactor);
                let _ = sender.post(event, true).await;
            }
            Some(Message::Finish(outcome, ack)) => {
                sender.flush(&mut pending).await;
                sender.flush_overflow(&mut overflow).await;
                let event = redact_event(RunnerEvent::Finished(outcome), &redactor);
                let _ = ack.send(sender.post(event, true).await);
                return;
            }
            // Every handle is gone without a final report: send what is left.
            None => {
                sender.flush(&mut pending).await;
                sender.flush_overflow(&mut overflow).await;
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: SecretString,
    redactor: Redactor,
    seq: u64,
    /// Set once a report could not be delivered within its budget: later log reports get
    /// a single attempt, so an unreachable server does not stall the run for minutes.
    degraded: bool,
}

enum Attempt {
    Delivered,
    Transient(String),
    Rejected(String),
}

impl Sender {
    async fn flush_overflow(&mut self, overflow: &mut Overflow) {
        for mut batch in overflow.drain() {
            self.flush(&mut batch).await;
        }
    }

    async fn flush(&mut self, pending: &mut Batch) {
        if pending.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut pending.lines);
        let important = !self.degraded;
        let event = RunnerEvent::Log {
            lines,
            level: pending.level,
        };
        let _ = self.post(event, important).await;
    }

    /// Sends one report with the next sequence number, retrying transient failures
    /// (`retry`) within the budget. A rejected (4xx) report is given up: sending it again
    /// would not change the answer.
    async fn post(&mut self, event: RunnerEvent, retry: bool) -> Result<(), EventError> {
        self.seq += 1;
        let report = RunnerReport {
            seq: self.seq,
            event,
        };
        let deadline = Instant::now() + RETRY_BUDGET;
        let mut failures = 0;
        loop {
            let error = match self.attempt(&report).await {
                Attempt::Delivered => return Ok(()),
                Attempt::Rejected(why) => {
                    eprintln!("bg-agent runner: report {} rejected: {why}", report.seq);
                    return Err(EventError::NotDelivered(why));
                }
                Attempt::Transient(why) => why,
            };
            failures += 1;
            let backoff = RETRY.delay(failures, 0.0);
            if !retry || Instant::now() + backoff > deadline {
                eprintln!(
                    "bg-agent runner: report {} not delivered: {error}",
                    report.seq
                );
                self.degraded = true;
                return Err(EventError::NotDelivered(error));
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn attempt(&self, report: &RunnerReport) -> Attempt {
        let response = self
            .client
            .post(self.url.clone())
            .bearer_auth(self.secret.expose_secret())
            .json(report)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Attempt::Delivered;
                }
                let body = response.text().await.unwrap_or_default();
                let why = self.redactor.redact(&format!(
                    "{status}: {}",
                    body.chars().take(200).collect::<String>()
                ));
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Attempt::Transient(why)
                } else {
                    Attempt::Rejected(why)
                }
            }
            // Connection refused or reset, timeouts: the server may be restarting.
            Err(e) => Attempt::Transient(self.redactor.redact(&e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn the_events_url_is_under_the_callback() {
        assert_eq!(
            events_url("http://127.0.0.1:3000/", 42).unwrap().as_str(),
            "http://127.0.0.1:3000/internal/tasks/42/events"
        );
        assert_eq!(
            events_url("http://bg-agent.ns.svc:3000", 7)
                .unwrap()
                .as_str(),
            "http://bg-agent.ns.svc:3000/internal/tasks/7/events"
        );
        assert_eq!(
            events_url("https://bg-agent.example/", 7).unwrap().as_str(),
            "https://bg-agent.example/internal/tasks/7/events"
        );
        assert!(events_url("not a url", 1).is_err());
        assert!(events_url("ftp://example.com", 1).is_err());
    }

    #[test]
    fn long_lines_are_cut() {
        let line = "x".repeat(output::MAX_LINE_CHARS + 10);
        let clipped = clip(&line);
        assert!(clipped.starts_with(&"x".repeat(output::MAX_LINE_CHARS)));
        assert!(clipped.ends_with("[line cut]"));
        assert_eq!(clip("short"), "short");
    }

    /// Records every report received; answers 400 to `reject`.
    async fn endpoint(reject: u64) -> (String, Arc<Mutex<Vec<RunnerReport>>>) {
        let received: Arc<Mutex<Vec<RunnerReport>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/internal/tasks/{id}/events",
                axum::routing::post(
                    move |axum::extract::State(received): axum::extract::State<
                        Arc<Mutex<Vec<RunnerReport>>>,
                    >,
                          headers: axum::http::HeaderMap,
                          axum::Json(report): axum::Json<RunnerReport>| async move {
                        assert_eq!(headers["authorization"], "Bearer s3cret");
                        let seq = report.seq;
                        received.lock().unwrap().push(report);
                        if seq == reject {
                            axum::http::StatusCode::BAD_REQUEST
                        } else {
                            axum::http::StatusCode::OK
                        }
                    },
                ),
            )
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, received)
    }

    #[tokio::test]
    async fn logs_are_batched_capped_redacted_and_in_order() {
        let (url, received) = endpoint(3).await;
        let events = EventSender::start(
            &url,
            None,
            5,
            SecretString::from("s3cret"),
            Redactor::new(["s3cret", "tok"]),
        )
        .unwrap();
        events.phase(Phase::Cloning, 10).await.unwrap();
        for i in 0..MAX_LOG_LINES + 50 {
            events.log(format!("line {i} tok")).await.unwrap();
        }
        events.finish(RunOutcome::NoChanges).await.unwrap();

        let received = received.lock().unwrap().clone();
        // Each report once, in order; the rejected one (400) was not retried.
        let seqs: Vec<u64> = received.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let mut lines = Vec::new();
        for report in &received {
            if let RunnerEvent::Log { lines: batch, .. } = &report.event {
                assert!(!batch.is_empty() && batch.len() <= BATCH_LINES);
                lines.extend(batch.iter().cloned());
            }
        }
        // The first lines as they came, then the last ones behind a marker: the failure is
        // usually at the end.
        let total = MAX_LOG_LINES + 50;
        let mut expected: Vec<String> = (0..LIVE_LINES)
            .map(|i| format!("line {i} [REDACTED]"))
            .collect();
        expected.push(format!(
            "[bg-agent runner: {} lines left out; the last {TAIL_LINES} follow]",
            total - LIVE_LINES - TAIL_LINES
        ));
        expected.extend((total - TAIL_LINES..total).map(|i| format!("line {i} [REDACTED]")));
        assert_eq!(lines, expected);
        assert!(lines.len() <= MAX_LOG_LINES);
        assert_eq!(
            received.last().map(|r| &r.event),
            Some(&RunnerEvent::Finished(RunOutcome::NoChanges))
        );
    }

    #[tokio::test]
    async fn a_rejected_final_report_is_an_error() {
        let (url, _received) = endpoint(1).await;
        let events = EventSender::start(
            &url,
            None,
            5,
            SecretString::from("s3cret"),
            Redactor::default(),
        )
        .unwrap();
        assert!(matches!(
            events.finish(RunOutcome::NoChanges).await,
            Err(EventError::NotDelivered(_))
        ));
    }

    /// A loopback TLS listener for axum, its certificate (for 127.0.0.1) signed by a test
    /// CA; returns it with the CA's PEM.
    struct TlsListener {
        tcp: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    }

    impl axum::serve::Listener for TlsListener {
        type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
        type Addr = std::net::SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                if let Ok((tcp, addr)) = self.tcp.accept().await
                    && let Ok(tls) = self.acceptor.accept(tcp).await
                {
                    return (tls, addr);
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.tcp.local_addr()
        }
    }

    async fn tls_listener() -> (TlsListener, String) {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bg-agent test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (TlsListener { tcp, acceptor }, ca.pem())
    }

    #[tokio::test]
    async fn an_https_callback_is_reached_through_the_configured_ca() {
        let received: Arc<Mutex<Vec<RunnerReport>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/internal/tasks/{id}/events",
                axum::routing::post(
                    |axum::extract::State(received): axum::extract::State<
                        Arc<Mutex<Vec<RunnerReport>>>,
                    >,
                     axum::Json(report): axum::Json<RunnerReport>| async move {
                        received.lock().unwrap().push(report);
                        axum::http::StatusCode::OK
                    },
                ),
            )
            .with_state(Arc::clone(&received));
        let (listener, ca_pem) = tls_listener().await;
        let url = format!("https://{}", listener.tcp.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        // Without the CA, the server's certificate is not trusted.
        let untrusted = http_client(None)
            .unwrap()
            .post(format!("{url}/internal/tasks/5/events"))
            .send()
            .await;
        assert!(untrusted.is_err(), "{untrusted:?}");

        let events = EventSender::start(
            &url,
            Some(&ca_pem),
            5,
            SecretString::from("s3cret"),
            Redactor::default(),
        )
        .unwrap();
        events.phase(Phase::Cloning, 10).await.unwrap();
        events.finish(RunOutcome::NoChanges).await.unwrap();
        let seqs: Vec<u64> = received.lock().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn a_callback_ca_without_certificates_is_refused() {
        assert!(matches!(
            http_client(Some("not a certificate")),
            Err(EventError::Client(message)) if message.contains(CALLBACK_CA_ENV)
        ));
    }

    #[test]
    fn events_are_redacted() {
        let redactor = Redactor::new(["tok"]);
        let event = redact_event(
            RunnerEvent::Finished(RunOutcome::Failed {
                error: "git said tok".into(),
                failing_command: None,
                wip_branch: None,
            }),
            &redactor,
        );
        assert_eq!(
            event,
            RunnerEvent::Finished(RunOutcome::Failed {
                error: "git said [REDACTED]".into(),
                failing_command: None,
                wip_branch: None,
            })
        );
    }
}
