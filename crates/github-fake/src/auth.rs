//! Credentials as GitHub checks them: App JWTs (RS256, issuer, a ≤ 10 minute
//! window) and installation tokens the fake minted itself.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng as _;
use serde_json::Value;

/// The development App's private key: public knowledge, for the simulator only.
pub const DEV_APP_PRIVATE_KEY_PEM: &str = include_str!("../dev-app-private-key.pem");
/// Its public key, which the fake verifies App JWTs against.
pub const DEV_APP_PUBLIC_KEY_PEM: &str = include_str!("../dev-app-public-key.pem");

/// How far in the future `iat` may be (clock drift), as GitHub tolerates.
const IAT_SKEW_SECS: i64 = 60;
/// Longest JWT lifetime GitHub accepts.
const MAX_JWT_LIFETIME_SECS: i64 = 600;

const JWT_NOT_DECODED: &str = "A JSON web token could not be decoded";

/// What the `Authorization` header (or HTTP Basic password) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    /// Something that looks like a JWT (three dot-separated parts).
    Jwt(String),
    /// Anything else: an installation token if the fake minted it.
    Token(String),
    /// An `Authorization` header we cannot read at all.
    Malformed,
}

/// Reads `Authorization: Bearer X` / `token X` (and `Basic` for git).
pub fn presented(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Presented::Nothing;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    let credential =
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            rest.to_owned()
        } else if scheme.eq_ignore_ascii_case("basic") {
            match basic_password(rest) {
                Some(password) => password,
                None => return Presented::Malformed,
            }
        } else {
            return Presented::Malformed;
        };
    classify(credential)
}

fn classify(credential: String) -> Presented {
    if credential.is_empty() {
        Presented::Malformed
    } else if credential.split('.').count() == 3 {
        Presented::Jwt(credential)
    } else {
        Presented::Token(credential)
    }
}

/// The token of HTTP Basic `user:token` (GitHub uses the password, or the
/// user name when the password is empty).
fn basic_password(encoded: &str) -> Option<String> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let token = if password.is_empty() { user } else { password };
    (!token.is_empty()).then(|| token.to_owned())
}

/// Why an App JWT was refused; the texts are GitHub's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("{JWT_NOT_DECODED}")]
    NotDecoded,
    #[error(
        "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
    )]
    Expired,
    #[error("'Expiration time' claim ('exp') is too far in the future")]
    TooLong,
    #[error(
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
    )]
    IssuedInFuture,
    #[error("'Issuer' claim ('iss') must be an Integer")]
    WrongIssuer,
}

/// The App's key pair: verifies incoming JWTs, signs convenience JWTs.
pub struct AppKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    private_pem: String,
}

impl std::fmt::Debug for AppKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKeys(redacted)")
    }
}

impl AppKeys {
    pub fn new(private_pem: &str, public_pem: &str) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            decoding: DecodingKey::from_rsa_pem(public_pem.as_bytes())?,
            encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes())?,
            private_pem: private_pem.to_owned(),
        })
    }

    pub fn development() -> Result<Self, jsonwebtoken::errors::Error> {
        Self::new(DEV_APP_PRIVATE_KEY_PEM, DEV_APP_PUBLIC_KEY_PEM)
    }

    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }

    /// Checks an App JWT as GitHub does: RS256 signature by the App's key,
    /// `iss` = the App id (number or string), `exp` in the future, `iat` not
    /// in the future beyond a small skew, and at most 10 minutes between them.
    pub fn verify(&self, jwt: &str, app_id: u64) -> Result<(), JwtError> {
        let mut validation = Validation::new(Algorithm::RS256);
        // Time and issuer rules are checked below, with GitHub's own messages.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(jwt, &self.decoding, &validation)
            .map_err(|_| JwtError::NotDecoded)?
            .claims;
        let issuer_ok = match claims.get("iss") {
            Some(Value::Number(n)) => n.as_u64() == Some(app_id),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok() == Some(app_id),
            _ => false,
        };
        if !issuer_ok {
            return Err(JwtError::WrongIssuer);
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or(JwtError::IssuedInFuture)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(JwtError::Expired)?;
        let now = unix_now();
        if iat > now + IAT_SKEW_SECS {
            return Err(JwtError::IssuedInFuture);
        }
        if exp <= now {
            return Err(JwtError::Expired);
        }
        if exp - iat > MAX_JWT_LIFETIME_SECS {
            return Err(JwtError::TooLong);
        }
        Ok(())
    }

    /// A valid App JWT (iat 60 s ago, exp in 9 minutes), as a client makes them.
    pub fn sign_app_jwt(&self, app_id: u64) -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now();
        sign_jwt(&self.encoding, app_id, now - 60, now + 9 * 60)
    }
}

