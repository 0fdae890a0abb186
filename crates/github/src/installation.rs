//! Repository calls made with an installation's own token.

use base64::Engine as _;
use http::Method;
use serde_json::{Value, json};

use super::http::{encode_component, encode_file_path, query};
use super::limits::{self, MAX_COMMENT_CHARS, MAX_OUTPUT_CHARS};
use bg_agent_core::task::Permission;

use super::types::{BranchWire, CollaboratorPermissionWire, ContentWire, IdWire, RepositoryWire};
use super::{
    AddedReaction, CheckRun, CheckRunAnnotation, CheckRunConclusion, CheckRunOutput,
    CheckRunStatus, CheckRunUpdate, FileContents, GitHubApp, GitHubError, InstallationToken,
    IssueComment, Label, NewCheckRun, NewPullRequest, PullRequest, PullRequestUpdate, Reaction,
    RepoName, Repository, Request, decode,
};

/// At most this many pages of 100 are read when looking for what the App made before.
const MAX_LIST_PAGES: u32 = 10;

/// Calls on one installation's repositories, with the installation's token (all its
/// repositories, the App's permissions). Cheap to clone.
#[derive(Debug, Clone)]
pub struct InstallationClient {
    app: GitHubApp,
    installation_id: u64,
}

fn repo_path(repo: &RepoName, rest: &str) -> String {
    format!(
        "/repos/{}/{}{rest}",
        encode_component(&repo.owner),
        encode_component(&repo.name)
    )
}

impl InstallationClient {
    pub(crate) fn new(app: GitHubApp, installation_id: u64) -> Self {
        Self {
            app,
            installation_id,
        }
    }

    pub fn installation_id(&self) -> u64 {
        self.installation_id
    }

    pub fn app(&self) -> &GitHubApp {
        &self.app
    }

    /// The server's token for this installation.
    pub async fn token(&self) -> Result<InstallationToken, GitHubError> {
        self.app
            .token(&super::TokenScope::installation(self.installation_id))
            .await
    }

