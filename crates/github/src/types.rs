//! Request and response shapes, following GitHub's OpenAPI description
//! (`tests/fixtures/github/rest-api-subset.json`). Requests omit absent optional fields
//! rather than sending `null`; responses read only what the app uses.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use super::GitHubError;
use super::token::InstallationToken;

/// A repository's `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            name: name.into(),
        }
    }
}

impl FromStr for RepoName {
    type Err = GitHubError;

    /// Parses `owner/name`.
    fn from_str(full_name: &str) -> Result<Self, Self::Err> {
        match full_name.split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(owner, name))
            }
            _ => Err(GitHubError::InvalidRequest(format!(
                "{full_name:?} is not `owner/name`"
            ))),
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// `GET /repos/{owner}/{repo}`, the parts the app uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub full_name: String,
    pub default_branch: String,
    /// The HTTPS clone URL; its host is the git host (which differs from the API host).
    pub clone_url: String,
    pub html_url: String,
    pub private: bool,
}

#[derive(Deserialize)]
pub(crate) struct RepositoryWire {
    id: u64,
    owner: LoginWire,
    name: String,
    full_name: String,
    default_branch: String,
    clone_url: String,
    html_url: String,
    #[serde(default)]
    private: bool,
}

#[derive(Deserialize)]
struct LoginWire {
    login: String,
}

impl From<RepositoryWire> for Repository {
    fn from(wire: RepositoryWire) -> Self {
        Self {
            id: wire.id,
            owner: wire.owner.login,
            name: wire.name,
            full_name: wire.full_name,
            default_branch: wire.default_branch,
            clone_url: wire.clone_url,
            html_url: wire.html_url,
            private: wire.private,
        }
    }
}

impl Repository {
    pub fn repo_name(&self) -> RepoName {
        RepoName::new(&self.owner, &self.name)
    }

    /// How to clone and push this repository with `token` (normally a runner token).
    pub fn git_remote(&self, token: &InstallationToken) -> GitRemote {
        GitRemote {
            url: self.clone_url.clone(),
            password: SecretString::from(token.expose_secret().to_owned()),
        }
    }
}

/// Credentials for git over HTTPS: GitHub takes an installation token as the password of
/// the user `x-access-token`.
#[derive(Clone)]
pub struct GitRemote {
    /// The plain clone URL, without credentials.
    pub url: String,
    password: SecretString,
}

impl fmt::Debug for GitRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitRemote")
            .field("url", &self.url)
            .field("username", &Self::USERNAME)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

impl GitRemote {
    pub const USERNAME: &'static str = "x-access-token";

    pub fn username(&self) -> &'static str {
        Self::USERNAME
    }

    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// An `http.extraHeader` value (`Authorization: Basic ...`) for
    /// `git -c http.extraHeader=...`, which keeps the token out of `.git/config`.
    pub fn http_extra_header(&self) -> SecretString {
        let credentials = format!("{}:{}", Self::USERNAME, self.password.expose_secret());
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        SecretString::from(format!("Authorization: Basic {encoded}"))
    }

    /// `https://x-access-token:TOKEN@host/owner/repo.git`. Prefer
    /// [`Self::http_extra_header`]: a URL with credentials tends to end up on disk.
    pub fn authenticated_url(&self) -> Result<SecretString, GitHubError> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "https" | "http"))
            .ok_or_else(|| {
                GitHubError::InvalidRequest(format!("{:?} is not an HTTP(S) clone URL", self.url))
            })?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // Any credentials already in the URL are replaced.
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        Ok(SecretString::from(format!(
            "{scheme}://{}:{}@{host}/{path}",
            Self::USERNAME,
            super::http::encode_component(self.password.expose_secret())
        )))
    }
}

#[derive(Deserialize)]
pub(crate) struct BranchWire {
    pub(crate) commit: ShaWire,
}

#[derive(Deserialize)]
pub(crate) struct ShaWire {
    pub(crate) sha: String,
}

/// A file read with `GET /repos/{owner}/{repo}/contents/{path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContents {
    pub path: String,
    /// The blob SHA.
    pub sha: String,
    pub content: Vec<u8>,
}

impl FileContents {
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.content)
    }
}

#[derive(Deserialize)]
pub(crate) struct ContentWire {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) encoding: Option<String>,
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) sha: String,
}

#[derive(Deserialize)]
pub(crate) struct CollaboratorPermissionWire {
    pub(crate) permission: String,
    #[serde(default)]
    pub(crate) role_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckRunStatus {
    Queued,
    InProgress,
    Completed,
}

/// The conclusions an App may set (`stale` is GitHub's alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckRunConclusion {
    ActionRequired,
    Cancelled,
    Failure,
    Neutral,
    Success,
    Skipped,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnotationLevel {
    Notice,
    Warning,
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRunAnnotation {
    pub path: String,
    pub start_line: u32,
    pub end_line: u32,
    /// Only when `start_line == end_line` (GitHub rejects columns otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
    pub annotation_level: AnnotationLevel,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_details: Option<String>,
}

impl CheckRunAnnotation {
    pub fn new(
        path: impl Into<String>,
        line: u32,
        level: AnnotationLevel,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            start_line: line,
            end_line: line,
            start_column: None,
            end_column: None,
            annotation_level: level,
            message: message.into(),
            title: None,
            raw_details: None,
        }
    }
}

/// A button on the check run; clicking it sends `check_run.requested_action` with
/// `identifier`. Limits are checked before sending (see `limits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRunAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

impl CheckRunAction {
    pub fn new(
        label: impl Into<String>,
        description: impl Into<String>,
        identifier: impl Into<String>,
    ) -> Self {
        Self {
            label: label.into(),
            description: description.into(),
            identifier: identifier.into(),
        }
    }
}

/// `output`. `summary` and `text` are cut to GitHub's limit; annotations beyond 50 are
/// sent in follow-up updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRunOutput {
    pub title: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<CheckRunAnnotation>,
}

