//! Model-provider credentials (an Anthropic, OpenAI or Gemini API key) kept for an
//! installation, or for one user of it, encrypted at rest.
//!
//! AES-256-GCM (ring's, the implementation TLS already uses here), a fresh random 96-bit
//! nonce per value, and associated data naming the credential's scope (installation,
//! user, provider): a ciphertext copied to another row does not decrypt. Keys come from
//! `BG_AGENT_ENCRYPTION_KEY`, a keyring `id:base64,id:base64,...` (or bare base64 keys,
//! named after their fingerprint); the first encrypts, all decrypt, so keys rotate by
//! putting the new one first (docs/security.md). A value is never logged and never shown
//! once set: only its fingerprint.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no encryption key: set BG_AGENT_ENCRYPTION_KEY (32 random bytes, base64; e.g. `openssl rand -base64 32`)"
    )]
    NoKey,
    #[error("BG_AGENT_ENCRYPTION_KEY entry {entry}: {reason}")]
    BadKey { entry: usize, reason: String },
    #[error(
        "the credential was encrypted with key `{0}`, which BG_AGENT_ENCRYPTION_KEY does not hold"
    )]
    UnknownKey(String),
    #[error(
        "the credential does not decrypt with key `{0}`: a wrong key under that id, or the row was altered or copied from another scope"
    )]
    Decrypt(String),
    #[error("the credential is empty")]
    Empty,
    #[error("cannot encrypt: {0}")]
    Encrypt(&'static str),
}

/// Whose API a credential is for. An agent CLI uses one of them ([`AgentProvider`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Anthropic,
    OpenAi,
    Gemini,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Anthropic, Provider::OpenAi, Provider::Gemini];

    /// As stored (`agent_credentials.provider`) and typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::Gemini => "gemini",
        }
    }

    /// `anthropic`, `openai`, `gemini`, or the name of an agent that uses one of them
    /// (`claude_code`, `codex`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .or_else(|| AgentProvider::parse(&name).and_then(NeedsCredential::credential))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use bg_agent_core::protocol::AgentProvider;

/// The API whose credential a coding agent needs.
pub trait NeedsCredential {
    /// `None` for the generic command, which gets no credential.
    fn credential(self) -> Option<Provider>;
}

impl NeedsCredential for AgentProvider {
    fn credential(self) -> Option<Provider> {
        match self {
            AgentProvider::Command => None,
            AgentProvider::ClaudeCode | AgentProvider::Cline => Some(Provider::Anthropic),
            AgentProvider::Codex | AgentProvider::Aider => Some(Provider::OpenAi),
            AgentProvider::Gemini => Some(Provider::Gemini),
        }
    }
}

/// Whose a credential is: an installation's, or one user's within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub installation_id: i64,
    /// A GitHub user id; `None`: every user of the installation.
    pub user_id: Option<i64>,
    pub provider: Provider,
}

impl Scope {
    /// The associated data: a ciphertext decrypts only in the scope it was made for.
    fn aad(&self) -> Vec<u8> {
        let user = self
            .user_id
            .map_or_else(|| "-".to_owned(), |u| u.to_string());
        format!(
            "bg-agent credential v1\0installation {}\0user {user}\0provider {}",
            self.installation_id, self.provider
        )
        .into_bytes()
    }

    /// `installation` or `user 123`, for listings.
    pub fn describe(&self) -> String {
        match self.user_id {
            None => "installation".to_owned(),
            Some(user) => format!("user {user}"),
        }
    }
}

