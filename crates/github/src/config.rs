//! What the client needs to act as the App.

use std::time::Duration;

use secrecy::SecretString;

/// Everything the GitHub App client ([`crate::GitHubApp`]) needs.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// REST API base URL, e.g. `https://api.github.com` or `https://HOST/api/v3`.
    pub api_url: String,
    pub app_id: u64,
    /// The App's RSA private key, PEM (PKCS#1 as GitHub issues it, or PKCS#8).
    pub private_key_pem: SecretString,
    /// Most requests in flight at once per installation; App-level (JWT) calls share one
    /// more limit of the same size.
    pub concurrency_per_installation: usize,
    /// Timeout of one request attempt (a call may make several).
    pub request_timeout: Duration,
    /// Longest rate-limit wait honoured; GitHub asking for more fails the call at once.
    pub max_retry_wait: Duration,
    /// Attempts per call, the first included, for 5xx, network errors and rate limits.
    pub max_attempts: u32,
}

impl GitHubConfig {
    /// A config with the default limits; tests point `api_url` at a fake GitHub.
    pub fn new(api_url: impl Into<String>, app_id: u64, private_key_pem: SecretString) -> Self {
        Self {
            api_url: api_url.into(),
            app_id,
            private_key_pem,
            concurrency_per_installation: 10,
            request_timeout: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}
