//! Delivery → launch latency: how long from the fake GitHub sending a signed
//! `/bg-agent upgrade` comment until (a) the runner process is started and (b) the
//! check run shows `in_progress` on GitHub — over many tasks, with the real server, the
//! real database, the local executor running the real `bg-agent runner`, and the fake
//! GitHub on loopback. The baseline measured in the same run is the delivery itself
//! (webhook POST → `202`).
//!
//!     cargo bench --bench launch              # TASKS=200 RATE=20 by default
//!     TASKS=500 RATE=25 cargo bench --bench launch
//!     EXECUTOR=kubernetes JOBS=500 TASKS=200 cargo bench --bench launch
//!
//! With `EXECUTOR=kubernetes` the tasks run as Jobs on a real kube-apiserver and Job
//! controller (`scripts/envtest.sh`), with `JOBS` other Jobs of ours present; "runner
//! started" is then the Job and its Secret created and recorded (no kubelet runs, so the
//! Pods stay pending), and the watch's CPU is measured while the server is idle.
//!
//! Each task gets its own repository and requester (the limits allow one active task per
//! repository and per user) and a tiny npm project without a lockfile or tests, so a run
//! is a clone, an edit, a commit and a push. Uses `DATABASE_URL` if set, else a
//! throwaway embedded PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use bg_agent::app::{EngineOptions, start_app};
use bg_agent::config::{Config, WebhookSecrets};
use bg_agent::store::Store;
use bg_agent_github::{GitHubApp, SystemClock};
use bg_agent_testkit::bench::{env_number, summary};
use bg_agent_testkit::db::TestDb;
use github_fake::{GitHubSim, Role, SimConfig, world};

const SECRET: &str = "bench-secret";

