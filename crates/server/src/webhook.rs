//! Webhook intake: signature check, durable storage, and payload → [`Trigger`] decoding.
//!
//! The request path only verifies, stores and answers; nothing here talks to GitHub.

pub mod inbox;
pub mod trigger;
pub mod unverified;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookSecrets;

pub use trigger::{DecodeContext, Decoded, Trigger, decode};

/// GitHub caps payloads at 25 MB; anything larger is not from GitHub.
pub const MAX_PAYLOAD_BYTES: usize = 25 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=` followed by 64 lowercase hex digits")]
    Malformed,
    #[error("the X-Hub-Signature-256 signature does not match the payload")]
    Mismatch,
}

/// `sha256=` + lowercase hex HMAC-SHA256 of `body`, as GitHub sends it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Checks `header` against every configured secret, in constant time for each.
pub fn verify_signature(
    secrets: &WebhookSecrets,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha256=")
        .filter(|h| h.len() == 64 && h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or(SignatureError::Malformed)?;
    let mut expected = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
    // Every secret is tried (no early exit), so timing does not tell which one matched.
    let matched = secrets.iter().fold(false, |matched, secret| {
        mac(secret, body).verify_slice(&expected).is_ok() | matched
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_test_vector() {
        assert_eq!(
            sign(GITHUB_SECRET.as_bytes(), GITHUB_BODY),
            GITHUB_SIGNATURE
        );
        let secrets = WebhookSecrets::new([GITHUB_SECRET]);
        assert_eq!(
            verify_signature(&secrets, GITHUB_BODY, Some(GITHUB_SIGNATURE.as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn any_rotated_secret_verifies() {
        let secrets = WebhookSecrets::new(["new-secret", GITHUB_SECRET]);
        assert_eq!(
            verify_signature(&secrets, GITHUB_BODY, Some(GITHUB_SIGNATURE.as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn rejections_are_precise() {
        let secrets = WebhookSecrets::new([GITHUB_SECRET]);
        let check = |header: Option<&str>| {
            verify_signature(&secrets, GITHUB_BODY, header.map(str::as_bytes))
        };
        assert_eq!(check(None), Err(SignatureError::Missing));
        assert_eq!(check(Some("")), Err(SignatureError::Malformed));
        assert_eq!(
            check(Some(&GITHUB_SIGNATURE.to_uppercase())),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some(&GITHUB_SIGNATURE.replace("sha256=", "SHA256="))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some(&GITHUB_SIGNATURE.replace("sha256=", "sha1="))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some(&GITHUB_SIGNATURE[..GITHUB_SIGNATURE.len() - 2])),
            Err(SignatureError::Malformed)
        );
        let upper_digest = format!("sha256={}", GITHUB_SIGNATURE[7..].to_uppercase());
        assert_eq!(check(Some(&upper_digest)), Err(SignatureError::Malformed));
        let wrong = sign(b"another secret", GITHUB_BODY);
        assert_eq!(check(Some(&wrong)), Err(SignatureError::Mismatch));
        let tampered = sign(GITHUB_SECRET.as_bytes(), b"Hello, World?");
        assert_eq!(check(Some(&tampered)), Err(SignatureError::Mismatch));
    }
}
