//! Sign-in with GitHub, as a GitHub App's user-to-server web flow works: the authorize
//! page (which a test "approves" as a user chosen through the control API, answering at
//! once with a redirect and a code), the code exchange (client id and secret, code,
//! redirect URI, PKCE verifier; form or JSON answers as `Accept` asks), and the `ghu_`
//! user tokens it hands out, which see only what both the user and the App can see.
//!
//! These two endpoints live on GitHub's web host, outside the REST API, so they have no
//! OpenAPI schema; their answers follow GitHub's documentation ("Authorizing OAuth apps",
//! "Generating a user access token for a GitHub App").

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::server::Shared;
use super::state::{RepoRecord, Role, SimState};

/// The development App's OAuth client secret: public knowledge, for the simulator only.
pub const DEV_OAUTH_CLIENT_SECRET: &str = "bg-agent-development-oauth-client-secret";

/// How long a code may wait for its exchange (GitHub: 10 minutes).
const CODE_LIFETIME_MINUTES: i64 = 10;
/// User tokens of Apps with expiring tokens last 8 hours.
const USER_TOKEN_LIFETIME_SECS: i64 = 8 * 3600;

#[derive(Debug, Default, Clone)]
pub(crate) struct OAuthState {
    /// Who approves the next authorize request; `None`: nobody is signed in to GitHub.
    pub approver: Option<String>,
    codes: HashMap<String, CodeGrant>,
    tokens: HashMap<String, UserToken>,
}

#[derive(Debug, Clone)]
struct CodeGrant {
    login: String,
    redirect_uri: Option<String>,
    challenge: Option<(String, String)>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct UserToken {
    login: String,
    expires_at: DateTime<Utc>,
}

impl OAuthState {
    /// The user a `ghu_` token belongs to, while it lasts.
    pub(crate) fn token_user(&self, token: &str) -> Option<&str> {
        self.tokens
            .get(token)
            .filter(|t| t.expires_at > Utc::now())
            .map(|t| t.login.as_str())
    }

    /// A user token for `login`, as if they had signed in.
    pub(crate) fn mint(&mut self, login: &str) -> String {
        let token = format!("ghu_{}", random_text(36));
        self.tokens.insert(
            token.clone(),
            UserToken {
                login: login.to_owned(),
                expires_at: Utc::now() + Duration::seconds(USER_TOKEN_LIFETIME_SECS),
            },
        );
        token
    }

    /// Every user token of `login` stops working (as when they revoke the App's access).
    pub(crate) fn revoke_user(&mut self, login: &str) {
        self.tokens
            .retain(|_, t| !t.login.eq_ignore_ascii_case(login));
    }
}

fn random_text(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..length)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// What `login` may do in `repo` with a user token: the repository must be in one of the
/// App's installations (a user-to-server token sees what both can see); then the user's
/// role, the owner's admin, or read on a public repository.
pub(crate) fn user_role(repo: &RepoRecord, login: &str) -> Option<Role> {
    repo.installation_id?;
    if let Some(role) = repo
        .collaborators
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(login))
        .map(|(_, role)| *role)
    {
        return Some(role);
    }
    if repo.owner.eq_ignore_ascii_case(login) {
        return Some(Role::Admin);
    }
    (!repo.private).then_some(Role::Read)
}

