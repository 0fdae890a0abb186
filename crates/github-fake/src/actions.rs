//! What people (and GitHub itself) do outside the API: create accounts,
//! install the App, open issues, comment, label, click "Re-run". Each changes
//! the state and, where GitHub would, sends the matching webhook. Used by the
//! test handle ([`super::RunningSim`]) and the `/_sim/` control API alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;

use super::hooks::{self, Outgoing};
use super::server::Shared;
use super::state::{
    AccountKind, CommentRecord, DeliveryRecord, InstallationRecord, IssueRecord, IssueState,
    RepoRecord, Role, SimState, UserRecord,
};
use super::{RepoHandle, SimError};

/// The result of an action that sent a webhook.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Triggered {
    /// The id of what was created or changed (comment, label, check run...), if any.
    pub id: Option<u64>,
    pub delivery: DeliveryRecord,
}

fn repo_id(state: &SimState, full_name: &str) -> Result<u64, SimError> {
    state
        .repo(full_name)
        .map(|r| r.id)
        .ok_or_else(|| SimError::UnknownRepository(full_name.to_owned()))
}

fn known_user(state: &SimState, login: &str) -> Result<String, SimError> {
    state
        .user(login)
        .map(|u| u.login.clone())
        .ok_or_else(|| SimError::UnknownUser(login.to_owned()))
}

/// Adds an account (or returns the existing one's id); `id` fixes its id.
pub(crate) fn add_account(shared: &Shared, login: &str, kind: AccountKind, id: Option<u64>) -> u64 {
    shared.mutate(|s| insert_account(s, login, kind, id))
}

pub(crate) fn insert_account(
    s: &mut SimState,
    login: &str,
    kind: AccountKind,
    id: Option<u64>,
) -> u64 {
    if let Some(existing) = s.user(login) {
        return existing.id;
    }
    let id = id.unwrap_or_else(|| s.ids.next_user());
    s.users.insert(
        login.to_owned(),
        UserRecord {
            id,
            login: login.to_owned(),
            kind,
        },
    );
    id
}

pub(crate) fn add_org_member(shared: &Shared, org: &str, login: &str) -> Result<(), SimError> {
    shared.mutate(|s| {
        let login = known_user(s, login)?;
        insert_account(s, org, AccountKind::Organization, None);
        s.org_members
            .entry(org.to_owned())
            .or_default()
            .insert(login);
        Ok(())
    })
}

/// Installs the App on `account_login` (created as an organization if unknown).
pub(crate) fn add_installation(shared: &Shared, account_login: &str, id: Option<u64>) -> u64 {
    shared.mutate(|s| {
        insert_account(s, account_login, AccountKind::Organization, None);
        let id = id.unwrap_or_else(|| s.ids.next_installation());
        let installation = InstallationRecord {
            id,
            account_login: account_login.to_owned(),
            repository_ids: Default::default(),
            permissions: s.app.permissions.clone(),
            events: s.app.events.clone(),
            created_at: Utc::now(),
        };
        s.installations.insert(id, installation);
        id
    })
}

/// How to create a repository.
pub(crate) struct RepoSpec<'a> {
    pub installation_id: Option<u64>,
    pub owner: &'a str,
    pub name: &'a str,
    pub id: Option<u64>,
    pub description: Option<&'a str>,
    pub files: &'a [(&'a str, &'a [u8])],
}