/// `/repos/acme/svc-17/issues/3/comments?x=1` → `/repos/{o}/{r}/issues/{n}/comments`.
fn route_shape(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let repos = segments.first().is_some_and(|s| s.is_empty())
        && segments.get(1).is_some_and(|s| *s == "repos");
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| match (i, s) {
            (2, _) if repos => "{o}".to_owned(),
            (3, _) if repos => "{r}".to_owned(),
            (1, s) if !repos && !s.is_empty() && *s != "app" && *s != "installation" => {
                "{o}".to_owned()
            }
            (2, s) if !repos && s.ends_with(".git") => "{r}.git".to_owned(),
            (_, s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => "{n}".to_owned(),
            (_, s) => (*s).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is taken from argv.
    let tasks = env_number("TASKS", 200);
    let rate = env_number("RATE", 20).max(1);
    // RUST_LOG=bg_agent=debug shows where a slow task spent its time (on stderr).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(tasks, rate))
}

async fn run(tasks: usize, rate: usize) -> anyhow::Result<()> {
    let sim = GitHubSim::start(SimConfig {
        webhook_secret: SECRET.into(),
        panic_on_violations: false,
        ..SimConfig::default()
    })
    .await?;
    let seeded = sim.seed_world().await?;
    let package = "{\n  \"name\": \"svc\",\n  \"version\": \"1.0.0\",\n  \"dependencies\": {\n    \"lodash\": \"4.17.20\"\n  }\n}\n";
    let mut targets = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let name = format!("svc-{i}");
        let repo = sim
            .add_repository(
                seeded.installation_id,
                world::ORG,
                &name,
                &[("package.json", package.as_bytes())],
            )
            .await?;
        let user = format!("dev-{i}");
        sim.add_user(&user);
        sim.set_permission(&repo.full_name(), &user, Some(Role::Write))?;
        let issue = sim.create_issue(&repo.full_name(), "Upgrade lodash", "please", &user)?;
        targets.push((repo.full_name(), issue, user));
    }

    let db = TestDb::new().await;
    let data = tempfile::tempdir()?;
    let mut config = Config::from_vars(&std::collections::HashMap::new())?;
    // The server's pool is sized as in production (`BG_AGENT_DB_MAX_CONNECTIONS`).
    let store = Store::connect(db.connect_options(), config.db_max_connections).await?;
    config.webhook_secrets = WebhookSecrets::new([SECRET]);
    config.app_id = Some(sim.app_id());
    config.app_slug = sim.app_slug();
    config.data_dir = data.path().to_owned();
    config.tasks.max_per_installation = u32::try_from(tasks).unwrap_or(u32::MAX);
    config.tasks.max_global = u32::try_from(tasks).unwrap_or(u32::MAX);
    config.run.npm_registry = Some(sim.npm_registry_url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    config.run.public_url = format!("http://{}", listener.local_addr()?);
    let github = GitHubApp::new(
        bg_agent_testkit::fixtures::github_config(&sim),
        Arc::new(SystemClock),
    )?;
    let runner = std::path::PathBuf::from(env!("CARGO_BIN_EXE_bg-agent"));
    let kubernetes = match std::env::var("EXECUTOR").as_deref() {
        Ok("kubernetes") => Some(kubernetes::Cluster::start(&mut config).await?),
        _ => None,
    };
    let server = start_app(
        &config,
        store.clone(),
        github,
        listener,
        &EngineOptions::new(runner),
    )
    .await?;
    sim.set_webhook_url(Some(format!("http://{}/webhook", server.addr)));

    if let Some(cluster) = &kubernetes {
        cluster.add_jobs(env_number("JOBS", 500)).await?;
    }
    println!(
        "delivery → launch: {tasks} tasks, {rate} comments/s, loopback, {} executor",
        if kubernetes.is_some() {
            "kubernetes"
        } else {
            "local"
        }
    );
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let mut deliveries = Vec::with_capacity(tasks);
    let sim = Arc::new(sim);
    let mut sends = tokio::task::JoinSet::new();
    for (i, (repo, issue, user)) in targets.iter().cloned().enumerate() {
        tokio::time::sleep_until(started + interval * u32::try_from(i).unwrap_or(0)).await;
        let sim = Arc::clone(&sim);
        sends.spawn(async move {
            sim.comment(&repo, issue, &user, "/bg-agent upgrade lodash 4.17.21")
                .await
                .map(|t| (repo, t.delivery))
        });
    }
    while let Some(sent) = sends.join_next().await {
        deliveries.push(sent??);
    }
    // Wait until every task has ended (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let active = db.store().executing_tasks().await?.len();
        let all: usize = sim.read(|s| {
            s.check_runs
                .iter()
                .filter(|r| r.name == "bg-agent" && r.status == "completed")
                .count()
        });
        if (active == 0 && all >= tasks) || tokio::time::Instant::now() > deadline {
            break;
        }
        // No kubelet runs the Jobs' Pods: every task launched is as far as they go.
        if kubernetes.is_some() && launched(&db, tasks).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut ack = Vec::new();
    let mut to_launch = Vec::new();
    let mut to_in_progress = Vec::new();
    // Where the time goes on the way to launch.
    let mut to_created = Vec::new();
    let mut to_check_run = Vec::new();
    let mut to_dispatched = Vec::new();
    let mut succeeded = 0;
    let mut slowest = Vec::new();
    for (repo, delivery) in &deliveries {
        ack.push(delivery.duration_secs * 1000.0);
        let repository_id = i64::try_from(sim.read(|s| s.repo(repo).map(|r| r.id)).unwrap_or(0))?;
        let Some(task) = db.store().repository_tasks(repository_id, 1).await?.pop() else {
            continue;
        };
        if task.state == bg_agent_core::task::TaskState::Succeeded {
            succeeded += 1;
        }
        let since = |at: chrono::DateTime<chrono::Utc>| {
            (at - delivery.delivered_at).as_seconds_f64() * 1000.0
        };
        to_created.push(since(task.created_at));
        if let Some(started) = task.started_at {
            to_dispatched.push(since(started));
        }
        let queued_run = sim.read(|s| {
            s.check_runs_in(repo)
                .into_iter()
                .find(|r| r.external_id.as_deref() == Some(&task.id.to_string()))
                .map(|r| r.created_at)
        });
        if let Some(at) = queued_run {
            to_check_run.push(since(at));
        }
        let events = db.store().task_events(task.id).await?;
        if let Some(launched) = events.iter().find(|e| {
            e.from_state.as_deref() == Some("starting") && e.to_state.as_deref() == Some("running")
        }) {
            let launch = since(launched.at);
            to_launch.push(launch);
            slowest.push((
                launch,
                format!(
                    "task {}: created {:.0}, check run {:.0}, dispatched {:.0}, launched {launch:.0} ms",
                    task.id,
                    since(task.created_at),
                    queued_run.map(since).unwrap_or(f64::NAN),
                    task.started_at.map(since).unwrap_or(f64::NAN),
                ),
            ));
        }
        let in_progress = sim.read(|s| {
            s.check_runs_in(repo)
                .into_iter()
                .find(|r| r.external_id.as_deref() == Some(&task.id.to_string()))
                .and_then(|r| {
                    r.history
                        .iter()
                        .find(|h| h.status == "in_progress")
                        .map(|h| h.at)
                })
        });
        if let Some(at) = in_progress {
            to_in_progress.push((at - delivery.delivered_at).as_seconds_f64() * 1000.0);
        }
    }
    println!("tasks succeeded: {succeeded}/{tasks}");
    summary("baseline: delivery → 202", ack, 99.0);
    summary("  delivery → task created", to_created, 99.0);
    summary(
        "  delivery → check run created (queued)",
        to_check_run,
        99.0,
    );
    summary("  delivery → task dispatched", to_dispatched, 99.0);
    summary("delivery → runner started", to_launch, 99.0);
    summary(
        "delivery → check run in_progress posted",
        to_in_progress,
        99.0,
    );
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("slowest launches:");
    for (_, line) in slowest.iter().take(3) {
        println!("  {line}");
    }
    println!("fake GitHub answer times by endpoint (GitHub's side of the path):");
    let mut by_route: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    sim.read(|s| {
        for r in &s.requests {
            by_route
                .entry(format!("{} {}", r.method, route_shape(&r.path)))
                .or_default()
                .push(r.duration_secs * 1000.0);
        }
    });
    for (route, times) in by_route {
        if times.len() >= tasks / 2 {
            summary(&format!("  {route}"), times, 99.0);
        }
    }
    if kubernetes.is_some() {
        // The server's CPU (this process: the server is in it) with the Jobs present and
        // nothing to do: the watch's cost at idle.
        let idle = Duration::from_secs(20);
        let before = cpu_seconds();
        tokio::time::sleep(idle).await;
        let used = cpu_seconds() - before;
        println!(
            "idle with the Jobs present: {:.2} % of one core over {} s",
            used / idle.as_secs_f64() * 100.0,
            idle.as_secs()
        );
    }
    server.stop().await?;
    drop(kubernetes);
    if let Ok(sim) = Arc::try_unwrap(sim) {
        sim.stop().await;
    }
    Ok(())
}

/// Whether `tasks` tasks have left `queued` and `starting` (their Jobs exist).
async fn launched(db: &TestDb, tasks: usize) -> anyhow::Result<bool> {
    let executing = db.store().executing_tasks().await?;
    Ok(executing.len() >= tasks
        && executing
            .iter()
            .all(|t| t.state == bg_agent_core::task::TaskState::Running))
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are the 14th and 15th fields (11th and 12th after the name).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    ticks / per_second.max(1.0)
}

mod kubernetes {
    use std::collections::BTreeMap;

    use bg_agent::config::{Config, ExecutorKind};
    use bg_agent_testkit::envtest::ControlPlane;
    use k8s_openapi::api::batch::v1::{Job, JobSpec};
    use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::Api;
    use kube::api::PostParams;

    const NAMESPACE: &str = "bench-tasks";

    /// A control plane of its own, the namespace the Jobs go to, and an admin client.
    pub struct Cluster {
        _plane: ControlPlane,
        client: kube::Client,
    }

    impl Cluster {
        pub async fn start(config: &mut Config) -> anyhow::Result<Self> {
            let plane = ControlPlane::start();
            let kubeconfig = plane.admin_kubeconfig();
            let (client, _) = bg_agent::executor::kubernetes::client(Some(&kubeconfig)).await?;
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            namespaces
                .create(&PostParams::default(), &namespace)
                .await?;
            config.executor = ExecutorKind::Kubernetes;
            config.kubernetes.kubeconfig = Some(kubeconfig);
            config.kubernetes.namespace = Some(NAMESPACE.into());
            config.kubernetes.runner_image = Some("bg-agent-runner:bench".into());
            Ok(Self {
                _plane: plane,
                client,
            })
        }

        /// `count` Jobs labelled as ours, of tasks that are not in the database (another
        /// replica's, as far as this server knows).
        pub async fn add_jobs(&self, count: usize) -> anyhow::Result<()> {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
            for i in 0..count {
                let task_id = 1_000_000 + i;
                let job = Job {
                    metadata: ObjectMeta {
                        name: Some(format!("bg-agent-task-{task_id}")),
                        labels: Some(BTreeMap::from([
                            (
                                "app.kubernetes.io/managed-by".to_owned(),
                                "bg-agent".to_owned(),
                            ),
                            ("bg-agent/task-id".to_owned(), task_id.to_string()),
                        ])),
                        ..ObjectMeta::default()
                    },
                    spec: Some(JobSpec {
                        backoff_limit: Some(0),
                        template: PodTemplateSpec {
                            spec: Some(PodSpec {
                                restart_policy: Some("Never".into()),
                                containers: vec![Container {
                                    name: "runner".into(),
                                    image: Some("bg-agent-runner:bench".into()),
                                    ..Container::default()
                                }],
                                ..PodSpec::default()
                            }),
                            ..PodTemplateSpec::default()
                        },
                        ..JobSpec::default()
                    }),
                    ..Job::default()
                };
                jobs.create(&PostParams::default(), &job).await?;
            }
            println!("{count} other Jobs of ours present");
            Ok(())
        }
    }
}