    /// See [`GitHubApp::runner_token`].
    pub async fn runner_token(&self, repository_id: u64) -> Result<InstallationToken, GitHubError> {
        self.app
            .runner_token(self.installation_id, repository_id)
            .await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<T, GitHubError> {
        let endpoint = request.endpoint();
        let response = self
            .app
            .call_installation(self.installation_id, request)
            .await?;
        decode(&response, &endpoint)
    }

    /// `GET /repos/{owner}/{repo}`.
    pub async fn repository(&self, repo: &RepoName) -> Result<Repository, GitHubError> {
        let request = Request::new(Method::GET, "/repos/{owner}/{repo}", repo_path(repo, ""));
        let wire: RepositoryWire = self.send(request).await?;
        Ok(wire.into())
    }

    /// The SHA at the head of `branch` (`GET /repos/{owner}/{repo}/branches/{branch}`).
    pub async fn branch_head_sha(
        &self,
        repo: &RepoName,
        branch: &str,
    ) -> Result<String, GitHubError> {
        let request = Request::new(
            Method::GET,
            "/repos/{owner}/{repo}/branches/{branch}",
            repo_path(repo, &format!("/branches/{}", encode_component(branch))),
        );
        let wire: BranchWire = self.send(request).await?;
        Ok(wire.commit.sha)
    }

    /// A file's contents (`GET /repos/{owner}/{repo}/contents/{path}`), at `git_ref` or
    /// the default branch; `Ok(None)` when there is no such file. A directory, symlink
    /// or submodule at `path` is an error, as is a file too large for this API (> 1 MB).
    pub async fn file_contents(
        &self,
        repo: &RepoName,
        path: &str,
        git_ref: Option<&str>,
    ) -> Result<Option<FileContents>, GitHubError> {
        let template = "/repos/{owner}/{repo}/contents/{path}";
        let params: Vec<(&str, &str)> = git_ref.map(|r| ("ref", r)).into_iter().collect();
        let request = Request::new(
            Method::GET,
            template,
            repo_path(
                repo,
                &format!("/contents/{}{}", encode_file_path(path), query(&params)),
            ),
        );
        let value: Value = match self.send(request).await {
            Ok(value) => value,
            Err(GitHubError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let unexpected = |message: String| GitHubError::Decode {
            endpoint: format!("GET {template}"),
            message,
        };
        if value.is_array() {
            return Err(unexpected(format!("{path:?} is a directory, not a file")));
        }
        let wire: ContentWire =
            serde_json::from_value(value).map_err(|e| unexpected(e.to_string()))?;
        if wire.kind != "file" {
            return Err(unexpected(format!(
                "{path:?} is a {}, not a file",
                wire.kind
            )));
        }
        let content = match (wire.encoding.as_deref(), wire.content.as_deref()) {
            (Some("base64"), Some(encoded)) => {
                // GitHub wraps the base64 text in lines.
                let compact: Vec<u8> = encoded
                    .bytes()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|e| unexpected(format!("bad base64 content: {e}")))?
            }
            (encoding, _) => {
                return Err(unexpected(format!(
                    "{path:?} came with encoding {encoding:?} (files over 1 MB are not served inline)"
                )));
            }
        };
        Ok(Some(FileContents {
            path: wire.path,
            sha: wire.sha,
            content,
        }))
    }

    /// What `username` may do in `repo`
    /// (`GET /repos/{owner}/{repo}/collaborators/{username}/permission`). A user GitHub
    /// does not know is `NotFound`.
    pub async fn collaborator_permission(
        &self,
        repo: &RepoName,
        username: &str,
    ) -> Result<Permission, GitHubError> {
        let request = Request::new(
            Method::GET,
            "/repos/{owner}/{repo}/collaborators/{username}/permission",
            repo_path(
                repo,
                &format!("/collaborators/{}/permission", encode_component(username)),
            ),
        );
        let wire: CollaboratorPermissionWire = self.send(request).await?;
        Ok(Permission::from_github(&wire.permission, &wire.role_name))
    }

    /// `POST /repos/{owner}/{repo}/check-runs`. Summary and text are cut to GitHub's
    /// limit; annotations beyond the first 50 follow in updates of the new run; invalid
    /// actions are refused before anything is sent.
    pub async fn create_check_run(
        &self,
        repo: &RepoName,
        mut run: NewCheckRun,
    ) -> Result<CheckRun, GitHubError> {
        limits::validate_actions(&run.actions)?;
        require_conclusion(run.status, run.conclusion, run.completed_at.is_some())?;
        let (total, follow_ups) = run.output.as_mut().map(prepare_output).unwrap_or_default();
        let request = Request::new(
            Method::POST,
            "/repos/{owner}/{repo}/check-runs",
            repo_path(repo, "/check-runs"),
        )
        .json(&run)?;
        let created: CheckRun = self.send(request).await?;
        self.send_more_annotations(repo, created, run.output.as_ref(), follow_ups, total)
            .await
    }

    /// `PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}`, with the same limits as
    /// [`Self::create_check_run`].
    pub async fn update_check_run(
        &self,
        repo: &RepoName,
        check_run_id: u64,
        mut update: CheckRunUpdate,
    ) -> Result<CheckRun, GitHubError> {
        if let Some(actions) = &update.actions {
            limits::validate_actions(actions)?;
        }
        require_conclusion(
            update.status,
            update.conclusion,
            update.completed_at.is_some(),
        )?;
        let (total, follow_ups) = update
            .output
            .as_mut()
            .map(prepare_output)
            .unwrap_or_default();
        let updated = self.patch_check_run(repo, check_run_id, &update).await?;
        self.send_more_annotations(repo, updated, update.output.as_ref(), follow_ups, total)
            .await
    }

    async fn patch_check_run(
        &self,
        repo: &RepoName,
        check_run_id: u64,
        update: &CheckRunUpdate,
    ) -> Result<CheckRun, GitHubError> {
        let request = Request::new(
            Method::PATCH,
            "/repos/{owner}/{repo}/check-runs/{check_run_id}",
            repo_path(repo, &format!("/check-runs/{check_run_id}")),
        )
        .json(update)?;
        self.send(request).await
    }

    /// Sends annotation batches after the first; GitHub appends each batch. The output's
    /// title, summary and text are repeated because `output` requires them.
    async fn send_more_annotations(
        &self,
        repo: &RepoName,
        mut run: CheckRun,
        output: Option<&CheckRunOutput>,
        follow_ups: Vec<Vec<CheckRunAnnotation>>,
        total: usize,
    ) -> Result<CheckRun, GitHubError> {
        let Some(output) = output else {
            return Ok(run);
        };
        let mut sent = output.annotations.len();
        for batch in follow_ups {
            let batch_len = batch.len();
            let update = CheckRunUpdate {
                output: Some(CheckRunOutput {
                    annotations: batch,
                    ..output.clone()
                }),
                ..CheckRunUpdate::default()
            };
            match self.patch_check_run(repo, run.id, &update).await {
                Ok(updated) => run = updated,
                Err(source) => {
                    return Err(GitHubError::AnnotationsIncomplete {
                        check_run: Box::new(run),
                        sent,
                        total,
                        source: Box::new(source),
                    });
                }
            }
            sent += batch_len;
        }
        Ok(run)
    }

    /// `POST /repos/{owner}/{repo}/issues/{issue_number}/comments` (issues and pull
    /// requests alike). A body over GitHub's limit is cut, with a marker.
    pub async fn create_issue_comment(
        &self,
        repo: &RepoName,
        issue_number: u64,
        body: &str,
    ) -> Result<IssueComment, GitHubError> {
        let request = Request::new(
            Method::POST,
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            repo_path(repo, &format!("/issues/{issue_number}/comments")),
        )
        .json(&json!({ "body": limits::truncate_chars(body, MAX_COMMENT_CHARS) }))?;
        self.send(request).await
    }

    /// `PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}`.
    pub async fn update_issue_comment(
        &self,
        repo: &RepoName,
        comment_id: u64,
        body: &str,
    ) -> Result<IssueComment, GitHubError> {
        let request = Request::new(
            Method::PATCH,
            "/repos/{owner}/{repo}/issues/comments/{comment_id}",
            repo_path(repo, &format!("/issues/comments/{comment_id}")),
        )
        .json(&json!({ "body": limits::truncate_chars(body, MAX_COMMENT_CHARS) }))?;
        self.send(request).await
    }

    /// `POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions`.
    pub async fn add_comment_reaction(
        &self,
        repo: &RepoName,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<AddedReaction, GitHubError> {
        let template = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions";
        let request = Request::new(
            Method::POST,
            template,
            repo_path(repo, &format!("/issues/comments/{comment_id}/reactions")),
        )
        .json(&json!({ "content": reaction }))?;
        let response = self
            .app
            .call_installation(self.installation_id, request)
            .await?;
        let wire: IdWire = decode(&response, &format!("POST {template}"))?;
        Ok(AddedReaction {
            id: wire.id,
            already_existed: response.status == 200,
        })
    }

    /// The check runs named `name` that this App made on commit `sha`
    /// (`GET /repos/{owner}/{repo}/commits/{ref}/check-runs?check_name=…&app_id=…`,
    /// every run, not only the latest).
    pub async fn own_check_runs(
        &self,
        repo: &RepoName,
        sha: &str,
        name: &str,
    ) -> Result<Vec<CheckRun>, GitHubError> {
        #[derive(serde::Deserialize)]
        struct Page {
            check_runs: Vec<CheckRun>,
        }
        let app_id = self.app.app_id();
        let app = app_id.to_string();
        let mut runs = Vec::new();
        for page in 1..=MAX_LIST_PAGES {
            let page_text = page.to_string();
            let request = Request::new(
                Method::GET,
                "/repos/{owner}/{repo}/commits/{ref}/check-runs",
                repo_path(
                    repo,
                    &format!(
                        "/commits/{}/check-runs{}",
                        encode_component(sha),
                        query(&[
                            ("check_name", name),
                            ("app_id", &app),
                            ("filter", "all"),
                            ("per_page", "100"),
                            ("page", &page_text),
                        ])
                    ),
                ),
            );
            let got: Page = self.send(request).await?;
            let full = got.check_runs.len() == 100;
            runs.extend(
                got.check_runs
                    .into_iter()
                    .filter(|r| r.app.as_ref().is_some_and(|a| a.id == app_id)),
            );
            if !full {
                break;
            }
        }
        Ok(runs)
    }

    /// The comments this App posted on an issue or pull request, oldest first
    /// (`GET /repos/{owner}/{repo}/issues/{issue_number}/comments`).
    pub async fn own_issue_comments(
        &self,
        repo: &RepoName,
        issue_number: u64,
    ) -> Result<Vec<IssueComment>, GitHubError> {
        let app_id = self.app.app_id();
        let mut comments = Vec::new();
        for page in 1..=MAX_LIST_PAGES {
            let page_text = page.to_string();
            let request = Request::new(
                Method::GET,
                "/repos/{owner}/{repo}/issues/{issue_number}/comments",
                repo_path(
                    repo,
                    &format!(
                        "/issues/{issue_number}/comments{}",
                        query(&[("per_page", "100"), ("page", &page_text)])
                    ),
                ),
            );
            let got: Vec<IssueComment> = self.send(request).await?;
            let full = got.len() == 100;
            comments.extend(got.into_iter().filter(|c| {
                c.performed_via_github_app
                    .as_ref()
                    .is_some_and(|a| a.id == app_id)
            }));
            if !full {
                break;
            }
        }
        Ok(comments)
    }

    /// The open pull request whose head is `head_branch` of `repo` itself, if any
    /// (`GET /repos/{owner}/{repo}/pulls?head=owner:branch&state=open`).
    pub async fn find_open_pull_request(
        &self,
        repo: &RepoName,
        head_branch: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        let head = format!("{}:{head_branch}", repo.owner);
        let request = Request::new(
            Method::GET,
            "/repos/{owner}/{repo}/pulls",
            repo_path(
                repo,
                &format!("/pulls{}", query(&[("head", &head), ("state", "open")])),
            ),
        );
        let pulls: Vec<PullRequest> = self.send(request).await?;
        Ok(pulls.into_iter().next())
    }

    /// `POST /repos/{owner}/{repo}/pulls`. GitHub answers 422 if one is already open
    /// for the same head and base.
    pub async fn create_pull_request(
        &self,
        repo: &RepoName,
        pull: &NewPullRequest,
    ) -> Result<PullRequest, GitHubError> {
        let request = Request::new(
            Method::POST,
            "/repos/{owner}/{repo}/pulls",
            repo_path(repo, "/pulls"),
        )
        .json(&NewPullRequest {
            body: pull
                .body
                .as_deref()
                .map(|b| limits::truncate_chars(b, MAX_COMMENT_CHARS).into_owned()),
            ..pull.clone()
        })?;
        self.send(request).await
    }

    /// `PATCH /repos/{owner}/{repo}/pulls/{pull_number}`.
    pub async fn update_pull_request(
        &self,
        repo: &RepoName,
        pull_number: u64,
        update: &PullRequestUpdate,
    ) -> Result<PullRequest, GitHubError> {
        let request = Request::new(
            Method::PATCH,
            "/repos/{owner}/{repo}/pulls/{pull_number}",
            repo_path(repo, &format!("/pulls/{pull_number}")),
        )
        .json(&PullRequestUpdate {
            body: update
                .body
                .as_deref()
                .map(|b| limits::truncate_chars(b, MAX_COMMENT_CHARS).into_owned()),
            ..update.clone()
        })?;
        self.send(request).await
    }

    /// `POST /repos/{owner}/{repo}/issues/{issue_number}/labels`: adds to the existing
    /// labels (of an issue or pull request) and returns them all.
    pub async fn add_labels(
        &self,
        repo: &RepoName,
        issue_number: u64,
        labels: &[String],
    ) -> Result<Vec<Label>, GitHubError> {
        if labels.is_empty() {
            return Err(GitHubError::InvalidRequest(
                "add_labels needs at least one label".into(),
            ));
        }
        let request = Request::new(
            Method::POST,
            "/repos/{owner}/{repo}/issues/{issue_number}/labels",
            repo_path(repo, &format!("/issues/{issue_number}/labels")),
        )
        .json(&json!({ "labels": labels }))?;
        self.send(request).await
    }
}

/// Cuts summary and text to GitHub's limit and keeps the first batch of annotations in
/// `output`; returns the total and the later batches.
fn prepare_output(output: &mut CheckRunOutput) -> (usize, Vec<Vec<CheckRunAnnotation>>) {
    output.summary = limits::truncate_chars(&output.summary, MAX_OUTPUT_CHARS).into_owned();
    if let Some(text) = &mut output.text {
        *text = limits::truncate_chars(text, MAX_OUTPUT_CHARS).into_owned();
    }
    let annotations = std::mem::take(&mut output.annotations);
    let total = annotations.len();
    let mut batches = limits::annotation_batches(annotations).into_iter();
    output.annotations = batches.next().unwrap_or_default();
    (total, batches.collect())
}

/// GitHub requires a conclusion with `status: completed` or a `completed_at`.
fn require_conclusion(
    status: Option<CheckRunStatus>,
    conclusion: Option<CheckRunConclusion>,
    has_completed_at: bool,
) -> Result<(), GitHubError> {
    let completes = status == Some(CheckRunStatus::Completed) || has_completed_at;
    if completes && conclusion.is_none() {
        return Err(GitHubError::InvalidRequest(
            "a completed check run needs a conclusion".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnnotationLevel;

    #[test]
    fn output_is_cut_and_annotations_split() {
        let mut output = CheckRunOutput {
            title: "t".into(),
            summary: "s".repeat(70_000),
            text: Some("é".repeat(70_000)),
            annotations: (0..120)
                .map(|i| CheckRunAnnotation::new("a.rs", i + 1, AnnotationLevel::Warning, "m"))
                .collect(),
        };
        let (total, rest) = prepare_output(&mut output);
        assert_eq!(total, 120);
        assert_eq!(output.annotations.len(), 50);
        assert_eq!(rest.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 20]);
        assert_eq!(rest[1][19].start_line, 120);
        assert_eq!(output.summary.chars().count(), MAX_OUTPUT_CHARS);
        assert_eq!(
            output.text.as_ref().unwrap().chars().count(),
            MAX_OUTPUT_CHARS
        );
    }

    #[test]
    fn completing_needs_a_conclusion() {
        assert!(require_conclusion(Some(CheckRunStatus::Completed), None, false).is_err());
        assert!(require_conclusion(None, None, true).is_err());
        assert!(
            require_conclusion(
                Some(CheckRunStatus::Completed),
                Some(CheckRunConclusion::Success),
                true
            )
            .is_ok()
        );
        assert!(require_conclusion(Some(CheckRunStatus::InProgress), None, false).is_ok());
        assert!(require_conclusion(None, Some(CheckRunConclusion::Failure), false).is_ok());
    }
}
