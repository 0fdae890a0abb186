//! Installation access tokens: what they are scoped to, and a cache that mints each scope
//! once (single-flight) and refreshes it [`REFRESH_BEFORE_EXPIRY`] before it expires.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::GitHubError;
use super::clock::Clock;

/// A cached token is replaced once it has less than this left.
pub const REFRESH_BEFORE_EXPIRY: TimeDelta = TimeDelta::minutes(5);

/// What a token may touch; also its cache key. Repository ids are kept sorted and
/// unique so equal scopes compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenScope {
    pub installation_id: u64,
    /// Empty: every repository of the installation.
    repository_ids: Vec<u64>,
    /// Empty: every permission granted to the App.
    permissions: BTreeMap<String, String>,
}

impl TokenScope {
    /// The server's own token: the whole installation with the App's permissions.
    pub fn installation(installation_id: u64) -> Self {
        Self::new(installation_id, [], [])
    }

    /// A task runner's token: one repository, `contents: write`, nothing else.
    pub fn runner(installation_id: u64, repository_id: u64) -> Self {
        Self::new(installation_id, [repository_id], [("contents", "write")])
    }

    pub fn new<'a>(
        installation_id: u64,
        repository_ids: impl IntoIterator<Item = u64>,
        permissions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut repository_ids: Vec<u64> = repository_ids.into_iter().collect();
        repository_ids.sort_unstable();
        repository_ids.dedup();
        Self {
            installation_id,
            repository_ids,
            permissions: permissions
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    pub fn repository_ids(&self) -> &[u64] {
        &self.repository_ids
    }

    pub fn permissions(&self) -> &BTreeMap<String, String> {
        &self.permissions
    }

    /// The body of `POST /app/installations/{id}/access_tokens`; `None` (no body) asks
    /// for the whole installation.
    pub(crate) fn request_body(&self) -> Option<Value> {
        if self.repository_ids.is_empty() && self.permissions.is_empty() {
            return None;
        }
        let mut body = serde_json::Map::new();
        if !self.repository_ids.is_empty() {
            body.insert("repository_ids".into(), json!(self.repository_ids));
        }
        if !self.permissions.is_empty() {
            body.insert("permissions".into(), json!(self.permissions));
        }
        Some(Value::Object(body))
    }
}

/// An installation access token. Its `Debug` never shows the secret; make no assumption
/// about the secret's length or prefix.
#[derive(Clone)]
pub struct InstallationToken {
    secret: SecretString,
    expires_at: DateTime<Utc>,
    scope: TokenScope,
}

impl fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationToken")
            .field("secret", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

impl InstallationToken {
    pub fn new(secret: SecretString, expires_at: DateTime<Utc>, scope: TokenScope) -> Self {
        Self {
            secret,
            expires_at,
            scope,
        }
    }

    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    pub fn expose_secret(&self) -> &str {
        self.secret.expose_secret()
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    pub fn scope(&self) -> &TokenScope {
        &self.scope
    }

    pub fn installation_id(&self) -> u64 {
        self.scope.installation_id
    }

    /// True once less than [`REFRESH_BEFORE_EXPIRY`] is left.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        needs_refresh(self.expires_at, now)
    }

    fn is_same(&self, other: &Self) -> bool {
        self.expires_at == other.expires_at
            && self.secret.expose_secret() == other.secret.expose_secret()
    }
}

pub fn needs_refresh(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= expires_at - REFRESH_BEFORE_EXPIRY
}

type Slot = Arc<tokio::sync::Mutex<Option<InstallationToken>>>;

/// One slot per scope. Minting holds the slot's lock, so callers that need the same
/// scope meanwhile wait for that one mint instead of starting their own.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<TokenScope, Slot>>,
}

impl TokenCache {
    /// The cached token for `scope` if it has more than `min_remaining` left, else one
    /// from `mint`, which then replaces it.
    pub(crate) async fn get_or_mint<F, Fut>(
        &self,
        scope: &TokenScope,
        clock: &dyn Clock,
        min_remaining: TimeDelta,
        mint: F,
    ) -> Result<InstallationToken, GitHubError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<InstallationToken, GitHubError>>,
    {
        let slot = self.slot(scope);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && clock.now() < token.expires_at() - min_remaining
        {
            return Ok(token.clone());
        }
        let token = mint().await?;
        *cached = Some(token.clone());
        drop(cached);
        self.prune(clock.now());
        Ok(token)
    }

