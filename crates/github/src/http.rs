//! One HTTP attempt through octocrab, plus the URL pieces: base URL, path encoding,
//! query strings, `Link` headers. Retries are not here (see `GitHubApp`'s call loop).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::BodyExt as _;
use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::GitHubError;

/// GitHub's recommended media type.
const GITHUB_JSON: &str = "application/vnd.github+json";

/// The REST API base: an origin for octocrab and a path prefix (`/api/v3` on GitHub
/// Enterprise Server, empty on github.com).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiBase {
    pub(crate) origin: Uri,
    pub(crate) path_prefix: String,
}

impl ApiBase {
    pub(crate) fn parse(api_url: &str) -> Result<Self, GitHubError> {
        let invalid = |why: &str| GitHubError::Config(format!("GITHUB_API_URL {api_url:?} {why}"));
        let uri: Uri = api_url
            .trim()
            .parse()
            .map_err(|_| invalid("is not a URL"))?;
        let scheme = uri
            .scheme_str()
            .filter(|s| matches!(*s, "http" | "https"))
            .ok_or_else(|| invalid("must start with http:// or https://"))?;
        let authority = uri.authority().ok_or_else(|| invalid("has no host"))?;
        if uri.query().is_some() {
            return Err(invalid("must not have a query"));
        }
        let origin = format!("{scheme}://{authority}")
            .parse()
            .map_err(|_| invalid("is not a URL"))?;
        Ok(Self {
            origin,
            path_prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The web host's base URL, where repositories are cloned from: `https://github.com`
    /// for `https://api.github.com`, `https://HOST` for GitHub Enterprise Server's
    /// `https://HOST/api/v3`; any other API URL serves git itself (a fake GitHub).
    pub(crate) fn web_base(&self) -> String {
        let origin = self.origin.to_string();
        let origin = origin.trim_end_matches('/');
        if self.origin.host() == Some("api.github.com") {
            return "https://github.com".to_owned();
        }
        let prefix = self
            .path_prefix
            .strip_suffix("/api/v3")
            .unwrap_or(&self.path_prefix);
        format!("{origin}{prefix}")
    }
}

/// Whose semaphore a request waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// App-level (JWT) calls, token minting included.
    App,
    Installation(u64),
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::App => f.write_str("app"),
            Self::Installation(id) => write!(f, "{id}"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl RawResponse {
    /// The `message` of a GitHub error body, if there is one.
    pub(crate) fn message(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()?
            .get("message")?
            .as_str()
            .map(str::to_owned)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why one attempt produced no response.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// The request could not even be built: retrying cannot help.
    Build(String),
    Network(String),
    Timeout,
}

pub(crate) struct Transport {
    octocrab: Octocrab,
    path_prefix: String,
    request_timeout: Duration,
    concurrency: usize,
    lanes: Mutex<HashMap<Lane, Arc<Semaphore>>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("path_prefix", &self.path_prefix)
            .field("request_timeout", &self.request_timeout)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Must run inside a Tokio runtime (octocrab spawns its dispatch task).
    pub(crate) fn new(
        base: &ApiBase,
        request_timeout: Duration,
        concurrency: usize,
    ) -> Result<Self, GitHubError> {
        // Without credentials: every request carries its own Authorization header.
        let octocrab = Octocrab::builder()
            .base_uri(base.origin.clone())
            .and_then(|builder| builder.build())
            .map_err(|e| GitHubError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            octocrab,
            path_prefix: base.path_prefix.clone(),
            request_timeout,
            concurrency: concurrency.max(1),
            lanes: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A slot in `lane`, held for one attempt (not while waiting to retry).
    pub(crate) async fn acquire(&self, lane: Lane) -> Result<OwnedSemaphorePermit, AttemptError> {
        let semaphore = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                lanes
                    .entry(lane)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency))),
            )
        };
        semaphore
            .acquire_owned()
            .await
            .map_err(|_| AttemptError::Build("the request limiter was closed".into()))
    }

    /// Sends one request and reads the whole response, within the request timeout.
    /// `path_and_query` is relative (`/repos/o/r`): octocrab resolves it against the
    /// origin, and attaches our Authorization header only to relative URIs.
    pub(crate) async fn send_once(
        &self,
        method: &Method,
        path_and_query: &str,
        authorization: &SecretString,
        body: Option<&Value>,
    ) -> Result<RawResponse, AttemptError> {
        // The prefix is added here, not by octocrab's base URI, whose join skips the
        // prefix when a path merely starts with the same characters.
        let uri: Uri = format!("{}{path_and_query}", self.path_prefix)
            .parse()
            .map_err(|e| AttemptError::Build(format!("invalid request path: {e}")))?;
        let mut auth_value =
            HeaderValue::from_str(&format!("Bearer {}", authorization.expose_secret()))
                .map_err(|_| AttemptError::Build("the credential is not a valid header".into()))?;
        auth_value.set_sensitive(true);
        let builder = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(ACCEPT, GITHUB_JSON)
            .header(AUTHORIZATION, auth_value);
        let request = self
            .octocrab
            .build_request(builder, body)
            .map_err(|e| AttemptError::Build(e.to_string()))?;
        let exchange = async {
            let response = self
                .octocrab
                .execute(request)
                .await
                .map_err(|e| AttemptError::Network(error_chain(&e)))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| AttemptError::Network(error_chain(&e)))?
                .to_bytes();
            Ok(RawResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(AttemptError::Timeout))
    }
}

/// An error and its sources on one line; octocrab's top-level message alone ("Service
/// error") hides the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes everything but RFC 3986 unreserved characters (what JavaScript's
/// `encodeURIComponent` leaves alone, minus `!'()*`): one path segment or query value.
pub(crate) fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A file path inside a repository: each segment encoded, `/` kept between them.
pub(crate) fn encode_file_path(path: &str) -> String {
    path.trim_matches('/')
        .split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// `?a=1&b=2` from pairs, values encoded; empty when there are none.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode_component(key));
        out.push('=');
        out.push_str(&encode_component(value));
    }
    out
}

/// The `cursor` of the `rel="next"` link in a `Link` header.
pub(crate) fn next_cursor(link_header: &str) -> Option<String> {
    link_header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        if !is_next {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let (_, query) = url.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == "cursor").then(|| percent_decode(&value.replace('+', " ")))
        })
    })
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_keeps_an_enterprise_path_prefix() {
        let github = ApiBase::parse("https://api.github.com").unwrap();
        assert_eq!(github.origin, "https://api.github.com/");
        assert_eq!(github.path_prefix, "");
        let ghes = ApiBase::parse("https://ghe.example.com/api/v3/").unwrap();
        assert_eq!(ghes.origin, "https://ghe.example.com/");
        assert_eq!(ghes.path_prefix, "/api/v3");
        let local = ApiBase::parse("http://127.0.0.1:8080/a").unwrap();
        assert_eq!(local.origin, "http://127.0.0.1:8080/");
        assert_eq!(local.path_prefix, "/a");
        for bad in ["api.github.com", "ftp://x", "https://x/?q=1", "::"] {
            assert!(ApiBase::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repositories_are_cloned_from_the_configured_apis_web_host() {
        let web = |api: &str| ApiBase::parse(api).unwrap().web_base();
        assert_eq!(web("https://api.github.com"), "https://github.com");
        assert_eq!(web("https://api.github.com/"), "https://github.com");
        assert_eq!(
            web("https://ghe.example.com/api/v3"),
            "https://ghe.example.com"
        );
        assert_eq!(web("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn components_and_paths_are_encoded() {
        assert_eq!(encode_component("feature/x y"), "feature%2Fx%20y");
        assert_eq!(encode_component("octo:main"), "octo%3Amain");
        assert_eq!(encode_component("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(encode_component("é"), "%C3%A9");
        assert_eq!(
            encode_file_path(".github/bg-agent.yml"),
            ".github/bg-agent.yml"
        );
        assert_eq!(encode_file_path("/dir/a b#.txt"), "dir/a%20b%23.txt");
        assert_eq!(query(&[]), "");
        assert_eq!(
            query(&[("head", "octo:feat/x"), ("state", "open")]),
            "?head=octo%3Afeat%2Fx&state=open"
        );
    }

    #[test]
    fn next_cursor_comes_from_the_link_header() {
        let link = "<https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_12077215967>; rel=\"next\", \
                    <https://api.github.com/app/hook/deliveries?per_page=2>; rel=\"first\"";
        assert_eq!(next_cursor(link).as_deref(), Some("v1_12077215967"));
        let prev_only = "<https://api.github.com/app/hook/deliveries?cursor=abc>; rel=\"prev\"";
        assert_eq!(next_cursor(prev_only), None);
        let encoded = "<http://x/app/hook/deliveries?cursor=a%2Bb%3D>; rel=\"next\"";
        assert_eq!(next_cursor(encoded).as_deref(), Some("a+b="));
        assert_eq!(next_cursor("garbage"), None);
    }
}
