//! The App's own credential: an RS256 JWT signed with its private key, used for `/app/...`
//! calls and to mint installation tokens.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::GitHubError;

/// Issued in the past to tolerate clock drift between us and GitHub.
pub const JWT_BACKDATE: TimeDelta = TimeDelta::seconds(60);
/// GitHub accepts at most 10 minutes; 9 leaves room for drift.
pub const JWT_LIFETIME: TimeDelta = TimeDelta::minutes(9);
/// A JWT is reused until this long before it expires.
pub const JWT_RENEW_BEFORE: TimeDelta = TimeDelta::seconds(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppJwtClaims {
    /// Seconds since the epoch.
    pub iat: i64,
    pub exp: i64,
    /// The App id, as a string: RFC 7519 makes `iss` a StringOrURI, strict validators
    /// reject a number, and GitHub accepts either.
    pub iss: String,
}

impl AppJwtClaims {
    pub fn issued(app_id: u64, now: DateTime<Utc>) -> Self {
        Self {
            iat: (now - JWT_BACKDATE).timestamp(),
            exp: (now + JWT_LIFETIME).timestamp(),
            iss: app_id.to_string(),
        }
    }
}

struct CachedJwt {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

/// Signs App JWTs and reuses each until [`JWT_RENEW_BEFORE`] its expiry.
pub(crate) struct AppJwtSigner {
    app_id: u64,
    key: EncodingKey,
    cached: Mutex<Option<CachedJwt>>,
}

impl fmt::Debug for AppJwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppJwtSigner")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AppJwtSigner {
    /// Parses the PEM key and signs once, so a bad key fails here and not on first use.
    pub(crate) fn new(
        app_id: u64,
        private_key_pem: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<Self, GitHubError> {
        let key =
            EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes()).map_err(|e| {
                GitHubError::Config(format!("the App private key is not an RSA PEM key: {e}"))
            })?;
        let signer = Self {
            app_id,
            key,
            cached: Mutex::new(None),
        };
        signer.sign(now)?;
        Ok(signer)
    }

    /// A JWT valid at `now`: the cached one, or a new one.
    pub(crate) fn bearer(&self, now: DateTime<Utc>) -> Result<SecretString, GitHubError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(jwt) = cached.as_ref()
            && now < jwt.expires_at - JWT_RENEW_BEFORE
        {
            return Ok(jwt.token.clone());
        }
        let fresh = self.sign(now)?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops the cached JWT (GitHub refused it, e.g. after a clock jump).
    pub(crate) fn forget(&self) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn sign(&self, now: DateTime<Utc>) -> Result<CachedJwt, GitHubError> {
        let claims = AppJwtClaims::issued(self.app_id, now);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| GitHubError::Jwt(e.to_string()))?;
        Ok(CachedJwt {
            token: SecretString::from(token),
            expires_at: now + JWT_LIFETIME,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const PRIVATE_KEY: &str = github_fake::DEV_APP_PRIVATE_KEY_PEM;
    const PUBLIC_KEY: &str = github_fake::DEV_APP_PUBLIC_KEY_PEM;
    const OTHER_PRIVATE_KEY: &str =
        include_str!("../../../tests/fixtures/github/other-app-private-key.pem");

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn signer(pem: &str, now: DateTime<Utc>) -> AppJwtSigner {
        AppJwtSigner::new(4242, &SecretString::from(pem.to_owned()), now).unwrap()
    }

    fn verify(token: &SecretString, now: DateTime<Utc>) -> Result<AppJwtClaims, String> {
        let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        // Checked by hand below against the test's clock, not the machine's.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        validation.set_issuer(&["4242"]);
        let data = jsonwebtoken::decode::<AppJwtClaims>(token.expose_secret(), &key, &validation)
            .map_err(|e| e.to_string())?;
        assert_eq!(data.header.alg, Algorithm::RS256);
        assert!(data.claims.iat <= now.timestamp() && now.timestamp() < data.claims.exp);
        Ok(data.claims)
    }

    #[test]
    fn claims_are_backdated_a_minute_and_expire_in_nine() {
        let now = at(1_700_000_000);
        let claims = AppJwtClaims::issued(4242, now);
        assert_eq!(
            claims,
            AppJwtClaims {
                iat: 1_700_000_000 - 60,
                exp: 1_700_000_000 + 540,
                iss: "4242".into()
            }
        );
    }

    #[test]
    fn jwt_is_rs256_and_verifies_with_the_public_key() {
        let now = at(1_700_000_000);
        let token = signer(PRIVATE_KEY, now).bearer(now).unwrap();
        let claims = verify(&token, now).unwrap();
        assert_eq!(claims, AppJwtClaims::issued(4242, now));
    }

    #[test]
    fn another_apps_key_does_not_verify() {
        let now = at(1_700_000_000);
        let token = signer(OTHER_PRIVATE_KEY, now).bearer(now).unwrap();
        assert!(verify(&token, now).is_err());
    }

    #[test]
    fn jwt_is_reused_until_a_minute_before_expiry() {
        let start = at(1_700_000_000);
        let signer = signer(PRIVATE_KEY, start);
        let first = signer.bearer(start).unwrap();
        let just_before_renewal = start + JWT_LIFETIME - JWT_RENEW_BEFORE - TimeDelta::seconds(1);
        let reused = signer.bearer(just_before_renewal).unwrap();
        assert_eq!(first.expose_secret(), reused.expose_secret());

        let renewal = start + JWT_LIFETIME - JWT_RENEW_BEFORE;
        let renewed = signer.bearer(renewal).unwrap();
        assert_ne!(first.expose_secret(), renewed.expose_secret());
        assert_eq!(
            verify(&renewed, renewal).unwrap(),
            AppJwtClaims::issued(4242, renewal)
        );

        signer.forget();
        let later = renewal + TimeDelta::seconds(1);
        let after_forget = signer.bearer(later).unwrap();
        assert_ne!(renewed.expose_secret(), after_forget.expose_secret());
    }

    #[test]
    fn a_bad_key_fails_at_construction_without_echoing_it() {
        let err =
            AppJwtSigner::new(1, &SecretString::from("not a key".to_owned()), at(0)).unwrap_err();
        assert!(matches!(err, GitHubError::Config(_)), "{err}");
        assert!(!err.to_string().contains("not a key"));
        assert!(!format!("{:?}", signer(PRIVATE_KEY, at(0))).contains("PRIVATE"));
    }
}