/// An encrypted value as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    /// The ciphertext with GCM's 16-byte tag appended.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What identifies a value without revealing it: the first 8 hex digits of its SHA-256.
pub fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    hex::encode(&digest[..4])
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The encryption keys: the first encrypts, every one decrypts. Its `Debug` shows the
/// key ids only.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<Key>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// `id:base64key,id:base64key,...` or bare `base64key`s (named `k` + the first 8 hex
    /// digits of the key's SHA-256, so the name stays the same when more keys are added).
    /// Each key is 32 bytes.
    pub fn parse(text: &SecretString) -> Result<Self, CredentialError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut keys: Vec<Key> = Vec::new();
        for (index, entry) in text.expose_secret().split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |reason: &str| CredentialError::BadKey {
                entry: index + 1,
                reason: reason.to_owned(),
            };
            let (id, encoded) = match entry.split_once(':') {
                Some((id, key)) => (Some(id.trim()), key.trim()),
                None => (None, entry),
            };
            let bytes = b64
                .decode(encoded)
                .map_err(|_| bad("the key is not base64"))?;
            if bytes.len() != 32 {
                return Err(bad("the key must be 32 bytes (base64 of 32 random bytes)"));
            }
            let id = match id {
                Some(id) => {
                    let valid = !id.is_empty()
                        && id.len() <= 64
                        && id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !valid {
                        return Err(bad("a key id is 1 to 64 letters, digits, `-`, `_` or `.`"));
                    }
                    id.to_owned()
                }
                None => format!("k{}", hex::encode(&Sha256::digest(&bytes)[..4])),
            };
            if keys.iter().any(|k| k.id == id) {
                return Err(bad("two keys have the same id"));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| bad("the key is not a valid AES-256 key"))?;
            keys.push(Key {
                id,
                key: LessSafeKey::new(key),
            });
        }
        if keys.is_empty() {
            return Err(CredentialError::NoKey);
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The key new values are encrypted with.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    pub fn seal(&self, scope: &Scope, value: &SecretString) -> Result<Sealed, CredentialError> {
        self.seal_bound(&scope.aad(), value)
    }

    pub fn open(&self, scope: &Scope, sealed: &Sealed) -> Result<SecretString, CredentialError> {
        self.open_bound(&scope.aad(), sealed)
    }

    /// Encrypts `value` bound to `binding` (the associated data): it opens only with the
    /// same binding. Bindings of different kinds of value start with different prefixes
    /// ([`Scope`]'s, a session's in `web::auth`), so they never collide.
    pub fn seal_bound(
        &self,
        binding: &[u8],
        value: &SecretString,
    ) -> Result<Sealed, CredentialError> {
        let value = value.expose_secret();
        if value.trim().is_empty() {
            return Err(CredentialError::Empty);
        }
        let key = self.keys.first().ok_or(CredentialError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CredentialError::Encrypt("no randomness for a nonce"))?;
        let mut in_out = value.as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding),
                &mut in_out,
            )
            .map_err(|_| CredentialError::Encrypt("AES-GCM refused the value"))?;
        Ok(Sealed {
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: in_out,
        })
    }

    pub fn open_bound(
        &self,
        binding: &[u8],
        sealed: &Sealed,
    ) -> Result<SecretString, CredentialError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| CredentialError::UnknownKey(sealed.key_id.clone()))?;
        let failed = || CredentialError::Decrypt(sealed.key_id.clone());
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| failed())?;
        let mut in_out = sealed.ciphertext.clone();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(binding), &mut in_out)
            .map_err(|_| failed())?;
        let value = String::from_utf8(plain.to_vec()).map_err(|_| failed())?;
        // The buffer held the plaintext: overwritten before it is freed.
        in_out.fill(0);
        Ok(SecretString::from(value))
    }
}

/// Where `bg-agent credentials test` sends its one request, per provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    pub anthropic: String,
    pub openai: String,
    pub gemini: String,
}

impl Default for ProviderEndpoints {
    fn default() -> Self {
        Self {
            anthropic: "https://api.anthropic.com".to_owned(),
            openai: "https://api.openai.com".to_owned(),
            gemini: "https://generativelanguage.googleapis.com".to_owned(),
        }
    }
}

impl ProviderEndpoints {
    pub fn base(&self, provider: Provider) -> &str {
        match provider {
            Provider::Anthropic => &self.anthropic,
            Provider::OpenAi => &self.openai,
            Provider::Gemini => &self.gemini,
        }
        .trim_end_matches('/')
    }
}

/// What the provider said to `credentials test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// 2xx: the credential works.
    Accepted,
    /// 401 or 403: the provider refused it.
    Refused(u16),
    /// Any other answer.
    Unexpected(u16),
}

/// One minimal, free request that needs the credential: listing models.
pub async fn test_credential(
    client: &reqwest::Client,
    endpoints: &ProviderEndpoints,
    provider: Provider,
    value: &SecretString,
) -> Result<TestOutcome, reqwest::Error> {
    let base = endpoints.base(provider);
    let request = match provider {
        Provider::Anthropic => client
            .get(format!("{base}/v1/models"))
            .header("x-api-key", value.expose_secret())
            .header("anthropic-version", "2023-06-01"),
        Provider::OpenAi => client
            .get(format!("{base}/v1/models"))
            .bearer_auth(value.expose_secret()),
        // The header, not the documented `?key=` query: a URL ends up in logs.
        Provider::Gemini => client
            .get(format!("{base}/v1beta/models"))
            .header("x-goog-api-key", value.expose_secret()),
    };
    let status = request.send().await?.status();
    Ok(if status.is_success() {
        TestOutcome::Accepted
    } else if matches!(status.as_u16(), 401 | 403) {
        TestOutcome::Refused(status.as_u16())
    } else {
        TestOutcome::Unexpected(status.as_u16())
    })
}

/// The longest credential accepted (API keys are well under 1 KiB).
pub const MAX_VALUE_BYTES: usize = 4096;

