//! The coding-agent harness's own overhead per task: (a) agent start → the CLI's first
//! model request, and (b) the last model answer → the change pushed. The real Claude Code
//! CLI (or Codex: `PROVIDER=codex`) runs in the runner's sandbox against the test kit's
//! scripted model API (which answers at once, so nothing here is model time), with the
//! real server, database, runner and fake GitHub on loopback; tasks run one after another
//! (one requester), each the same edit and checks.
//!
//!     cargo bench -p bg-agent --bench agent_overhead          # TASKS=20
//!     TASKS=50 PROVIDER=codex cargo bench -p bg-agent --bench agent_overhead
//!
//! "Agent start" is the runner's `applying` report (sent just before it starts the CLI),
//! "pushed" its report of the pushed commit, both as the server stored them; the model
//! API records when each request arrived and when its answer was ready, on the same
//! clock. (b) is split at the runner's report that the CLI has exited. Baselines in the
//! same run: the generic `command` provider making the same edit with `sh` (the same
//! harness around a program that starts at once and asks no model), and the CLI's own
//! start, `<cli> --version`, outside the sandbox. Needs the CLIs `.ci/run` installs
//! (`/usr/local/lib/bg-agent-agents`) on `PATH`.

use std::time::{Duration, Instant};

use bg_agent::store::tasks::TaskEvent;
use bg_agent_core::protocol::{AgentProvider, AgentSpec};
use bg_agent_core::task::{TaskRecord, TaskState};
use bg_agent_testkit::bench::{env_number, summary};
use bg_agent_testkit::harness::{Harness, LEAD, Scenario};
use bg_agent_testkit::model_api::{ModelApi, Recorded, Step};
use chrono::{DateTime, Utc};
use serde_json::json;

/// The credential the agent is given; the model API accepts only it.
const CREDENTIAL: &str = "sk-bench-agent-credential";
const CHECKOUT: &str = "/workspace/repo";
const INSTRUCTIONS: &str = "/bg-agent run Make hello.txt say fixed";
/// The repository's one check: `hello.txt` must say `fixed`.
const HELLO_TEST: &str = "const text = require('fs').readFileSync('hello.txt', 'utf8');\nif (text !== 'fixed\\n') { console.error('hello.txt is wrong'); process.exit(1); }\nconsole.log('1 passed');\n";
const VALIDATION: &str = "validation:\n  - node test.js\n";

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// The script of one task, in the CLI's own tool names: write the file, then finish.
fn one_edit(provider: AgentProvider) -> Vec<Step> {
    let write = match provider {
        AgentProvider::Codex => Step::tool(
            "exec_command",
            json!({"cmd": "printf 'fixed\\n' > hello.txt"}),
        ),
        _ => Step::tool(
            "Write",
            json!({"file_path": format!("{CHECKOUT}/hello.txt"), "content": "fixed\n"}),
        ),
    };
    vec![write, Step::text("Done: hello.txt says fixed.")]
}

/// When the runner's reports reached the server, by what they said.
struct Reported {
    applying: DateTime<Utc>,
    round_ended: DateTime<Utc>,
    pushed: DateTime<Utc>,
}

fn reported(task: &TaskRecord, events: &[TaskEvent]) -> anyhow::Result<Reported> {
    let find = |what: &dyn Fn(&str) -> bool| {
        events
            .iter()
            .find(|e| what(&e.action))
            .map(|e| e.at)
            .ok_or_else(|| anyhow::anyhow!("task {} has no such event: {events:#?}", task.id))
    };
    Ok(Reported {
        applying: find(&|a| a == "phase applying")?,
        round_ended: find(&|a| a.contains(" round 1:"))?,
        pushed: find(&|a| a.starts_with("pushed "))?,
    })
}

/// Comments the command and waits until the task has ended and GitHub shows it.
async fn one_task(h: &Harness) -> anyhow::Result<(TaskRecord, Vec<TaskEvent>)> {
    let before = h.tasks().await.len();
    h.comment(LEAD, INSTRUCTIONS).await;
    let tasks = h.tasks().await;
    anyhow::ensure!(tasks.len() == before + 1, "the comment made no task");
    let id = tasks[tasks.len() - 1].id;
    let task = h.task(id).reported_end().await;
    if task.state != TaskState::Succeeded || task.pr_number.is_none() {
        let log = h.store().log_tail(task.id, 200).await?.join("\n");
        anyhow::bail!(
            "task {} ended {:?} ({:?}) without a pull request:\n{log}",
            task.id,
            task.state,
            task.error
        );
    }
    let events = h.task(id).events().await;
    Ok((task, events))
}

