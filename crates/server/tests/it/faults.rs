//! Faults lose nothing and leave nothing stuck: outages, crashes, storms. Each scenario
//! asserts the figures exactly (tasks, requests to GitHub) once things have settled.

use std::time::{Duration, Instant};

use bg_agent::engine::redelivery::RedeliverySettings;
use bg_agent_core::task::render::CHECK_RUN_NAME;
use bg_agent_core::task::{Phase, TaskId, TaskRecord, TaskState};
use bg_agent_testkit::harness::{Harness, ISSUE, LEAD, REPO, Scenario, WAIT};
use bg_agent_testkit::process::free_port;
use bg_agent_testkit::server_process::ServerProcess;
use github_fake::{Fault, FaultKind, Role};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sqlx::{ConnectOptions, Connection};

const RUNNER: &str = env!("CARGO_BIN_EXE_bg-agent");

/// GitHub does not redeliver by itself. Commands sent while the database is down are
/// answered 503; once it is back, the engine's sweep finds them in the App's delivery
/// list, asks GitHub to send each again, and every command becomes one task.
#[tokio::test]
async fn commands_refused_in_a_database_outage_are_asked_again_and_become_tasks() {
    let h = Scenario::engine(RUNNER)
        .database_behind_proxy()
        .redelivery(RedeliverySettings {
            every: Duration::from_millis(300),
            pause: Duration::ZERO,
            ..RedeliverySettings::default()
        })
        .start()
        .await;
    let people = ["ana", "ben", "cyd"];
    for person in people {
        h.add_user(person, Role::Write);
    }

    h.database_down();
    for person in people {
        let made = h
            .sim
            .comment(REPO, ISSUE, person, "/bg-agent upgrade lodash 4.17.21")
            .await
            .unwrap();
        assert_eq!(made.delivery.status_code, 503, "{made:?}");
    }
    assert!(h.tasks().await.is_empty());
    h.database_up();

    let deadline = tokio::time::Instant::now() + WAIT;
    while h.tasks().await.len() < people.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commands never became tasks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more sweeps find nothing missing: nothing is asked for twice.
    let (guids, attempts) = h.store().redelivery_counts().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.store().redelivery_counts().await.unwrap(),
        (guids, attempts)
    );
    assert_eq!((guids, attempts), (3, 3));
    let mut creators: Vec<String> = h
        .tasks()
        .await
        .into_iter()
        .map(|t| t.creator_login)
        .collect();
    creators.sort();
    assert_eq!(creators, people);
    h.finish().await;
}

// ---- The server killed (SIGKILL) mid-task, as a process of its own ----

/// Validation that holds the runner mid-run until the test lets it go: it connects to the
/// test on `port` (the sandbox shares the host's network, not its files) and passes once
/// it is sent a byte.
fn held_validation(port: u16) -> String {
    format!(
        "validation:\n  - node -e \"const s = require('net').connect({port}, '127.0.0.1'); s.on('data', () => process.exit(0)); s.on('error', () => process.exit(1));\"\n"
    )
}

/// The test's side of [`held_validation`]: the first runner to connect is held; once
/// released, every connection (this and later ones) is let go at once.
struct Hold {
    listener: tokio::net::TcpListener,
}

impl Hold {
    async fn new() -> (Self, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (Self { listener }, port)
    }

    /// Waits until a runner is held (its validation is running).
    async fn held(self) -> Held {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("no runner reached its validation")
            .unwrap();
        Held {
            stream,
            listener: self.listener,
        }
    }
}

struct Held {
    stream: tokio::net::TcpStream,
    listener: tokio::net::TcpListener,
}

impl Held {
    async fn release(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stream.write_all(b"go").await;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = self.listener.accept().await {
                let _ = stream.write_all(b"go").await;
            }
        });
    }
}

/// The runner's sandbox process, from the execution id the local executor stored
/// (`local:<boot>:<pid>:<start>:<workspace>`).
fn runner_pid(execution_id: &str) -> i32 {
    execution_id
        .split(':')
        .nth(2)
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("not a local execution id: {execution_id}"))
}

/// Whether `pid` runs (a zombie has ended).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// The servers' logs, shown when a test fails.
struct Logs<'a>(Vec<&'a ServerProcess>);

