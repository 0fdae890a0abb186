//! The Kubernetes executor: each task is a `batch/v1` Job in a configured namespace, with
//! a Secret of its own (owned by the Job) holding the runner's secrets (see [`objects`]).
//!
//! One watch (`kube::runtime::watcher`, which lists again and resumes after a disconnect)
//! follows every Job labelled ours into an in-memory map; `observe` and `wait` answer from
//! it. A Job's end is read from its conditions: `Complete` is the runner's exit (its own
//! report decides the task), `DeadlineExceeded` a timeout enforced by the Job controller,
//! any other failure the Kubernetes reason with what the Pod shows. Jobs outlive the
//! server: the next one finds them through the same watch, and removes at start those
//! whose task has ended.

pub mod objects;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use bg_agent_core::backoff::Backoff;
use bg_agent_core::protocol::Redactor;

use crate::background::Background;

use super::{ExecutionId, Executor, ExecutorError, Launch, Observed};
pub use objects::JobSettings;
use objects::{SECRET_HASH_ANNOTATION, TASK_ID_LABEL};

/// The field manager of our server-side applies.
const FIELD_MANAGER: &str = "bg-agent";
/// How long `observe` waits for the watch's first listing before it answers "running"
/// (never "lost" for lack of an answer).
const SYNC_WAIT: Duration = Duration::from_secs(10);
/// How long a launch waits for a stale Job of the same name (an earlier launch's) to go.
const REPLACE_WAIT: Duration = Duration::from_secs(30);
/// A Secret left without its Job (a server died between the two) is removed at start
/// once it is this old: younger, its Job may still be on the way.
const ORPHAN_AGE: Duration = Duration::from_secs(300);
/// A runner's Pod that cannot start (its image not pulled, its container not created)
/// gets this long to get over it — a kubelet retries, a registry may blip — before its
/// task fails and its Job is deleted.
const POD_START_GRACE: Duration = Duration::from_secs(120);
/// Why a container waits, when it may never start ([`POD_START_GRACE`] applies).
const STUCK: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];
/// Why a container waits, when it can never start: the task fails at once.
const HOPELESS: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];
/// Lines of a failed Pod's log put in the task's error.
const LOG_TAIL_LINES: i64 = 20;
/// Each such line is clipped to this many characters.
const LOG_LINE_CHARS: usize = 300;
/// Between a watch's failed attempts (the shared policy): 500 ms doubling to 10 s, half of
/// it left to chance. kube's default waits up to 30 s, and only starts over two minutes
/// after the last failure: a Job's end would then be seen half a minute after an API
/// server restart. A LIST every 10 s while the API server is away costs it little.
const WATCH_RETRY: Backoff =
    Backoff::new(Duration::from_millis(500), 2, Duration::from_secs(10)).with_jitter(0.5);

/// [`WATCH_RETRY`] as kube's watcher takes it: started over by the first event after a
/// failure.
#[derive(Default)]
struct WatchBackoff {
    failures: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(WATCH_RETRY.delay(self.failures, rand::random()))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(kube::Error),
}

/// A client as configured: the kubeconfig file given, else the environment's
/// (`KUBECONFIG`, `~/.kube/config`, or the pod's service account in a cluster). Also
/// the namespace that kubeconfig or service account names.
pub async fn client(kubeconfig: Option<&Path>) -> Result<(kube::Client, String), KubernetesError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubernetesError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubernetesError::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubernetesError::Config(e.to_string()))?,
    };
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(KubernetesError::Client)?;
    Ok((client, namespace))
}

#[derive(Clone)]
pub struct KubernetesExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: JobSettings,
    jobs: Api<Job>,
    secrets: Api<Secret>,
    pods: Api<Pod>,
    client: kube::Client,
    state: Mutex<State>,
    /// Bumped on every change of `state`: `wait` and `server_starting` wait on it.
    changed: watch::Sender<u64>,
    /// The watch.
    work: Background,
}

