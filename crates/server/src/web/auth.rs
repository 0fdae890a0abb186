//! Who is asking: sign-in with GitHub (the App's OAuth client, `state` and PKCE), sessions
//! in a signed cookie, bearer GitHub user tokens for the API, CSRF for forms, and what a
//! person may do in a repository, checked with their own token and cached briefly.
//!
//! The cookie holds only a random session id, signed (HMAC-SHA256); the session row
//! (`web_sessions`) is found by the id's SHA-256 and holds the user's token encrypted
//! with the credentials' keyring (`BG_AGENT_ENCRYPTION_KEY`), bound to that hash: the
//! database alone hands out neither sessions nor tokens. Like a credential, a token is
//! never stored without a key: with none configured, sign-in is refused (saying why).
//! With `BG_AGENT_AUTH=none` (loopback only) everyone is the local admin.
//!
//! Who manages an installation (its credentials, its templates): a person with admin
//! permission on a repository of it, as GitHub tells them with their own token. The
//! template routes name that repository; the credential routes name the installation,
//! so any repository of it where the person is admin counts. An installation where they
//! see no repository at all looks absent.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bg_agent_core::task::{Permission, TaskRecord};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::github_user::{UserApi, UserApiError};
use crate::config::{AuthSettings, OAuthClient};
use crate::credentials::{CredentialError, Keyring};
use crate::store::{Store, StoreError};

/// How long permission, repository-list and bearer-token answers are reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries kept per cache before expired ones are swept.
const CACHE_SWEEP_AT: usize = 10_000;
/// How long a session lasts (GitHub's expiring user tokens last 8 hours too).
pub const SESSION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(8);
/// How long a sign-in may take between `/login` and `/login/callback`.
pub const LOGIN_LIFETIME_SECS: i64 = 600;
/// The name of the file the generated session key is kept in, in the data directory.
pub const SESSION_KEY_FILE: &str = "session-key";

/// `BG_AGENT_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Sign in with GitHub; each person sees the repositories they can read.
    GitHub,
    /// No sign-in: everyone is the local admin (loopback only).
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token was refused by GitHub (revoked or expired): sign in again.
    #[error("your GitHub sign-in is no longer valid; sign in again")]
    SignedOut,
    #[error("GitHub did not answer: {0}")]
    GitHub(String),
    #[error("database unavailable: {0}")]
    Store(#[from] StoreError),
}

impl From<UserApiError> for AuthError {
    fn from(error: UserApiError) -> Self {
        match error {
            UserApiError::Unauthorized => Self::SignedOut,
            other => Self::GitHub(other.to_string()),
        }
    }
}

/// Everything sign-in needs; cheap to clone.
#[derive(Clone)]
pub struct AuthState {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuthMode,
    key: SecretKey,
    store: Store,
    github: UserApi,
    oauth: Option<OAuthClient>,
    /// What retrying and cancelling need (the comment path's BG_AGENT_REQUIRED_PERMISSION).
    required: Permission,
    web_url: String,
    public_url: String,
    secure_cookies: bool,
    /// SHA-256 of a bearer token → its user.
    bearers: Cache<[u8; 32], super::github_user::GitHubUser>,
    /// (user id, `owner/name` lower case) → permission.
    permissions: Cache<(i64, String), Permission>,
    /// user id → the repositories they can read through the App.
    repositories: Cache<i64, Arc<Vec<i64>>>,
    /// (user id, installation id) → their highest permission on its repositories
    /// (`None`: they see none of them).
    installations: Cache<(i64, i64), Option<Permission>>,
    /// Seals the users' tokens in their sessions; `None`: sign-in is refused.
    keys: Option<Keyring>,
}

struct SecretKey(Vec<u8>);

impl SecretKey {
    fn mac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| {
            // HMAC takes keys of any length.
            unreachable!("HMAC-SHA256 accepts any key length")
        });
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// `payload.signature`, both base64url.
    fn sign(&self, purpose: &str, payload: &[u8]) -> String {
        let tag = self.mac(purpose, payload).finalize().into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    /// The payload of a value made by [`Self::sign`] for the same purpose, if untouched.
    fn verify(&self, purpose: &str, signed: &str) -> Option<Vec<u8>> {
        let (payload, tag) = signed.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let tag = B64.decode(tag).ok()?;
        self.mac(purpose, &payload).verify_slice(&tag).ok()?;
        Some(payload)
    }
}