/// Why managing a credential failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("no {provider} credential for installation {installation} {}", user_words(.user))]
    NotFound {
        provider: Provider,
        installation: i64,
        user: Option<i64>,
    },
    #[error("the credential is longer than {MAX_VALUE_BYTES} bytes")]
    TooLong,
    /// The provider's API could not be reached (the error has no URL or header in it).
    #[error("cannot reach {base}: {error}")]
    Unreachable { base: String, error: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn user_words(user: &Option<i64>) -> String {
    match user {
        None => "(every user)".to_owned(),
        Some(user) => format!("(user {user})"),
    }
}

/// What storing a credential did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// A credential of the same scope was replaced.
    pub replaced: bool,
    pub fingerprint: String,
    pub key_id: String,
}

/// What `test` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tested {
    pub fingerprint: String,
    /// The API base the request went to.
    pub base: String,
    pub outcome: TestOutcome,
}

/// Setting, listing, testing and deleting credentials: the one implementation the
/// command line (`bg-agent credentials`), the JSON API and the settings page share.
/// Values come in as [`SecretString`]s, are sealed here, and never come back out.
#[derive(Clone)]
pub struct Manager {
    store: crate::store::Store,
    keys: Option<Keyring>,
    endpoints: ProviderEndpoints,
    http: reqwest::Client,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("keys", &self.keys)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Manager {
    pub fn new(
        store: crate::store::Store,
        keys: Option<Keyring>,
        endpoints: ProviderEndpoints,
    ) -> Self {
        // A person (or a script) waits on `test`; the provider answers a listing fast.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            store,
            keys,
            endpoints,
            http,
        }
    }

    /// The keyring, or why there is none.
    pub fn keys(&self) -> Result<&Keyring, CredentialError> {
        self.keys.as_ref().ok_or(CredentialError::NoKey)
    }

    pub fn endpoints(&self) -> &ProviderEndpoints {
        &self.endpoints
    }

    /// Seals and stores `value` for `scope`, replacing the one it had. A trailing newline
    /// (from `echo` or a file) is not part of a key and is dropped.
    pub async fn set(&self, scope: &Scope, value: &SecretString) -> Result<Stored, ManageError> {
        let value = value.expose_secret().trim_end_matches(['\n', '\r']);
        if value.len() > MAX_VALUE_BYTES {
            return Err(ManageError::TooLong);
        }
        let value = SecretString::from(value.to_owned());
        let sealed = self.keys()?.seal(scope, &value)?;
        let fingerprint = fingerprint(value.expose_secret());
        let replaced = self
            .store
            .put_credential(scope, &sealed, &fingerprint)
            .await?;
        Ok(Stored {
            replaced,
            fingerprint,
            key_id: sealed.key_id,
        })
    }

    /// Every credential (of one installation, if given), without values.
    pub async fn list(
        &self,
        installation: Option<i64>,
    ) -> Result<Vec<crate::store::credentials::CredentialInfo>, ManageError> {
        Ok(self.store.credentials(installation).await?)
    }

    /// The credential of exactly `scope`, without its value.
    pub async fn info(
        &self,
        scope: &Scope,
    ) -> Result<crate::store::credentials::CredentialInfo, ManageError> {
        self.list(Some(scope.installation_id))
            .await?
            .into_iter()
            .find(|c| c.user_id == scope.user_id && c.provider == scope.provider.as_str())
            .ok_or_else(|| not_found(scope))
    }

    /// Makes the one minimal request to the provider with the stored credential.
    pub async fn test(&self, scope: &Scope) -> Result<Tested, ManageError> {
        let keys = self.keys()?;
        let stored = self
            .store
            .credential(scope)
            .await?
            .ok_or_else(|| not_found(scope))?;
        let value = keys.open(&stored.scope, &stored.sealed)?;
        let base = self.endpoints.base(scope.provider).to_owned();
        let outcome = test_credential(&self.http, &self.endpoints, scope.provider, &value)
            .await
            .map_err(|e| ManageError::Unreachable {
                base: base.clone(),
                // Without the URL; reqwest's errors never hold headers.
                error: e.without_url().to_string(),
            })?;
        Ok(Tested {
            fingerprint: stored.fingerprint,
            base,
            outcome,
        })
    }

    /// Deletes the credential of `scope`.
    pub async fn delete(&self, scope: &Scope) -> Result<(), ManageError> {
        if self.store.delete_credential(scope).await? {
            Ok(())
        } else {
            Err(not_found(scope))
        }
    }
}

