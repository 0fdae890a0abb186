//! Webhook payload → typed [`Trigger`]. Pure: takes the event name and raw body.
//!
//! Payload structs name only the fields we use; everything else GitHub sends is ignored,
//! so additions on GitHub's side cannot break decoding.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use bg_agent_core::command::{self, Command};

/// What the decoder needs to know about the app itself (to ignore its own comments).
#[derive(Debug, Clone, Default)]
pub struct DecodeContext {
    pub app_id: Option<i64>,
    pub app_slug: String,
}

/// The result of decoding one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Trigger(Box<Trigger>),
    /// A valid delivery we do not act on, and why.
    Ignored(String),
    /// A payload that does not have the shape its event promises, and why.
    Malformed(String),
}

/// Something a delivery asks the app to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// `issue_comment.created` with a `/bg-agent` line.
    Command(CommandTrigger),
    /// `issues.labeled` with `bg-agent` or `bg-agent:<template>`.
    Label(LabelTrigger),
    /// `check_run.rerequested` (the UI's "Re-run").
    CheckRunRerequested(CheckRunTrigger),
    /// `check_run.requested_action` with one of our action identifiers.
    CheckRunAction {
        #[serde(flatten)]
        check_run: CheckRunTrigger,
        action: CheckRunButton,
    },
    /// `installation.*` and `installation_repositories.*`.
    Installation(InstallationChange),
    /// `pull_request.closed` (merged or not) and `pull_request.reopened`: what became of
    /// a pull request, recorded on the task that opened it, if one did.
    PullRequest(PullRequestChange),
    Ping {
        hook_id: Option<i64>,
        zen: Option<String>,
    },
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Command(_) => "command",
            Self::Label(_) => "label",
            Self::CheckRunRerequested(_) => "check_run_rerequested",
            Self::CheckRunAction { .. } => "check_run_action",
            Self::Installation(_) => "installation",
            Self::PullRequest(_) => "pull_request",
            Self::Ping { .. } => "ping",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRef {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub full_name: String,
    pub default_branch: Option<String>,
    pub clone_url: Option<String>,
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: i64,
    pub login: String,
}