/// A small map whose entries expire.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(v, _)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CACHE_SWEEP_AT {
            entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        entries.insert(key, (value, Instant::now()));
    }

    fn forget_where(&self, mut f: impl FnMut(&K) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|k, _| !f(k));
    }
}

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "sign-in needs BG_AGENT_ENCRYPTION_KEY: the session keeps the user's GitHub token encrypted with it"
    )]
    NoKey,
    #[error("cannot encrypt the session's token: {0}")]
    Seal(#[from] CredentialError),
    #[error("database unavailable: {0}")]
    Store(#[from] StoreError),
}

/// What a session's token is bound to: its id's hash. A sealed token copied to another
/// session's row does not open; the prefix keeps it apart from credentials' scopes.
fn session_binding(id_hash: &[u8; 32]) -> Vec<u8> {
    let mut binding = b"bg-agent session token v1\0".to_vec();
    binding.extend_from_slice(id_hash);
    binding
}

/// The person making a request.
#[derive(Clone)]
pub struct Viewer {
    pub login: String,
    pub user_id: i64,
    /// Their GitHub user token; `None` with `BG_AGENT_AUTH=none`.
    token: Option<SecretString>,
    how: How,
}

#[derive(Clone)]
enum How {
    /// A browser session: the SHA-256 of its id and its CSRF token.
    Session { id_hash: [u8; 32], csrf: String },
    /// `Authorization: Bearer`: no ambient credential, so no CSRF to fear.
    Bearer,
    /// `BG_AGENT_AUTH=none`: the CSRF token is derived from the key.
    Local { csrf: String },
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("login", &self.login)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Viewer {
    /// The user's GitHub token, for calls made on their behalf.
    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_ref()
    }

    /// Whether this is the local admin of `BG_AGENT_AUTH=none`.
    pub fn is_local(&self) -> bool {
        matches!(self.how, How::Local { .. })
    }

    /// The token state-changing forms must carry; `None` for bearer requests (which need none).
    pub fn csrf_token(&self) -> Option<&str> {
        match &self.how {
            How::Session { csrf, .. } | How::Local { csrf } => Some(csrf),
            How::Bearer => None,
        }
    }

    /// The viewer's permission on `owner/repo`, checked with their own token (`GET
    /// /repos/{owner}/{repo}`: no access at all is a 404 there), cached briefly.
    pub async fn permission(
        &self,
        auth: &AuthState,
        owner: &str,
        repo: &str,
    ) -> Result<Permission, AuthError> {
        let Some(token) = &self.token else {
            return Ok(Permission::Admin);
        };
        let key = (self.user_id, format!("{owner}/{repo}").to_lowercase());
        if let Some(permission) = auth.inner.permissions.get(&key) {
            return Ok(permission);
        }
        let permission = auth
            .checked(self, auth.inner.github.permission(token, owner, repo).await)
            .await?;
        auth.inner.permissions.put(key, permission);
        Ok(permission)
    }

    pub async fn can_read(
        &self,
        auth: &AuthState,
        owner: &str,
        repo: &str,
    ) -> Result<bool, AuthError> {
        Ok(self.permission(auth, owner, repo).await? >= Permission::Read)
    }

    /// The viewer's permission on a task's repository (`None`: the task must look absent).
    pub async fn task_permission(
        &self,
        auth: &AuthState,
        task: &TaskRecord,
    ) -> Result<Permission, AuthError> {
        let Some((owner, repo)) = task.repository.split_once('/') else {
            return Ok(Permission::None);
        };
        self.permission(auth, owner, repo).await
    }

    /// The ids of the repositories the viewer can read through the App, for filtering
    /// lists in SQL; `None`: all of them (`BG_AGENT_AUTH=none`). Cached briefly.
    pub async fn readable_repositories(
        &self,
        auth: &AuthState,
    ) -> Result<Option<Arc<Vec<i64>>>, AuthError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        if let Some(ids) = auth.inner.repositories.get(&self.user_id) {
            return Ok(Some(ids));
        }
        let ids = Arc::new(
            auth.checked(self, auth.inner.github.repository_ids(token).await)
                .await?,
        );
        auth.inner.repositories.put(self.user_id, Arc::clone(&ids));
        Ok(Some(ids))
    }
}

