//! Everything the fake GitHub knows, in one plain value guarded by one lock.
//!
//! Tests read it through [`crate::RunningSim::snapshot`] and
//! [`crate::RunningSim::wait_for`]; the query helpers here keep those
//! assertions short. Git data (branches, commits, files) is not copied here: it
//! is read from the bare repositories on demand, so it can never go stale.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::faults::FaultRule;

/// A repository permission level of an installation or token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }
}

/// App permissions by name (`checks`, `contents`, ...), as GitHub lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Permissions(pub BTreeMap<String, Access>);

impl Permissions {
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Access)>) -> Self {
        Self(
            entries
                .into_iter()
                .map(|(name, access)| (name.to_owned(), access))
                .collect(),
        )
    }

    /// bg-agent's App permissions: checks/contents/issues/pull_requests write, metadata read.
    pub fn bg_agent() -> Self {
        Self::new([
            ("checks", Access::Write),
            ("contents", Access::Write),
            ("issues", Access::Write),
            ("metadata", Access::Read),
            ("pull_requests", Access::Write),
        ])
    }

    /// True when `name` is granted at `access` or higher. `metadata: read` is
    /// implied by any grant, as on GitHub.
    pub fn allows(&self, name: &str, access: Access) -> bool {
        if name == "metadata" && access == Access::Read {
            return true;
        }
        self.0.get(name).is_some_and(|granted| *granted >= access)
    }

    /// True when every entry of `self` is allowed by `other`.
    pub fn is_subset_of(&self, other: &Permissions) -> bool {
        self.0
            .iter()
            .all(|(name, access)| other.allows(name, *access))
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(name, access)| (name.clone(), Value::from(access.as_str())))
                .collect(),
        )
    }
}

/// A collaborator's role on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Maintain,
    Write,
    Triage,
    Read,
}

impl Role {
    /// The legacy base permission GitHub reports: maintain → write, triage → read.
    pub fn permission(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Maintain | Self::Write => "write",
            Self::Triage | Self::Read => "read",
        }
    }

    pub fn role_name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Maintain => "maintain",
            Self::Write => "write",
            Self::Triage => "triage",
            Self::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "maintain" => Some(Self::Maintain),
            "write" => Some(Self::Write),
            "triage" => Some(Self::Triage),
            "read" => Some(Self::Read),
            _ => None,
        }
    }
}

/// What kind of account a login is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AccountKind {
    User,
    Organization,
    Bot,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Organization => "Organization",
            Self::Bot => "Bot",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AppRecord {
    pub id: u64,
    pub slug: String,
    pub name: String,
    pub client_id: String,
    pub description: String,
    pub owner_login: String,
    pub external_url: String,
    pub permissions: Permissions,
    pub events: Vec<String>,
    pub hook_id: u64,
    pub created_at: DateTime<Utc>,
}

