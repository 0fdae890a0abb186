//! git, run as a program with argv: clone, stage, commit, push. The token reaches git
//! only through its environment (`GIT_CONFIG_*` setting an `Authorization` header for the
//! clone URL's origin), never through argv or a URL, and only for the clone, the fetch
//! of an earlier attempt's branch right after it, and the push: the commands that run
//! before any code of the repository, and after every process it started has ended
//! (`crate::reaper`).
//!
//! What git reads besides its argv and environment is closed to the repository's code:
//! no system or global configuration (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`),
//! and `HOME` and `XDG_CONFIG_HOME` at `/dev/null`, under which no file can ever exist, so
//! no `~/.gitconfig`, `~/.config/git/config` or `~/.netrc` that a validation command wrote
//! is read. The push does not read the clone's `.git` either (its `config`, `commondir`,
//! `config.worktree`, `remotes/`, includes, or a symlink in place of any of them): it runs
//! in a git directory the runner makes once nothing else runs, with a configuration of its
//! own, borrowing only the clone's objects, and pushes to the clone URL named in argv.

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
    #[error("cannot read .git/shallow of the clone: {0}")]
    Shallow(std::io::Error),
    #[error("cannot prepare the git directory to push from: {0}")]
    PushDir(std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// A clone of the task's repository, and what the runner remembers of it as cloned.
pub struct Git {
    /// The environment of every git command (without the token).
    env: ChildEnv,
    token: SecretString,
    repo_dir: PathBuf,
    /// The clone URL; the push goes there too.
    url: String,
    /// The origin the token is for (`scheme://host[:port]/`).
    origin: String,
    /// The commit cloned: the parent of the runner's commit, whatever happens to HEAD.
    base: String,
    /// `.git/shallow` as cloned (where the history stops), if the clone is shallow.
    shallow: Option<Vec<u8>>,
}

/// The change, staged: its tree and the paths it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub tree: String,
    pub changed_files: Vec<String>,
}

/// The staged change as git prints it (see [`Git::staged_diff`]).
#[derive(Debug, Clone, Default)]
pub struct StagedDiff {
    /// `--name-status -z`: `status\0path\0`...
    pub name_status: Vec<u8>,
    /// `--numstat -z`: `added\tremoved\tpath\0`..., `-` counts for binary files.
    pub numstat: Vec<u8>,
    /// `--unified=0`: the patch without context lines.
    pub patch: Vec<u8>,
}

/// git options on every command: no hooks (the repository's code, or an agent, may have
/// written some into `.git/hooks` by the time the runner commits and pushes).
const SAFE_OPTIONS: [&str; 4] = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
];

/// Where [`Git::fetch_branch`] puts the fetched branch.
const RESUME_REF: &str = "refs/bg-agent/resume";

/// A path under which no file can exist, for root too: `/dev/null` is not a directory.
const NOWHERE: &str = "/dev/null";