impl Viewer {
    /// The viewer's highest permission on the repositories of `installation` they can
    /// see (`None`: they see none, so the installation must look absent), cached briefly.
    /// The local admin of `BG_AGENT_AUTH=none` is admin everywhere.
    pub async fn installation_permission(
        &self,
        auth: &AuthState,
        installation: i64,
    ) -> Result<Option<Permission>, AuthError> {
        let Some(token) = &self.token else {
            return Ok(Some(Permission::Admin));
        };
        let key = (self.user_id, installation);
        if let Some(permission) = auth.inner.installations.get(&key) {
            return Ok(permission);
        }
        let permission = auth
            .checked(
                self,
                auth.inner
                    .github
                    .installation_permission(token, installation)
                    .await,
            )
            .await?;
        auth.inner.installations.put(key, permission);
        Ok(permission)
    }

    /// The installations the viewer manages (see the module's documentation), with their
    /// account's login when known. The local admin gets those the server knows of.
    pub async fn managed_installations(
        &self,
        auth: &AuthState,
    ) -> Result<Vec<(i64, Option<String>)>, AuthError> {
        let Some(token) = &self.token else {
            return Ok(auth.inner.store.known_installations().await?);
        };
        let visible = auth
            .checked(self, auth.inner.github.installations(token).await)
            .await?;
        let mut managed = Vec::new();
        for installation in visible {
            if self.installation_permission(auth, installation.id).await? == Some(Permission::Admin)
            {
                managed.push((installation.id, installation.account));
            }
        }
        Ok(managed)
    }
}

impl AuthState {
    /// Sets sign-in up as configured: the session key from the settings or the data
    /// directory (made there on first start), and the GitHub client for user calls.
    pub fn new(
        settings: &AuthSettings,
        api_url: &str,
        public_url: &str,
        data_dir: &Path,
        required: Permission,
        store: Store,
        keys: Option<Keyring>,
    ) -> anyhow::Result<Self> {
        let key = match (&settings.session_key, settings.mode) {
            (Some(key), _) => key.expose_secret().as_bytes().to_vec(),
            (None, AuthMode::GitHub) => load_or_make_key(&data_dir.join(SESSION_KEY_FILE))?,
            // No sessions to keep: the key only signs the local CSRF token.
            (None, AuthMode::None) => random_bytes::<32>().to_vec(),
        };
        if settings.mode == AuthMode::None {
            tracing::warn!(
                "BG_AGENT_AUTH=none: NO SIGN-IN. Anyone who reaches this server reads every \
                 task's instructions and logs and can retry or cancel them. Local use only."
            );
        }
        if settings.mode == AuthMode::GitHub && keys.is_none() {
            tracing::warn!(
                "BG_AGENT_ENCRYPTION_KEY is not set: sign-in is refused (a session keeps the \
                 user's GitHub token encrypted with it)"
            );
        }
        let github = UserApi::new(api_url, &settings.github_web_url)
            .map_err(|e| anyhow::anyhow!("cannot set sign-in up: {e}"))?;
        Ok(Self::with_key(
            settings, github, public_url, key, required, store, keys,
        ))
    }