impl AppRecord {
    /// The App's bot user, e.g. `bg-agent[bot]`.
    pub fn bot_login(&self) -> String {
        format!("{}[bot]", self.slug)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserRecord {
    pub id: u64,
    pub login: String,
    pub kind: AccountKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallationRecord {
    pub id: u64,
    pub account_login: String,
    pub repository_ids: BTreeSet<u64>,
    pub permissions: Permissions,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepoRecord {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub installation_id: Option<u64>,
    pub private: bool,
    pub default_branch: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub pushed_at: DateTime<Utc>,
    pub collaborators: BTreeMap<String, Role>,
    /// Issues and pull requests share one number sequence per repository.
    pub next_number: u64,
    /// The bare repository served over smart HTTP.
    pub git_dir: PathBuf,
}

impl RepoRecord {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueState {
    Open,
    Closed,
}

impl IssueState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// An issue, or the issue half of a pull request (title, body, state, labels).
#[derive(Debug, Clone, Serialize)]
pub struct IssueRecord {
    pub id: u64,
    pub repo_id: u64,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub author: String,
    pub state: IssueState,
    pub labels: Vec<String>,
    pub is_pull_request: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommentRecord {
    pub id: u64,
    pub repo_id: u64,
    pub issue_number: u64,
    pub author: String,
    pub body: String,
    /// Earlier bodies, oldest first, one per edit.
    pub previous_bodies: Vec<String>,
    /// Posted with an installation token (so `performed_via_github_app` is set).
    pub via_app: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReactionRecord {
    pub id: u64,
    pub comment_id: u64,
    pub user: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelRecord {
    pub id: u64,
    pub repo_id: u64,
    pub name: String,
    pub color: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckOutput {
    pub title: Option<String>,
    pub summary: Option<String>,
    pub text: Option<String>,
    /// Every annotation ever sent; updates append, as on GitHub.
    pub annotations: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

/// One create or update of a check run: the request as sent and the run after it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRunRevision {
    pub at: DateTime<Utc>,
    /// `create` or `update`.
    pub operation: &'static str,
    pub request: Value,
    pub status: String,
    pub conclusion: Option<String>,
    pub output: CheckOutput,
    pub actions: Vec<CheckAction>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRunRecord {
    pub id: u64,
    pub repo_id: u64,
    pub check_suite_id: u64,
    pub name: String,
    pub head_sha: String,
    pub external_id: Option<String>,
    pub details_url: Option<String>,
    pub status: String,
    pub conclusion: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub output: CheckOutput,
    pub actions: Vec<CheckAction>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<CheckRunRevision>,
}

/// The pull-request half of a pull request (its issue holds title, body, state).
#[derive(Debug, Clone, Serialize)]
pub struct PullRecord {
    pub id: u64,
    pub repo_id: u64,
    pub number: u64,
    pub head_ref: String,
    /// The head commit when the pull request was opened (used once the branch is gone).
    pub head_sha: String,
    pub base_ref: String,
    pub draft: bool,
    pub maintainer_can_modify: bool,
    pub merged_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<u64>,
    pub repository_id: Option<u64>,
    pub redelivery: bool,
    pub delivered_at: DateTime<Utc>,
    pub duration_secs: f64,
    /// The receiver's status, or 0 when nothing was sent (no URL, or unreachable).
    pub status_code: u16,
    /// GitHub's wording: `OK`, `Invalid HTTP Response: 500`, ...
    pub status: String,
    pub url: Option<String>,
    pub request_headers: BTreeMap<String, String>,
    pub payload: Value,
    pub response_body: String,
}

/// How a request authenticated itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Credential {
    Anonymous,
    AppJwt,
    InstallationToken {
        installation_id: u64,
    },
    /// A user-to-server token from sign-in.
    UserToken {
        user_id: u64,
    },
    /// Something was presented but not accepted (bad JWT, unknown or expired token).
    Rejected,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// How long the sim took to answer.
    pub duration_secs: f64,
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    pub status: u16,
    pub credential: Credential,
    /// What the installation token allowed, for installation-token requests.
    pub token_scope: Option<TokenScope>,
    /// Set when an injected fault answered (or delayed) the request.
    pub fault: Option<String>,
}

/// The scope of the installation token a request used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenScope {
    /// `None`: every repository of the installation.
    pub repository_ids: Option<Vec<u64>>,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ViolationKind {
    /// A request body the client sent does not match GitHub's schema.
    Request,
    /// A response the fake built does not match GitHub's schema (a fake bug).
    Response,
    /// A webhook payload the fake built does not match GitHub's schema (a fake bug).
    Webhook,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationRecord {
    pub kind: ViolationKind,
    pub method: String,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ViolationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} violation on {} {}: {}",
            self.kind, self.method, self.path, self.message
        )
    }
}

/// Requests in flight for one installation, now and at most.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct InFlight {
    pub current: usize,
    pub max: usize,
}

/// What an installation token may do.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The token itself (the fake's tokens are test data).
    pub token: String,
    pub installation_id: u64,
    /// `None`: every repository of the installation.
    pub repository_ids: Option<BTreeSet<u64>>,
    pub permissions: Permissions,
    pub expires_at: DateTime<Utc>,
}

impl TokenGrant {
    pub fn covers_repo(&self, repo: &RepoRecord) -> bool {
        repo.installation_id == Some(self.installation_id)
            && self
                .repository_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&repo.id))
    }
}

/// An installation token revoked with `DELETE /installation/token`; it opens nothing since.
#[derive(Debug, Clone, Serialize)]
pub struct RevokedToken {
    /// The token itself (the fake's tokens are test data).
    pub token: String,
    pub installation_id: u64,
    /// `None`: every repository of the installation.
    pub repository_ids: Option<Vec<u64>>,
    pub at: DateTime<Utc>,
}

/// Next ids per kind, starting where the fixtures' world does.
#[derive(Debug, Clone, Serialize)]
pub struct IdCounters {
    pub user: u64,
    pub installation: u64,
    pub repo: u64,
    pub issue: u64,
    pub pull: u64,
    pub comment: u64,
    pub reaction: u64,
    pub label: u64,
    pub check_run: u64,
    pub check_suite: u64,
    pub delivery: u64,
}

impl Default for IdCounters {
    fn default() -> Self {
        Self {
            user: 600_101,
            installation: 4_200_101,
            repo: 700_101,
            issue: 3_300_101,
            pull: 3_400_101,
            comment: 900_001,
            reaction: 1_000_001,
            label: 8_100_001,
            check_run: 800_001,
            check_suite: 850_001,
            delivery: 12_000_000_001,
        }
    }
}

fn take(counter: &mut u64) -> u64 {
    let id = *counter;
    *counter += 1;
    id
}

impl IdCounters {
    pub fn next_user(&mut self) -> u64 {
        take(&mut self.user)
    }
    pub fn next_installation(&mut self) -> u64 {
        take(&mut self.installation)
    }
    pub fn next_repo(&mut self) -> u64 {
        take(&mut self.repo)
    }
    pub fn next_issue(&mut self) -> u64 {
        take(&mut self.issue)
    }
    pub fn next_pull(&mut self) -> u64 {
        take(&mut self.pull)
    }
    pub fn next_comment(&mut self) -> u64 {
        take(&mut self.comment)
    }
    pub fn next_reaction(&mut self) -> u64 {
        take(&mut self.reaction)
    }
    pub fn next_label(&mut self) -> u64 {
        take(&mut self.label)
    }
    pub fn next_check_run(&mut self) -> u64 {
        take(&mut self.check_run)
    }
    pub fn next_check_suite(&mut self) -> u64 {
        take(&mut self.check_suite)
    }
    pub fn next_delivery(&mut self) -> u64 {
        take(&mut self.delivery)
    }
}

/// The whole state of the fake GitHub.
#[derive(Debug, Clone, Serialize)]
pub struct SimState {
    pub app: AppRecord,
    pub users: BTreeMap<String, UserRecord>,
    /// Organization login → member logins (drives `author_association`).
    pub org_members: BTreeMap<String, BTreeSet<String>>,
    pub installations: BTreeMap<u64, InstallationRecord>,
    pub repos: BTreeMap<u64, RepoRecord>,
    pub issues: Vec<IssueRecord>,
    pub comments: Vec<CommentRecord>,
    pub reactions: Vec<ReactionRecord>,
    pub labels: Vec<LabelRecord>,
    pub check_runs: Vec<CheckRunRecord>,
    pub pulls: Vec<PullRecord>,
    pub deliveries: Vec<DeliveryRecord>,
    pub requests: Vec<RequestRecord>,
    pub violations: Vec<ViolationRecord>,
    /// Per installation id.
    pub in_flight: BTreeMap<u64, InFlight>,
    /// Successful `git push`es per repository id.
    pub pushes: BTreeMap<u64, usize>,
    /// Tokens revoked by their holders, oldest first.
    pub revoked_tokens: Vec<RevokedToken>,
    #[serde(with = "duration_secs")]
    pub token_lifetime: Duration,
    pub ids: IdCounters,
    #[serde(skip)]
    pub(crate) tokens: HashMap<String, TokenGrant>,
    #[serde(skip)]
    pub(crate) faults: Vec<FaultRule>,
    /// Sign-in with GitHub: who approves, codes given out, user tokens.
    #[serde(skip)]
    pub(crate) oauth: super::oauth::OAuthState,
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(
        value: &std::time::Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }
}

impl SimState {
    pub(crate) fn new(app: AppRecord, token_lifetime: Duration) -> Self {
        Self {
            app,
            users: BTreeMap::new(),
            org_members: BTreeMap::new(),
            installations: BTreeMap::new(),
            repos: BTreeMap::new(),
            issues: Vec::new(),
            comments: Vec::new(),
            reactions: Vec::new(),
            labels: Vec::new(),
            check_runs: Vec::new(),
            pulls: Vec::new(),
            deliveries: Vec::new(),
            requests: Vec::new(),
            violations: Vec::new(),
            in_flight: BTreeMap::new(),
            pushes: BTreeMap::new(),
            revoked_tokens: Vec::new(),
            token_lifetime,
            ids: IdCounters::default(),
            tokens: HashMap::new(),
            faults: Vec::new(),
            oauth: Default::default(),
        }
    }

    /// The repository `owner/name` (case-insensitive, as on GitHub).
    pub fn repo(&self, full_name: &str) -> Option<&RepoRecord> {
        let (owner, name) = full_name.split_once('/')?;
        self.repo_by_name(owner, name)
    }

    pub fn repo_by_name(&self, owner: &str, name: &str) -> Option<&RepoRecord> {
        self.repos
            .values()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    fn repo_id(&self, full_name: &str) -> Option<u64> {
        self.repo(full_name).map(|r| r.id)
    }

    pub fn user(&self, login: &str) -> Option<&UserRecord> {
        self.users
            .values()
            .find(|u| u.login.eq_ignore_ascii_case(login))
    }

    pub fn issue(&self, full_name: &str, number: u64) -> Option<&IssueRecord> {
        let repo_id = self.repo_id(full_name)?;
        self.issues
            .iter()
            .find(|i| i.repo_id == repo_id && i.number == number)
    }

    /// Comments on an issue or pull request, oldest first.
    pub fn comments_on(&self, full_name: &str, number: u64) -> Vec<&CommentRecord> {
        let Some(repo_id) = self.repo_id(full_name) else {
            return Vec::new();
        };
        self.comments
            .iter()
            .filter(|c| c.repo_id == repo_id && c.issue_number == number)
            .collect()
    }

    pub fn comment(&self, id: u64) -> Option<&CommentRecord> {
        self.comments.iter().find(|c| c.id == id)
    }

    pub fn reactions_on(&self, comment_id: u64) -> Vec<&ReactionRecord> {
        self.reactions
            .iter()
            .filter(|r| r.comment_id == comment_id)
            .collect()
    }

    /// Label names on an issue or pull request.
    pub fn labels_on(&self, full_name: &str, number: u64) -> Vec<String> {
        self.issue(full_name, number)
            .map(|i| i.labels.clone())
            .unwrap_or_default()
    }

    pub fn check_run(&self, id: u64) -> Option<&CheckRunRecord> {
        self.check_runs.iter().find(|c| c.id == id)
    }

    pub fn check_runs_in(&self, full_name: &str) -> Vec<&CheckRunRecord> {
        let Some(repo_id) = self.repo_id(full_name) else {
            return Vec::new();
        };
        self.check_runs
            .iter()
            .filter(|c| c.repo_id == repo_id)
            .collect()
    }

    pub fn pulls_in(&self, full_name: &str) -> Vec<&PullRecord> {
        let Some(repo_id) = self.repo_id(full_name) else {
            return Vec::new();
        };
        self.pulls.iter().filter(|p| p.repo_id == repo_id).collect()
    }

    /// The most requests one installation ever had in flight at once.
    pub fn max_in_flight(&self, installation_id: u64) -> usize {
        self.in_flight
            .get(&installation_id)
            .map(|f| f.max)
            .unwrap_or(0)
    }

    /// Requests whose method matches and whose path (without query) starts with `prefix`.
    pub fn requests_to(&self, method: &str, prefix: &str) -> Vec<&RequestRecord> {
        self.requests
            .iter()
            .filter(|r| {
                r.method.eq_ignore_ascii_case(method)
                    && r.path
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .starts_with(prefix)
            })
            .collect()
    }

    pub fn delivery(&self, id: u64) -> Option<&DeliveryRecord> {
        self.deliveries.iter().find(|d| d.id == id)
    }

    /// `author_association` of `login` on a repository.
    pub fn author_association(&self, repo: &RepoRecord, login: &str) -> &'static str {
        if login.eq_ignore_ascii_case(&repo.owner) {
            "OWNER"
        } else if self
            .org_members
            .get(&repo.owner)
            .is_some_and(|members| members.contains(login))
        {
            "MEMBER"
        } else if repo.collaborators.contains_key(login) {
            "COLLABORATOR"
        } else {
            "NONE"
        }
    }
}