#[derive(Default)]
struct State {
    /// The watch has listed our Jobs at least once.
    synced: bool,
    /// Our Jobs by name, as the watch last saw them.
    jobs: HashMap<String, Seen>,
    /// The Jobs listed while a (re)listing is under way; they replace `jobs` once it is
    /// complete, so a Job deleted while the watch was down is seen gone.
    listing: Option<HashMap<String, Seen>>,
    /// Jobs this executor deleted on `cancel`.
    cancelled: HashSet<String>,
    /// What a failed Job's Pod showed, once looked at; or why a Job was given up.
    explained: HashMap<String, Observed>,
    /// Jobs whose Pod's container waits for a reason it may never get over, by Job name.
    stuck: HashMap<String, Stuck>,
    /// The Jobs there were when this server started, with their task ids.
    at_start: Option<Vec<(String, Option<i64>)>>,
}

/// A Pod's container waiting for a reason in [`STUCK`] or [`HOPELESS`], since `since`.
#[derive(Debug, Clone)]
struct Stuck {
    reason: String,
    message: String,
    since: tokio::time::Instant,
}

/// The Job a Pod belongs to and, if its container waits hopelessly or may, why.
fn pod_trouble(pod: &Pod) -> Option<(String, Option<(String, String)>)> {
    let job = pod.metadata.labels.as_ref()?.get("job-name")?.clone();
    let waiting = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find_map(|w| {
            let reason = w.reason.as_deref()?;
            (STUCK.contains(&reason) || HOPELESS.contains(&reason))
                .then(|| (reason.to_owned(), w.message.clone().unwrap_or_default()))
        });
    Some((job, waiting))
}

/// One Job as the watch saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    task_id: Option<i64>,
    end: JobEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JobEnd {
    Running,
    Complete,
    Failed { reason: String, message: String },
}

impl Seen {
    fn of(job: &Job) -> Self {
        let task_id = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TASK_ID_LABEL))
            .and_then(|id| id.parse().ok());
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let holds = |kind: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == kind && c.status == "True")
        };
        let end = if holds("Complete").is_some() {
            JobEnd::Complete
        } else if let Some(failed) = holds("Failed") {
            JobEnd::Failed {
                reason: failed.reason.clone().unwrap_or_default(),
                message: failed.message.clone().unwrap_or_default(),
            }
        } else {
            JobEnd::Running
        };
        Self { task_id, end }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Single inserts and replacements: a panic cannot leave the maps half-changed.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `k8s:<namespace>/<job>`, the execution id stored with the task.
fn execution_id(namespace: &str, job: &str) -> ExecutionId {
    ExecutionId(format!("k8s:{namespace}/{job}"))
}

/// The namespace and Job an execution id names; `None` for another executor's id.
fn parse_id(id: &ExecutionId) -> Option<(&str, &str)> {
    let (namespace, name) = id.0.strip_prefix("k8s:")?.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

fn api_error(what: &str, name: &str, error: kube::Error) -> ExecutorError {
    ExecutorError::Kubernetes(format!("{what} {name}: {error}"))
}

impl KubernetesExecutor {
    /// Starts the watch of our Jobs in `settings.namespace`.
    pub fn new(client: kube::Client, settings: JobSettings) -> Self {
        let namespace = settings.namespace.as_str();
        let (changed, _) = watch::channel(0);
        let executor = Self {
            inner: Arc::new(Inner {
                jobs: Api::namespaced(client.clone(), namespace),
                secrets: Api::namespaced(client.clone(), namespace),
                pods: Api::namespaced(client.clone(), namespace),
                client,
                settings,
                state: Mutex::new(State::default()),
                changed,
                work: Background::new(),
            }),
        };
        let inner = Arc::clone(&executor.inner);
        let stopping = executor.inner.work.token().clone();
        executor.inner.work.spawn("Kubernetes Job watch", async move {
            let config = watcher::Config::default().labels(&objects::selector());
            let events = watcher::watcher(inner.jobs.clone(), config).backoff(WatchBackoff::default());
            let mut events = std::pin::pin!(events);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(event)) => inner.apply(event),
                        // The watcher lists and watches again after a backoff.
                        Some(Err(e)) => tracing::warn!(error = %e, "the Job watch failed; resuming"),
                        None => return,
                    },
                }
            }
        });
        let inner = Arc::clone(&executor.inner);
        let stopping = executor.inner.work.token().clone();
        executor.inner.work.spawn("Kubernetes Pod watch", async move {
            let config = watcher::Config::default().labels(&objects::selector());
            let events = watcher::watcher(inner.pods.clone(), config).backoff(WatchBackoff::default());
            let mut events = std::pin::pin!(events);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(event)) => inner.apply_pod(event),
                        Some(Err(e)) => tracing::warn!(error = %e, "the Pod watch failed; resuming"),
                        None => return,
                    },
                }
            }
        });
        executor
    }

    pub fn settings(&self) -> &JobSettings {
        &self.inner.settings
    }
}