fn show_logs_on_failure(servers: &[&ServerProcess]) {
    if std::thread::panicking() {
        for (n, server) in servers.iter().enumerate() {
            eprintln!("---- server {n} ----\n{}", server.log());
        }
    }
}

impl Drop for Logs<'_> {
    fn drop(&mut self) {
        show_logs_on_failure(&self.0);
    }
}

/// The figures on GitHub: (check runs of the task, pull requests, tracking comments).
fn figures(h: &Harness) -> (usize, usize, usize) {
    let check_runs = h.sim.read(|s| {
        s.check_runs_in(REPO)
            .into_iter()
            .filter(|r| r.name == CHECK_RUN_NAME)
            .count()
    });
    (check_runs, h.pulls().len(), h.bot_comments().len())
}

/// The scenario of a SIGKILL fault: the repository's validation is held by `port`'s
/// [`Hold`], and the server runs as a process of its own (`env` added to its settings),
/// listening on an address a restarted server can take again. Returns the harness, the
/// server's log directory, its address and the server.
async fn killable_server(
    port: u16,
    env: &[(&str, &str)],
) -> (Harness, tempfile::TempDir, String, ServerProcess) {
    let h = Scenario::engine(RUNNER)
        .file(".github/bg-agent.yml", held_validation(port))
        .without_server()
        .start()
        .await;
    let logs = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = ServerProcess::start_with(RUNNER.as_ref(), &h, &listen, logs.path(), env).await;
    (h, logs, listen, server)
}

/// A comment's task, once its runner is held in validation: the task as it was then, the
/// held runner, and the pid of its sandbox's process group.
async fn validating_task(h: &Harness, hold: Hold) -> (TaskRecord, Held, i32) {
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    let held = hold.held().await;
    let running_task = h.task(task).wait_phase(Phase::Validating).await;
    let runner = runner_pid(running_task.execution_id.as_deref().unwrap());
    (running_task, held, runner)
}

/// The held runner is let go: its task succeeds, once — one task, one check run, one pull
/// request, one tracking comment.
async fn succeeds_once_released(
    h: &Harness,
    task: TaskId,
    held: Held,
    killed: Instant,
    fault: &str,
) {
    held.release().await;
    let done = h.task(task).expect_state(TaskState::Succeeded).await;
    println!(
        "fault: {fault}: succeeded {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(done.error, None);
    assert_eq!(h.tasks().await.len(), 1);
    assert_eq!(
        figures(h),
        (1, 1, 1),
        "(check runs, pull requests, comments)"
    );
}

/// The server is killed (SIGKILL) while its runner validates; the runner lives on, a new
/// server on the same database and address adopts it, its reports are accepted, and the
/// task succeeds — once: one check run, one pull request, one tracking comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_outlives_its_killed_server_and_its_task_succeeds() {
    let (hold, port) = Hold::new().await;
    let (h, logs, listen, mut first) = killable_server(port, &[]).await;
    let (running_task, held, runner) = validating_task(&h, hold).await;
    let task = running_task.id;

    first.kill();
    assert!(running(runner), "the runner died with its server");
    let killed = Instant::now();
    let second = ServerProcess::start(RUNNER.as_ref(), &h, &listen, logs.path()).await;
    let _logs = Logs(vec![&first, &second]);
    // Still running once the new server has taken the task over (after the old one's
    // silence): adopted, not judged lost.
    let adopted = h
        .task(task)
        .wait(|t| t.launched_by != running_task.launched_by || t.state.is_terminal())
        .await;
    assert_eq!(adopted.state, TaskState::Running, "{adopted:#?}");
    assert!(running(runner), "the runner died");
    println!(
        "fault: SIGKILL while running: adopted by the new server {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    succeeds_once_released(
        &h,
        task,
        held,
        killed,
        "SIGKILL while running, runner alive",
    )
    .await;
    let run = h.check_run(task);
    assert_eq!(
        (run.status.as_str(), run.conclusion.as_deref()),
        ("completed", Some("success"))
    );
    // It ended, and its workspace went with it.
    let deadline = Instant::now() + WAIT;
    while running(runner) || !h.task_workspaces().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the runner never ended or left its workspace"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(_logs);
    let mut second = second;
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}

