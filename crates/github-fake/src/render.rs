//! GitHub's JSON for the fake's state: users, repositories, issues, check runs...
//!
//! One builder per kind of object, shared by REST responses and webhook
//! payloads. Each object carries what both GitHub's REST description and its
//! webhook schemas require (they differ a little), so it passes either check.
//! URLs point at the sim: API URLs at `{base}/...` like api.github.com, web
//! URLs at `{base}/{owner}/{repo}...` like github.com.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::git::{CommitInfo, TreeEntry};
use super::state::{
    AccountKind, CheckRunRecord, CommentRecord, DeliveryRecord, InstallationRecord, IssueRecord,
    LabelRecord, PullRecord, ReactionRecord, RepoRecord, SimState, UserRecord,
};

/// The reaction kinds GitHub knows, in its rollup order.
pub const REACTION_CONTENTS: [&str; 8] = [
    "+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket",
];

/// GitHub's documentation root, for `documentation_url`.
pub const DOCS: &str = "https://docs.github.com/rest";

/// `2025-06-02T09:05:12Z`, as GitHub writes times.
pub fn ts(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A current-format node id: `{prefix}_` + base64url(msgpack `[0, id]`).
pub fn node_id(prefix: &str, id: u64) -> String {
    let mut packed = vec![0x92, 0x00];
    // msgpack's smallest encoding of an unsigned integer.
    match id {
        0..=0x7f => packed.push(id as u8),
        0x80..=0xff => packed.extend([0xcc, id as u8]),
        0x100..=0xffff => {
            packed.push(0xcd);
            packed.extend((id as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            packed.push(0xce);
            packed.extend((id as u32).to_be_bytes());
        }
        _ => {
            packed.push(0xcf);
            packed.extend(id.to_be_bytes());
        }
    }
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(packed)
    )
}

/// A legacy node id (`MDM6QXBwMzEwMDAx` = base64 of `03:App310001`).
pub fn legacy_node_id(kind: &str, id: impl std::fmt::Display) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("0{}:{kind}{id}", kind.len()))
}

/// GitHub's error body.
pub fn error_body(message: &str) -> Value {
    json!({"message": message, "documentation_url": DOCS})
}

/// Builds JSON from the state, with URLs under `base`.
pub struct Render<'a> {
    pub base: &'a str,
    pub state: &'a SimState,
}