fn not_found(scope: &Scope) -> ManageError {
    ManageError::NotFound {
        provider: scope.provider,
        installation: scope.installation_id,
        user: scope.user_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "HxgdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    fn ring(text: &str) -> Keyring {
        Keyring::parse(&SecretString::from(text.to_owned())).unwrap()
    }

    fn scope() -> Scope {
        Scope {
            installation_id: 7,
            user_id: None,
            provider: Provider::Anthropic,
        }
    }

    #[test]
    fn a_value_round_trips_and_the_ciphertext_is_not_the_value() {
        let keys = ring(KEY_A);
        let value = SecretString::from("sk-ant-secret-value".to_owned());
        let sealed = keys.seal(&scope(), &value).unwrap();
        assert!(
            !sealed
                .ciphertext
                .windows(value.expose_secret().len())
                .any(|w| w == value.expose_secret().as_bytes())
        );
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(
            keys.open(&scope(), &sealed).unwrap().expose_secret(),
            "sk-ant-secret-value"
        );
        // A fresh nonce each time: the same value never encrypts the same.
        assert_ne!(keys.seal(&scope(), &value).unwrap(), sealed);
        assert!(!format!("{sealed:?}{keys:?}").contains(KEY_A));
    }

    #[test]
    fn a_ciphertext_opens_only_in_its_own_scope() {
        let keys = ring(KEY_A);
        let sealed = keys
            .seal(&scope(), &SecretString::from("v".to_owned()))
            .unwrap();
        for other in [
            Scope {
                installation_id: 8,
                ..scope()
            },
            Scope {
                user_id: Some(1),
                ..scope()
            },
            Scope {
                provider: Provider::OpenAi,
                ..scope()
            },
        ] {
            let err = keys.open(&other, &sealed).unwrap_err();
            assert!(matches!(err, CredentialError::Decrypt(_)), "{err}");
        }
    }

    #[test]
    fn a_wrong_key_fails_clearly_and_rotation_keeps_old_rows_readable() {
        let old = ring(&format!("old:{KEY_A}"));
        let sealed = old
            .seal(&scope(), &SecretString::from("v".to_owned()))
            .unwrap();
        // Same id, other key: a clear error, no garbage.
        let wrong = ring(&format!("old:{KEY_B}"));
        insta::assert_snapshot!(wrong.open(&scope(), &sealed).unwrap_err(), @"the credential does not decrypt with key `old`: a wrong key under that id, or the row was altered or copied from another scope");
        let missing = ring(&format!("new:{KEY_B}"));
        insta::assert_snapshot!(missing.open(&scope(), &sealed).unwrap_err(), @"the credential was encrypted with key `old`, which BG_AGENT_ENCRYPTION_KEY does not hold");
        // Rotation: the new key first writes, the old one still reads.
        let rotated = ring(&format!("new:{KEY_B}, old:{KEY_A}"));
        assert_eq!(rotated.current_id(), "new");
        assert_eq!(
            rotated.open(&scope(), &sealed).unwrap().expose_secret(),
            "v"
        );
        let resealed = rotated
            .seal(&scope(), &SecretString::from("v".to_owned()))
            .unwrap();
        assert_eq!(resealed.key_id, "new");
    }

    #[test]
    fn a_bare_key_is_named_by_its_fingerprint_and_bad_keys_are_refused() {
        let bare = ring(KEY_A);
        assert!(bare.current_id().starts_with('k'));
        assert_eq!(bare.current_id().len(), 9);
        assert_eq!(
            ring(&format!("x:{KEY_B},{KEY_A}")).ids()[1],
            bare.current_id()
        );
        let refused = |text: &str| {
            Keyring::parse(&SecretString::from(text.to_owned()))
                .unwrap_err()
                .to_string()
        };
        insta::assert_snapshot!(refused(""), @"no encryption key: set BG_AGENT_ENCRYPTION_KEY (32 random bytes, base64; e.g. `openssl rand -base64 32`)");
        insta::assert_snapshot!(refused("c2hvcnQ="), @"BG_AGENT_ENCRYPTION_KEY entry 1: the key must be 32 bytes (base64 of 32 random bytes)");
        insta::assert_snapshot!(refused(&format!("a:{KEY_A},a:{KEY_B}")), @"BG_AGENT_ENCRYPTION_KEY entry 2: two keys have the same id");
        insta::assert_snapshot!(refused("a:not base64!"), @"BG_AGENT_ENCRYPTION_KEY entry 1: the key is not base64");
        assert!(!refused(&format!("bad id:{KEY_A}")).contains(KEY_A));
    }

    #[test]
    fn providers_take_agent_names_as_aliases() {
        assert_eq!(Provider::parse("claude_code"), Some(Provider::Anthropic));
        assert_eq!(Provider::parse("Claude-Code"), Some(Provider::Anthropic));
        assert_eq!(Provider::parse("codex"), Some(Provider::OpenAi));
        assert_eq!(Provider::parse("gemini"), Some(Provider::Gemini));
        assert_eq!(Provider::parse("openai"), Some(Provider::OpenAi));
        assert_eq!(Provider::parse("command"), None);
        assert_eq!(Provider::parse("mistral"), None);
        assert_eq!(AgentProvider::Command.credential(), None);
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