impl Inner {
    fn apply(&self, event: Event<Job>) {
        {
            let mut state = lock(&self.state);
            match event {
                Event::Init => state.listing = Some(HashMap::new()),
                Event::InitApply(job) => {
                    if let Some(name) = job.metadata.name.clone() {
                        state
                            .listing
                            .get_or_insert_with(HashMap::new)
                            .insert(name, Seen::of(&job));
                    }
                }
                Event::InitDone => {
                    let listed = state.listing.take().unwrap_or_default();
                    let gone = state
                        .jobs
                        .keys()
                        .filter(|n| !listed.contains_key(*n))
                        .count();
                    if gone > 0 {
                        tracing::info!(gone, "Jobs deleted while the watch was away");
                    }
                    state.jobs = listed;
                    state.synced = true;
                }
                Event::Apply(job) => {
                    if let Some(name) = job.metadata.name.clone() {
                        state.jobs.insert(name, Seen::of(&job));
                    }
                }
                Event::Delete(job) => {
                    if let Some(name) = &job.metadata.name {
                        state.jobs.remove(name);
                    }
                }
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn apply_pod(&self, event: Event<Pod>) {
        self.note_pod(event);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn note_pod(&self, event: Event<Pod>) {
        let mut state = lock(&self.state);
        match event {
            Event::Init => state.stuck.clear(),
            Event::InitDone => {}
            Event::Delete(pod) => {
                if let Some((job, _)) = pod_trouble(&pod) {
                    state.stuck.remove(&job);
                }
            }
            Event::Apply(pod) | Event::InitApply(pod) => match pod_trouble(&pod) {
                Some((job, Some((reason, message)))) => {
                    let stuck = state.stuck.entry(job).or_insert_with(|| Stuck {
                        reason: reason.clone(),
                        message: message.clone(),
                        since: tokio::time::Instant::now(),
                    });
                    (stuck.reason, stuck.message) = (reason, message);
                }
                Some((job, None)) => {
                    state.stuck.remove(&job);
                }
                None => {}
            },
        }
    }

    /// A running Job whose Pod cannot start, and will not: its task fails, and the Job
    /// goes (a kubelet would retry the pull until the deadline).
    async fn given_up(&self, name: &str) -> Option<Observed> {
        let stuck = lock(&self.state).stuck.get(name).cloned()?;
        let hopeless = HOPELESS.contains(&stuck.reason.as_str());
        if !hopeless && stuck.since.elapsed() < POD_START_GRACE {
            return None;
        }
        let mut reason = format!(
            "Kubernetes: the runner's Pod cannot start ({}",
            stuck.reason
        );
        if !stuck.message.is_empty() {
            reason.push_str(": ");
            reason.push_str(&stuck.message);
        }
        reason.push_str("); retry to run it again");
        let observed = Observed::Failed { reason };
        tracing::warn!(job = %name, reason = %stuck.reason, "giving up a Job whose Pod cannot start");
        lock(&self.state)
            .explained
            .insert(name.to_owned(), observed.clone());
        match self.jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => tracing::warn!(job = %name, error = %e, "cannot delete the Job"),
        }
        Some(observed)
    }

    /// What the watch knows of Job `name`: `None` until it has listed once.
    fn seen(&self, name: &str) -> Option<Option<Seen>> {
        let state = lock(&self.state);
        state.synced.then(|| state.jobs.get(name).cloned())
    }

    async fn synced(&self, within: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let wait = async {
            while !lock(&self.state).synced {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        lock(&self.state).synced
    }

    /// How a Job that failed for a reason other than its deadline ended: the runner's
    /// exit when the Pod's container simply exited (its report, or lack of one, decides
    /// the task), else the Kubernetes reason with what the Pod shows and its log's end.
    async fn explain_failure(&self, job: &str, reason: &str, message: &str) -> Observed {
        let pods = self
            .pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .map(|list| list.items)
            .unwrap_or_default();
        let pod = pods.into_iter().next_back();
        let mut details = Vec::new();
        if let Some(pod) = &pod {
            let status = pod.status.clone().unwrap_or_default();
            if let Some(reason) = status.reason {
                details.push(format!(
                    "Pod {reason}: {}",
                    status.message.unwrap_or_default()
                ));
            }
            for container in status.container_statuses.unwrap_or_default() {
                let state = container.state.unwrap_or_default();
                if let Some(ended) = state.terminated {
                    let why = ended.reason.clone().unwrap_or_default();
                    if why == "Error" || why == "Completed" || why.is_empty() {
                        return Observed::Exited {
                            code: Some(ended.exit_code),
                        };
                    }
                    details.push(format!("container {why} (exit code {})", ended.exit_code));
                }
                if let Some(waiting) = state.waiting {
                    details.push(format!(
                        "container {}: {}",
                        waiting.reason.unwrap_or_default(),
                        waiting.message.unwrap_or_default()
                    ));
                }
            }
        }
        let mut text = format!("Kubernetes: the Job failed ({reason}");
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(message);
        }
        text.push(')');
        if !details.is_empty() {
            text.push_str("; ");
            text.push_str(&details.join("; "));
        }
        text.push_str("; retry to run it again");
        if let Some(name) = pod.and_then(|p| p.metadata.name)
            && let Some(tail) = self.log_tail(&name, job).await
        {
            text.push_str("\n\nLast lines of the runner's output:\n");
            text.push_str(&tail);
        }
        Observed::Failed { reason: text }
    }

    /// The end of Pod `pod`'s log, with the task's secrets (read back from its Secret)
    /// redacted; nothing if the secrets cannot be read, rather than show them.
    async fn log_tail(&self, pod: &str, job: &str) -> Option<String> {
        let secret = self.secrets.get(job).await.ok()?;
        let values: Vec<String> = secret
            .data
            .unwrap_or_default()
            .into_values()
            .filter_map(|v| String::from_utf8(v.0).ok())
            .collect();
        let redactor = Redactor::new(values.iter().map(String::as_str));
        let params = LogParams {
            container: Some(objects::CONTAINER.to_owned()),
            tail_lines: Some(LOG_TAIL_LINES),
            ..LogParams::default()
        };
        let log = self.pods.logs(pod, &params).await.ok()?;
        let lines: Vec<String> = log
            .lines()
            .map(|line| {
                let line = redactor.redact(line);
                line.chars().take(LOG_LINE_CHARS).collect()
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// The Job, asked of the API server (the watch may not have seen it yet).
    async fn ask(&self, namespace: &str, name: &str) -> Result<Option<Seen>, kube::Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        Ok(jobs.get_opt(name).await?.map(|job| Seen::of(&job)))
    }

    async fn observe(&self, id: &ExecutionId) -> Observed {
        let Some((namespace, name)) = parse_id(id) else {
            return Observed::Unknown;
        };
        {
            let state = lock(&self.state);
            if state.cancelled.contains(name) {
                return Observed::Cancelled;
            }
            if let Some(known) = state.explained.get(name) {
                return known.clone();
            }
        }
        let watched = namespace == self.settings.namespace;
        let seen = match watched.then(|| self.seen(name)).flatten() {
            Some(Some(seen)) => Some(seen),
            // Not (yet) seen by the watch: the API server says.
            _ => {
                if watched && !self.synced(SYNC_WAIT).await {
                    return Observed::Running;
                }
                match self.ask(namespace, name).await {
                    Ok(seen) => seen,
                    // Cannot tell: not a reason to call it lost.
                    Err(e) => {
                        tracing::warn!(execution = %id.0, error = %e, "cannot look at the Job");
                        return Observed::Running;
                    }
                }
            }
        };
        let Some(seen) = seen else {
            return Observed::Unknown;
        };
        match seen.end {
            JobEnd::Running if watched => self.given_up(name).await.unwrap_or(Observed::Running),
            JobEnd::Running => Observed::Running,
            JobEnd::Complete => Observed::Exited { code: Some(0) },
            JobEnd::Failed { reason, .. } if reason == "DeadlineExceeded" => Observed::TimedOut,
            JobEnd::Failed { reason, message } => {
                let explained = self.explain_failure(name, &reason, &message).await;
                lock(&self.state)
                    .explained
                    .insert(name.to_owned(), explained.clone());
                explained
            }
        }
    }

    /// Creates the Job, or finds the one an earlier try of this same launch created.
    /// A Job of the same name from an earlier launch of the task (its runner holds a
    /// secret no longer accepted) is deleted and made again.
    async fn create_job(&self, job: &Job, hash: &str) -> Result<Job, ExecutorError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let task_id = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TASK_ID_LABEL));
        let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
        loop {
            match self.jobs.create(&PostParams::default(), job).await {
                Ok(created) => return Ok(created),
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(api_error("cannot create the Job", &name, e)),
            }
            let Some(existing) = self
                .jobs
                .get_opt(&name)
                .await
                .map_err(|e| api_error("cannot read the Job", &name, e))?
            else {
                continue;
            };
            let labels = existing.metadata.labels.as_ref();
            let theirs = labels.and_then(|l| l.get(TASK_ID_LABEL));
            if theirs != task_id {
                return Err(ExecutorError::Kubernetes(format!(
                    "a Job named {name} exists and is not this task's (task {theirs:?}); delete it"
                )));
            }
            let same_launch = existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SECRET_HASH_ANNOTATION))
                .is_some_and(|h| h == hash);
            if same_launch && existing.metadata.deletion_timestamp.is_none() {
                tracing::info!(job = %name, "found the Job of this launch; adopting it");
                return Ok(existing);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ExecutorError::Kubernetes(format!(
                    "an earlier Job {name} of this task is still being deleted"
                )));
            }
            if existing.metadata.deletion_timestamp.is_none() {
                tracing::info!(job = %name, "replacing the Job of an earlier launch of this task");
                match self.jobs.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(api_error("cannot delete the earlier Job", &name, e)),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Executor for KubernetesExecutor {
    async fn launch(&self, launch: Launch) -> Result<ExecutionId, ExecutorError> {
        let inner = &self.inner;
        let name = objects::object_name(launch.task_id);
        let job = objects::job(&launch, &inner.settings);
        let job = inner
            .create_job(&job, &objects::secret_hash(&launch))
            .await?;
        let owner = objects::owner(&job).ok_or_else(|| {
            ExecutorError::Kubernetes(format!("the API server returned Job {name} without a uid"))
        })?;
        // Made after the Job, owned by it from the start: never without an owner. The Pod
        // waits for it (a kubelet retries a missing Secret). Applied, so that a launch
        // tried again replaces the values and the owner.
        let secret = objects::secret(&launch, &inner.settings, &owner);
        if let Err(e) = inner
            .secrets
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
        {
            // Without its Secret the Job cannot run: it goes now.
            let _ = inner.jobs.delete(&name, &DeleteParams::background()).await;
            return Err(api_error("cannot create the Secret", &name, e));
        }
        lock(&inner.state).cancelled.remove(&name);
        Ok(execution_id(&inner.settings.namespace, &name))
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<(), ExecutorError> {
        let Some((namespace, name)) = parse_id(id) else {
            return Ok(());
        };
        let jobs: Api<Job> = Api::namespaced(self.inner.client.clone(), namespace);
        // Background: the Job goes at once, then its Pods and Secret (garbage collected
        // by their owner references) — its runner is stopped with its Pod.
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(ExecutorError::Signal(id.0.clone(), e.to_string())),
        }
        lock(&self.inner.state).cancelled.insert(name.to_owned());
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    async fn observe(&self, id: &ExecutionId) -> Observed {
        self.inner.observe(id).await
    }

    /// The task's Job, by its name (made from the task id), while it runs.
    async fn find(&self, task_id: i64) -> Option<ExecutionId> {
        let id = execution_id(
            &self.inner.settings.namespace,
            &objects::object_name(task_id),
        );
        (self.inner.observe(&id).await == Observed::Running).then_some(id)
    }

    /// Resolves when the watch sees the Job end (or go).
    async fn wait(&self, id: &ExecutionId) -> Observed {
        let mut changed = self.inner.changed.subscribe();
        loop {
            let observed = self.inner.observe(id).await;
            if observed != Observed::Running {
                return observed;
            }
            // A change of any Job wakes this; now and then it looks anyway (a Job in
            // another namespace is not watched).
            let _ = tokio::time::timeout(Duration::from_secs(5), changed.changed()).await;
        }
    }

    /// Waits (bounded) for the watch's first listing: the Jobs found then are the ones a
    /// previous server left, looked after from now on like this one's own.
    async fn server_starting(&self) {
        if !self.inner.synced(SYNC_WAIT * 3).await {
            tracing::warn!("the Job watch has not listed our Jobs yet; going on");
        }
        let mut state = lock(&self.inner.state);
        let found: Vec<(String, Option<i64>)> = state
            .jobs
            .iter()
            .map(|(name, seen)| (name.clone(), seen.task_id))
            .collect();
        tracing::info!(jobs = found.len(), namespace = %self.inner.settings.namespace, "found runner Jobs");
        state.at_start = Some(found);
    }

    async fn remove_ended(&self, active_tasks: &HashSet<i64>) {
        let found = lock(&self.inner.state).at_start.take().unwrap_or_default();
        for (name, task_id) in found {
            if task_id.is_some_and(|id| active_tasks.contains(&id)) {
                continue;
            }
            match self
                .inner
                .jobs
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => tracing::info!(job = %name, "removed the Job of an ended task"),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    tracing::warn!(job = %name, error = %e, "cannot remove the Job of an ended task")
                }
            }
        }
        // Secrets whose Job was never made (a server died in between).
        let secrets = self
            .inner
            .secrets
            .list(&ListParams::default().labels(&objects::selector()))
            .await;
        for secret in secrets.map(|l| l.items).unwrap_or_default() {
            let meta = &secret.metadata;
            let owned = meta
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            let old = meta.creation_timestamp.as_ref().is_some_and(|t| {
                let age = chrono::Utc::now()
                    .timestamp()
                    .saturating_sub(t.0.as_second());
                u64::try_from(age).is_ok_and(|age| age > ORPHAN_AGE.as_secs())
            });
            if let (false, true, Some(name)) = (owned, old, &meta.name) {
                let _ = self
                    .inner
                    .secrets
                    .delete(name, &DeleteParams::background())
                    .await;
            }
        }
    }

    /// Jobs outlive the server; only the watch stops.
    async fn server_stopping(&self) {
        self.inner.work.stop();
        self.inner
            .work
            .finish("the Job watch", Duration::from_secs(5))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_backoff_grows_to_its_cap_and_starts_over() {
        use kube::runtime::utils::Backoff as _;
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(8).collect();
        assert!(delays[0] <= Duration::from_millis(500), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(delays[7] >= Duration::from_secs(5), "{delays:?}");
        backoff.reset();
        assert!(backoff.next().unwrap() <= Duration::from_millis(500));
    }

    #[test]
    fn execution_ids_name_the_namespace_and_the_job() {
        let id = execution_id("runners", "bg-agent-task-7");
        assert_eq!(id.0, "k8s:runners/bg-agent-task-7");
        assert_eq!(parse_id(&id), Some(("runners", "bg-agent-task-7")));
        for other in [
            "local:boot:1:2:task-1",
            "k8s:/x",
            "k8s:ns/",
            "k8s:ns/a/b",
            "k8s:ns",
        ] {
            assert_eq!(parse_id(&ExecutionId(other.into())), None, "{other}");
        }
    }

    fn job_with(conditions: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bg-agent-task-7", "labels": {"bg-agent/task-id": "7"}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn a_job_ends_as_its_conditions_say() {
        let seen = Seen::of(&job_with(serde_json::json!([])));
        assert_eq!(seen.task_id, Some(7));
        assert_eq!(seen.end, JobEnd::Running);
        let complete = job_with(serde_json::json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(Seen::of(&complete).end, JobEnd::Complete);
        let deadline = job_with(serde_json::json!([{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"
        }]));
        assert_eq!(
            Seen::of(&deadline).end,
            JobEnd::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into()
            }
        );
        let not_yet = job_with(serde_json::json!([{"type": "Failed", "status": "False"}]));
        assert_eq!(Seen::of(&not_yet).end, JobEnd::Running);
    }
}