/// The server is killed (SIGKILL) after starting a runner and before recording its
/// execution (held there by a trigger on the write): the new server finds the runner by
/// its task, takes the task over, and the task succeeds, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_starting_a_runner_leaves_a_task_that_still_succeeds() {
    let (hold, port) = Hold::new().await;
    let (h, logs, listen, mut first) = killable_server(port, &[]).await;
    // Recording an execution id waits on an advisory lock the test holds.
    let mut conn = h.db.connect_options().connect().await.unwrap();
    sqlx::raw_sql(
        "SELECT pg_advisory_lock(727);
         CREATE FUNCTION hold_execution() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.execution_id IS NOT NULL AND OLD.execution_id IS NULL THEN
             PERFORM pg_advisory_xact_lock(727);
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER hold_execution BEFORE UPDATE ON tasks
           FOR EACH ROW EXECUTE FUNCTION hold_execution();",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    // The runner got as far as its validation; its launch is still being recorded.
    let held = hold.held().await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(waiting, 1, "the execution id is not being recorded");
    assert_eq!(h.task(task).get().await.execution_id, None);

    first.kill();
    let killed = Instant::now();
    // The killed server's statement, still waiting, goes with its session (a backend
    // notices its client's end only when it next talks to it).
    sqlx::raw_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted;
         DROP TRIGGER hold_execution ON tasks;
         SELECT pg_advisory_unlock(727);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    let unrecorded = h.task(task).get().await;
    assert_eq!(unrecorded.execution_id, None, "{unrecorded:#?}");

    let mut second = ServerProcess::start(RUNNER.as_ref(), &h, &listen, logs.path()).await;
    let logs_shown = Logs(vec![&first, &second]);
    let found = h
        .task(task)
        .wait(|t| t.execution_id.is_some() || t.state.is_terminal())
        .await;
    assert_eq!(found.state, TaskState::Running, "{found:#?}");
    println!(
        "fault: SIGKILL while starting: runner found by the new server {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    succeeds_once_released(&h, task, held, killed, "SIGKILL while starting").await;
    drop(logs_shown);
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}

/// The server is killed (SIGKILL) and its runner too: the restarted server ends the task
/// `failed` as lost (retryable), with its check run completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_server_and_runner_are_killed_ends_lost() {
    let (hold, port) = Hold::new().await;
    let (h, logs, listen, mut first) = killable_server(port, &[]).await;
    let (running_task, _held, runner) = validating_task(&h, hold).await;
    let task = running_task.id;

    first.kill();
    // The sandbox's process group: the runner and everything it started.
    nix::sys::signal::killpg(Pid::from_raw(runner), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let mut second = ServerProcess::start(RUNNER.as_ref(), &h, &listen, logs.path()).await;
    let logs_shown = Logs(vec![&first, &second]);

    let lost = h.task(task).expect_state(TaskState::Failed).await;
    println!(
        "fault: SIGKILL while running, runner killed too: lost {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        lost.error
            .as_deref()
            .is_some_and(|e| e.starts_with("lost:")),
        "{lost:?}"
    );
    assert_eq!(h.tasks().await.len(), 1);
    assert_eq!(
        figures(&h),
        (1, 0, 1),
        "(check runs, pull requests, comments)"
    );
    let run = h.check_run(task);
    assert_eq!(
        (run.status.as_str(), run.conclusion.as_deref()),
        ("completed", Some("failure"))
    );
    assert!(run.actions.iter().any(|a| a.identifier == "retry"));
    drop(logs_shown);
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}

/// The runner starts but the database refuses to record its execution (and, as in an
/// outage, to end the task): the server stops that runner instead of leaving it running
/// with nothing to watch, time out or cancel it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_launch_cannot_be_recorded_is_stopped() {
    let (hold, port) = Hold::new().await;
    let h = Scenario::engine(RUNNER)
        .file(".github/bg-agent.yml", held_validation(port))
        .start()
        .await;
    // The store failure, exactly where it matters: recording an execution id (and the
    // task's failure, which an outage would refuse as well).
    let mut conn = h.db.connect_options().connect().await.unwrap();
    sqlx::raw_sql(
        "CREATE SEQUENCE refused_executions;
         CREATE FUNCTION refuse_execution() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.execution_id IS NOT NULL AND NEW.execution_id IS DISTINCT FROM OLD.execution_id THEN
             -- A sequence outlives the rollback: the test sees the refusal.
             PERFORM nextval('refused_executions');
             RAISE EXCEPTION 'injected: the database refuses';
           END IF;
           IF NEW.state::text = 'failed' AND OLD.state::text <> 'failed' THEN
             RAISE EXCEPTION 'injected: the database refuses';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_execution BEFORE UPDATE ON tasks
           FOR EACH ROW EXECUTE FUNCTION refuse_execution();",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    // Once the launched runner could not be recorded, it ends (its workspace goes)
    // before it gets to its validation.
    let started = Instant::now();
    let stopped = async {
        loop {
            let refused: bool = sqlx::query_scalar("SELECT is_called FROM refused_executions")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let empty = h.task_workspaces().is_empty();
            if refused && empty {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = stopped => {}
        _ = hold.listener.accept() => panic!("the untracked runner went on to its validation"),
        () = tokio::time::sleep(WAIT) => panic!("the untracked runner still runs"),
    }
    println!(
        "fault: execution not recorded: runner stopped {:.1} s after the launch",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(h.pulls().len(), 0);
    sqlx::raw_sql("DROP TRIGGER refuse_execution ON tasks")
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    h.finish().await;
}

/// The server is killed (SIGKILL) with one task running and one queued behind it (one
/// task at a time), and the running one's runner finishes — validates, pushes, reports —
/// while no server runs: its reports wait for the next server, which takes both tasks
/// through to success, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_neither_its_queued_task_nor_a_runner_finishing_without_it() {
    let (hold, port) = Hold::new().await;
    let one_at_a_time = [("BG_AGENT_MAX_TASKS", "1")];
    let (h, logs, listen, mut first) = killable_server(port, &one_at_a_time).await;
    h.add_user("ana", Role::Write);

    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    h.comment("ana", "/bg-agent upgrade lodash 4.17.20").await;
    let held = hold.held().await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 2);
    h.task(tasks[0].id).wait_phase(Phase::Validating).await;
    assert_eq!(h.task(tasks[1].id).get().await.state, TaskState::Queued);

    first.kill();
    let killed = Instant::now();
    held.release().await;
    // The runner finishes while no server listens; its reports are retried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut second =
        ServerProcess::start_with(RUNNER.as_ref(), &h, &listen, logs.path(), &one_at_a_time).await;
    let logs_shown = Logs(vec![&first, &second]);

    let upgraded = h.task(tasks[0].id).expect_state(TaskState::Succeeded).await;
    // The second asks for the version the project already has: done, nothing to change.
    let unchanged = h.task(tasks[1].id).expect_state(TaskState::Succeeded).await;
    assert_eq!(
        (upgraded.changed, unchanged.changed),
        (Some(true), Some(false))
    );
    println!(
        "fault: SIGKILL with a task queued and its runner finishing: both succeeded {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(h.tasks().await.len(), 2);
    assert_eq!(
        figures(&h),
        (2, 1, 2),
        "(check runs, pull requests, comments)"
    );
    drop(logs_shown);
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}

/// Validation that takes a few seconds, so a fault can land while it runs (the test never
/// depends on when exactly).
const SLOWISH_VALIDATION: &str =
    "validation:\n  - node -e \"setTimeout(() => {}, 3000)\"\n  - npm test\n";

/// The database goes away while a task validates, long enough for the runner's last
/// reports to be refused, and comes back: the task succeeds with one of everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_task_loses_nothing_and_duplicates_nothing() {
    let h = Scenario::engine(RUNNER)
        .file(".github/bg-agent.yml", SLOWISH_VALIDATION)
        .database_behind_proxy()
        .start()
        .await;
    let started = Instant::now();
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    h.task(task).wait_phase(Phase::Validating).await;
    h.database_down();
    tokio::time::sleep(Duration::from_secs(6)).await;
    h.database_up();
    let done = h.task(task).expect_state(TaskState::Succeeded).await;
    assert!(done.pr_number.is_some());
    eprintln!(
        "fault figures: database restart mid-task settled in {:?}",
        started.elapsed()
    );
    assert_eq!(h.tasks().await.len(), 1, "one task");
    assert_eq!(
        figures(&h),
        (1, 1, 1),
        "check runs, pull requests, comments"
    );
    assert_eq!(h.check_run(task).conclusion.as_deref(), Some("success"));
    h.finish().await;
}

/// GitHub answers with 5xx, secondary and primary rate limits and 429s on every kind of
/// report: the client waits as told and retries, and the task settles with exactly one
/// check run, one tracking comment and one pull request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_github_errors_and_rate_limits_settles_with_exact_figures() {
    let h = Scenario::engine(RUNNER).start().await;
    for fault in [
        Fault::new("POST", "/repos/*/*/check-runs", FaultKind::ServerError(502)).times(2),
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::ServerError(503),
        )
        .times(4),
        Fault::new(
            "PATCH",
            "/repos/*/*/check-runs/*",
            FaultKind::SecondaryRateLimit {
                retry_after_secs: 1,
            },
        )
        .times(2),
        Fault::new(
            "POST",
            "/repos/*/*/issues/*/comments",
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
        )
        .times(2),
        Fault::new(
            "PATCH",
            "/repos/*/*/issues/comments/*",
            FaultKind::PrimaryRateLimit {
                reset_after_secs: 1,
            },
        )
        .times(1),
        Fault::new("POST", "/repos/*/*/pulls", FaultKind::ServerError(500)).times(2),
    ] {
        h.sim.inject_fault(fault);
    }
    let started = Instant::now();
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await;
    task.expect_state(TaskState::Succeeded).await;
    let settled = Instant::now() + WAIT;
    while task.check_run().conclusion.is_none() || h.pulls().is_empty() {
        assert!(Instant::now() < settled, "the reports never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "fault figures: GitHub error storm settled in {:?}",
        started.elapsed()
    );
    assert_eq!(h.tasks().await.len(), 1, "one task");
    assert_eq!(
        figures(&h),
        (1, 1, 1),
        "check runs, pull requests, comments"
    );
    assert_eq!(task.check_run().conclusion.as_deref(), Some("success"));
    h.finish().await;
}

/// The same delivery arrives again and again at once (a redelivery racing the original,
/// a retrying proxy): every answer is 2xx and the command makes one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_make_one_task() {
    let h = Scenario::intake().start().await;
    let comment = h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let statuses = futures::future::join_all((0..8).map(|_| h.redeliver(comment.delivery))).await;
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "{statuses:?}"
    );
    // Each redelivery was processed (or found already stored) before its answer.
    assert_eq!(h.tasks().await.len(), 1, "one task");
    assert_eq!(h.bot_comments().len(), 1, "one tracking comment");
    h.finish().await;
}