/// The command as parsed; a malformed one carries the reply to post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ParsedCommand {
    Valid { command: Command },
    Invalid { error: String, reply: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandTrigger {
    pub installation_id: i64,
    pub repository: RepoRef,
    pub issue_number: i64,
    pub is_pull_request: bool,
    pub comment_id: i64,
    pub comment_url: String,
    pub sender: Actor,
    pub command: ParsedCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelTrigger {
    pub installation_id: i64,
    pub repository: RepoRef,
    pub issue_number: i64,
    pub issue_title: String,
    pub issue_body: String,
    /// Who wrote the issue (its text becomes the instructions); `None` if GitHub did not
    /// say.
    pub issue_author: Option<Actor>,
    pub issue_created_at: Option<DateTime<Utc>>,
    pub issue_updated_at: Option<DateTime<Utc>>,
    pub label: String,
    /// `Some` for `bg-agent:<template>`.
    pub template: Option<String>,
    pub sender: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRunTrigger {
    pub installation_id: i64,
    pub repository: RepoRef,
    pub check_run_id: i64,
    /// Our task id, as we set it when creating the run.
    pub external_id: Option<String>,
    pub head_sha: String,
    pub sender: Actor,
}

/// Identifiers of the buttons we put on check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckRunButton {
    Retry,
    Cancel,
}

impl CheckRunButton {
    pub fn identifier(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Cancel => "cancel",
        }
    }

    fn from_identifier(identifier: &str) -> Option<Self> {
        [Self::Retry, Self::Cancel]
            .into_iter()
            .find(|a| a.identifier() == identifier)
    }
}

/// A pull request closed, merged or reopened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestChange {
    pub installation_id: i64,
    pub repository_id: i64,
    pub repository: String,
    pub number: i64,
    pub state: bg_agent_core::task::PrState,
    /// The pull request's `updated_at`, to order deliveries processed out of order.
    pub updated_at: Option<DateTime<Utc>>,
    pub sender: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationAccountRef {
    pub installation_id: i64,
    pub account_id: i64,
    pub account_login: String,
    pub account_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRepo {
    pub id: i64,
    pub full_name: String,
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum InstallationChange {
    Created {
        account: InstallationAccountRef,
        repositories: Vec<InstalledRepo>,
    },
    Deleted {
        account: InstallationAccountRef,
    },
    Suspended {
        account: InstallationAccountRef,
    },
    Unsuspended {
        account: InstallationAccountRef,
    },
    /// Seen again (e.g. new permissions accepted): make sure it is recorded.
    Seen {
        account: InstallationAccountRef,
    },
    RepositoriesAdded {
        account: InstallationAccountRef,
        added: Vec<InstalledRepo>,
    },
    RepositoriesRemoved {
        account: InstallationAccountRef,
        removed: Vec<InstalledRepo>,
    },
}

/// Top-level facts of a payload, stored beside the raw body for listing and routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub action: Option<String>,
    pub installation_id: Option<i64>,
}

/// Decodes one delivery. Never panics; a payload of the wrong shape is `Malformed`.
pub fn decode(event: &str, body: &[u8], ctx: &DecodeContext) -> Decoded {
    decode_delivery(event, body, ctx).1
}

/// Like [`decode`], also returning the payload's [`Envelope`], from the same single parse
/// (payloads are tens of KB: parsing them is most of a worker's CPU time).
pub fn decode_delivery(event: &str, body: &[u8], ctx: &DecodeContext) -> (Envelope, Decoded) {
    let mut envelope = Envelope::default();
    let result = match event {
        "issue_comment" => decode_issue_comment(body, ctx, &mut envelope),
        "issues" => decode_issues(body, &mut envelope),
        "check_run" => decode_check_run(body, ctx, &mut envelope),
        "installation" => decode_installation(body, &mut envelope),
        "installation_repositories" => decode_installation_repositories(body, &mut envelope),
        "pull_request" => decode_pull_request(body, &mut envelope),
        "ping" => parse::<payload::Ping>(body).map(|p| {
            trigger(Trigger::Ping {
                hook_id: p.hook_id,
                zen: p.zen,
            })
        }),
        other => parse::<payload::Envelope>(body).map(|p| {
            envelope = p.into();
            Decoded::Ignored(format!("`{other}` events are not used"))
        }),
    };
    (envelope, result.unwrap_or_else(Decoded::Malformed))
}

fn trigger(trigger: Trigger) -> Decoded {
    Decoded::Trigger(Box::new(trigger))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            format!("body is not a JSON object: {e}")
        } else {
            format!("payload does not match the event: {e}")
        }
    })
}

fn envelope_of(action: &str, installation_id: Option<i64>) -> Envelope {
    Envelope {
        action: Some(action.to_owned()),
        installation_id,
    }
}

fn ignored_action(event: &str, action: &str) -> Result<Decoded, String> {
    Ok(Decoded::Ignored(format!("`{event}.{action}` is not used")))
}

fn installation_id(installation: Option<payload::InstallationId>) -> Result<i64, String> {
    installation
        .map(|i| i.id)
        .ok_or_else(|| "payload has no `installation`: not delivered to a GitHub App".to_owned())
}

