//! The GitHub App client: App JWTs, installation tokens, the typed calls the app makes,
//! GitHub's limits, retries and rate limits.
//!
//! [`GitHubApp`] is the entry point (cheap to clone); [`GitHubApp::installation`] gives an
//! [`InstallationClient`] for repository calls made with the server's installation token;
//! [`GitHubApp::runner_token`] mints the narrow token a task's runner gets.
//!
//! Requests go through octocrab with relative paths against the configured base URL
//! (github.com or GitHub Enterprise Server's `/api/v3`), each with its own
//! `Authorization` header. This module owns the only retry layer (octocrab's `retry`
//! feature is off): 5xx and network errors back off exponentially with jitter; rate
//! limits wait as GitHub says, up to a bound; other 4xx fail at once. Every wait and
//! every time-based decision goes through a [`Clock`].

pub mod clock;
mod config;
mod error;
mod http;
mod installation;
mod jwt;
pub mod limits;
pub mod retry;
mod token;
pub mod types;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::http::Method;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument as _;

pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use config::GitHubConfig;
pub use error::{GitHubError, ValidationErrorDetail};
pub use installation::InstallationClient;
pub use jwt::AppJwtClaims;
pub use limits::ActionError;
pub use token::{InstallationToken, REFRESH_BEFORE_EXPIRY, TokenScope};
pub use types::{
    AddedReaction, AnnotationLevel, AppInfo, AppRef, BranchRef, CheckRun, CheckRunAction,
    CheckRunAnnotation, CheckRunConclusion, CheckRunOutput, CheckRunStatus, CheckRunUpdate,
    DeliveriesPage, FileContents, GitRemote, HookDelivery, IssueComment, Label, NewCheckRun,
    NewPullRequest, PullRequest, PullRequestUpdate, Reaction, RepoName, Repository,
};

use self::http::{ApiBase, AttemptError, Lane, RawResponse, Transport};
use jwt::AppJwtSigner;
use retry::Classification;
use token::TokenCache;

/// The GitHub App. Clones share one HTTP client, JWT, token cache and request limits.
#[derive(Debug, Clone)]
pub struct GitHubApp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    app_id: u64,
    clock: Arc<dyn Clock>,
    jwt: AppJwtSigner,
    tokens: TokenCache,
    /// Where repositories are cloned from: the web host of the configured API.
    web_base: String,
    transport: Transport,
    max_attempts: u32,
    max_retry_wait: Duration,
}

/// Which credential a call is made with.
#[derive(Debug, Clone)]
enum Credential {
    AppJwt,
    Installation(TokenScope),
    /// A token the caller holds (a runner's, to revoke it); never cached.
    Token(InstallationToken),
}

impl Credential {
    fn lane(&self) -> Lane {
        match self {
            Self::AppJwt => Lane::App,
            Self::Installation(scope) => Lane::Installation(scope.installation_id),
            Self::Token(token) => Lane::Installation(token.installation_id()),
        }
    }
}

/// The credential used for one attempt, kept to drop it from its cache if refused.
enum Authorization {
    Jwt(SecretString),
    Token(InstallationToken),
}

impl Authorization {
    fn secret(&self) -> &SecretString {
        match self {
            Self::Jwt(jwt) => jwt,
            Self::Token(token) => token.secret(),
        }
    }
}

/// One request: method, the path template (for logs and errors) and the concrete path.
struct Request {
    method: Method,
    template: &'static str,
    path_and_query: String,
    body: Option<Value>,
}

impl Request {
    fn new(method: Method, template: &'static str, path_and_query: String) -> Self {
        Self {
            method,
            template,
            path_and_query,
            body: None,
        }
    }

    fn json(mut self, body: &impl serde::Serialize) -> Result<Self, GitHubError> {
        self.body = Some(
            serde_json::to_value(body).map_err(|e| GitHubError::InvalidRequest(e.to_string()))?,
        );
        Ok(self)
    }