/// The environment of every git command: `env` (the children's) with git's configuration
/// limited to the repository's own and the command line, and the transports to the clone
/// URL's scheme (no `ext::` command, whatever a configuration says).
fn git_env(env: ChildEnv, scheme: &str) -> ChildEnv {
    env.with("GIT_CONFIG_NOSYSTEM", "1")
        .with("GIT_CONFIG_SYSTEM", NOWHERE)
        .with("GIT_CONFIG_GLOBAL", NOWHERE)
        .with("GIT_ATTR_NOSYSTEM", "1")
        .with("HOME", NOWHERE)
        .with("XDG_CONFIG_HOME", NOWHERE)
        .with("GIT_ALLOW_PROTOCOL", scheme)
}

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
        let (scheme, origin) = origin_of(url).ok_or(GitError::BadUrl)?;
        if !valid_branch(branch) {
            return Err(GitError::BadBranch(branch.to_owned()));
        }
        let mut git = Self {
            env: git_env(env, &scheme),
            token: token.clone(),
            repo_dir: repo_dir.to_path_buf(),
            url: url.to_owned(),
            origin,
            base: String::new(),
            shallow: None,
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
        // Read now, before any code of the repository runs.
        git.shallow = match tokio::fs::read(repo_dir.join(".git/shallow")).await {
            Ok(shallow) => Some(shallow),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(GitError::Shallow(e)),
        };
        Ok(git)
    }

    /// Fetches `branch` (an earlier attempt's kept change) from the clone URL, with the
    /// token as for the clone: only right after it, before any code of the repository
    /// has run. Its commit and that commit's parent (whose change is applied) are
    /// fetched; `Ok(None)` when the server has no such branch.
    pub async fn fetch_branch(
        &self,
        events: &EventSender,
        branch: &str,
    ) -> Result<Option<String>, GitError> {
        if !valid_branch(branch) {
            return Err(GitError::BadBranch(branch.to_owned()));
        }
        // Into a ref of the runner's own, not FETCH_HEAD or a branch the checkout knows.
        let refspec = format!("+refs/heads/{branch}:{RESUME_REF}");
        let fetched = self
            .streamed(
                events,
                "git fetch",
                &[
                    "fetch",
                    "--depth",
                    "2",
                    "--no-tags",
                    "--no-recurse-submodules",
                    "--",
                    &self.url,
                    &refspec,
                ],
                &self.repo_dir,
            )
            .await;
        match fetched {
            Ok(()) => Ok(Some(self.rev_parse(RESUME_REF).await?)),
            Err(GitError::Failed { message, .. })
                if message.contains("couldn't find remote ref") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Applies the change `commit` made to its parent onto the checkout (work tree and
    /// index; HEAD stays the commit cloned, so the change is still measured against the
    /// default branch). `Err(reason)` inside `Ok` when it does not apply cleanly (the
    /// default branch has moved in the same lines): the checkout is then left as cloned.
    pub async fn apply_change_of(
        &self,
        commit: &str,
        name: &str,
        email: &str,
    ) -> Result<Result<(), String>, GitError> {
        // cherry-pick wants an identity even when it makes no commit.
        let env = self
            .env
            .with("GIT_COMMITTER_NAME", name)
            .with("GIT_COMMITTER_EMAIL", email);
        let picked = self
            .local(
                &env,
                "git cherry-pick",
                &[
                    "cherry-pick",
                    "--no-commit",
                    "--no-rerere-autoupdate",
                    commit,
                ],
            )
            .await;
        match picked {
            Ok(_) => Ok(Ok(())),
            Err(GitError::Failed { message, .. }) => {
                let conflicted = self
                    .local(
                        &self.env,
                        "git diff",
                        &["diff", "--name-only", "--diff-filter=U", "-z"],
                    )
                    .await
                    .unwrap_or_default();
                let conflicted: Vec<String> = conflicted
                    .split(|b| *b == 0)
                    .filter(|path| !path.is_empty())
                    .take(10)
                    .map(|path| String::from_utf8_lossy(path).into_owned())
                    .collect();
                // Back to the commit cloned: conflict markers and half-applied files go.
                self.local(
                    &self.env,
                    "git reset",
                    &["reset", "--hard", "--quiet", &self.base],
                )
                .await?;
                Ok(Err(if conflicted.is_empty() {
                    format!("git cherry-pick failed{message}")
                } else {
                    format!(
                        "it conflicts with the default branch in {}",
                        conflicted.join(", ")
                    )
                }))
            }
            Err(e) => Err(e),
        }
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

    /// A short local command in the clone (no token); its stdout on success.
    async fn local(
        &self,
        env: &ChildEnv,
        name: &'static str,
        args: &[&str],
    ) -> Result<Vec<u8>, GitError> {
        Self::local_in(env, name, args, &self.repo_dir).await
    }

    async fn local_in(
        env: &ChildEnv,
        name: &'static str,
        args: &[&str],
        cwd: &Path,
    ) -> Result<Vec<u8>, GitError> {
        let command = env
            .command(&Self::argv(args), cwd)
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

    /// A file as it is in the commit cloned (not the work tree, which the agent may
    /// have changed); `None` if the commit has no such file.
    pub async fn base_file(&self, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let object = format!("{}:{path}", self.base);
        let exists = Self::argv(&["cat-file", "-e", &object]);
        let command = self
            .env
            .command(&exists, &self.repo_dir)
            .ok_or(ProcessError::Empty)?;
        if process::run_captured(command, "git").await?.code != Some(0) {
            return Ok(None);
        }
        let blob = self
            .local(&self.env, "git cat-file", &["cat-file", "blob", &object])
            .await?;
        Ok(Some(blob))
    }

    /// The staged change against the commit cloned, for the scope guard. No renames (a
    /// moved test file shows as deleted and added), no external diff program or textconv
    /// filter (the repository's configuration may name one).
    pub async fn staged_diff(&self) -> Result<StagedDiff, GitError> {
        Ok(StagedDiff {
            name_status: self.cached_diff(&["--name-status", "-z"]).await?,
            numstat: self.cached_diff(&["--numstat", "-z"]).await?,
            patch: self.cached_diff(&["--no-color", "--unified=0"]).await?,
        })
    }

    async fn cached_diff(&self, options: &[&str]) -> Result<Vec<u8>, GitError> {
        let argv: Vec<&str> = [
            "diff",
            "--cached",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
        ]
        .into_iter()
        .chain(options.iter().copied())
        .chain([self.base.as_str()])
        .collect();
        self.local(&self.env, "git diff", &argv).await
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

    /// `git push <clone URL> <commit>:refs/heads/<branch>` (not forced: branch names are
    /// the task's own, so an existing one is a surprise worth failing on), from a git
    /// directory made now (see the module's documentation). Call only once every process
    /// the repository's code started has ended: nothing may rewrite what git reads here,
    /// nor read the token from git's environment.
    pub async fn push(
        &self,
        events: &EventSender,
        commit: &str,
        branch: &str,
    ) -> Result<(), GitError> {
        if !valid_branch(branch) {
            return Err(GitError::BadBranch(branch.to_owned()));
        }
        let git_dir = self.push_dir().await?;
        let git_dir_option = format!("--git-dir={}", git_dir.path().display());
        let refspec = format!("{commit}:refs/heads/{branch}");
        self.streamed(
            events,
            "git push",
            &[
                &git_dir_option,
                // The clone's commit-graph would describe commits to this push; the objects
                // themselves are what counts.
                "-c",
                "core.commitGraph=false",
                "push",
                "--no-verify",
                "--",
                &self.url,
                &refspec,
            ],
            git_dir.path(),
        )
        .await
    }

    /// An empty bare repository, created under a fresh name beside the clone, that
    /// borrows the clone's objects (`objects/info/alternates`) and knows where its history
    /// stops (`shallow`, as cloned). Removed when dropped.
    async fn push_dir(&self) -> Result<tempfile::TempDir, GitError> {
        let parent = self.repo_dir.parent().unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix(".bg-agent-push-")
            .tempdir_in(parent)
            .map_err(GitError::PushDir)?;
        // `--git-dir`, so that git looks for no repository around it; no templates.
        let git_dir_option = format!("--git-dir={}", dir.path().display());
        Self::local_in(
            &self.env,
            "git init",
            &[&git_dir_option, "init", "--quiet", "--bare", "--template="],
            dir.path(),
        )
        .await?;
        let objects =
            std::path::absolute(self.repo_dir.join(".git/objects")).map_err(GitError::PushDir)?;
        let info = dir.path().join("objects/info");
        tokio::fs::create_dir_all(&info)
            .await
            .map_err(GitError::PushDir)?;
        let mut alternates = objects.into_os_string().into_encoded_bytes();
        alternates.push(b'\n');
        tokio::fs::write(info.join("alternates"), alternates)
            .await
            .map_err(GitError::PushDir)?;
        if let Some(shallow) = &self.shallow {
            tokio::fs::write(dir.path().join("shallow"), shallow)
                .await
                .map_err(GitError::PushDir)?;
        }
        Ok(dir)
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

/// The scheme and `scheme://host[:port]/` of an http(s) URL without credentials.
fn origin_of(url: &str) -> Option<(String, String)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return None;
    }
    let host = parsed.host_str()?;
    let scheme = parsed.scheme();
    let origin = match parsed.port() {
        Some(port) => format!("{scheme}://{host}:{port}/"),
        None => format!("{scheme}://{host}/"),
    };
    Some((scheme.to_owned(), origin))
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
        let origin = |url| origin_of(url).map(|(_, origin)| origin);
        assert_eq!(
            origin("https://github.com/acme/widgets.git").as_deref(),
            Some("https://github.com/")
        );
        assert_eq!(
            origin("http://127.0.0.1:8780/acme/widgets.git").as_deref(),
            Some("http://127.0.0.1:8780/")
        );
        assert_eq!(
            origin_of("https://github.com/a/b.git")
                .map(|(scheme, _)| scheme)
                .as_deref(),
            Some("https")
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