fn decode_issue_comment(
    body: &[u8],
    ctx: &DecodeContext,
    envelope: &mut Envelope,
) -> Result<Decoded, String> {
    let p: payload::IssueComment = parse(body)?;
    *envelope = envelope_of(&p.action, p.installation.as_ref().map(|i| i.id));
    if p.action != "created" {
        return ignored_action("issue_comment", &p.action);
    }
    let from_this_app = ctx.app_id.is_some()
        && p.comment.performed_via_github_app.as_ref().map(|a| a.id) == ctx.app_id;
    let bot_login = format!("{}[bot]", ctx.app_slug);
    if from_this_app || p.comment.user.login == bot_login || p.sender.login == bot_login {
        return Ok(Decoded::Ignored("comment made by this app".into()));
    }
    if p.comment.user.kind == "Bot" || p.sender.kind == "Bot" {
        return Ok(Decoded::Ignored("comment made by a bot".into()));
    }
    let Some(parsed) = command::parse_comment(p.comment.body.as_deref().unwrap_or_default()) else {
        return Ok(Decoded::Ignored("comment has no /bg-agent command".into()));
    };
    let command = match parsed {
        Ok(command) => ParsedCommand::Valid { command },
        Err(e) => ParsedCommand::Invalid {
            error: e.to_string(),
            reply: e.render_markdown(),
        },
    };
    Ok(trigger(Trigger::Command(CommandTrigger {
        installation_id: installation_id(p.installation)?,
        repository: p.repository.into(),
        issue_number: p.issue.number,
        is_pull_request: p.issue.pull_request.is_some(),
        comment_id: p.comment.id,
        comment_url: p.comment.html_url,
        sender: p.sender.into(),
        command,
    })))
}

fn decode_issues(body: &[u8], envelope: &mut Envelope) -> Result<Decoded, String> {
    let p: payload::Issues = parse(body)?;
    *envelope = envelope_of(&p.action, p.installation.as_ref().map(|i| i.id));
    if p.action != "labeled" {
        return ignored_action("issues", &p.action);
    }
    let Some(label) = p.label else {
        return Err("`issues.labeled` payload has no `label`".into());
    };
    let template = match label.name.as_str() {
        "bg-agent" => None,
        name => match name.strip_prefix("bg-agent:") {
            Some(template) if !template.trim().is_empty() => Some(template.trim().to_owned()),
            _ => {
                return Ok(Decoded::Ignored(format!(
                    "label `{name}` is not `bg-agent` or `bg-agent:<template>`"
                )));
            }
        },
    };
    if p.sender.kind == "Bot" {
        return Ok(Decoded::Ignored("label added by a bot".into()));
    }
    Ok(trigger(Trigger::Label(LabelTrigger {
        installation_id: installation_id(p.installation)?,
        repository: p.repository.into(),
        issue_number: p.issue.number,
        issue_title: p.issue.title,
        issue_body: p.issue.body.unwrap_or_default(),
        issue_author: p.issue.user.map(Into::into),
        issue_created_at: p.issue.created_at,
        issue_updated_at: p.issue.updated_at,
        label: label.name,
        template,
        sender: p.sender.into(),
    })))
}

fn decode_check_run(
    body: &[u8],
    ctx: &DecodeContext,
    envelope: &mut Envelope,
) -> Result<Decoded, String> {
    let p: payload::CheckRun = parse(body)?;
    *envelope = envelope_of(&p.action, p.installation.as_ref().map(|i| i.id));
    if p.action != "rerequested" && p.action != "requested_action" {
        return ignored_action("check_run", &p.action);
    }
    if let (Some(ours), Some(app)) = (ctx.app_id, p.check_run.app.as_ref())
        && app.id != ours
    {
        return Ok(Decoded::Ignored(format!(
            "check run belongs to another app (id {})",
            app.id
        )));
    }
    let check_run = CheckRunTrigger {
        installation_id: installation_id(p.installation)?,
        repository: p.repository.into(),
        check_run_id: p.check_run.id,
        external_id: p.check_run.external_id.filter(|id| !id.is_empty()),
        head_sha: p.check_run.head_sha,
        sender: p.sender.into(),
    };
    if p.action == "rerequested" {
        return Ok(trigger(Trigger::CheckRunRerequested(check_run)));
    }
    let Some(requested) = p.requested_action else {
        return Err("`check_run.requested_action` payload has no `requested_action`".into());
    };
    match CheckRunButton::from_identifier(&requested.identifier) {
        Some(action) => Ok(trigger(Trigger::CheckRunAction { check_run, action })),
        None => Ok(Decoded::Ignored(format!(
            "unknown check run action `{}`",
            requested.identifier
        ))),
    }
}

