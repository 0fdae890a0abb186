//! git, run as a program with argv: clone, stage, commit, push. The token reaches git
//! only through its environment (`GIT_CONFIG_*` setting an `Authorization` header for the
//! clone URL's origin), never through argv or a URL, and only for the clone and the push:
//! the commands that run before any code of the repository, and after it, with hooks off
//! and the repository's configuration restored.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

use super::process::{self, ChildEnv, ProcessError};
use crate::events::EventSender;

/// git's own output kept for an error message.
const ERROR_TAIL_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("the clone URL is not an http(s) URL without credentials")]
    BadUrl,
    #[error("{0:?} is not a valid branch name")]
    BadBranch(String),
    #[error("{command} failed ({status}){message}")]
    Failed {
        command: String,
        status: String,
        message: String,
    },
    #[error("git printed something unexpected for {0}")]
    Unexpected(&'static str),
    #[error("cannot read or restore .git/config: {0}")]
    Config(std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// A clone of the task's repository, and what the runner remembers of it as cloned.
pub struct Git {
    env: ChildEnv,
    token: SecretString,
    repo_dir: PathBuf,
    /// The origin the token is for (`scheme://host[:port]/`).
    origin: String,
    /// The commit cloned: the parent of the runner's commit, whatever happens to HEAD.
    base: String,
    /// `.git/config` as cloned, put back before pushing.
    config: Vec<u8>,
}

/// The change, staged: its tree and the paths it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub tree: String,
    pub changed_files: Vec<String>,
}

/// git options on every command: no hooks (the repository's code, or an agent, may have
/// written some into `.git/hooks` by the time the runner commits and pushes).
const SAFE_OPTIONS: [&str; 4] = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
];

impl Git {
    /// `git clone --depth 1 --branch <branch> --single-branch -- <url> <repo_dir>`, with
    /// the token in git's environment only.
    pub async fn clone_repo(
        env: ChildEnv,
        token: &SecretString,
        repo_dir: &Path,
        events: &EventSender,
        url: &str,
        branch: &str,
    ) -> Result<Self, GitError> {
        let origin = origin_of(url).ok_or(GitError::BadUrl)?;
        if !valid_branch(branch) {
            return Err(GitError::BadBranch(branch.to_owned()));
        }
        let mut git = Self {
            // System config could name credential helpers or hooks; the run must not
            // depend on the machine it lands on.
            env: env.with("GIT_CONFIG_NOSYSTEM", "1"),
            token: token.clone(),
            repo_dir: repo_dir.to_path_buf(),
            origin,
            base: String::new(),
            config: Vec::new(),
        };
        let parent = repo_dir.parent().unwrap_or(Path::new("."));
        // Relative to the workspace, so the log shows `repo`, not a temporary path.
        let target = repo_dir.file_name().map_or_else(
            || repo_dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let argv = [
            "clone",
            "--depth",
            "1",
            "--branch",
            branch,
            "--single-branch",
            "--",
            url,
            &target,
        ];
        git.streamed(events, "git clone", &argv, parent).await?;
        git.base = git.rev_parse("HEAD").await?;
        git.config = tokio::fs::read(repo_dir.join(".git/config"))
            .await
            .map_err(GitError::Config)?;
        Ok(git)
    }

    /// The environment of a git command that talks to the server: the token as an
    /// HTTP header, only for the clone URL's origin (not for a host it redirects to, nor
    /// one a rewritten remote points at).
    fn authenticated_env(&self) -> ChildEnv {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", self.token.expose_secret()));
        self.env
            .with("GIT_CONFIG_COUNT", "1")
            .with(
                "GIT_CONFIG_KEY_0",
                format!("http.{}.extraHeader", self.origin),
            )
            .with(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            )
    }

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("git")
            .chain(SAFE_OPTIONS)
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    async fn streamed(
        &self,
        events: &EventSender,
        name: &str,
        args: &[&str],
        cwd: &Path,
    ) -> Result<(), GitError> {
        let command = self
            .authenticated_env()
            .command(&Self::argv(args), cwd)
            .ok_or(ProcessError::Empty)?;
        let finished =
            process::run_streamed(command, "git", None, events, ERROR_TAIL_CHARS).await?;
        if finished.success() {
            return Ok(());
        }
        let message = if refused_credentials(&finished.tail) {
            ": the repository refused the runner's token".to_owned()
        } else {
            last_line(&finished.tail)
        };
        Err(GitError::Failed {
            command: name.to_owned(),
            status: exit_status(finished.code),
            message,
        })
    }

    /// A short local command (no token); its stdout on success.
    async fn local(
        &self,
        env: &ChildEnv,
        name: &'static str,
        args: &[&str],
    ) -> Result<Vec<u8>, GitError> {
        let command = env
            .command(&Self::argv(args), &self.repo_dir)
            .ok_or(ProcessError::Empty)?;
        let captured = process::run_captured(command, "git").await?;
        if captured.code == Some(0) {
            return Ok(captured.stdout);
        }
        Err(GitError::Failed {
            command: name.to_owned(),
            status: exit_status(captured.code),
            message: last_line(&captured.stderr),
        })
    }

    async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        let out = self
            .local(&self.env, "git rev-parse", &["rev-parse", "--verify", rev])
            .await?;
        object_id(&out).ok_or(GitError::Unexpected("git rev-parse"))
    }