    // One argument per part of the state, as `new` received them.
    #[allow(clippy::too_many_arguments)]
    fn with_key(
        settings: &AuthSettings,
        github: UserApi,
        public_url: &str,
        key: Vec<u8>,
        required: Permission,
        store: Store,
        keys: Option<Keyring>,
    ) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        Self {
            inner: Arc::new(Inner {
                mode: settings.mode,
                key: SecretKey(key),
                store,
                github,
                oauth: settings.oauth.clone(),
                required,
                web_url: settings.github_web_url.trim_end_matches('/').to_owned(),
                secure_cookies: secure_cookies(&public_url),
                public_url,
                bearers: Cache::new(),
                permissions: Cache::new(),
                repositories: Cache::new(),
                installations: Cache::new(),
                keys,
            }),
        }
    }

    /// The permission retrying, cancelling and creating tasks need, as on GitHub.
    pub fn required_permission(&self) -> Permission {
        self.inner.required
    }

    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(super) fn github(&self) -> &UserApi {
        &self.inner.github
    }

    pub(super) fn oauth(&self) -> Option<&OAuthClient> {
        self.inner.oauth.as_ref()
    }

    /// GitHub's web base URL (sign-in pages).
    pub fn web_url(&self) -> &str {
        &self.inner.web_url
    }

    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Drops what was cached for a user whose token GitHub refused, and their sessions.
    async fn checked<T>(
        &self,
        viewer: &Viewer,
        result: Result<T, UserApiError>,
    ) -> Result<T, AuthError> {
        match result {
            Err(UserApiError::Unauthorized) => {
                let user = viewer.user_id;
                self.inner.permissions.forget_where(|(id, _)| *id == user);
                self.inner.repositories.forget_where(|id| *id == user);
                self.inner.installations.forget_where(|(id, _)| *id == user);
                self.inner.bearers.forget_where(|_| true);
                if let How::Session { id_hash, .. } = &viewer.how {
                    self.inner.store.delete_session(id_hash).await?;
                }
                Err(AuthError::SignedOut)
            }
            other => Ok(other?),
        }
    }

    /// The viewer of a request: the local admin, a bearer token's user, or the session's.
    pub async fn viewer(&self, headers: &HeaderMap) -> Result<Option<Viewer>, AuthError> {
        if self.inner.mode == AuthMode::None {
            return Ok(Some(Viewer {
                login: "local".into(),
                user_id: 0,
                token: None,
                how: How::Local {
                    csrf: self.inner.key.sign("csrf-local", b"local"),
                },
            }));
        }
        if let Some(token) = bearer(headers) {
            let hash: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
            let user = match self.inner.bearers.get(&hash) {
                Some(user) => user,
                None => match self.inner.github.user(&token).await {
                    Ok(user) => {
                        self.inner.bearers.put(hash, user.clone());
                        user
                    }
                    Err(UserApiError::Unauthorized) => return Ok(None),
                    Err(e) => return Err(e.into()),
                },
            };
            return Ok(Some(Viewer {
                login: user.login,
                user_id: user.id,
                token: Some(token),
                how: How::Bearer,
            }));
        }
        let Some(id) = self.session_id(headers) else {
            return Ok(None);
        };
        let id_hash: [u8; 32] = Sha256::digest(&id).into();
        let Some(session) = self.inner.store.session(&id_hash).await? else {
            return Ok(None);
        };
        let opened = match &self.inner.keys {
            Some(keys) => keys.open_bound(&session_binding(&id_hash), &session.token),
            None => Err(CredentialError::NoKey),
        };
        let token = match opened {
            Ok(token) => token,
            // A key taken out of BG_AGENT_ENCRYPTION_KEY, or an altered row: the session
            // is unusable; the person signs in again.
            Err(e) => {
                tracing::warn!(error = %e, user = %session.login, "a session's token does not open; ending the session");
                self.inner.store.delete_session(&id_hash).await?;
                return Ok(None);
            }
        };
        Ok(Some(Viewer {
            login: session.login,
            user_id: session.user_id,
            token: Some(token),
            how: How::Session {
                id_hash,
                csrf: session.csrf_token,
            },
        }))
    }

    /// The session id of a request's cookie, if its signature holds.
    fn session_id(&self, headers: &HeaderMap) -> Option<Vec<u8>> {
        let value = cookie(headers, self.session_cookie_name())?;
        self.inner.key.verify("session", &value)
    }

    fn session_cookie_name(&self) -> &'static str {
        // `__Host-`: the browser keeps it to this host, over HTTPS, path `/`.
        if self.inner.secure_cookies {
            "__Host-bg_session"
        } else {
            "bg_session"
        }
    }

    fn login_cookie_name(&self) -> &'static str {
        if self.inner.secure_cookies {
            "__Host-bg_login"
        } else {
            "bg_login"
        }
    }

    fn cookie_attributes(&self, max_age: i64) -> String {
        let secure = if self.inner.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        format!("; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
    }

    /// Starts a session for `user` holding `token`; the `Set-Cookie` value to answer with.
    pub(super) async fn start_session(
        &self,
        user: &super::github_user::GitHubUser,
        token: &SecretString,
    ) -> Result<String, SessionError> {
        let keys = self.inner.keys.as_ref().ok_or(SessionError::NoKey)?;
        let id = random_bytes::<32>();
        let id_hash: [u8; 32] = Sha256::digest(id).into();
        let now = chrono::Utc::now();
        let session = crate::store::sessions::SessionRecord {
            user_id: user.id,
            login: user.login.clone(),
            token: keys.seal_bound(&session_binding(&id_hash), token)?,
            csrf_token: B64.encode(random_bytes::<32>()),
            expires_at: now + SESSION_LIFETIME,
        };
        self.inner.store.create_session(&id_hash, &session).await?;
        // Expired sessions (and the tokens in them) go at each sign-in: no loop needed.
        if let Err(e) = self.inner.store.purge_expired_sessions().await {
            tracing::warn!(error = %e, "cannot purge expired sessions");
        }
        Ok(format!(
            "{}={}{}",
            self.session_cookie_name(),
            self.inner.key.sign("session", &id),
            self.cookie_attributes(SESSION_LIFETIME.num_seconds())
        ))
    }

    /// Ends the viewer's session (its row goes: the cookie is worthless from now on); the
    /// `Set-Cookie` value that clears it.
    pub(super) async fn end_session(&self, viewer: &Viewer) -> Result<String, AuthError> {
        if let How::Session { id_hash, .. } = &viewer.how {
            self.inner.store.delete_session(id_hash).await?;
        }
        Ok(format!(
            "{}=deleted{}",
            self.session_cookie_name(),
            self.cookie_attributes(0)
        ))
    }

    /// A sign-in in progress: `state`, the PKCE verifier and where to go afterwards, in
    /// a signed cookie that lasts [`LOGIN_LIFETIME_SECS`].
    pub(super) fn login_cookie(&self, login: &PendingLogin) -> String {
        let payload = serde_json::json!({
            "state": login.state,
            "verifier": login.verifier,
            "next": login.next,
            "exp": chrono::Utc::now().timestamp() + LOGIN_LIFETIME_SECS,
        });
        format!(
            "{}={}{}",
            self.login_cookie_name(),
            self.inner.key.sign("login", payload.to_string().as_bytes()),
            self.cookie_attributes(LOGIN_LIFETIME_SECS)
        )
    }

    pub(super) fn clear_login_cookie(&self) -> String {
        format!(
            "{}=deleted{}",
            self.login_cookie_name(),
            self.cookie_attributes(0)
        )
    }

    /// The sign-in in progress, if its cookie is intact and not expired.
    pub(super) fn pending_login(&self, headers: &HeaderMap) -> Option<PendingLogin> {
        let value = cookie(headers, self.login_cookie_name())?;
        let payload = self.inner.key.verify("login", &value)?;
        let payload: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        let exp = payload.get("exp")?.as_i64()?;
        if exp <= chrono::Utc::now().timestamp() {
            return None;
        }
        let text = |name: &str| payload.get(name)?.as_str().map(str::to_owned);
        Some(PendingLogin {
            state: text("state")?,
            verifier: text("verifier")?,
            next: text("next")?,
        })
    }

    /// Whether a state-changing form post may go on: the viewer's CSRF token matches, and
    /// the request comes from this server's pages (`Origin`, else `Referer`, when sent).
    pub fn check_form(&self, viewer: &Viewer, headers: &HeaderMap, token: Option<&str>) -> bool {
        let Some(expected) = viewer.csrf_token() else {
            return true;
        };
        let given = token.unwrap_or_default();
        let token_ok: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
        token_ok && self.same_origin(headers)
    }

    fn same_origin(&self, headers: &HeaderMap) -> bool {
        let ours = origin_of(&self.inner.public_url);
        let theirs = headers
            .get(header::ORIGIN)
            .or_else(|| headers.get(header::REFERER))
            .and_then(|v| v.to_str().ok());
        match theirs {
            // Browsers send Origin on every POST; a client that sends neither is no browser.
            None => true,
            Some("null") => false,
            Some(value) => ours.is_some() && origin_of(value) == ours,
        }
    }
}

