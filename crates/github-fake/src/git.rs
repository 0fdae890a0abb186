//! Real git behind the fake: one bare repository per simulated repository,
//! made and read with the `git` binary, and served over smart HTTP by running
//! `git http-backend` as a CGI program.
//!
//! Every command runs with argv (never a shell) and an environment cleared of
//! the machine's git configuration, so nothing outside the sim can change what
//! it does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// Why a git command failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("git {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from git {args}: {detail}")]
    Output { args: String, detail: String },
    #[error("{0}")]
    Setup(String),
}

/// A commit as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub tree: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub author_date: String,
    pub committer_name: String,
    pub committer_email: String,
    pub committer_date: String,
    pub message: String,
}

/// One entry of a tree (`git ls-tree -l`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    pub kind: String,
    pub sha: String,
    pub size: Option<u64>,
    pub path: String,
}

/// A CGI request for `git http-backend`.
#[derive(Debug)]
pub struct CgiRequest<'a> {
    pub method: &'a str,
    /// `/{owner}/{repo}.git/info/refs` etc., relative to the project root.
    pub path_info: String,
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub git_protocol: Option<&'a str>,
    pub remote_user: &'a str,
    pub remote_addr: String,
    pub body: &'a [u8],
}

#[derive(Debug)]
pub struct CgiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The bare repositories of one sim, in a directory it owns.
#[derive(Debug)]
pub struct GitStore {
    /// Removed when the sim goes away.
    _dir: tempfile::TempDir,
    /// `GIT_PROJECT_ROOT`: `{owner}/{name}.git` below it.
    project_root: PathBuf,
    /// An empty `HOME` for every git process.
    home: PathBuf,
    http_backend: PathBuf,
    path_env: String,
}

impl GitStore {
    pub async fn new() -> Result<Self, GitError> {
        let dir = tempfile::Builder::new()
            .prefix("bg-agent-github-sim-")
            .tempdir()
            .map_err(|e| GitError::Setup(format!("cannot create a temporary directory: {e}")))?;
        let project_root = dir.path().join("repos");
        let home = dir.path().join("home");
        for path in [&project_root, &home] {
            std::fs::create_dir_all(path)
                .map_err(|e| GitError::Setup(format!("cannot create {}: {e}", path.display())))?;
        }
        let path_env =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
        let mut store = Self {
            _dir: dir,
            project_root,
            home,
            http_backend: PathBuf::new(),
            path_env,
        };
        store.http_backend = store.find_http_backend().await?;
        Ok(store)
    }

