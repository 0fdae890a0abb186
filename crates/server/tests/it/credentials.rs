//! Agent credentials for real: `bg-agent credentials` against a real database and a
//! provider's API served on loopback, encryption at rest, rotation, delivery to the
//! runner of an agent task (and only there), and a clear failure without one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use bg_agent::credentials::{AgentProvider, Keyring, Provider, Scope, fingerprint};
use bg_agent::executor::SandboxMode;
use bg_agent_core::task::TaskState;
use bg_agent_testkit::db::TestDb;
use bg_agent_testkit::harness::{LEAD, LEAD_ID, Scenario};

const OLD_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW_KEY: &str = "HxgdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
const VALUE: &str = "sk-ant-api03-credential-under-test-0123456789";

fn keyring(text: &str) -> Keyring {
    Keyring::parse(&SecretString::from(text.to_owned())).unwrap()
}

/// The fixtures' installation.
fn installation() -> i64 {
    github_fake::world::INSTALLATION_ID as i64
}

/// A provider API that answers model listings: 200 for `good`, 401 otherwise, and
/// records the credential header of every request.
async fn provider_api(good: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |header: &'static str, seen: Arc<Mutex<Vec<String>>>| {
        move |headers: HeaderMap| async move {
            let value = headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_owned();
            seen.lock().unwrap().push(format!("{header}: {value}"));
            if value == good {
                (StatusCode::OK, r#"{"data":[]}"#)
            } else {
                (StatusCode::UNAUTHORIZED, r#"{"error":"invalid x-api-key"}"#)
            }
        }
    };
    let app = Router::new()
        .route(
            "/anthropic/v1/models",
            get(record("x-api-key", seen.clone())),
        )
        .route(
            "/openai/v1/models",
            get(record("authorization", seen.clone())),
        )
        .route(
            "/gemini/v1beta/models",
            get(record("x-goog-api-key", seen.clone())),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

struct Cli {
    database_url: String,
    api: String,
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bg-agent"));
        command
            .arg("credentials")
            .args(args)
            .env_remove("BG_AGENT_CONFIG")
            .env("DATABASE_URL", &self.database_url)
            .env(
                "BG_AGENT_ENCRYPTION_KEY",
                format!("new:{NEW_KEY},old:{OLD_KEY}"),
            )
            .env(
                "BG_AGENT_ANTHROPIC_BASE_URL",
                format!("{}/anthropic", self.api),
            )
            .env("BG_AGENT_OPENAI_BASE_URL", format!("{}/openai", self.api))
            .env("BG_AGENT_GEMINI_BASE_URL", format!("{}/gemini", self.api))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        Ran {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Dates in listings vary; the rest is the text people read.
fn dated(text: &str) -> String {
    regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
        .unwrap()
        .replace_all(text, "[date]")
        .into_owned()
}

// Multi-threaded: the provider API serves while the test waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_tests_and_deletes_credentials_and_never_prints_one() {
    let db = TestDb::new().await;
    let (api, seen) = provider_api(VALUE).await;
    let cli = Cli {
        database_url: db.url(),
        api,
    };
    let set = cli.run(
        &["set", "--installation", "42", "--provider", "claude_code"],
        Some(&format!("{VALUE}\n")),
    );
    assert!(set.ok, "{}", set.stderr);
    let fp = fingerprint(VALUE);
    insta::assert_snapshot!(set.stdout.replace(&fp, "[fp]"), @"stored the anthropic credential of installation 42 (every user) (fingerprint [fp], key new)");
    let user = cli.run(
        &[
            "set",
            "--installation",
            "42",
            "--user",
            "7",
            "--provider",
            "openai",
        ],
        Some("sk-openai-wrong"),
    );
    assert!(user.ok, "{}", user.stderr);

    let list = cli.run(&["list"], None);
    assert!(list.ok, "{}", list.stderr);
    insta::assert_snapshot!(dated(&list.stdout.replace(&fp, "[fp]").replace(&fingerprint("sk-openai-wrong"), "[fp2]")), @"
    INSTALLATION  USER   PROVIDER   FINGERPRINT  KEY  CREATED               LAST USED
    42            (all)  anthropic  [fp]     new  [date]  never
    42            7      openai     [fp2]     new  [date]  never
    ");

    let test = cli.run(
        &["test", "--installation", "42", "--provider", "anthropic"],
        None,
    );
    assert!(test.ok, "{}", test.stderr);
    insta::assert_snapshot!(test.stdout.replace(&fp, "[fp]").replace(&cli.api, "[api]"), @"ok: the anthropic credential (fingerprint [fp]) at [api]/anthropic was accepted");
    let refused = cli.run(
        &[
            "test",
            "--installation",
            "42",
            "--user",
            "7",
            "--provider",
            "codex",
        ],
        None,
    );
    assert!(!refused.ok);
    insta::assert_snapshot!(refused.stderr.lines().last().unwrap().replace(&fingerprint("sk-openai-wrong"), "[fp2]").replace(&cli.api, "[api]"), @"bg-agent: refused: the openai credential (fingerprint [fp2]) at [api]/openai was refused (401); set a valid one");
    // One request each, carrying the credential as each provider expects it.
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            format!("x-api-key: {VALUE}"),
            "authorization: sk-openai-wrong".to_owned()
        ]
    );

    let deleted = cli.run(
        &[
            "delete",
            "--installation",
            "42",
            "--user",
            "7",
            "--provider",
            "openai",
        ],
        None,
    );
    assert!(deleted.ok, "{}", deleted.stderr);
    insta::assert_snapshot!(deleted.stdout, @"deleted the openai credential of installation 42 (user 7)");
    let again = cli.run(
        &[
            "delete",
            "--installation",
            "42",
            "--user",
            "7",
            "--provider",
            "openai",
        ],
        None,
    );
    assert!(!again.ok);
    assert!(
        again
            .stderr
            .contains("no openai credential for installation 42 (user 7)"),
        "{}",
        again.stderr
    );

    // An installation's default agent.
    let mut command = Command::new(env!("CARGO_BIN_EXE_bg-agent"));
    let output = command
        .args(["installation", "set-default", "--installation", "42"])
        .args(["--provider", "codex", "--model", "gpt-5-codex"])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(output.status.success());
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stdout), @"installation 42: default agent codex, model gpt-5-codex");
    assert_eq!(
        db.store().default_agent(42).await.unwrap(),
        Some(("codex".to_owned(), Some("gpt-5-codex".to_owned())))
    );

    // The value was on stdin only: never printed, never logged (at debug level).
    for ran in [&set, &user, &list, &test, &refused, &deleted, &again] {
        assert!(!ran.stdout.contains(VALUE) && !ran.stderr.contains(VALUE));
        assert!(!ran.stderr.contains("sk-openai-wrong"));
    }
    // Stored encrypted: the value is in no column of the row.
    let rows = db
        .store()
        .credential(&Scope {
            installation_id: 42,
            user_id: None,
            provider: Provider::Anthropic,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        !rows
            .sealed
            .ciphertext
            .windows(VALUE.len())
            .any(|w| w == VALUE.as_bytes())
    );
    assert_eq!(rows.sealed.key_id, "new");
}

#[tokio::test]
async fn a_credential_needs_the_key_and_an_empty_one_is_refused() {
    let db = TestDb::new().await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_bg-agent"));
    let output = command
        .args([
            "credentials",
            "set",
            "--installation",
            "1",
            "--provider",
            "gemini",
        ])
        .env_remove("BG_AGENT_ENCRYPTION_KEY")
        .env("DATABASE_URL", db.url())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stderr).trim(), @"bg-agent: no encryption key: set BG_AGENT_ENCRYPTION_KEY (32 random bytes, base64; e.g. `openssl rand -base64 32`)");
    let cli = Cli {
        database_url: db.url(),
        api: "http://127.0.0.1:9".into(),
    };
    let empty = cli.run(
        &["set", "--installation", "1", "--provider", "gemini"],
        Some("\n"),
    );
    assert!(!empty.ok);
    assert!(
        empty.stderr.contains("the credential is empty"),
        "{}",
        empty.stderr
    );
    assert!(db.store().credentials(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn rotation_keeps_old_rows_readable_and_a_wrong_key_fails_clearly() {
    let db = TestDb::new().await;
    let store = db.store();
    let scope = Scope {
        installation_id: 5,
        user_id: Some(9),
        provider: Provider::OpenAi,
    };
    let value = SecretString::from(VALUE.to_owned());
    let old = keyring(OLD_KEY);
    store
        .put_credential(
            &scope,
            &old.seal(&scope, &value).unwrap(),
            &fingerprint(VALUE),
        )
        .await
        .unwrap();
    let stored = store.credential(&scope).await.unwrap().unwrap();
    // A new current key in front: the row written with the old one still opens.
    let rotated = keyring(&format!("new:{NEW_KEY},{OLD_KEY}"));
    assert_eq!(
        rotated
            .open(&stored.scope, &stored.sealed)
            .unwrap()
            .expose_secret(),
        VALUE
    );
    // Without the old key: a clear error, not garbage.
    let err = keyring(&format!("new:{NEW_KEY}"))
        .open(&stored.scope, &stored.sealed)
        .unwrap_err();
    insta::assert_snapshot!(err.to_string().replace(old.current_id(), "[old]"), @"the credential was encrypted with key `[old]`, which BG_AGENT_ENCRYPTION_KEY does not hold");
    // The per-user credential wins over the installation's; others get the installation's.
    let everyone = Scope {
        user_id: None,
        ..scope
    };
    store
        .put_credential(
            &everyone,
            &rotated
                .seal(&everyone, &SecretString::from("sk-shared".to_owned()))
                .unwrap(),
            &fingerprint("sk-shared"),
        )
        .await
        .unwrap();
    let for_user = store
        .credential_for(5, 9, Provider::OpenAi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(for_user.scope.user_id, Some(9));
    let for_other = store
        .credential_for(5, 10, Provider::OpenAi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(for_other.scope.user_id, None);
    assert_eq!(
        rotated
            .open(&for_other.scope, &for_other.sealed)
            .unwrap()
            .expose_secret(),
        "sk-shared"
    );
    // One per scope, the installation-wide one included (NULLS NOT DISTINCT).
    let replaced = store
        .put_credential(
            &everyone,
            &rotated
                .seal(&everyone, &SecretString::from("sk-shared-2".to_owned()))
                .unwrap(),
            &fingerprint("sk-shared-2"),
        )
        .await
        .unwrap();
    assert!(replaced);
    assert_eq!(store.credentials(Some(5)).await.unwrap().len(), 2);
    // The installation's default agent.
    assert_eq!(store.default_agent(5).await.unwrap(), None);
    store
        .set_default_agent(5, "codex", Some("gpt-5"))
        .await
        .unwrap();
    assert_eq!(
        store.default_agent(5).await.unwrap(),
        Some(("codex".to_owned(), Some("gpt-5".to_owned())))
    );
}

/// A runner program that records whether its environment holds the agent credential (and
/// the value's SHA-256) in `dir/task-<id>`, then runs the real runner.
fn recording_runner(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("runner.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -n \"${{BG_AGENT_AGENT_CREDENTIAL+x}}\" ]; then printf %s \"$BG_AGENT_AGENT_CREDENTIAL\" | sha256sum | cut -c1-64 > {dir}/task-$BG_AGENT_TASK_ID.tmp; else echo absent > {dir}/task-$BG_AGENT_TASK_ID.tmp; fi\nmv {dir}/task-$BG_AGENT_TASK_ID.tmp {dir}/task-$BG_AGENT_TASK_ID\nexec {runner} \"$@\"\n",
            dir = dir.display(),
            runner = env!("CARGO_BIN_EXE_bg-agent"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// The credential reaches the runner of an agent task as `BG_AGENT_AGENT_CREDENTIAL`, not
/// the runner of an `upgrade`, and its value is in no log line, task row, check run or
/// pull request, though the agent printed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_reaches_agent_tasks_only_and_never_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let runner = recording_runner(dir.path());
    // The server chooses Claude Code and hands over Anthropic's credential; this runner
    // is told to run the configured command in its place, which prints the value: the
    // log line holds it only if the runner's redaction failed.
    let script = std::fs::read_to_string(&runner).unwrap().replace(
        "\nexec ",
        "\nBG_AGENT_TASK_SPEC=$(printf %s \"$BG_AGENT_TASK_SPEC\" | sed 's/\"provider\":\"claude_code\"/\"provider\":\"command\"/')\nexport BG_AGENT_TASK_SPEC\nexec ",
    );
    std::fs::write(&runner, script).unwrap();
    let keys = keyring(OLD_KEY);
    let configured = keys.clone();
    let h = Scenario::engine(runner)
        .agent(&["sh", "-c", &format!("echo 'leak? {VALUE}'; cat > NOTE.md")])
        .configure(move |config| {
            // Unsandboxed, so the recording runner can write where the test reads.
            config.sandbox.mode = SandboxMode::Off;
            config.run.agent.provider = AgentProvider::ClaudeCode;
            config.run.encryption_keys = Some(configured);
        })
        .start()
        .await;
    let scope = Scope {
        installation_id: installation(),
        user_id: Some(LEAD_ID),
        provider: Provider::Anthropic,
    };
    let value = SecretString::from(VALUE.to_owned());
    h.store()
        .put_credential(
            &scope,
            &keys.seal(&scope, &value).unwrap(),
            &fingerprint(VALUE),
        )
        .await
        .unwrap();

    h.comment(LEAD, "/bg-agent run write a note").await;
    let agent_task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    let seen = std::fs::read_to_string(dir.path().join(format!("task-{}", agent_task.id))).unwrap();
    assert_eq!(seen.trim(), hex::encode(Sha256::digest(VALUE.as_bytes())));
    let listed = h.store().credentials(Some(installation())).await.unwrap();
    assert!(listed[0].last_used_at.is_some(), "marked used");

    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let upgrade = h.tasks().await[1].id;
    let upgrade = h.task(upgrade).expect_state(TaskState::Succeeded).await;
    let seen = std::fs::read_to_string(dir.path().join(format!("task-{}", upgrade.id))).unwrap();
    assert_eq!(seen.trim(), "absent");

    // Nowhere: the log (redacted by value), the task rows and their audit, the check
    // runs, pull requests and comments.
    let log = h
        .store()
        .log_tail(agent_task.id, 2000)
        .await
        .unwrap()
        .join("\n");
    assert!(log.contains("leak? [REDACTED]"), "{log}");
    for task in [&agent_task, &upgrade] {
        let row = format!("{:?}", h.store().task(task.id).await.unwrap());
        assert!(!row.contains(VALUE));
        let audit = h.task(task.id).audit().await.join("\n");
        assert!(!audit.contains(VALUE));
        let run = h.check_run(task.id);
        assert!(!format!("{run:?}").contains(VALUE));
    }
    for pull in h.pulls() {
        assert!(!pull.body.contains(VALUE));
    }
    for comment in h.bot_comments() {
        assert!(!comment.contains(VALUE));
    }
    h.finish().await;
}

/// An agent that needs a credential, with none set: the task fails at once, saying which
/// command sets one; nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_task_without_a_credential_fails_naming_the_command() {
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .agent(&["sh", "-c", "cat > NOTE.md"])
        .configure(|config| {
            config.run.agent.provider = AgentProvider::Codex;
            config.run.encryption_keys = Some(keyring(OLD_KEY));
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run write a note").await;
    let task = h.only_task().await.expect_state(TaskState::Failed).await;
    assert!(task.execution_id.is_none(), "no runner was started");
    insta::assert_snapshot!(task.error.as_deref().unwrap_or_default().replace(&installation().to_string(), "[installation]"), @"the agent `codex` needs a credential for `openai`, and none is set for this installation or its requester; set one with `bg-agent credentials set --installation [installation] --provider openai` (the value on stdin), then retry");
    let run = h.check_run(task.id);
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert!(
        run.output
            .summary
            .as_deref()
            .unwrap_or_default()
            .contains("bg-agent credentials set"),
        "{:?}",
        run.output.summary
    );
    h.finish().await;
}