/// A sign-in between `/login` and `/login/callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingLogin {
    pub state: String,
    pub verifier: String,
    /// A local path (`/tasks/7`), checked by [`safe_next`].
    pub next: String,
}

impl PendingLogin {
    pub(super) fn new(next: &str) -> Self {
        Self {
            state: B64.encode(random_bytes::<32>()),
            // 43 characters of base64url: within RFC 7636's 43..=128 unreserved characters.
            verifier: B64.encode(random_bytes::<32>()),
            next: safe_next(next).to_owned(),
        }
    }

    /// `BASE64URL(SHA256(verifier))` (RFC 7636 `S256`).
    pub(super) fn challenge(&self) -> String {
        B64.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// Whether `state` is the one this sign-in sent, compared in constant time.
    pub(super) fn state_matches(&self, state: &str) -> bool {
        self.state.as_bytes().ct_eq(state.as_bytes()).into()
    }
}

/// A path on this server to go back to after sign-in; anything else (another host,
/// `//host`, a scheme) becomes `/`.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if local { next } else { "/" }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty())
        .then(|| format!("{}://{}", scheme.to_lowercase(), authority.to_lowercase()))
}

/// Cookies are `Secure` unless the server is for local use over plain HTTP.
fn secure_cookies(public_url: &str) -> bool {
    let Some(rest) = public_url.strip_prefix("http://") else {
        return true;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !(host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()))
}

fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| SecretString::from(token.to_owned()))
}

/// The value of cookie `name` (the first, if sent twice).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The key in `path`, or a new random one written there (0600) on first start.
fn load_or_make_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => anyhow::bail!("{} holds less than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = B64.encode(random_bytes::<32>()).into_bytes();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match &mut file {
        Ok(file) => {
            file.write_all(&key)
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "made a session key");
            Ok(key)
        }
        // Another replica sharing the directory made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) => Err(anyhow::anyhow!("creating {}: {e}", path.display())),
    }
}

/// Why a request has no viewer.
#[derive(Debug)]
pub struct AuthRejection {
    /// `/api/...` or `/mcp...`: answered in JSON.
    api: bool,
    /// Where a page request goes back to after sign-in.
    next: String,
    error: Option<AuthError>,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (status, error, message) = match &self.error {
            None | Some(AuthError::SignedOut) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in with GitHub, or send `Authorization: Bearer <GitHub user token>`"
                    .to_owned(),
            ),
            Some(e @ AuthError::GitHub(_)) => {
                tracing::warn!(error = %e, "cannot check who is asking");
                (
                    StatusCode::BAD_GATEWAY,
                    "github_unavailable",
                    "GitHub did not answer; try again".to_owned(),
                )
            }
            Some(e @ AuthError::Store(_)) => {
                tracing::error!(error = %e, "cannot check who is asking");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "database unavailable".to_owned(),
                )
            }
        };
        if self.api {
            let body = serde_json::json!({"error": error, "message": message});
            return (status, axum::Json(body)).into_response();
        }
        if status == StatusCode::UNAUTHORIZED {
            let next = percent_encode(&self.next);
            return Redirect::to(&format!("/login?next={next}")).into_response();
        }
        (status, message).into_response()
    }
}

/// Whether a path is answered in JSON rather than with pages.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/mcp" || path.starts_with("/mcp/")
}