    /// `git http-backend` of the same git as `git` on PATH, else Debian's.
    async fn find_http_backend(&self) -> Result<PathBuf, GitError> {
        let exec_path = self.output(None, &["--exec-path"], None).await?;
        let exec_path = String::from_utf8_lossy(&exec_path).trim().to_owned();
        let candidates = [
            Path::new(&exec_path).join("git-http-backend"),
            PathBuf::from("/usr/lib/git-core/git-http-backend"),
        ];
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| GitError::Setup("git-http-backend not found".into()))
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", &self.path_env)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("LC_ALL", "C")
            .kill_on_drop(true);
        command
    }

    fn git_command(&self, git_dir: Option<&Path>, args: &[&str]) -> Command {
        let mut command = self.command(Path::new("git"));
        if let Some(git_dir) = git_dir {
            command.arg("--git-dir").arg(git_dir);
        }
        command.args(args);
        command
    }

    /// Runs git; stdout on success, [`GitError::Failed`] otherwise.
    async fn output(
        &self,
        git_dir: Option<&Path>,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, GitError> {
        self.output_with(git_dir, args, stdin, &[]).await
    }

    /// [`Self::output`] with extra environment variables.
    async fn output_with(
        &self,
        git_dir: Option<&Path>,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> Result<Vec<u8>, GitError> {
        let (status, stdout, stderr) = self.run(git_dir, args, stdin, env).await?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(GitError::Failed {
                args: args.join(" "),
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
            })
        }
    }

    async fn run(
        &self,
        git_dir: Option<&Path>,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), GitError> {
        let mut command = self.git_command(git_dir, args);
        command.envs(env.iter().copied());
        let output = pipe(command, "git", stdin.unwrap_or_default(), stdin.is_some()).await?;
        Ok((output.status, output.stdout, output.stderr))
    }

    /// Where the bare repository of `owner/name` lives.
    pub fn repo_dir(&self, owner: &str, name: &str) -> PathBuf {
        self.project_root.join(owner).join(format!("{name}.git"))
    }

    /// Creates a bare repository whose `default_branch` holds one commit with `files`.
    pub async fn init_repo(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
        files: &[(&str, &[u8])],
    ) -> Result<PathBuf, GitError> {
        let git_dir = self.repo_dir(owner, name);
        if git_dir.exists() {
            return Err(GitError::Setup(format!(
                "{} already exists",
                git_dir.display()
            )));
        }
        let git_dir_arg = git_dir.to_string_lossy().into_owned();
        let branch_arg = format!("--initial-branch={default_branch}");
        self.output(
            None,
            &["init", "--quiet", "--bare", &branch_arg, &git_dir_arg],
            None,
        )
        .await?;
        let mut index_info = Vec::new();
        for (path, content) in files {
            let path = path.trim_matches('/');
            if path.is_empty() || path.contains('\0') {
                return Err(GitError::Setup(format!("bad seed file path {path:?}")));
            }
            let sha = self
                .output(
                    Some(&git_dir),
                    &["hash-object", "-w", "--stdin"],
                    Some(content),
                )
                .await?;
            let sha = String::from_utf8_lossy(&sha).trim().to_owned();
            index_info.extend_from_slice(format!("100644 {sha}\t{path}\0").as_bytes());
        }
        // A throwaway index builds nested trees without a working tree.
        let index_file = git_dir.join("sim-seed-index");
        let index_env = index_file.to_string_lossy().into_owned();
        let env = [("GIT_INDEX_FILE", index_env.as_str())];
        self.output_with(
            Some(&git_dir),
            &["update-index", "-z", "--index-info"],
            Some(&index_info),
            &env,
        )
        .await?;
        let tree = self
            .output_with(Some(&git_dir), &["write-tree"], None, &env)
            .await;
        let _ = std::fs::remove_file(&index_file);
        let tree = String::from_utf8_lossy(&tree?).trim().to_owned();
        // A fixed identity and date: the same seed always gives the same commit.
        let author = [
            ("GIT_AUTHOR_NAME", "octo-lead"),
            ("GIT_AUTHOR_EMAIL", "octo-lead@users.noreply.github.com"),
            ("GIT_AUTHOR_DATE", "2025-06-01T12:00:00Z"),
            ("GIT_COMMITTER_NAME", "GitHub"),
            ("GIT_COMMITTER_EMAIL", "noreply@github.com"),
            ("GIT_COMMITTER_DATE", "2025-06-01T12:00:00Z"),
        ];
        let commit = self
            .output_with(
                Some(&git_dir),
                &["commit-tree", &tree, "-m", "Initial commit"],
                None,
                &author,
            )
            .await?;
        let commit = String::from_utf8_lossy(&commit).trim().to_owned();
        let branch_ref = format!("refs/heads/{default_branch}");
        self.output(Some(&git_dir), &["update-ref", &branch_ref, &commit], None)
            .await?;
        Ok(git_dir)
    }

    /// The commit `rev` names (branch, tag, full ref or sha), if any.
    pub async fn resolve_commit(
        &self,
        git_dir: &Path,
        rev: &str,
    ) -> Result<Option<String>, GitError> {
        if !is_safe_rev(rev) {
            return Ok(None);
        }
        let spec = format!("{rev}^{{commit}}");
        let (status, stdout, _) = self
            .run(
                Some(git_dir),
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    &spec,
                ],
                None,
                &[],
            )
            .await?;
        if !status.success() {
            return Ok(None);
        }
        let sha = String::from_utf8_lossy(&stdout).trim().to_owned();
        Ok(is_sha(&sha).then_some(sha))
    }

    /// The commit a branch points at, if the branch exists.
    pub async fn branch_sha(
        &self,
        git_dir: &Path,
        branch: &str,
    ) -> Result<Option<String>, GitError> {
        if branch.is_empty() || !is_safe_rev(branch) {
            return Ok(None);
        }
        self.resolve_commit(git_dir, &format!("refs/heads/{branch}"))
            .await
    }

    /// The object a full ref (`refs/heads/main`) points at, if it exists.
    pub async fn ref_target(
        &self,
        git_dir: &Path,
        full_ref: &str,
    ) -> Result<Option<String>, GitError> {
        if !full_ref.starts_with("refs/") || !is_safe_rev(full_ref) {
            return Ok(None);
        }
        let (status, stdout, _) = self
            .run(
                Some(git_dir),
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    full_ref,
                ],
                None,
                &[],
            )
            .await?;
        let sha = String::from_utf8_lossy(&stdout).trim().to_owned();
        Ok((status.success() && is_sha(&sha)).then_some(sha))
    }

    pub async fn commit(&self, git_dir: &Path, sha: &str) -> Result<CommitInfo, GitError> {
        const FORMAT: &str =
            "--format=%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B";
        let args = ["show", "-s", FORMAT, "--end-of-options", sha];
        let out = self.output(Some(git_dir), &args, None).await?;
        let text = String::from_utf8_lossy(&out);
        let fields: Vec<&str> = text.splitn(10, '\0').collect();
        let [sha, tree, parents, an, ae, ad, cn, ce, cd, message] = fields.as_slice() else {
            return Err(GitError::Output {
                args: args.join(" "),
                detail: format!("{} fields", fields.len()),
            });
        };
        Ok(CommitInfo {
            sha: (*sha).to_owned(),
            tree: (*tree).to_owned(),
            parents: parents.split_whitespace().map(str::to_owned).collect(),
            author_name: (*an).to_owned(),
            author_email: (*ae).to_owned(),
            author_date: (*ad).to_owned(),
            committer_name: (*cn).to_owned(),
            committer_email: (*ce).to_owned(),
            committer_date: (*cd).to_owned(),
            message: message.trim_end_matches('\n').to_owned(),
        })
    }

    /// The entry at `path` in `commit`'s tree, if present.
    pub async fn entry(
        &self,
        git_dir: &Path,
        commit: &str,
        path: &str,
    ) -> Result<Option<TreeEntry>, GitError> {
        let path = path.trim_matches('/');
        if path.is_empty() || !is_sha(commit) {
            return Ok(None);
        }
        let out = self
            .output(
                Some(git_dir),
                &["ls-tree", "-z", "-l", commit, "--", path],
                None,
            )
            .await?;
        Ok(parse_ls_tree(&out).into_iter().find(|e| e.path == path))
    }

    /// The entries of a tree object.
    pub async fn tree(&self, git_dir: &Path, tree_sha: &str) -> Result<Vec<TreeEntry>, GitError> {
        if !is_sha(tree_sha) {
            return Ok(Vec::new());
        }
        let out = self
            .output(Some(git_dir), &["ls-tree", "-z", "-l", tree_sha], None)
            .await?;
        Ok(parse_ls_tree(&out))
    }

    pub async fn blob(&self, git_dir: &Path, sha: &str) -> Result<Vec<u8>, GitError> {
        self.output(Some(git_dir), &["cat-file", "blob", sha], None)
            .await
    }

    /// Sets `full_ref` to `new_sha`; with `expected_old` only if it still points
    /// there (`Some("")`: only if it does not exist yet). False when that check failed.
    pub async fn update_ref(
        &self,
        git_dir: &Path,
        full_ref: &str,
        new_sha: &str,
        expected_old: Option<&str>,
    ) -> Result<bool, GitError> {
        let zero = "0".repeat(40);
        let old = expected_old.map(|old| if old.is_empty() { zero.as_str() } else { old });
        let mut args = vec!["update-ref", "-m", "github-sim", full_ref, new_sha];
        args.extend(old);
        let (status, _, _) = self.run(Some(git_dir), &args, None, &[]).await?;
        Ok(status.success())
    }

    pub async fn delete_ref(&self, git_dir: &Path, full_ref: &str) -> Result<bool, GitError> {
        let (status, _, _) = self
            .run(Some(git_dir), &["update-ref", "-d", full_ref], None, &[])
            .await?;
        Ok(status.success())
    }

    /// True when `ancestor` is reachable from `descendant`.
    pub async fn is_ancestor(
        &self,
        git_dir: &Path,
        ancestor: &str,
        descendant: &str,
    ) -> Result<bool, GitError> {
        let (status, _, _) = self
            .run(
                Some(git_dir),
                &["merge-base", "--is-ancestor", ancestor, descendant],
                None,
                &[],
            )
            .await?;
        Ok(status.success())
    }

    /// Runs `git http-backend` for one smart-HTTP request.
    pub async fn http_backend(&self, request: CgiRequest<'_>) -> Result<CgiResponse, GitError> {
        let mut command = self.command(&self.http_backend);
        command
            .env("GIT_PROJECT_ROOT", &self.project_root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", &request.path_info)
            .env("REQUEST_METHOD", request.method)
            .env("QUERY_STRING", request.query)
            .env("CONTENT_LENGTH", request.body.len().to_string())
            .env("REMOTE_USER", request.remote_user)
            .env("REMOTE_ADDR", &request.remote_addr)
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1");
        if let Some(content_type) = request.content_type {
            command.env("CONTENT_TYPE", content_type);
        }
        if let Some(encoding) = request.content_encoding {
            command.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if let Some(protocol) = request.git_protocol {
            command.env("HTTP_GIT_PROTOCOL", protocol);
        }
        let output = pipe(command, "git-http-backend", request.body, true).await?;
        if !output.stderr.is_empty() {
            tracing::debug!(stderr = %String::from_utf8_lossy(&output.stderr).trim(), "git http-backend");
        }
        parse_cgi(&output.stdout).ok_or_else(|| GitError::Output {
            args: "http-backend".into(),
            detail: format!(
                "no CGI header block (exit {}; {})",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Spawns `command`, feeds it `stdin` (closing it after), and collects its output.
async fn pipe(
    mut command: Command,
    program: &str,
    stdin: &[u8],
    feed_stdin: bool,
) -> Result<std::process::Output, GitError> {
    command
        .stdin(if feed_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| GitError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.to_vec();
        // Written concurrently with reading stdout, so large bodies cannot deadlock.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
            let _ = pipe.shutdown().await;
        })
    });
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    Ok(output)
}

/// Splits a CGI response into status, headers and body.
fn parse_cgi(raw: &[u8]) -> Option<CgiResponse> {
    let crlf = find(raw, b"\r\n\r\n").map(|i| (i, 4));
    let lf = find(raw, b"\n\n").map(|i| (i, 2));
    let (end, separator) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return None,
    };
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or(500);
        } else {
            headers.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    Some(CgiResponse {
        status,
        headers,
        body: raw[end + separator..].to_vec(),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_ls_tree(out: &[u8]) -> Vec<TreeEntry> {
    out.split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .filter_map(|record| {
            let record = String::from_utf8_lossy(record);
            let (meta, path) = record.split_once('\t')?;
            let mut parts = meta.split_whitespace();
            let mode = parts.next()?.to_owned();
            let kind = parts.next()?.to_owned();
            let sha = parts.next()?.to_owned();
            let size = parts.next().and_then(|s| s.parse().ok());
            Some(TreeEntry {
                mode,
                kind,
                sha,
                size,
                path: path.to_owned(),
            })
        })
        .collect()
}

pub fn is_sha(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Revisions from requests are passed as argv, but must still not read as an
/// option or carry revision syntax that reaches outside what was asked.
fn is_safe_rev(rev: &str) -> bool {
    !rev.is_empty()
        && !rev.starts_with('-')
        && !rev.contains("..")
        && !rev.contains(':')
        && !rev.contains("@{")
        && !rev
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_headers_and_status() {
        let raw = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno";
        let parsed = parse_cgi(raw).unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(parsed.status, 403);
        assert_eq!(
            parsed.headers,
            vec![("Content-Type".into(), "text/plain".into())]
        );
        assert_eq!(parsed.body, b"no");
        let lf = parse_cgi(b"Content-Type: x\n\n\x00\x01").unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(lf.status, 200);
        assert_eq!(lf.body, b"\x00\x01");
        assert!(parse_cgi(b"garbage").is_none());
    }

    #[test]
    fn unsafe_revisions_are_refused() {
        for bad in ["", "-x", "a..b", "main:secret", "main@{1}", "a b"] {
            assert!(!is_safe_rev(bad), "{bad}");
        }
        assert!(is_safe_rev("bg-agent/17-upgrade"));
    }
}