impl Render<'_> {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A `simple-user` for any account record.
    pub fn account(&self, user: &UserRecord) -> Value {
        let login = &user.login;
        let api = self.api(&format!("/users/{login}"));
        let prefix = match user.kind {
            AccountKind::User => "U",
            AccountKind::Organization => "O",
            AccountKind::Bot => "BOT",
        };
        json!({
            "login": login,
            "id": user.id,
            "node_id": node_id(prefix, user.id),
            "avatar_url": self.api(&format!("/avatars/u/{}?v=4", user.id)),
            "gravatar_id": "",
            "url": api,
            "html_url": self.api(&format!("/{login}")),
            "followers_url": format!("{api}/followers"),
            "following_url": format!("{api}/following{{/other_user}}"),
            "gists_url": format!("{api}/gists{{/gist_id}}"),
            "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{api}/subscriptions"),
            "organizations_url": format!("{api}/orgs"),
            "repos_url": format!("{api}/repos"),
            "events_url": format!("{api}/events{{/privacy}}"),
            "received_events_url": format!("{api}/received_events"),
            "type": user.kind.as_str(),
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    /// A `simple-user` by login; GitHub's `ghost` for accounts it does not know.
    pub fn user(&self, login: &str) -> Value {
        match self.state.user(login) {
            Some(user) => self.account(user),
            None => self.account(&UserRecord {
                id: 10137,
                login: "ghost".into(),
                kind: AccountKind::User,
            }),
        }
    }

    /// The webhook `organization` object.
    pub fn organization(&self, login: &str) -> Value {
        let id = self.state.user(login).map(|u| u.id).unwrap_or_default();
        let api = self.api(&format!("/orgs/{login}"));
        json!({
            "login": login,
            "id": id,
            "node_id": node_id("O", id),
            "url": api,
            "repos_url": format!("{api}/repos"),
            "events_url": format!("{api}/events"),
            "hooks_url": format!("{api}/hooks"),
            "issues_url": format!("{api}/issues"),
            "members_url": format!("{api}/members{{/member}}"),
            "public_members_url": format!("{api}/public_members{{/member}}"),
            "avatar_url": self.api(&format!("/avatars/u/{id}?v=4")),
            "description": null,
        })
    }

    /// The App (`integration`).
    pub fn app(&self) -> Value {
        let app = &self.state.app;
        json!({
            "id": app.id,
            "client_id": app.client_id,
            "slug": app.slug,
            "node_id": legacy_node_id("App", app.id),
            "owner": self.user(&app.owner_login),
            "name": app.name,
            "description": app.description,
            "external_url": app.external_url,
            "html_url": self.api(&format!("/apps/{}", app.slug)),
            "created_at": ts(app.created_at),
            "updated_at": ts(app.created_at),
            "permissions": app.permissions.to_json(),
            "events": app.events,
        })
    }

    pub fn installation(&self, installation: &InstallationRecord) -> Value {
        let app = &self.state.app;
        let mut account = self.user(&installation.account_login);
        // GitHub's description of `GET /app/installations` combines the
        // account's schemas with `allOf` (user *and* enterprise), so it also
        // requires the enterprise fields; they are harmless extras elsewhere.
        account["name"] = installation.account_login.clone().into();
        account["slug"] = installation.account_login.clone().into();
        account["created_at"] = ts(installation.created_at).into();
        account["updated_at"] = ts(installation.created_at).into();
        let target_type = account["type"].clone();
        let html_url = if target_type == "Organization" {
            self.api(&format!(
                "/organizations/{}/settings/installations/{}",
                installation.account_login, installation.id
            ))
        } else {
            self.api(&format!("/settings/installations/{}", installation.id))
        };
        json!({
            "id": installation.id,
            "client_id": app.client_id,
            "account": account.clone(),
            "repository_selection": "selected",
            "access_tokens_url": self.api(&format!("/app/installations/{}/access_tokens", installation.id)),
            "repositories_url": self.api("/installation/repositories"),
            "html_url": html_url,
            "app_id": app.id,
            "app_slug": app.slug,
            "target_id": account["id"].clone(),
            "target_type": target_type,
            "permissions": installation.permissions.to_json(),
            "events": installation.events,
            "created_at": ts(installation.created_at),
            "updated_at": ts(installation.created_at),
            "single_file_name": null,
            "has_multiple_single_files": false,
            "single_file_paths": [],
            "suspended_by": null,
            "suspended_at": null,
        })
    }

    /// `{"id", "node_id"}`, as webhook payloads carry the installation.
    pub fn installation_ref(&self, installation_id: u64) -> Value {
        json!({
            "id": installation_id,
            "node_id": legacy_node_id("IntegrationInstallation", installation_id),
        })
    }

    fn open_issue_count(&self, repo_id: u64) -> usize {
        self.state
            .issues
            .iter()
            .filter(|i| i.repo_id == repo_id && i.state == super::state::IssueState::Open)
            .count()
    }

    /// A repository, with what `full-repository`, `repository` and the webhook
    /// schemas require. `permissions` is the caller's view, when known.
    pub fn repository(&self, repo: &RepoRecord, permissions: Option<Value>) -> Value {
        let full_name = repo.full_name();
        let api = self.api(&format!("/repos/{full_name}"));
        let html = self.api(&format!("/{full_name}"));
        let open_issues = self.open_issue_count(repo.id);
        // Hypermedia URLs below the repository's API URL.
        const API_LINKS: [(&str, &str); 36] = [
            ("forks_url", "/forks"),
            ("keys_url", "/keys{/key_id}"),
            ("collaborators_url", "/collaborators{/collaborator}"),
            ("teams_url", "/teams"),
            ("hooks_url", "/hooks"),
            ("issue_events_url", "/issues/events{/number}"),
            ("events_url", "/events"),
            ("assignees_url", "/assignees{/user}"),
            ("branches_url", "/branches{/branch}"),
            ("tags_url", "/tags"),
            ("blobs_url", "/git/blobs{/sha}"),
            ("git_tags_url", "/git/tags{/sha}"),
            ("git_refs_url", "/git/refs{/sha}"),
            ("trees_url", "/git/trees{/sha}"),
            ("statuses_url", "/statuses/{sha}"),
            ("languages_url", "/languages"),
            ("stargazers_url", "/stargazers"),
            ("contributors_url", "/contributors"),
            ("subscribers_url", "/subscribers"),
            ("subscription_url", "/subscription"),
            ("commits_url", "/commits{/sha}"),
            ("git_commits_url", "/git/commits{/sha}"),
            ("comments_url", "/comments{/number}"),
            ("issue_comment_url", "/issues/comments{/number}"),
            ("contents_url", "/contents/{+path}"),
            ("compare_url", "/compare/{base}...{head}"),
            ("merges_url", "/merges"),
            ("archive_url", "/{archive_format}{/ref}"),
            ("downloads_url", "/downloads"),
            ("issues_url", "/issues{/number}"),
            ("pulls_url", "/pulls{/number}"),
            ("milestones_url", "/milestones{/number}"),
            (
                "notifications_url",
                "/notifications{?since,all,participating}",
            ),
            ("labels_url", "/labels{/name}"),
            ("releases_url", "/releases{/id}"),
            ("deployments_url", "/deployments"),
        ];
        let mut value = json!({
            "id": repo.id,
            "node_id": node_id("R", repo.id),
            "name": repo.name,
            "full_name": full_name,
            "private": repo.private,
            "owner": self.user(&repo.owner),
            "html_url": html,
            "description": repo.description,
            "fork": false,
            "url": api,
            "created_at": ts(repo.created_at),
            "updated_at": ts(repo.pushed_at),
            "pushed_at": ts(repo.pushed_at),
            "git_url": format!("{}.git", html.replacen("http", "git", 1)),
            "ssh_url": format!("git@{}:{full_name}.git", self.host()),
            "clone_url": format!("{html}.git"),
            "svn_url": html,
            "open_issues_count": open_issues,
            "open_issues": open_issues,
            "default_branch": repo.default_branch,
        });
        // Counters and flags of features the simulator does not have.
        let inert = json!({
            "homepage": null,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": null,
            "has_issues": true,
            "has_projects": true,
            "has_downloads": true,
            "has_wiki": false,
            "has_pages": false,
            "has_discussions": false,
            "forks_count": 0,
            "mirror_url": null,
            "archived": false,
            "disabled": false,
            "license": null,
            "allow_forking": false,
            "is_template": false,
            "web_commit_signoff_required": false,
            "topics": [],
            "visibility": if repo.private { "private" } else { "public" },
            "forks": 0,
            "watchers": 0,
            "network_count": 0,
            "subscribers_count": 0,
            "custom_properties": {},
        });
        if let (Value::Object(map), Value::Object(inert)) = (&mut value, inert) {
            map.extend(inert);
            for (key, suffix) in API_LINKS {
                map.insert(key.to_owned(), Value::from(format!("{api}{suffix}")));
            }
        }
        if let Some(permissions) = permissions {
            value["permissions"] = permissions;
        }
        value
    }

    fn host(&self) -> &str {
        self.base
            .split("://")
            .nth(1)
            .unwrap_or(self.base)
            .trim_end_matches('/')
    }

    pub fn label(&self, label: &LabelRecord) -> Value {
        let repo = self.state.repos.get(&label.repo_id);
        let full_name = repo.map(RepoRecord::full_name).unwrap_or_default();
        json!({
            "id": label.id,
            "node_id": node_id("LA", label.id),
            "url": self.api(&format!("/repos/{full_name}/labels/{}", encode_segment(&label.name))),
            "name": label.name,
            "color": label.color,
            "default": false,
            "description": label.description,
        })
    }

    fn labels_of(&self, issue: &IssueRecord) -> Vec<Value> {
        issue
            .labels
            .iter()
            .filter_map(|name| {
                self.state
                    .labels
                    .iter()
                    .find(|l| l.repo_id == issue.repo_id && &l.name == name)
            })
            .map(|label| self.label(label))
            .collect()
    }

    fn reaction_rollup(&self, url: String, comment_id: Option<u64>) -> Value {
        let reactions: Vec<&ReactionRecord> = match comment_id {
            Some(id) => self.state.reactions_on(id),
            None => Vec::new(),
        };
        let mut rollup = json!({"url": url, "total_count": reactions.len()});
        for content in REACTION_CONTENTS {
            rollup[content] = reactions
                .iter()
                .filter(|r| r.content == content)
                .count()
                .into();
        }
        rollup
    }

    pub fn issue(&self, issue: &IssueRecord) -> Value {
        let repo = self.state.repos.get(&issue.repo_id);
        let full_name = repo.map(RepoRecord::full_name).unwrap_or_default();
        let api = self.api(&format!("/repos/{full_name}/issues/{}", issue.number));
        let comments = self.state.comments_on(&full_name, issue.number).len();
        let association = repo
            .map(|r| self.state.author_association(r, &issue.author))
            .unwrap_or("NONE");
        let html_kind = if issue.is_pull_request {
            "pull"
        } else {
            "issues"
        };
        let mut value = json!({
            "url": api,
            "repository_url": self.api(&format!("/repos/{full_name}")),
            "labels_url": format!("{api}/labels{{/name}}"),
            "comments_url": format!("{api}/comments"),
            "events_url": format!("{api}/events"),
            "html_url": self.api(&format!("/{full_name}/{html_kind}/{}", issue.number)),
            "id": issue.id,
            "node_id": node_id(if issue.is_pull_request { "PR" } else { "I" }, issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self.user(&issue.author),
            "labels": self.labels_of(issue),
            "state": issue.state.as_str(),
            "locked": false,
            "assignee": null,
            "assignees": [],
            "milestone": null,
            "comments": comments,
            "created_at": ts(issue.created_at),
            "updated_at": ts(issue.updated_at),
            "closed_at": issue.closed_at.map(ts),
            "author_association": association,
            "type": null,
            "active_lock_reason": null,
            "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
            "body": issue.body,
            "reactions": self.reaction_rollup(format!("{api}/reactions"), None),
            "timeline_url": format!("{api}/timeline"),
            "performed_via_github_app": null,
            "state_reason": if issue.state == super::state::IssueState::Closed { json!("completed") } else { Value::Null },
        });
        if issue.is_pull_request {
            let pull = self.api(&format!("/repos/{full_name}/pulls/{}", issue.number));
            let html = self.api(&format!("/{full_name}/pull/{}", issue.number));
            let merged_at = self
                .state
                .pulls
                .iter()
                .find(|p| p.repo_id == issue.repo_id && p.number == issue.number)
                .and_then(|p| p.merged_at);
            value["pull_request"] = json!({
                "url": pull,
                "html_url": html,
                "diff_url": format!("{html}.diff"),
                "patch_url": format!("{html}.patch"),
                "merged_at": merged_at.map(ts),
            });
        }
        value
    }

    pub fn comment(&self, comment: &CommentRecord) -> Value {
        let repo = self.state.repos.get(&comment.repo_id);
        let full_name = repo.map(RepoRecord::full_name).unwrap_or_default();
        let is_pull = self.state.issues.iter().any(|i| {
            i.repo_id == comment.repo_id && i.number == comment.issue_number && i.is_pull_request
        });
        let html_kind = if is_pull { "pull" } else { "issues" };
        let api = self.api(&format!(
            "/repos/{full_name}/issues/comments/{}",
            comment.id
        ));
        let association = repo
            .map(|r| self.state.author_association(r, &comment.author))
            .unwrap_or("NONE");
        json!({
            "url": api,
            "html_url": self.api(&format!(
                "/{full_name}/{html_kind}/{}#issuecomment-{}",
                comment.issue_number, comment.id
            )),
            "issue_url": self.api(&format!("/repos/{full_name}/issues/{}", comment.issue_number)),
            "id": comment.id,
            "node_id": node_id("IC", comment.id),
            "user": self.user(&comment.author),
            "created_at": ts(comment.created_at),
            "updated_at": ts(comment.updated_at),
            "author_association": association,
            "body": comment.body,
            "reactions": self.reaction_rollup(format!("{api}/reactions"), Some(comment.id)),
            "performed_via_github_app": if comment.via_app { self.app() } else { Value::Null },
        })
    }

    pub fn reaction(&self, reaction: &ReactionRecord) -> Value {
        json!({
            "id": reaction.id,
            "node_id": node_id("REA", reaction.id),
            "user": self.user(&reaction.user),
            "content": reaction.content,
            "created_at": ts(reaction.created_at),
        })
    }

    /// A check run; `pull_requests` lists open pull requests whose head is its commit.
    pub fn check_run(&self, run: &CheckRunRecord, head_branch: Option<&str>) -> Value {
        let repo = self.state.repos.get(&run.repo_id);
        let full_name = repo.map(RepoRecord::full_name).unwrap_or_default();
        let api = self.api(&format!("/repos/{full_name}/check-runs/{}", run.id));
        let app = self.app();
        json!({
            "id": run.id,
            "name": run.name,
            "node_id": node_id("CR", run.id),
            "head_sha": run.head_sha,
            "external_id": run.external_id.clone().unwrap_or_default(),
            "url": api,
            "html_url": self.api(&format!("/{full_name}/runs/{}", run.id)),
            "details_url": run.details_url.clone().unwrap_or_else(|| self.state.app.external_url.clone()),
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": run.started_at.map(ts),
            "completed_at": run.completed_at.map(ts),
            "output": {
                "title": run.output.title,
                "summary": run.output.summary,
                "text": run.output.text,
                "annotations_count": run.output.annotations.len(),
                "annotations_url": format!("{api}/annotations"),
            },
            "check_suite": {
                "id": run.check_suite_id,
                "node_id": node_id("CS", run.check_suite_id),
                "head_branch": head_branch,
                "head_sha": run.head_sha,
                "status": run.status,
                "conclusion": run.conclusion,
                "url": self.api(&format!("/repos/{full_name}/check-suites/{}", run.check_suite_id)),
                "before": null,
                "after": run.head_sha,
                "pull_requests": [],
                "app": app.clone(),
                "created_at": ts(run.created_at),
                "updated_at": ts(run.updated_at),
            },
            "app": app,
            "pull_requests": self.check_run_pulls(run),
        })
    }

    fn check_run_pulls(&self, run: &CheckRunRecord) -> Vec<Value> {
        let Some(repo) = self.state.repos.get(&run.repo_id) else {
            return Vec::new();
        };
        let repo_ref = json!({
            "id": repo.id,
            "url": self.api(&format!("/repos/{}", repo.full_name())),
            "name": repo.name,
        });
        self.state
            .pulls
            .iter()
            .filter(|p| p.repo_id == run.repo_id && p.head_sha == run.head_sha)
            .map(|p| {
                json!({
                    "id": p.id,
                    "number": p.number,
                    "url": self.api(&format!("/repos/{}/pulls/{}", repo.full_name(), p.number)),
                    "head": {"ref": p.head_ref, "sha": p.head_sha, "repo": repo_ref.clone()},
                    "base": {"ref": p.base_ref, "sha": "", "repo": repo_ref.clone()},
                })
            })
            .collect()
    }

    /// A pull request; `full` adds what only the single-PR endpoints return.
    pub fn pull(
        &self,
        pull: &PullRecord,
        issue: &IssueRecord,
        head_sha: &str,
        base_sha: &str,
        full: bool,
    ) -> Value {
        let Some(repo) = self.state.repos.get(&pull.repo_id) else {
            return Value::Null;
        };
        let full_name = repo.full_name();
        let api = self.api(&format!("/repos/{full_name}/pulls/{}", pull.number));
        let issue_api = self.api(&format!("/repos/{full_name}/issues/{}", pull.number));
        let html = self.api(&format!("/{full_name}/pull/{}", pull.number));
        let repo_json = self.repository(repo, None);
        let owner = self.user(&repo.owner);
        let side = |branch: &str, sha: &str| {
            json!({
                "label": format!("{}:{branch}", repo.owner),
                "ref": branch,
                "sha": sha,
                "user": owner.clone(),
                "repo": repo_json.clone(),
            })
        };
        let merged = pull.merged_at.is_some();
        let links = json!({
                "self": {"href": api},
            "html": {"href": html},
            "issue": {"href": issue_api},
            "comments": {"href": format!("{issue_api}/comments")},
            "review_comments": {"href": format!("{api}/comments")},
            "review_comment": {"href": self.api(&format!("/repos/{full_name}/pulls/comments{{/number}}"))},
            "commits": {"href": format!("{api}/commits")},
            "statuses": {"href": self.api(&format!("/repos/{full_name}/statuses/{head_sha}"))},
        });
        let mut value = json!({
            "url": api,
            "id": pull.id,
            "node_id": node_id("PR", pull.id),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": issue_api,
            "commits_url": format!("{api}/commits"),
            "review_comments_url": format!("{api}/comments"),
            "review_comment_url": self.api(&format!("/repos/{full_name}/pulls/comments{{/number}}")),
            "comments_url": format!("{issue_api}/comments"),
            "statuses_url": self.api(&format!("/repos/{full_name}/statuses/{head_sha}")),
            "number": pull.number,
            "state": issue.state.as_str(),
            "locked": false,
            "title": issue.title,
            "user": self.user(&issue.author),
            "body": issue.body,
            "labels": self.labels_of(issue),
            "milestone": null,
            "active_lock_reason": null,
            "created_at": ts(issue.created_at),
            "updated_at": ts(issue.updated_at),
            "closed_at": issue.closed_at.map(ts),
            "merged_at": pull.merged_at.map(ts),
            "merge_commit_sha": null,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": side(&pull.head_ref, head_sha),
            "base": side(&pull.base_ref, base_sha),
            "_links": links,
            "author_association": self.state.author_association(repo, &issue.author),
            "auto_merge": null,
            "draft": pull.draft,
        });
        if full {
            let extra = json!({
                "merged": merged,
                "mergeable": if merged { Value::Null } else { json!(true) },
                "rebaseable": if merged { Value::Null } else { json!(true) },
                "mergeable_state": if merged { "unknown" } else { "clean" },
                "merged_by": null,
                "comments": self.state.comments_on(&full_name, pull.number).len(),
                "review_comments": 0,
                "maintainer_can_modify": pull.maintainer_can_modify,
                "commits": 1,
                "additions": 0,
                "deletions": 0,
                "changed_files": 0,
            });
            if let (Value::Object(target), Value::Object(extra)) = (&mut value, extra) {
                target.extend(extra);
            }
        }
        value
    }

    /// A `commit` as `GET /branches/{branch}` embeds it.
    pub fn commit(&self, repo: &RepoRecord, commit: &CommitInfo) -> Value {
        let full_name = repo.full_name();
        let api = self.api(&format!("/repos/{full_name}/commits/{}", commit.sha));
        let html = self.api(&format!("/{full_name}/commit/{}", commit.sha));
        let parents: Vec<Value> = commit
            .parents
            .iter()
            .map(|sha| {
                json!({
                    "sha": sha,
                    "url": self.api(&format!("/repos/{full_name}/commits/{sha}")),
                    "html_url": self.api(&format!("/{full_name}/commit/{sha}")),
                })
            })
            .collect();
        json!({
            "sha": commit.sha,
            "node_id": legacy_node_id("Commit", format!("{}:{}", repo.id, commit.sha)),
            "commit": {
                "author": {"name": commit.author_name, "email": commit.author_email, "date": commit.author_date},
                "committer": {"name": commit.committer_name, "email": commit.committer_email, "date": commit.committer_date},
                "message": commit.message,
                "tree": {
                    "sha": commit.tree,
                    "url": self.api(&format!("/repos/{full_name}/git/trees/{}", commit.tree)),
                },
                "url": self.api(&format!("/repos/{full_name}/git/commits/{}", commit.sha)),
                "comment_count": 0,
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
            },
            "url": api,
            "html_url": html,
            "comments_url": format!("{api}/comments"),
            "author": null,
            "committer": null,
            "parents": parents,
        })
    }

    pub fn branch(&self, repo: &RepoRecord, name: &str, commit: &CommitInfo) -> Value {
        let full_name = repo.full_name();
        let api = self.api(&format!("/repos/{full_name}/branches/{name}"));
        json!({
            "name": name,
            "commit": self.commit(repo, commit),
            "_links": {
                "self": api,
                "html": self.api(&format!("/{full_name}/tree/{name}")),
            },
            "protected": false,
            "protection": {
                "enabled": false,
                "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
            },
            "protection_url": format!("{api}/protection"),
        })
    }

    pub fn git_ref(&self, repo: &RepoRecord, full_ref: &str, sha: &str) -> Value {
        let full_name = repo.full_name();
        json!({
            "ref": full_ref,
            "node_id": legacy_node_id("Ref", format!("{}:{full_ref}", repo.id)),
            "url": self.api(&format!("/repos/{full_name}/git/{full_ref}")),
            "object": {
                "type": "commit",
                "sha": sha,
                "url": self.api(&format!("/repos/{full_name}/git/commits/{sha}")),
            },
        })
    }

    /// A contents entry; `content` (already read) makes it a file response.
    pub fn content_entry(
        &self,
        repo: &RepoRecord,
        git_ref: &str,
        entry: &TreeEntry,
        content: Option<&[u8]>,
    ) -> Value {
        let full_name = repo.full_name();
        let path = &entry.path;
        let name = path.rsplit('/').next().unwrap_or(path);
        let kind = match (entry.kind.as_str(), entry.mode.as_str()) {
            ("tree", _) => "dir",
            ("commit", _) => "submodule",
            (_, "120000") => "symlink",
            _ => "file",
        };
        let self_url = self.api(&format!(
            "/repos/{full_name}/contents/{path}?ref={}",
            encode_segment(git_ref)
        ));
        let git_url = if kind == "dir" {
            self.api(&format!("/repos/{full_name}/git/trees/{}", entry.sha))
        } else {
            self.api(&format!("/repos/{full_name}/git/blobs/{}", entry.sha))
        };
        let html_url = self.api(&format!(
            "/{full_name}/{}/{git_ref}/{path}",
            if kind == "dir" { "tree" } else { "blob" }
        ));
        let download_url = (kind == "file").then(|| {
            self.api(&format!(
                "/_sim/raw/{full_name}/{path}?ref={}",
                encode_segment(git_ref)
            ))
        });
        let mut value = json!({
            "type": kind,
            "size": entry.size.unwrap_or(0),
            "name": name,
            "path": path,
            "sha": entry.sha,
            "url": self_url,
            "git_url": git_url,
            "html_url": html_url,
            "download_url": download_url,
            "_links": {"self": self_url, "git": git_url, "html": html_url},
        });
        if let Some(bytes) = content {
            // GitHub wraps base64 at 60 characters per line.
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            let wrapped: Vec<&str> = encoded
                .as_bytes()
                .chunks(60)
                .filter_map(|chunk| std::str::from_utf8(chunk).ok())
                .collect();
            let mut content = wrapped.join("\n");
            if !content.is_empty() {
                content.push('\n');
            }
            value["content"] = content.into();
            value["encoding"] = "base64".into();
        }
        value
    }

    pub fn delivery_item(&self, delivery: &DeliveryRecord) -> Value {
        json!({
            "id": delivery.id,
            "guid": delivery.guid,
            "delivered_at": ts(delivery.delivered_at),
            "redelivery": delivery.redelivery,
            "duration": delivery.duration_secs,
            "status": delivery.status,
            "status_code": delivery.status_code,
            "event": delivery.event,
            "action": delivery.action,
            "installation_id": delivery.installation_id,
            "repository_id": delivery.repository_id,
            "throttled_at": null,
        })
    }

    pub fn delivery(&self, delivery: &DeliveryRecord) -> Value {
        let mut value = self.delivery_item(delivery);
        value["url"] = delivery.url.clone().unwrap_or_default().into();
        value["request"] = json!({
            "headers": delivery.request_headers,
            "payload": delivery.payload,
        });
        value["response"] = json!({
            "headers": {},
            "payload": delivery.response_body,
        });
        value
    }
}

/// Percent-encodes one URL path segment (or query value).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub fn decode_segment(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_match_the_fixtures() {
        assert_eq!(node_id("U", 600001), "U_kgDOAAknwQ");
        assert_eq!(node_id("R", 700001), "R_kgDOAAquYQ");
        assert_eq!(node_id("I", 3300017), "I_kgDOADJasQ");
        assert_eq!(node_id("IC", 900001), "IC_kgDOAA27oQ");
        assert_eq!(legacy_node_id("App", 310001), "MDM6QXBwMzEwMDAx");
        assert_eq!(
            legacy_node_id("IntegrationInstallation", 4200001),
            "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNDIwMDAwMQ=="
        );
    }

    #[test]
    fn segments_round_trip() {
        assert_eq!(encode_segment("bg-agent:upgrade"), "bg-agent%3Aupgrade");
        assert_eq!(decode_segment("bg-agent%3Aupgrade"), "bg-agent:upgrade");
        assert_eq!(decode_segment("a%2Fb%zz"), "a/b%zz");
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::openapi::OpenApiDoc;
    use crate::state::{AppRecord, Permissions};

    fn state() -> SimState {
        let app = AppRecord {
            id: 310001,
            slug: "bg-agent".into(),
            name: "bg-agent".into(),
            client_id: "Iv1".into(),
            description: "d".into(),
            owner_login: "acme".into(),
            external_url: "https://example.invalid".into(),
            permissions: Permissions::bg_agent(),
            events: vec!["issues".into()],
            hook_id: 1,
            created_at: Utc::now(),
        };
        let mut state = SimState::new(app, std::time::Duration::from_secs(60));
        for (login, id, kind) in [
            ("acme", 5100001, AccountKind::Organization),
            ("octo-lead", 600001, AccountKind::User),
            ("bg-agent[bot]", 410001, AccountKind::Bot),
        ] {
            state.users.insert(
                login.into(),
                UserRecord {
                    id,
                    login: login.into(),
                    kind,
                },
            );
        }
        state
    }

    #[test]
    fn accounts_are_simple_users() {
        let state = state();
        let render = Render {
            base: "http://127.0.0.1:1",
            state: &state,
        };
        let doc = OpenApiDoc::github_rest();
        for login in ["acme", "octo-lead", "bg-agent[bot]", "ghost"] {
            if let Err(e) = doc.validate_component("simple-user", &render.user(login)) {
                panic!("{login}: {e}");
            }
        }
        if let Err(e) = doc.validate_component("integration", &render.app()) {
            panic!("{e}");
        }
        let installation = crate::state::InstallationRecord {
            id: 4200001,
            account_login: "acme".into(),
            repository_ids: Default::default(),
            permissions: Permissions::bg_agent(),
            events: vec!["issues".into()],
            created_at: Utc::now(),
        };
        let value = render.installation(&installation);
        if let Err(e) = doc.validate_component("simple-user", &value["account"]) {
            panic!("{e}");
        }
        if let Err(e) = doc.validate_component("installation", &value) {
            panic!("{e}\n{value:#}");
        }
    }
}