fn cli_start(program: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let output = std::process::Command::new(program)
            .arg("--version")
            .output()?;
        anyhow::ensure!(output.status.success(), "{program} --version failed");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

fn main() -> anyhow::Result<()> {
    let tasks = env_number("TASKS", 20).max(1);
    let provider = match std::env::var("PROVIDER").as_deref() {
        Ok("codex") => AgentProvider::Codex,
        Ok("claude_code") | Err(_) => AgentProvider::ClaudeCode,
        Ok(other) => anyhow::bail!("PROVIDER={other}: claude_code or codex"),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(tasks, provider))
}

async fn run(tasks: usize, provider: AgentProvider) -> anyhow::Result<()> {
    let program = provider.program().unwrap_or_default();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    anyhow::ensure!(
        on_path,
        "{program} is not on PATH: run .ci/run (it installs the pinned coding-agent CLIs into /usr/local/lib/bg-agent-agents) and add their bin directories to PATH"
    );
    let script: Vec<Step> = (0..tasks).flat_map(|_| one_edit(provider)).collect();
    let api = ModelApi::start(CREDENTIAL, script).await;
    let base_url = match provider {
        AgentProvider::Codex => format!("{}/v1", api.url()),
        _ => api.url(),
    };
    let agent = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .tests(HELLO_TEST)
        .file(".github/bg-agent.yml", VALIDATION)
        .agent_spec(AgentSpec {
            base_url: Some(base_url),
            max_turns: 10,
            ..AgentSpec::new(provider)
        })
        .agent_credential(CREDENTIAL)
        .start()
        .await;
    let baseline = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .tests(HELLO_TEST)
        .file(".github/bg-agent.yml", VALIDATION)
        .agent(&["sh", "-c", "printf 'fixed\\n' > hello.txt"])
        .start()
        .await;

    let mut first_request = Vec::new();
    let mut first_agent_request = Vec::new();
    let mut after_answer = Vec::new();
    let mut cli_exit = Vec::new();
    let mut check_and_push = Vec::new();
    let mut requests_per_task = Vec::new();
    let mut command_run = Vec::new();
    let mut command_check_and_push = Vec::new();
    let mut command_total = Vec::new();
    let mut agent_total = Vec::new();
    let started = Instant::now();
    // Interleaved, so that both see the same machine.
    for i in 0..tasks {
        let seen = api.requests().len();
        let (task, events) = one_task(&agent).await?;
        let at = reported(&task, &events)?;
        let asked: Vec<Recorded> = api.requests().into_iter().skip(seen).collect();
        let first = asked
            .first()
            .ok_or_else(|| anyhow::anyhow!("task {} asked the model nothing", task.id))?;
        let first_scripted = asked
            .iter()
            .find(|r| r.scripted)
            .ok_or_else(|| anyhow::anyhow!("task {} made no agent request", task.id))?;
        let last_answer = asked
            .iter()
            .map(|r| r.answered_at)
            .max()
            .unwrap_or(first.answered_at);
        first_request.push(ms(at.applying, first.received_at));
        first_agent_request.push(ms(at.applying, first_scripted.received_at));
        after_answer.push(ms(last_answer, at.pushed));
        cli_exit.push(ms(last_answer, at.round_ended));
        check_and_push.push(ms(at.round_ended, at.pushed));
        agent_total.push(ms(at.applying, at.pushed));
        requests_per_task.push(asked.len() as f64);

        let (task, events) = one_task(&baseline).await?;
        let at = reported(&task, &events)?;
        command_run.push(ms(at.applying, at.round_ended));
        command_check_and_push.push(ms(at.round_ended, at.pushed));
        command_total.push(ms(at.applying, at.pushed));
        eprintln!("task pair {}/{tasks} done", i + 1);
    }
    let wall = started.elapsed();
    agent.finish().await;
    baseline.finish().await;
    let version = cli_start(program, tasks)?;

    println!(
        "{} ({program}) against the scripted model API, {tasks} tasks each, sequential, {:.0} s",
        provider.display(),
        wall.as_secs_f64()
    );
    println!("-- (a) agent start -> first model request");
    summary(
        "applying reported -> first model request (any)",
        first_request,
        95.0,
    );
    summary(
        "applying reported -> first agent-loop request",
        first_agent_request,
        95.0,
    );
    summary(
        &format!("baseline: `{program} --version` (outside the sandbox)"),
        version,
        95.0,
    );
    summary(
        "baseline: command provider, applying -> its round reported",
        command_run,
        95.0,
    );
    println!("-- (b) last model answer -> pushed");
    summary("last model answer -> pushed", after_answer, 95.0);
    summary(
        "  last model answer -> CLI exited (round reported)",
        cli_exit,
        95.0,
    );
    summary(
        "  round reported -> pushed (checks, commit, push)",
        check_and_push,
        95.0,
    );
    summary(
        "baseline: command provider, round reported -> pushed",
        command_check_and_push,
        95.0,
    );
    println!("-- whole agent phase");
    summary("applying -> pushed", agent_total, 95.0);
    summary(
        "baseline: command provider, applying -> pushed",
        command_total,
        95.0,
    );
    requests_per_task.sort_by(f64::total_cmp);
    println!(
        "model requests per task: {} to {} (the agent loop's and the CLI's own)",
        requests_per_task.first().copied().unwrap_or(0.0),
        requests_per_task.last().copied().unwrap_or(0.0)
    );
    // Let the servers' last log lines out before the summary ends the output.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