    /// Stages the work tree (new files included) and returns the change against the
    /// commit cloned. Commits an agent made itself are part of it: they are folded into
    /// the runner's one commit.
    pub async fn stage(&self) -> Result<Staged, GitError> {
        self.local(&self.env, "git add", &["add", "--all"]).await?;
        let tree = self
            .local(&self.env, "git write-tree", &["write-tree"])
            .await?;
        let tree = object_id(&tree).ok_or(GitError::Unexpected("git write-tree"))?;
        let names = self
            .local(
                &self.env,
                "git diff",
                &["diff", "--cached", "--name-only", "-z", &self.base],
            )
            .await?;
        let changed_files = names
            .split(|b| *b == 0)
            .filter(|path| !path.is_empty())
            .map(|path| String::from_utf8_lossy(path).into_owned())
            .collect();
        Ok(Staged {
            tree,
            changed_files,
        })
    }

    /// Makes the commit of `tree` on top of the commit cloned, as `name <email>` (author
    /// and committer); returns its id. The message is argv data, never seen by a shell.
    pub async fn commit(
        &self,
        tree: &str,
        name: &str,
        email: &str,
        title: &str,
        body: &str,
    ) -> Result<String, GitError> {
        let env = self
            .env
            .with("GIT_AUTHOR_NAME", name)
            .with("GIT_AUTHOR_EMAIL", email)
            .with("GIT_COMMITTER_NAME", name)
            .with("GIT_COMMITTER_EMAIL", email);
        let out = self
            .local(
                &env,
                "git commit-tree",
                &[
                    "commit-tree",
                    "--no-gpg-sign",
                    tree,
                    "-p",
                    &self.base,
                    "-m",
                    title,
                    "-m",
                    body,
                ],
            )
            .await?;
        object_id(&out).ok_or(GitError::Unexpected("git commit-tree"))
    }

    /// `git push origin <commit>:refs/heads/<branch>` (not forced: branch names are the
    /// task's own, so an existing one is a surprise worth failing on). The repository's
    /// configuration is first put back as cloned: code that ran in the work tree could
    /// have pointed a proxy, helper or command there at the token.
    pub async fn push(
        &self,
        events: &EventSender,
        commit: &str,
        branch: &str,
    ) -> Result<(), GitError> {
        if !valid_branch(branch) {
            return Err(GitError::BadBranch(branch.to_owned()));
        }
        tokio::fs::write(self.repo_dir.join(".git/config"), &self.config)
            .await
            .map_err(GitError::Config)?;
        let refspec = format!("{commit}:refs/heads/{branch}");
        self.streamed(
            events,
            "git push",
            &["push", "--no-verify", "origin", &refspec],
            &self.repo_dir,
        )
        .await
    }
}

/// A full object id printed by git.
fn object_id(out: &[u8]) -> Option<String> {
    let id = String::from_utf8_lossy(out).trim().to_owned();
    (id.len() >= 40 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

fn exit_status(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".into(),
    }
}

/// git's last words (`fatal: ...`) make a short error message.
fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| format!(": {}", line.chars().take(300).collect::<String>()))
        .unwrap_or_default()
}

/// git's ways of saying the server wanted other credentials (with prompts disabled, a
/// 401 shows up as a failed attempt to ask for a user name).
fn refused_credentials(output: &str) -> bool {
    output.contains("could not read Username")
        || output.contains("Authentication failed")
        || output.contains("The requested URL returned error: 401")
        || output.contains("The requested URL returned error: 403")
}

/// `scheme://host[:port]/` of an http(s) URL without credentials.
fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return None;
    }
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}/", parsed.scheme()),
        None => format!("{}://{host}/", parsed.scheme()),
    })
}

/// git's rules for a branch name (`git check-ref-format --branch`), plus no leading `-`
/// so it can never read as an option.
pub fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && name != "@"
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.contains("/.")
        && !name.contains(".lock/")
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_follow_git_rules() {
        for good in ["main", "bg-agent/42-upgrade-lodash", "release/1.x", "v1.2"] {
            assert!(valid_branch(good), "{good}");
        }
        for bad in [
            "", "-f", "a..b", "a b", "a:b", "x.lock", "a/", "@", "a@{1}", "a/.b", "a\\b", "~x",
        ] {
            assert!(!valid_branch(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_is_scoped_to_the_clone_url_origin() {
        assert_eq!(
            origin_of("https://github.com/acme/widgets.git").as_deref(),
            Some("https://github.com/")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8780/acme/widgets.git").as_deref(),
            Some("http://127.0.0.1:8780/")
        );
        assert_eq!(origin_of("https://x:tok@github.com/a/b.git"), None);
        assert_eq!(origin_of("file:///tmp/repo"), None);
        assert_eq!(origin_of("-uupload-pack=evil"), None);
    }

    #[test]
    fn errors_end_with_gits_last_line() {
        assert_eq!(
            last_line("Cloning into 'repo'...\nfatal: Authentication failed\n\n"),
            ": fatal: Authentication failed"
        );
        assert_eq!(last_line(""), "");
    }
}
