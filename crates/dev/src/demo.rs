//! `bg-agent demo`: the whole product on one machine with nothing to set up. A private
//! PostgreSQL, the local executor, and the GitHub simulator holding a small npm
//! repository with an open issue; the demo comments `/bg-agent upgrade lodash 4.17.21`
//! there and follows the task to its pull request, then leaves everything running for a
//! look around until Ctrl-C.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use bg_agent::app::{Database, EngineOptions, start_app};
use bg_agent::config::Config;
use bg_agent_core::task::{TaskRecord, TaskState};
use bg_agent_github::{GitHubApp, SystemClock};
use github_fake::{GitHubSim, RunningSim, SimConfig, world};

const COMMAND: &str = "/bg-agent upgrade lodash 4.17.21";
/// How long the demo waits for the task before giving up on following it.
const FOLLOW_LIMIT: Duration = Duration::from_secs(300);

const PACKAGE_JSON: &str = "{\n  \"name\": \"widgets\",\n  \"version\": \"1.0.0\",\n  \"private\": true,\n  \"scripts\": {\n    \"test\": \"node test.js\"\n  },\n  \"dependencies\": {\n    \"lodash\": \"4.17.20\"\n  }\n}\n";
const TEST_JS: &str = "const v = require('./package.json').dependencies.lodash;\nconsole.log('widgets: 3 tests passed with lodash ' + v);\n";

/// The sample repository: an npm project with a lockfile and a test script.
async fn seed(sim: &RunningSim) -> anyhow::Result<()> {
    let lock = sim
        .npm_lockfile(PACKAGE_JSON)
        .await
        .context("the demo needs npm (Node.js) to build the sample repository's lockfile")?;
    let readme = "# widgets\n\nThe Acme widget storefront (a bg-agent demo repository).\n";
    let files: [(&str, &[u8]); 4] = [
        ("README.md", readme.as_bytes()),
        ("package.json", PACKAGE_JSON.as_bytes()),
        ("package-lock.json", lock.as_bytes()),
        ("test.js", TEST_JS.as_bytes()),
    ];
    sim.seed_world_with(&files).await?;
    Ok(())
}

pub async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let secret = String::from_utf8_lossy(config.webhook_secrets.signing_secret()).into_owned();
    let sim = GitHubSim::start(SimConfig {
        webhook_secret: secret,
        panic_on_violations: false,
        ..SimConfig::default()
    })
    .await
    .context("starting the GitHub simulator")?;
    seed(&sim).await?;
    let database = Database::open(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    config.app_id = Some(sim.app_id());
    config.app_slug = sim.app_slug();
    config.run.npm_registry = Some(sim.npm_registry_url());
    let github = GitHubApp::new(
        bg_agent_testkit::fixtures::github_config(&sim),
        Arc::new(SystemClock),
    )?;
    let runner = std::env::current_exe().context("cannot find this program")?;
    let server = start_app(
        &config,
        database.store.clone(),
        github,
        listener,
        &EngineOptions::new(runner),
    )
    .await?;
    sim.set_webhook_url(Some(format!("http://{}/webhook", server.addr)));
    println!("bg-agent demo");
    println!("  server          {}", config.run.public_url);
    println!(
        "  fake GitHub     {} (state: {}/_sim/state)",
        sim.base_url(),
        sim.base_url()
    );
    println!(
        "  repository      {} ({}), issue #{}",
        world::WIDGETS,
        sim.read(|s| s
            .repo(world::WIDGETS)
            .map(|r| r.git_dir.display().to_string()))
            .unwrap_or_default(),
        world::ISSUE_NUMBER
    );
    println!("  @{} comments: {COMMAND}", world::LEAD);
    sim.comment(world::WIDGETS, world::ISSUE_NUMBER, world::LEAD, COMMAND)
        .await
        .context("commenting on the sample issue")?;

    let followed = follow(&database, &config.run.public_url).await;
    match followed {
        Ok(task) => report_end(&sim, &task),
        Err(e) => println!("  could not follow the task: {e:#}"),
    }
    println!("\nEverything keeps running for a look around; Ctrl-C stops it.");
    shutdown.await;
    let result = server.stop().await;
    sim.stop().await;
    database.close().await;
    result
}

/// Prints the task's phases as they happen (a live progress line on a terminal) until
/// it ends and its pull request is known.
async fn follow(database: &Database, public_url: &str) -> anyhow::Result<TaskRecord> {
    let tty = std::io::stdout().is_terminal();
    let deadline = tokio::time::Instant::now() + FOLLOW_LIMIT;
    let mut announced = false;
    let mut last: Option<(TaskState, bg_agent_core::task::Phase)> = None;
    loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no result within {} s",
            FOLLOW_LIMIT.as_secs()
        );
        let repository = i64::try_from(world::WIDGETS_ID).unwrap_or_default();
        let task = database
            .store
            .repository_tasks(repository, 1)
            .await?
            .into_iter()
            .next();
        let Some(task) = task else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !announced {
            println!(
                "  task #{} — status page {}",
                task.id,
                bg_agent_core::task::render::page_url(public_url, task.id)
            );
            announced = true;
        }
        let now = (task.state, task.phase);
        if tty {
            print!(
                "\r  {:<10} {:<11} {}   ",
                task.state.as_str(),
                task.phase.as_str(),
                bg_agent_core::task::render::progress_bar(task.progress)
            );
            let _ = std::io::stdout().flush();
        } else if last != Some(now) {
            println!("  {} · {} · {} %", task.state, task.phase, task.progress);
        }
        last = Some(now);
        let done = task.state.is_terminal()
            && (task.state != TaskState::Succeeded
                || task.changed != Some(true)
                || task.pr_url.is_some());
        if done {
            if tty {
                println!();
            }
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report_end(sim: &RunningSim, task: &TaskRecord) {
    match (&task.state, &task.pr_url) {
        (TaskState::Succeeded, Some(url)) => {
            println!("  pull request    {url}");
            if let Some(number) = task.pr_number {
                let title = sim.read(|s| {
                    s.issue(world::WIDGETS, u64::try_from(number).unwrap_or_default())
                        .map(|i| i.title.clone())
                });
                if let Some(title) = title {
                    println!("                  \"{title}\"");
                }
            }
            if let Some(branch) = &task.branch {
                println!(
                    "  branch          {branch} (changed: {})",
                    task.changed_files.join(", ")
                );
            }
        }
        (state, _) => {
            println!(
                "  the task ended {state}: {}",
                task.error.as_deref().unwrap_or("no error recorded")
            );
        }
    }
}