/// Creates a repository: a real bare git repository whose `main` holds `files`.
pub(crate) async fn add_repository(
    shared: &Arc<Shared>,
    spec: RepoSpec<'_>,
) -> Result<RepoHandle, SimError> {
    let valid_name = |text: &str| {
        !text.is_empty()
            && !text.starts_with('.')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !valid_name(spec.owner) || !valid_name(spec.name) || spec.name.ends_with(".git") {
        return Err(SimError::Invalid(format!(
            "invalid repository name {}/{}",
            spec.owner, spec.name
        )));
    }
    shared.read(|s| {
        if s.repo_by_name(spec.owner, spec.name).is_some() {
            return Err(SimError::Invalid(format!(
                "{}/{} already exists",
                spec.owner, spec.name
            )));
        }
        match spec.installation_id {
            Some(id) if !s.installations.contains_key(&id) => {
                Err(SimError::UnknownInstallation(id))
            }
            _ => Ok(()),
        }
    })?;
    const DEFAULT_BRANCH: &str = "main";
    let git_dir = shared
        .git
        .init_repo(spec.owner, spec.name, DEFAULT_BRANCH, spec.files)
        .await?;
    let now = Utc::now();
    let id = shared.mutate(|s| {
        insert_account(s, spec.owner, AccountKind::Organization, None);
        let id = spec.id.unwrap_or_else(|| s.ids.next_repo());
        s.repos.insert(
            id,
            RepoRecord {
                id,
                owner: spec.owner.to_owned(),
                name: spec.name.to_owned(),
                installation_id: spec.installation_id,
                private: true,
                default_branch: DEFAULT_BRANCH.to_owned(),
                description: spec.description.map(str::to_owned),
                created_at: now,
                pushed_at: now,
                collaborators: BTreeMap::new(),
                next_number: 1,
                git_dir: git_dir.clone(),
            },
        );
        if let Some(installation) = spec
            .installation_id
            .and_then(|i| s.installations.get_mut(&i))
        {
            installation.repository_ids.insert(id);
        }
        id
    });
    Ok(RepoHandle {
        id,
        owner: spec.owner.to_owned(),
        name: spec.name.to_owned(),
        clone_url: format!("{}/{}/{}.git", shared.base_url, spec.owner, spec.name),
        git_dir,
    })
}

pub(crate) fn set_permission(
    shared: &Shared,
    repo: &str,
    login: &str,
    role: Option<Role>,
) -> Result<(), SimError> {
    shared.mutate(|s| {
        let login = known_user(s, login)?;
        let id = repo_id(s, repo)?;
        let record = s
            .repos
            .get_mut(&id)
            .ok_or_else(|| SimError::UnknownRepository(repo.to_owned()))?;
        match role {
            Some(role) => record.collaborators.insert(login, role),
            None => record.collaborators.remove(&login),
        };
        Ok(())
    })
}

/// Opens an issue (no webhook); returns its number. `number` fixes it.
pub(crate) fn create_issue(
    shared: &Shared,
    repo: &str,
    title: &str,
    body: Option<&str>,
    author: &str,
    number: Option<u64>,
) -> Result<u64, SimError> {
    shared.mutate(|s| {
        let author = known_user(s, author)?;
        let id = repo_id(s, repo)?;
        let record = s
            .repos
            .get_mut(&id)
            .ok_or_else(|| SimError::UnknownRepository(repo.to_owned()))?;
        let number = match number {
            Some(n) if n >= record.next_number => n,
            Some(n) => return Err(SimError::Invalid(format!("#{n} is taken in {repo}"))),
            None => record.next_number,
        };
        record.next_number = number + 1;
        let now = Utc::now();
        let issue_id = s.ids.next_issue();
        s.issues.push(IssueRecord {
            id: issue_id,
            repo_id: id,
            number,
            title: title.to_owned(),
            body: body.map(str::to_owned),
            author,
            state: IssueState::Open,
            labels: Vec::new(),
            is_pull_request: false,
            created_at: now,
            updated_at: now,
            closed_at: None,
        });
        Ok(number)
    })
}

/// Opens an issue and sends `issues.opened`.
pub(crate) async fn open_issue(
    shared: &Arc<Shared>,
    repo: &str,
    title: &str,
    body: Option<&str>,
    author: &str,
) -> Result<Triggered, SimError> {
    let number = create_issue(shared, repo, title, body, author, None)?;
    let repo_id = shared.read(|s| repo_id(s, repo))?;
    let outgoing = shared.render(|r| hooks::issues_opened(r, repo_id, number))?;
    send(shared, Some(number), outgoing).await
}

async fn send(
    shared: &Arc<Shared>,
    id: Option<u64>,
    outgoing: Outgoing,
) -> Result<Triggered, SimError> {
    let delivery = hooks::deliver(shared, outgoing).await?;
    Ok(Triggered { id, delivery })
}

/// `user` comments `body` on issue or pull request `number`; sends `issue_comment.created`.
pub(crate) async fn comment(
    shared: &Arc<Shared>,
    repo: &str,
    number: u64,
    user: &str,
    body: &str,
) -> Result<Triggered, SimError> {
    let comment = shared.mutate(|s| {
        let author = known_user(s, user)?;
        let repo_id = repo_id(s, repo)?;
        let now = Utc::now();
        let issue = s
            .issues
            .iter_mut()
            .find(|i| i.repo_id == repo_id && i.number == number)
            .ok_or(SimError::UnknownIssue(number))?;
        issue.updated_at = now;
        let comment = CommentRecord {
            id: s.ids.next_comment(),
            repo_id,
            issue_number: number,
            author,
            body: body.to_owned(),
            previous_bodies: Vec::new(),
            via_app: false,
            created_at: now,
            updated_at: now,
        };
        s.comments.push(comment.clone());
        Ok::<_, SimError>(comment)
    })?;
    let outgoing = shared.render(|r| hooks::issue_comment(r, &comment, None))?;
    send(shared, Some(comment.id), outgoing).await
}

/// Edits comment `id` (as its author); sends `issue_comment.edited`.
pub(crate) async fn edit_comment(
    shared: &Arc<Shared>,
    id: u64,
    body: &str,
) -> Result<Triggered, SimError> {
    let (comment, previous) = shared.mutate(|s| {
        let comment = s
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(SimError::UnknownComment(id))?;
        let previous = std::mem::replace(&mut comment.body, body.to_owned());
        comment.previous_bodies.push(previous.clone());
        comment.updated_at = Utc::now();
        Ok::<_, SimError>((comment.clone(), previous))
    })?;
    let outgoing = shared.render(|r| hooks::issue_comment(r, &comment, Some(&previous)))?;
    send(shared, Some(id), outgoing).await
}

/// `user` adds `label` to issue `number` (creating the label if needed); sends `issues.labeled`.
pub(crate) async fn label_issue(
    shared: &Arc<Shared>,
    repo: &str,
    number: u64,
    user: &str,
    label: &str,
) -> Result<Triggered, SimError> {
    let (repo_id, label_id, sender) = shared.mutate(|s| {
        let sender = known_user(s, user)?;
        let repo_id = repo_id(s, repo)?;
        let label_id = super::rest::ensure_label(s, repo_id, label, "ededed", None);
        let issue = s
            .issues
            .iter_mut()
            .find(|i| i.repo_id == repo_id && i.number == number)
            .ok_or(SimError::UnknownIssue(number))?;
        if !issue.labels.iter().any(|l| l == label) {
            issue.labels.push(label.to_owned());
        }
        issue.updated_at = Utc::now();
        Ok::<_, SimError>((repo_id, label_id, sender))
    })?;
    let outgoing =
        shared.render(|r| hooks::issues_labeled(r, repo_id, number, label_id, &sender))?;
    send(shared, Some(label_id), outgoing).await
}

/// `user` clicks "Re-run" on a check run; sends `check_run.rerequested`.
pub(crate) async fn rerequest_check_run(
    shared: &Arc<Shared>,
    id: u64,
    user: &str,
) -> Result<Triggered, SimError> {
    check_run_event(shared, id, user, None).await
}

/// `user` clicks the check run's button `identifier`; sends `check_run.requested_action`.
/// Only identifiers of the run's current actions can be clicked, as on GitHub.
pub(crate) async fn request_check_run_action(
    shared: &Arc<Shared>,
    id: u64,
    user: &str,
    identifier: &str,
) -> Result<Triggered, SimError> {
    check_run_event(shared, id, user, Some(identifier)).await
}

async fn check_run_event(
    shared: &Arc<Shared>,
    id: u64,
    user: &str,
    identifier: Option<&str>,
) -> Result<Triggered, SimError> {
    let sender = shared.read(|s| known_user(s, user))?;
    let outgoing = shared.render(|r| {
        let run = r.state.check_run(id).ok_or(SimError::UnknownCheckRun(id))?;
        if let Some(identifier) = identifier
            && !run.actions.iter().any(|a| a.identifier == identifier)
        {
            return Err(SimError::Invalid(format!(
                "check run {id} has no action {identifier:?}"
            )));
        }
        hooks::check_run(r, run, &sender, identifier)
    })?;
    send(shared, Some(id), outgoing).await
}

/// Sends `installation.created` for an existing installation, from `user`.
pub(crate) async fn installation_created(
    shared: &Arc<Shared>,
    installation_id: u64,
    user: &str,
) -> Result<Triggered, SimError> {
    let sender = shared.read(|s| known_user(s, user))?;
    let outgoing = shared.render(|r| hooks::installation_created(r, installation_id, &sender))?;
    send(shared, Some(installation_id), outgoing).await
}

/// Sends the App's `ping`.
pub(crate) async fn ping(shared: &Arc<Shared>) -> Result<Triggered, SimError> {
    let url = shared.webhook_url();
    let outgoing = shared.render(|r| hooks::ping(r, url.as_deref()));
    send(shared, None, outgoing).await
}