/// Signs `{"iss": app_id, "iat": iat, "exp": exp}` with RS256.
pub fn sign_jwt(
    key: &EncodingKey,
    app_id: u64,
    iat: i64,
    exp: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = serde_json::json!({"iss": app_id, "iat": iat, "exp": exp});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh opaque installation token. Prefix and length vary on purpose, so
/// no client can come to depend on a format (GitHub does not promise one).
pub fn new_installation_token() -> String {
    const PREFIXES: [&str; 4] = ["ghs_", "ghs_", "v1.", "sim_"];
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let prefix = PREFIXES[rng.gen_range(0..PREFIXES.len())];
    let length = rng.gen_range(36..=52);
    let body: String = (0..length)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AppKeys {
        match AppKeys::development() {
            Ok(keys) => keys,
            Err(e) => panic!("dev keys: {e}"),
        }
    }

    fn jwt(iss: Value, iat: i64, exp: i64) -> String {
        let key = match EncodingKey::from_rsa_pem(DEV_APP_PRIVATE_KEY_PEM.as_bytes()) {
            Ok(key) => key,
            Err(e) => panic!("{e}"),
        };
        let claims = serde_json::json!({"iss": iss, "iat": iat, "exp": exp});
        match jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key) {
            Ok(token) => token,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn jwt_rules() {
        let keys = keys();
        let now = unix_now();
        assert_eq!(
            keys.verify(&jwt(310001.into(), now - 60, now + 540), 310001),
            Ok(())
        );
        assert_eq!(
            keys.verify(&jwt("310001".into(), now - 60, now + 540), 310001),
            Ok(())
        );
        assert_eq!(
            keys.verify(&jwt(310002.into(), now - 60, now + 540), 310001),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            keys.verify(&jwt(310001.into(), now - 700, now - 10), 310001),
            Err(JwtError::Expired)
        );
        assert_eq!(
            keys.verify(&jwt(310001.into(), now - 60, now + 601), 310001),
            Err(JwtError::TooLong)
        );
        assert_eq!(
            keys.verify(&jwt(310001.into(), now + 120, now + 300), 310001),
            Err(JwtError::IssuedInFuture)
        );
        assert_eq!(keys.verify("a.b.c", 310001), Err(JwtError::NotDecoded));
    }

    #[test]
    fn credentials_are_read_from_any_scheme() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), Presented::Nothing);
        headers.insert(
            "authorization",
            "token abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented(&headers), Presented::Token("abc".into()));
        headers.insert(
            "authorization",
            "Bearer a.b.c".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented(&headers), Presented::Jwt("a.b.c".into()));
        let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:tok");
        headers.insert(
            "authorization",
            format!("Basic {basic}")
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented(&headers), Presented::Token("tok".into()));
        headers.insert(
            "authorization",
            "Digest x".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented(&headers), Presented::Malformed);
    }

    #[test]
    fn tokens_vary() {
        let tokens: std::collections::HashSet<String> =
            (0..50).map(|_| new_installation_token()).collect();
        assert_eq!(tokens.len(), 50);
        let lengths: std::collections::HashSet<usize> = tokens.iter().map(String::len).collect();
        assert!(lengths.len() > 1);
    }
}