/// The server is killed (SIGKILL) while its reporter waits on GitHub to open the pull
/// request: the next server reports the task again and it ends with one pull request,
/// one check run (success) and one tracking comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_reporting_leaves_one_of_everything() {
    let h = Scenario::engine(RUNNER).without_server().start().await;
    let logs = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut first = ServerProcess::start(RUNNER.as_ref(), &h, &listen, logs.path()).await;
    let held = h
        .sim
        .inject_fault(Fault::new("POST", "/repos/*/*/pulls", FaultKind::Hold));

    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    h.task(task).expect_state(TaskState::Succeeded).await;
    let deadline = Instant::now() + WAIT;
    while h.sim.fault_fired(held) == 0 {
        assert!(
            Instant::now() < deadline,
            "the reporter never asked for the PR"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let killed = Instant::now();
    h.sim.clear_faults();
    let mut second = ServerProcess::start(RUNNER.as_ref(), &h, &listen, logs.path()).await;
    let _logs = Logs(vec![&first, &second]);
    while h.pulls().is_empty() || h.check_run(task).conclusion.is_none() {
        assert!(
            Instant::now() < deadline + WAIT,
            "the report never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "fault: SIGKILL while reporting: reported {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // Settled: a while longer changes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.tasks().await.len(), 1);
    assert_eq!(
        figures(&h),
        (1, 1, 1),
        "(check runs, pull requests, comments)"
    );
    assert_eq!(h.check_run(task).conclusion.as_deref(), Some("success"));
    drop(_logs);
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}