/// The `permissions` object of a repository as a user sees it.
pub(crate) fn permissions_json(role: Role) -> Value {
    json!({
        "admin": role == Role::Admin,
        "maintain": matches!(role, Role::Admin | Role::Maintain),
        "push": matches!(role, Role::Admin | Role::Maintain | Role::Write),
        "triage": role != Role::Read,
        "pull": true,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuthorizeQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn page(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

/// `GET /login/oauth/authorize`: the approver (if any) approves at once.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    let client_id = shared.read(|s| s.app.client_id.clone());
    if query.client_id.as_deref() != Some(client_id.as_str()) {
        return page(StatusCode::NOT_FOUND, "Not Found (unknown client_id)");
    }
    let Some(redirect_uri) = query.redirect_uri.clone() else {
        // GitHub falls back to the App's callback URL; the fake has none registered.
        return page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is required by the simulator",
        );
    };
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
        return page(StatusCode::BAD_REQUEST, "The redirect_uri is not valid");
    }
    let challenge = match (
        &query.code_challenge,
        query.code_challenge_method.as_deref(),
    ) {
        (None, _) => None,
        (Some(c), Some("S256")) => Some((c.clone(), "S256".to_owned())),
        (Some(c), None | Some("plain")) => Some((c.clone(), "plain".to_owned())),
        (Some(_), Some(_)) => {
            return page(StatusCode::BAD_REQUEST, "Unsupported code_challenge_method");
        }
    };
    let code = shared.mutate(|s| {
        let login = s.oauth.approver.clone()?;
        let code = random_text(20);
        s.oauth.codes.insert(
            code.clone(),
            CodeGrant {
                login,
                redirect_uri: Some(redirect_uri.clone()),
                challenge,
                expires_at: Utc::now() + Duration::minutes(CODE_LIFETIME_MINUTES),
            },
        );
        Some(code)
    });
    let Some(code) = code else {
        return page(
            StatusCode::UNAUTHORIZED,
            "Nobody is signed in to the simulated GitHub (POST /_sim/oauth/approver first)",
        );
    };
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let mut location = format!("{redirect_uri}{separator}code={code}");
    if let Some(state) = &query.state {
        location.push_str("&state=");
        location.push_str(&super::render::encode_segment(state));
    }
    // GitHub answers 302.
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ExchangeRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
}

/// `POST /login/oauth/access_token`: the code for a user token.
pub(crate) async fn access_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let request: ExchangeRequest = if is_json {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        // Form body; GitHub also reads the query string, which clients should not use.
        let pairs = super::server::parse_query(&String::from_utf8_lossy(&body));
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        ExchangeRequest {
            client_id: get("client_id"),
            client_secret: get("client_secret"),
            code: get("code"),
            redirect_uri: get("redirect_uri"),
            code_verifier: get("code_verifier"),
        }
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let answer = shared.mutate(|s| exchange(s, request));
    let fields: Vec<(&str, String)> = match answer {
        Ok((token, expires_in)) => vec![
            ("access_token", token),
            ("expires_in", expires_in.to_string()),
            ("refresh_token", format!("ghr_{}", random_text(76))),
            ("refresh_token_expires_in", "15897600".to_owned()),
            ("scope", String::new()),
            ("token_type", "bearer".to_owned()),
        ],
        Err((error, description)) => vec![
            ("error", error.to_owned()),
            ("error_description", description.to_owned()),
            (
                "error_uri",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors".to_owned(),
            ),
        ],
    };
    // GitHub answers 200 for errors too, in the format asked for.
    if wants_json {
        let mut object = serde_json::Map::new();
        for (name, value) in fields {
            let value = match (name, value.parse::<u64>()) {
                ("expires_in" | "refresh_token_expires_in", Ok(n)) => Value::from(n),
                _ => Value::String(value),
            };
            object.insert(name.to_owned(), value);
        }
        (StatusCode::OK, axum::Json(Value::Object(object))).into_response()
    } else {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", super::render::encode_segment(v)))
            .collect();
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body.join("&"),
        )
            .into_response()
    }
}

type Refusal = (&'static str, &'static str);

fn exchange(s: &mut SimState, request: ExchangeRequest) -> Result<(String, i64), Refusal> {
    const BAD_CODE: Refusal = (
        "bad_verification_code",
        "The code passed is incorrect or expired.",
    );
    if request.client_id.as_deref() != Some(s.app.client_id.as_str())
        || request.client_secret.as_deref() != Some(DEV_OAUTH_CLIENT_SECRET)
    {
        return Err((
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        ));
    }
    let code = request.code.unwrap_or_default();
    // A code is good once, whatever happens next.
    let grant = s.oauth.codes.remove(&code).ok_or(BAD_CODE)?;
    if grant.expires_at <= Utc::now() {
        return Err(BAD_CODE);
    }
    if let (Some(sent), Some(registered)) = (&request.redirect_uri, &grant.redirect_uri)
        && sent != registered
    {
        return Err((
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        ));
    }
    if let Some((challenge, method)) = &grant.challenge {
        let verifier = request.code_verifier.unwrap_or_default();
        let computed = match method.as_str() {
            "S256" => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes())),
            _ => verifier,
        };
        if computed != *challenge {
            return Err(BAD_CODE);
        }
    }
    Ok((s.oauth.mint(&grant.login), USER_TOKEN_LIFETIME_SECS))
}