/// A query value, percent-encoded.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl<S> FromRequestParts<S> for Viewer
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthState::from_ref(state);
        let rejection = |error| AuthRejection {
            api: is_api_path(parts.uri.path()),
            next: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            error,
        };
        match auth.viewer(&parts.headers).await {
            Ok(Some(viewer)) => Ok(viewer),
            Ok(None) => Err(rejection(None)),
            Err(e) => Err(rejection(Some(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_refuse_any_change() {
        let key = SecretKey(b"0123456789abcdef0123456789abcdef".to_vec());
        let signed = key.sign("session", b"id");
        assert_eq!(key.verify("session", &signed), Some(b"id".to_vec()));
        assert_eq!(key.verify("login", &signed), None);
        let (payload, tag) = signed.split_once('.').unwrap();
        let forged = format!("{}.{tag}", B64.encode(b"other"));
        assert_eq!(key.verify("session", &forged), None);
        assert_eq!(key.verify("session", payload), None);
        let other = SecretKey(b"another key, also 32 bytes long!".to_vec());
        assert_eq!(other.verify("session", &signed), None);
    }

    #[test]
    fn a_sessions_token_opens_only_for_that_session() {
        let keys = Keyring::parse(&SecretString::from(
            "s:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
        ))
        .unwrap();
        let token = SecretString::from("ghu_token-of-the-user".to_owned());
        let (one, other) = ([1u8; 32], [2u8; 32]);
        let sealed = keys.seal_bound(&session_binding(&one), &token).unwrap();
        assert_eq!(sealed.key_id, "s");
        assert!(!sealed.ciphertext.windows(4).any(|w| w == b"ghu_"));
        assert_eq!(
            keys.open_bound(&session_binding(&one), &sealed)
                .unwrap()
                .expose_secret(),
            "ghu_token-of-the-user"
        );
        assert!(keys.open_bound(&session_binding(&other), &sealed).is_err());
        // Nor as a credential of any scope.
        let scope = crate::credentials::Scope {
            installation_id: 1,
            user_id: None,
            provider: crate::credentials::Provider::Anthropic,
        };
        assert!(keys.open(&scope, &sealed).is_err());
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/tasks/7?x=1"), "/tasks/7?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "evil",
            "",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn cookies_are_secure_except_on_local_http() {
        assert!(secure_cookies("https://bg.example.com"));
        assert!(secure_cookies("http://bg.example.com"));
        assert!(secure_cookies("http://10.0.0.1:3000"));
        assert!(!secure_cookies("http://localhost:3000"));
        assert!(!secure_cookies("http://127.0.0.1:3000"));
        assert!(!secure_cookies("http://[::1]:3000"));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://Bg.example.com/tasks/1"),
            Some("https://bg.example.com".into())
        );
        assert_eq!(
            origin_of("http://127.0.0.1:3000"),
            Some("http://127.0.0.1:3000".into())
        );
        assert_eq!(origin_of("nonsense"), None);
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636_s256() {
        // RFC 7636, appendix B.
        let login = PendingLogin {
            state: "s".into(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            next: "/".into(),
        };
        assert_eq!(
            login.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(login.state_matches("s"));
        assert!(!login.state_matches("t"));
    }

    #[tokio::test]
    async fn api_paths_get_401_json_and_pages_a_sign_in_redirect() {
        assert!(is_api_path("/api/v1/tasks") && is_api_path("/mcp") && is_api_path("/api"));
        assert!(!is_api_path("/apiary") && !is_api_path("/tasks/1"));

        let api = AuthRejection {
            api: true,
            next: "/api/v1/tasks".into(),
            error: None,
        }
        .into_response();
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(api.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().unwrap().contains("Bearer"));

        let page = AuthRejection {
            api: false,
            next: "/tasks/7?x=a b".into(),
            error: None,
        }
        .into_response();
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            page.headers()[header::LOCATION],
            "/login?next=/tasks/7%3Fx%3Da%20b"
        );
    }

    #[test]
    fn the_generated_session_key_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(SESSION_KEY_FILE);
        let first = load_or_make_key(&path).unwrap();
        assert!(first.len() >= 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_make_key(&path).unwrap(), first);
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_make_key(&path).is_err());
    }
}