    /// Drops `token` from the cache if it is still the cached one (GitHub refused it).
    pub(crate) fn forget(&self, token: &InstallationToken) {
        let slot = self.lock().get(token.scope()).cloned();
        if let Some(slot) = slot
            && let Ok(mut cached) = slot.try_lock()
            && cached.as_ref().is_some_and(|c| c.is_same(token))
        {
            *cached = None;
        }
    }

    fn slot(&self, scope: &TokenScope) -> Slot {
        Arc::clone(self.lock().entry(scope.clone()).or_default())
    }

    /// Removes idle slots whose token has expired, so runner scopes do not pile up.
    fn prune(&self, now: DateTime<Utc>) {
        self.lock().retain(|_, slot| match slot.try_lock() {
            Ok(cached) => cached.as_ref().is_some_and(|t| t.expires_at() > now),
            Err(_) => true,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenScope, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::ManualClock;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn token(secret: &str, expires_at: DateTime<Utc>, scope: &TokenScope) -> InstallationToken {
        InstallationToken::new(
            SecretString::from(secret.to_owned()),
            expires_at,
            scope.clone(),
        )
    }

    #[test]
    fn scopes_are_normalised_cache_keys() {
        assert_eq!(
            TokenScope::new(1, [3, 2, 3], [("contents", "write")]),
            TokenScope::new(1, [2, 3], [("contents", "write")])
        );
        assert_ne!(TokenScope::runner(1, 2), TokenScope::runner(1, 3));
        assert_ne!(TokenScope::runner(1, 2), TokenScope::runner(2, 2));
        assert_ne!(TokenScope::runner(1, 2), TokenScope::new(1, [2], []));
        assert_ne!(TokenScope::installation(1), TokenScope::runner(1, 2));
    }

    #[test]
    fn request_bodies_follow_the_scope() {
        assert_eq!(TokenScope::installation(7).request_body(), None);
        assert_eq!(
            TokenScope::runner(7, 99).request_body(),
            Some(json!({"repository_ids": [99], "permissions": {"contents": "write"}}))
        );
    }

    #[test]
    fn refresh_five_minutes_before_expiry() {
        let expires = at(10_000);
        assert!(!needs_refresh(expires, at(10_000 - 301)));
        assert!(needs_refresh(expires, at(10_000 - 300)));
        assert!(needs_refresh(expires, at(10_000)));
        assert!(needs_refresh(expires, at(20_000)));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = token("ghs_supersecret", at(0), &TokenScope::installation(1));
        let printed = format!("{t:?}");
        assert!(!printed.contains("supersecret"), "{printed}");
        assert!(printed.contains("REDACTED"));
    }

    #[tokio::test]
    async fn cached_until_refresh_time_then_minted_again() {
        let clock = ManualClock::new(at(1_000_000));
        let cache = TokenCache::default();
        let scope = TokenScope::installation(1);
        let mints = AtomicUsize::new(0);
        let mint = || async {
            let n = mints.fetch_add(1, Ordering::SeqCst);
            Ok(token(
                &format!("t{n}"),
                clock.now() + TimeDelta::hours(1),
                &scope,
            ))
        };
        let first = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, mint)
            .await
            .unwrap();
        clock.advance(std::time::Duration::from_secs(54 * 60 + 59));
        let reused = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, mint)
            .await
            .unwrap();
        assert_eq!(reused.expose_secret(), first.expose_secret());
        clock.advance(std::time::Duration::from_secs(1));
        let refreshed = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, mint)
            .await
            .unwrap();
        assert_eq!(refreshed.expose_secret(), "t1");
        assert_eq!(mints.load(Ordering::SeqCst), 2);

        cache.forget(&first); // not the cached one any more: no effect
        let still = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, mint)
            .await
            .unwrap();
        assert_eq!(still.expose_secret(), "t1");
        cache.forget(&refreshed);
        let after_forget = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, mint)
            .await
            .unwrap();
        assert_eq!(after_forget.expose_secret(), "t2");
    }

    #[tokio::test]
    async fn a_caller_needing_a_longer_lifetime_gets_a_fresh_token() {
        let clock = ManualClock::new(at(1_000_000));
        let cache = TokenCache::default();
        let scope = TokenScope::runner(1, 2);
        let mints = AtomicUsize::new(0);
        let mint = || async {
            let n = mints.fetch_add(1, Ordering::SeqCst);
            Ok(token(
                &format!("t{n}"),
                clock.now() + TimeDelta::hours(1),
                &scope,
            ))
        };
        cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, mint)
            .await
            .unwrap();
        clock.advance(std::time::Duration::from_secs(20 * 60));
        // 40 minutes left: enough for 30, not for 45.
        let enough = cache
            .get_or_mint(&scope, &clock, TimeDelta::minutes(30), mint)
            .await
            .unwrap();
        assert_eq!(enough.expose_secret(), "t0");
        let fresh = cache
            .get_or_mint(&scope, &clock, TimeDelta::minutes(45), mint)
            .await
            .unwrap();
        assert_eq!(fresh.expose_secret(), "t1");
        assert_eq!(fresh.expires_at(), clock.now() + TimeDelta::hours(1));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_mint() {
        let clock = ManualClock::new(at(1_000_000));
        let cache = TokenCache::default();
        let scope = TokenScope::runner(1, 2);
        let mints = AtomicUsize::new(0);
        let (release, released) = tokio::sync::watch::channel(false);
        let get = || {
            cache.get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, || async {
                mints.fetch_add(1, Ordering::SeqCst);
                // Hold the mint open until every caller is waiting on it.
                let mut released = released.clone();
                let _ = released.wait_for(|r| *r).await;
                Ok(token("shared", clock.now() + TimeDelta::hours(1), &scope))
            })
        };
        let callers = futures::future::join_all((0..8).map(|_| get()));
        let opener = async {
            tokio::task::yield_now().await;
            let _ = release.send(true);
        };
        let (results, ()) = tokio::join!(callers, opener);
        assert_eq!(mints.load(Ordering::SeqCst), 1);
        for result in results {
            assert_eq!(result.unwrap().expose_secret(), "shared");
        }
    }

    #[tokio::test]
    async fn a_failed_mint_is_not_cached_and_expired_slots_are_pruned() {
        let clock = ManualClock::new(at(1_000_000));
        let cache = TokenCache::default();
        let scope = TokenScope::runner(1, 2);
        let failed = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, || async {
                Err(GitHubError::Network {
                    endpoint: "x".into(),
                    message: "down".into(),
                    attempts: 1,
                })
            })
            .await;
        assert!(failed.is_err());
        let ok = cache
            .get_or_mint(&scope, &clock, REFRESH_BEFORE_EXPIRY, || async {
                Ok(token("t", clock.now() + TimeDelta::hours(1), &scope))
            })
            .await
            .unwrap();
        assert_eq!(ok.expose_secret(), "t");

        clock.advance(std::time::Duration::from_secs(2 * 3600));
        let other = TokenScope::runner(1, 3);
        cache
            .get_or_mint(&other, &clock, REFRESH_BEFORE_EXPIRY, || async {
                Ok(token("u", clock.now() + TimeDelta::hours(1), &other))
            })
            .await
            .unwrap();
        assert_eq!(cache.len(), 1, "the expired runner-1/2 slot is pruned");
    }
}