fn decode_pull_request(body: &[u8], envelope: &mut Envelope) -> Result<Decoded, String> {
    use bg_agent_core::task::PrState;
    let p: payload::PullRequestEvent = parse(body)?;
    *envelope = envelope_of(&p.action, p.installation.as_ref().map(|i| i.id));
    let state = match p.action.as_str() {
        // GitHub sends `closed` for both; `merged` tells them apart.
        "closed" if p.pull_request.merged == Some(true) || p.pull_request.merged_at.is_some() => {
            PrState::Merged
        }
        "closed" => PrState::Closed,
        "reopened" => PrState::Open,
        other => return ignored_action("pull_request", other),
    };
    Ok(trigger(Trigger::PullRequest(PullRequestChange {
        installation_id: installation_id(p.installation)?,
        repository_id: p.repository.id,
        repository: p.repository.full_name,
        number: p.pull_request.number,
        state,
        updated_at: p.pull_request.updated_at,
        sender: p.sender.into(),
    })))
}

fn decode_installation(body: &[u8], envelope: &mut Envelope) -> Result<Decoded, String> {
    let p: payload::Installation = parse(body)?;
    *envelope = envelope_of(&p.action, Some(p.installation.id));
    let account = p.installation.account_ref()?;
    let change = match p.action.as_str() {
        "created" => InstallationChange::Created {
            account,
            repositories: p
                .repositories
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        },
        "deleted" => InstallationChange::Deleted { account },
        "suspend" => InstallationChange::Suspended { account },
        "unsuspend" => InstallationChange::Unsuspended { account },
        "new_permissions_accepted" => InstallationChange::Seen { account },
        other => return ignored_action("installation", other),
    };
    Ok(trigger(Trigger::Installation(change)))
}

fn decode_installation_repositories(
    body: &[u8],
    envelope: &mut Envelope,
) -> Result<Decoded, String> {
    let p: payload::InstallationRepositories = parse(body)?;
    *envelope = envelope_of(&p.action, Some(p.installation.id));
    let account = p.installation.account_ref()?;
    let repos = |list: Vec<payload::ListedRepo>| list.into_iter().map(Into::into).collect();
    let change = match p.action.as_str() {
        "added" => InstallationChange::RepositoriesAdded {
            account,
            added: repos(p.repositories_added),
        },
        "removed" => InstallationChange::RepositoriesRemoved {
            account,
            removed: repos(p.repositories_removed),
        },
        other => return ignored_action("installation_repositories", other),
    };
    Ok(trigger(Trigger::Installation(change)))
}

/// The slices of GitHub's payloads that we read.
mod payload {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct InstallationId {
        pub id: i64,
    }

    #[derive(Deserialize)]
    pub struct User {
        pub id: i64,
        pub login: String,
        #[serde(rename = "type", default)]
        pub kind: String,
    }