    fn endpoint(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

#[derive(Deserialize)]
struct TokenWire {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

impl GitHubApp {
    /// Checks the configuration (base URL, private key) and builds the client. Must be
    /// called inside a Tokio runtime.
    pub fn new(config: GitHubConfig, clock: Arc<dyn Clock>) -> Result<Self, GitHubError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(GitHubError::Config(
                "the GitHub client must be created inside a Tokio runtime".into(),
            ));
        }
        let base = ApiBase::parse(&config.api_url)?;
        let web_base = base.web_base();
        let jwt = AppJwtSigner::new(config.app_id, &config.private_key_pem, clock.now())?;
        let transport = Transport::new(
            &base,
            config.request_timeout,
            config.concurrency_per_installation,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                app_id: config.app_id,
                clock,
                jwt,
                tokens: TokenCache::default(),
                web_base,
                transport,
                max_attempts: config.max_attempts.max(1),
                max_retry_wait: config.max_retry_wait,
            }),
        })
    }

    pub fn app_id(&self) -> u64 {
        self.inner.app_id
    }

    /// Repository calls made with the installation's own token.
    pub fn installation(&self, installation_id: u64) -> InstallationClient {
        InstallationClient::new(self.clone(), installation_id)
    }

    /// The token a task's runner gets: `repository_id` only, `contents: write` only.
    /// Minted for each call and never cached, so no two tasks share one and revoking
    /// one ([`Self::revoke_token`]) touches no other task.
    pub async fn runner_token(
        &self,
        installation_id: u64,
        repository_id: u64,
    ) -> Result<InstallationToken, GitHubError> {
        self.inner
            .mint(&TokenScope::runner(installation_id, repository_id))
            .await
    }

    /// A fresh runner token ([`Self::runner_token`]) for a task of `at_least`. GitHub's
    /// tokens live one hour whatever is asked; a shorter one is noted in the log.
    pub async fn runner_token_lasting(
        &self,
        installation_id: u64,
        repository_id: u64,
        at_least: Duration,
    ) -> Result<InstallationToken, GitHubError> {
        let token = self.runner_token(installation_id, repository_id).await?;
        let needed = chrono::TimeDelta::from_std(at_least).unwrap_or(chrono::TimeDelta::MAX);
        if token.expires_at() - self.inner.clock.now() < needed {
            tracing::debug!(
                expires_at = %token.expires_at(),
                wanted_secs = at_least.as_secs(),
                "the runner token expires before the task's time is up"
            );
        }
        Ok(token)
    }

    /// `DELETE /installation/token`, authenticated with `token` itself: GitHub refuses it
    /// from then on. A token GitHub no longer accepts (revoked or expired) counts as
    /// revoked.
    pub async fn revoke_token(&self, token: &InstallationToken) -> Result<(), GitHubError> {
        let request = Request::new(
            Method::DELETE,
            "/installation/token",
            "/installation/token".into(),
        );
        match self
            .inner
            .call(&Credential::Token(token.clone()), request)
            .await
        {
            Ok(_) | Err(GitHubError::Unauthorized { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The HTTPS URL to clone `repo` from: on the configured GitHub's web host
    /// (`https://github.com` for `https://api.github.com`, `https://HOST` for GitHub
    /// Enterprise Server's `https://HOST/api/v3`), whatever a webhook payload says.
    pub fn clone_url(&self, repo: &RepoName) -> String {
        format!(
            "{}/{}/{}.git",
            self.inner.web_base,
            http::encode_component(&repo.owner),
            http::encode_component(&repo.name)
        )
    }

    /// A token for any scope, from the cache or freshly minted (once, however many
    /// callers ask at the same time).
    pub async fn token(&self, scope: &TokenScope) -> Result<InstallationToken, GitHubError> {
        self.inner.token(scope).await
    }

    /// `GET /app`: the App itself (its slug names its bot user, `<slug>[bot]`).
    pub async fn app_info(&self) -> Result<AppInfo, GitHubError> {
        let request = Request::new(Method::GET, "/app", "/app".into());
        let response = self.inner.call(&Credential::AppJwt, request).await?;
        decode(&response, "GET /app")
    }

    /// `GET /repos/{owner}/{repo}/installation`: the id of the App's installation that
    /// reaches `repo`, or `None` when the App is not installed there (or the repository
    /// does not exist: GitHub does not tell the two apart).
    pub async fn repository_installation(
        &self,
        repo: &RepoName,
    ) -> Result<Option<u64>, GitHubError> {
        #[derive(Deserialize)]
        struct InstallationWire {
            id: u64,
        }
        let path = format!(
            "/repos/{}/{}/installation",
            http::encode_component(&repo.owner),
            http::encode_component(&repo.name)
        );
        let request = Request::new(Method::GET, "/repos/{owner}/{repo}/installation", path);
        match self.inner.call(&Credential::AppJwt, request).await {
            Ok(response) => {
                let wire: InstallationWire =
                    decode(&response, "GET /repos/{owner}/{repo}/installation")?;
                Ok(Some(wire.id))
            }
            Err(GitHubError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /app/hook/deliveries`: one page of the App's webhook deliveries, newest first.
    /// `per_page` is clamped to GitHub's 1..=100; pass the page's `next_cursor` to go on.
    pub async fn list_deliveries(
        &self,
        per_page: u8,
        cursor: Option<&str>,
    ) -> Result<DeliveriesPage, GitHubError> {
        let per_page = per_page.clamp(1, 100).to_string();
        let mut params = vec![("per_page", per_page.as_str())];
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor));
        }
        let path = format!("/app/hook/deliveries{}", http::query(&params));
        let request = Request::new(Method::GET, "/app/hook/deliveries", path);
        let response = self.inner.call(&Credential::AppJwt, request).await?;
        let deliveries = decode(&response, "GET /app/hook/deliveries")?;
        Ok(DeliveriesPage {
            deliveries,
            next_cursor: response.header("link").and_then(http::next_cursor),
        })
    }

    /// `POST /app/hook/deliveries/{delivery_id}/attempts`: asks GitHub to send a delivery
    /// again (it keeps its GUID, so intake stores it once).
    pub async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError> {
        let request = Request::new(
            Method::POST,
            "/app/hook/deliveries/{delivery_id}/attempts",
            format!("/app/hook/deliveries/{delivery_id}/attempts"),
        );
        self.inner.call(&Credential::AppJwt, request).await?;
        Ok(())
    }

    async fn call_installation(
        &self,
        installation_id: u64,
        request: Request,
    ) -> Result<RawResponse, GitHubError> {
        let credential = Credential::Installation(TokenScope::installation(installation_id));
        self.inner.call(&credential, request).await
    }
}

impl Inner {
    async fn token(&self, scope: &TokenScope) -> Result<InstallationToken, GitHubError> {
        self.token_lasting(scope, REFRESH_BEFORE_EXPIRY).await
    }

    async fn token_lasting(
        &self,
        scope: &TokenScope,
        min_remaining: chrono::TimeDelta,
    ) -> Result<InstallationToken, GitHubError> {
        self.tokens
            .get_or_mint(scope, self.clock.as_ref(), min_remaining, || {
                self.mint(scope)
            })
            .await
    }

    /// `POST /app/installations/{id}/access_tokens`. Boxed: minting is itself a call,
    /// and a call may need a token.
    fn mint<'a>(
        &'a self,
        scope: &'a TokenScope,
    ) -> Pin<Box<dyn Future<Output = Result<InstallationToken, GitHubError>> + Send + 'a>> {
        Box::pin(async move {
            let template = "/app/installations/{installation_id}/access_tokens";
            let mut request = Request::new(
                Method::POST,
                template,
                format!("/app/installations/{}/access_tokens", scope.installation_id),
            );
            request.body = scope.request_body();
            let response = self.call(&Credential::AppJwt, request).await?;
            // serde's messages can quote values; none from this body may reach a log.
            let wire: TokenWire =
                serde_json::from_slice(&response.body).map_err(|_| GitHubError::Decode {
                    endpoint: format!("POST {template}"),
                    message: "the access token response is not as documented".into(),
                })?;
            tracing::debug!(
                installation = scope.installation_id,
                repositories = ?scope.repository_ids(),
                expires_at = %wire.expires_at,
                "minted an installation token"
            );
            Ok(InstallationToken::new(
                wire.token,
                wire.expires_at,
                scope.clone(),
            ))
        })
    }

    async fn authorization(&self, credential: &Credential) -> Result<Authorization, GitHubError> {
        match credential {
            Credential::AppJwt => Ok(Authorization::Jwt(self.jwt.bearer(self.clock.now())?)),
            Credential::Installation(scope) => Ok(Authorization::Token(self.token(scope).await?)),
            Credential::Token(token) => Ok(Authorization::Token(token.clone())),
        }
    }

    fn forget(&self, authorization: &Authorization) {
        match authorization {
            Authorization::Jwt(_) => self.jwt.forget(),
            Authorization::Token(token) => self.tokens.forget(token),
        }
    }

    /// Makes one call: up to `max_attempts` attempts, each under the lane's concurrency
    /// limit and the request timeout.
    ///
    /// Every method is retried on 5xx and network errors, POSTs included. For the POSTs
    /// this client makes, a duplicate is harmless or acceptable: minting a token and
    /// redelivering (same GUID, deduplicated on intake) are harmless; reactions and
    /// labels are idempotent on GitHub's side; a second identical pull request is refused
    /// by GitHub (422), and the caller finds the first with `find_open_pull_request`; a
    /// duplicated comment or check run is possible only when GitHub failed after acting,
    /// and the engine keeps the id it stored and updates that one. GitHub's guidance is
    /// to retry such failures.
    async fn call(
        &self,
        credential: &Credential,
        request: Request,
    ) -> Result<RawResponse, GitHubError> {
        let lane = credential.lane();
        let span = tracing::info_span!(
            "github",
            method = %request.method,
            path = request.template,
            installation = %lane,
        );
        self.attempts(credential, lane, &request)
            .instrument(span)
            .await
    }

    async fn attempts(
        &self,
        credential: &Credential,
        lane: Lane,
        request: &Request,
    ) -> Result<RawResponse, GitHubError> {
        let endpoint = request.endpoint();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let authorization = self.authorization(credential).await?;
            let outcome = match self.transport.acquire(lane).await {
                Ok(_permit) => {
                    self.transport
                        .send_once(
                            &request.method,
                            &request.path_and_query,
                            authorization.secret(),
                            request.body.as_ref(),
                        )
                        .await
                }
                Err(error) => Err(error),
            };
            let status = match &outcome {
                Ok(response) => response.status.to_string(),
                Err(AttemptError::Network(_)) => "network".to_owned(),
                Err(AttemptError::Timeout) => "timeout".to_owned(),
                Err(AttemptError::Build(_)) => "invalid".to_owned(),
            };
            // By request template (`PATCH /repos/{owner}/{repo}/check-runs/{id}`), not path.
            metrics::counter!(
                "bg_agent_github_requests_total",
                "method" => request.method.as_str().to_owned(),
                "path" => request.template,
                "status" => status,
            )
            .increment(1);
            let (error, wait) = match outcome {
                Err(AttemptError::Build(message)) => {
                    return Err(GitHubError::InvalidRequest(message));
                }
                Err(AttemptError::Network(message)) => (
                    GitHubError::Network {
                        endpoint: endpoint.clone(),
                        message,
                        attempts,
                    },
                    retry::random_backoff(attempts),
                ),
                Err(AttemptError::Timeout) => (
                    GitHubError::Timeout {
                        endpoint: endpoint.clone(),
                        timeout: self.transport.request_timeout(),
                        attempts,
                    },
                    retry::random_backoff(attempts),
                ),
                Ok(response) => {
                    let message = response.message();
                    let classification = retry::classify(
                        response.status,
                        &response.headers,
                        message.as_deref(),
                        self.clock.now(),
                    );
                    match classification {
                        Classification::Success => {
                            tracing::debug!(status = response.status, attempts, "GitHub answered");
                            return Ok(response);
                        }
                        Classification::RateLimited { wait } => {
                            let error = GitHubError::RateLimited {
                                endpoint: endpoint.clone(),
                                retry_after: wait,
                            };
                            match retry::bounded_wait(wait, self.max_retry_wait) {
                                Some(wait) => {
                                    metrics::counter!("bg_agent_github_rate_limit_waits_total")
                                        .increment(1);
                                    (error, wait)
                                }
                                None => {
                                    tracing::warn!(
                                        status = response.status,
                                        wait_secs = wait.as_secs(),
                                        "GitHub rate limit wait is longer than allowed"
                                    );
                                    return Err(error);
                                }
                            }
                        }
                        Classification::ServerError => (
                            response_error(&endpoint, &response, attempts),
                            retry::random_backoff(attempts),
                        ),
                        Classification::ClientError => {
                            if response.status == 401 {
                                self.forget(&authorization);
                            }
                            return Err(response_error(&endpoint, &response, attempts));
                        }
                    }
                }
            };
            if attempts >= self.max_attempts {
                tracing::warn!(attempts, error = %error, "GitHub call failed");
                return Err(error);
            }
            tracing::info!(
                attempt = attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retrying GitHub call"
            );
            self.clock.sleep(wait).await;
        }
    }
}

/// The typed error for a 4xx or 5xx response.
fn response_error(endpoint: &str, response: &RawResponse, attempts: u32) -> GitHubError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", response.status));
    let endpoint = endpoint.to_owned();
    match response.status {
        401 => GitHubError::Unauthorized { endpoint, message },
        403 => GitHubError::Forbidden { endpoint, message },
        404 => GitHubError::NotFound { endpoint, message },
        422 => GitHubError::Unprocessable {
            endpoint,
            message,
            errors: validation_details(&body),
        },
        status @ 500..=599 => GitHubError::Server {
            endpoint,
            status,
            message,
            attempts,
        },
        status => GitHubError::Client {
            endpoint,
            status,
            message,
        },
    }
}

/// A 422's `errors`: usually objects, sometimes plain strings.
fn validation_details(body: &Value) -> Vec<ValidationErrorDetail> {
    let Some(errors) = body.get("errors").and_then(Value::as_array) else {
        return Vec::new();
    };
    errors
        .iter()
        .map(|error| match error {
            Value::String(message) => ValidationErrorDetail {
                resource: None,
                field: None,
                code: None,
                message: Some(message.clone()),
            },
            other => serde_json::from_value(other.clone()).unwrap_or(ValidationErrorDetail {
                resource: None,
                field: None,
                code: None,
                message: Some(other.to_string()),
            }),
        })
        .collect()
}

fn decode<T: DeserializeOwned>(response: &RawResponse, endpoint: &str) -> Result<T, GitHubError> {
    serde_json::from_slice(&response.body).map_err(|e| GitHubError::Decode {
        endpoint: endpoint.to_owned(),
        message: e.to_string(),
    })
}