impl CheckRunOutput {
    pub fn new(title: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            summary: summary.into(),
            text: None,
            annotations: Vec::new(),
        }
    }
}

/// `POST /repos/{owner}/{repo}/check-runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewCheckRun {
    pub name: String,
    pub head_sha: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckRunStatus>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "github_timestamp"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<CheckRunConclusion>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "github_timestamp"
    )]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckRunOutput>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CheckRunAction>,
}

impl NewCheckRun {
    pub fn new(name: impl Into<String>, head_sha: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            head_sha: head_sha.into(),
            details_url: None,
            external_id: None,
            status: None,
            started_at: None,
            conclusion: None,
            completed_at: None,
            output: None,
            actions: Vec::new(),
        }
    }
}

/// `PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}`; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckRunUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckRunStatus>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "github_timestamp"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<CheckRunConclusion>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "github_timestamp"
    )]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckRunOutput>,
    /// `Some(vec![])` removes the buttons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<CheckRunAction>>,
}

/// GitHub documents `YYYY-MM-DDTHH:MM:SSZ`.
fn github_timestamp<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        None => serializer.serialize_none(),
    }
}

/// A check run as GitHub returns it. `status` may also be a value only GitHub Actions
/// sets (`waiting`, `pending`, `requested`), so it stays a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub details_url: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// The App that made the run (only an App can: a user cannot forge it).
    #[serde(default)]
    pub app: Option<AppRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IssueComment {
    pub id: u64,
    pub html_url: String,
    #[serde(default)]
    pub body: Option<String>,
    /// Set when an App posted the comment (a user cannot forge it).
    #[serde(default)]
    pub performed_via_github_app: Option<AppRef>,
}

/// Which App did something.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppRef {
    pub id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reaction {
    #[serde(rename = "+1")]
    PlusOne,
    #[serde(rename = "-1")]
    MinusOne,
    #[serde(rename = "laugh")]
    Laugh,
    #[serde(rename = "confused")]
    Confused,
    #[serde(rename = "heart")]
    Heart,
    #[serde(rename = "hooray")]
    Hooray,
    #[serde(rename = "rocket")]
    Rocket,
    #[serde(rename = "eyes")]
    Eyes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedReaction {
    pub id: u64,
    /// GitHub answers 200 instead of 201 when this App had already reacted so.
    pub already_existed: bool,
}

#[derive(Deserialize)]
pub(crate) struct IdWire {
    pub(crate) id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BranchRef {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    pub id: u64,
    pub number: u64,
    pub html_url: String,
    pub state: String,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub draft: Option<bool>,
    pub head: BranchRef,
    pub base: BranchRef,
}

/// `POST /repos/{owner}/{repo}/pulls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewPullRequest {
    pub title: String,
    /// The branch with the changes (in the same repository).
    pub head: String,
    /// The branch to merge into.
    pub base: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintainer_can_modify: Option<bool>,
}

/// `PATCH /repos/{owner}/{repo}/pulls/{pull_number}`; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullRequestUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Label {
    pub id: u64,
    pub name: String,
}

/// `GET /app`, the parts the app uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppInfo {
    pub id: u64,
    /// Absent only in unusual cases (the schema does not require it).
    #[serde(default)]
    pub slug: Option<String>,
    pub name: String,
    pub html_url: String,
}

/// One entry of `GET /app/hook/deliveries`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    /// The `X-GitHub-Delivery` value.
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    pub redelivery: bool,
    pub duration: f64,
    pub status: String,
    pub status_code: u16,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub installation_id: Option<u64>,
    #[serde(default)]
    pub repository_id: Option<u64>,
    #[serde(default)]
    pub throttled_at: Option<DateTime<Utc>>,
}

/// One page of deliveries, newest first; `next_cursor` continues (from the `Link` header).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveriesPage {
    pub deliveries: Vec<HookDelivery>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_parse_and_print() {
        let name: RepoName = "octo/widgets".parse().unwrap();
        assert_eq!(name, RepoName::new("octo", "widgets"));
        assert_eq!(name.to_string(), "octo/widgets");
        for bad in ["", "octo", "/widgets", "octo/", "a/b/c"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn absent_fields_are_omitted_not_null() {
        let body = serde_json::to_value(NewCheckRun::new("bg-agent", "abc")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name": "bg-agent", "head_sha": "abc"})
        );
        let body = serde_json::to_value(CheckRunUpdate::default()).unwrap();
        assert_eq!(body, serde_json::json!({}));
        let update = CheckRunUpdate {
            completed_at: Some(DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap()),
            conclusion: Some(CheckRunConclusion::TimedOut),
            actions: Some(vec![]),
            ..CheckRunUpdate::default()
        };
        assert_eq!(
            serde_json::to_value(update).unwrap(),
            serde_json::json!({
                "completed_at": "2023-11-14T22:13:20Z",
                "conclusion": "timed_out",
                "actions": [],
            })
        );
        assert_eq!(
            serde_json::to_value(Reaction::PlusOne).unwrap(),
            serde_json::json!("+1")
        );
    }
}