    impl From<User> for super::Actor {
        fn from(u: User) -> Self {
            Self {
                id: u.id,
                login: u.login,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Repository {
        pub id: i64,
        pub name: String,
        pub full_name: String,
        pub owner: User,
        #[serde(default)]
        pub private: bool,
        pub default_branch: Option<String>,
        pub clone_url: Option<String>,
    }

    impl From<Repository> for super::RepoRef {
        fn from(r: Repository) -> Self {
            Self {
                id: r.id,
                owner: r.owner.login,
                name: r.name,
                full_name: r.full_name,
                default_branch: r.default_branch,
                clone_url: r.clone_url,
                private: r.private,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct App {
        pub id: i64,
    }

    #[derive(Deserialize)]
    pub struct Comment {
        pub id: i64,
        pub body: Option<String>,
        pub html_url: String,
        pub user: User,
        pub performed_via_github_app: Option<App>,
    }

    #[derive(Deserialize)]
    pub struct Issue {
        pub number: i64,
        pub title: String,
        pub body: Option<String>,
        pub user: Option<User>,
        pub created_at: Option<chrono::DateTime<chrono::Utc>>,
        pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Present (an object) when the issue is a pull request.
        pub pull_request: Option<serde::de::IgnoredAny>,
    }

    #[derive(Deserialize)]
    pub struct IssueComment {
        pub action: String,
        pub issue: Issue,
        pub comment: Comment,
        pub repository: Repository,
        pub sender: User,
        pub installation: Option<InstallationId>,
    }

    #[derive(Deserialize)]
    pub struct Label {
        pub name: String,
    }

    #[derive(Deserialize)]
    pub struct Issues {
        pub action: String,
        pub issue: Issue,
        pub label: Option<Label>,
        pub repository: Repository,
        pub sender: User,
        pub installation: Option<InstallationId>,
    }

    #[derive(Deserialize)]
    pub struct CheckRunBody {
        pub id: i64,
        pub head_sha: String,
        pub external_id: Option<String>,
        pub app: Option<App>,
    }

    #[derive(Deserialize)]
    pub struct RequestedAction {
        pub identifier: String,
    }

    #[derive(Deserialize)]
    pub struct CheckRun {
        pub action: String,
        pub check_run: CheckRunBody,
        pub requested_action: Option<RequestedAction>,
        pub repository: Repository,
        pub sender: User,
        pub installation: Option<InstallationId>,
    }

    #[derive(Deserialize)]
    pub struct PullRequestBody {
        pub number: i64,
        pub merged: Option<bool>,
        pub merged_at: Option<chrono::DateTime<chrono::Utc>>,
        pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    }

    #[derive(Deserialize)]
    pub struct PullRequestEvent {
        pub action: String,
        pub pull_request: PullRequestBody,
        pub repository: Repository,
        pub sender: User,
        pub installation: Option<InstallationId>,
    }

    #[derive(Deserialize)]
    pub struct Account {
        pub id: i64,
        pub login: Option<String>,
        /// Enterprise accounts have a slug instead of a login.
        pub slug: Option<String>,
        #[serde(rename = "type")]
        pub kind: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct InstallationBody {
        pub id: i64,
        pub account: Option<Account>,
    }

    impl InstallationBody {
        pub fn account_ref(self) -> Result<super::InstallationAccountRef, String> {
            let account = self
                .account
                .ok_or_else(|| "installation has no `account`".to_owned())?;
            Ok(super::InstallationAccountRef {
                installation_id: self.id,
                account_id: account.id,
                account_login: account
                    .login
                    .or(account.slug)
                    .ok_or_else(|| "installation account has no `login`".to_owned())?,
                account_type: account.kind.unwrap_or_else(|| "Enterprise".into()),
            })
        }
    }

    #[derive(Deserialize)]
    pub struct ListedRepo {
        pub id: i64,
        pub full_name: String,
        #[serde(default)]
        pub private: bool,
    }

    impl From<ListedRepo> for super::InstalledRepo {
        fn from(r: ListedRepo) -> Self {
            Self {
                id: r.id,
                full_name: r.full_name,
                private: r.private,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Installation {
        pub action: String,
        pub installation: InstallationBody,
        pub repositories: Option<Vec<ListedRepo>>,
    }

    #[derive(Deserialize)]
    pub struct InstallationRepositories {
        pub action: String,
        pub installation: InstallationBody,
        #[serde(default)]
        pub repositories_added: Vec<ListedRepo>,
        #[serde(default)]
        pub repositories_removed: Vec<ListedRepo>,
    }

    /// Any event: only the fields every payload may carry.
    #[derive(Deserialize)]
    pub struct Envelope {
        pub action: Option<String>,
        pub installation: Option<InstallationId>,
    }

    impl From<Envelope> for super::Envelope {
        fn from(e: Envelope) -> Self {
            Self {
                action: e.action,
                installation_id: e.installation.map(|i| i.id),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Ping {
        pub hook_id: Option<i64>,
        pub zen: Option<String>,
    }
}
