//! A stand-in kubelet for tests on a control plane without nodes: no kubelet runs there,
//! so our Jobs' Pods would stay `Pending`. This watches the Pods of our Jobs in one
//! namespace and, for each new one, does what a kubelet would: resolves the container's
//! environment (`value`, `secretKeyRef`, `envFrom` `secretRef`; waiting while a Secret is
//! missing, as a kubelet retries), runs the container's command — the runner image's
//! entrypoint, played by the real runner program in the local executor's bubblewrap
//! sandbox — and writes the Pod's status back: `Running`, then `Succeeded` or `Failed`
//! with the container's exit code. The real Job controller then completes or fails the
//! Job. A Pod deleted (a cancelled Job, a deadline the controller enforced) has its
//! runner killed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bg_agent::config::Config;
use bg_agent::executor::kubernetes::objects::{self, runner_image};
use bg_agent::executor::{Executor, Launch, LocalExecutor, Observed};
use bg_agent_core::protocol::{
    AGENT_CREDENTIAL_ENV, CALLBACK_URL_ENV, RUNNER_TOKEN_ENV, TASK_ID_ENV, TASK_SECRET_ENV,
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use secrecy::SecretString;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::recording::test_config;

/// The one image this kubelet can "pull": it runs the runner program for it. Any other
/// fails as a kubelet fails an image it cannot pull (`ErrImagePull`), or one whose name
/// is no image reference (`InvalidImageName`, e.g. with capitals).
pub const RUNNER_IMAGE: &str = "bg-agent-runner:test";

/// The runner plays the image's program this long at most; the Job's own deadline, which
/// the Job controller enforces by deleting the Pod, comes first.
const RUN_LIMIT: Duration = Duration::from_secs(3600);

pub struct Kubelet {
    watch: JoinHandle<()>,
    runner: LocalExecutor,
    _data: tempfile::TempDir,
}

/// Pods being run, by name: dropping the sender kills the runner.
type Running = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

impl Kubelet {
    /// Plays the kubelet for our Pods in `namespace`, running `runner_program runner`
    /// (the server's binary) where the image would run its entrypoint.
    pub async fn start(client: kube::Client, namespace: &str, runner_program: &Path) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config: Config = test_config();
        config.data_dir = data.path().to_owned();
        let runner = bg_agent::app::local_executor(&config, runner_program)
            .expect("the local sandbox for the stand-in kubelet");
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let running: Running = Arc::default();
        let local = runner.clone();
        let watch = tokio::spawn(async move {
            let config = watcher::Config::default().labels(&objects::selector());
            let events = watcher::watcher(pods.clone(), config).default_backoff();
            let mut events = std::pin::pin!(events);
            let mut listed = Vec::new();
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(Event::Init) => {
                        listed.clear();
                        continue;
                    }
                    Ok(Event::InitDone) => {
                        // Pods deleted while the watch was away.
                        let mut running = running.lock().unwrap();
                        running.retain(|name, _| listed.contains(name));
                        continue;
                    }
                    Ok(Event::Delete(pod)) => {
                        if let Some(name) = &pod.metadata.name {
                            running.lock().unwrap().remove(name);
                        }
                        continue;
                    }
                    Ok(Event::InitApply(pod)) => {
                        if let Some(name) = &pod.metadata.name {
                            listed.push(name.clone());
                        }
                        pod
                    }
                    Ok(Event::Apply(pod)) => pod,
                    Err(_) => continue,
                };
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                if pod.metadata.deletion_timestamp.is_some() {
                    running.lock().unwrap().remove(&name);
                    continue;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if !matches!(phase, None | Some("Pending")) {
                    continue;
                }
                let mut running = running.lock().unwrap();
                if running.contains_key(&name) {
                    continue;
                }
                let (kill, killed) = oneshot::channel();
                running.insert(name.clone(), kill);
                let run = PodRun {
                    pods: pods.clone(),
                    secrets: secrets.clone(),
                    runner: local.clone(),
                    name,
                };
                tokio::spawn(run.run(pod, killed));
            }
        });
        Self {
            watch,
            runner,
            _data: data,
        }
    }

    /// Stops watching and kills the runners still running.
    pub async fn stop(self) {
        self.watch.abort();
        self.runner.server_stopping().await;
    }
}

struct PodRun {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    runner: LocalExecutor,
    name: String,
}

/// Why a Pod cannot start yet.
enum NotYet {
    /// A Secret it names is missing (a kubelet retries).
    MissingSecret,
    /// It can never start as asked.
    Invalid(String),
}

impl PodRun {
    async fn run(self, pod: Pod, mut killed: oneshot::Receiver<()>) {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if image != RUNNER_IMAGE {
            let reason = if image.chars().any(|c| c.is_ascii_uppercase()) {
                "InvalidImageName"
            } else {
                "ErrImagePull"
            };
            self.patch(serde_json::json!({
                "containerStatuses": [container_status(serde_json::json!({
                    "waiting": {"reason": reason, "message": format!("cannot pull {image}")}
                }), false)],
            }))
            .await;
            return;
        }
        let env = loop {
            match self.environment(&pod).await {
                Ok(env) => break env,
                Err(NotYet::MissingSecret) => {}
                Err(NotYet::Invalid(why)) => {
                    self.finish(None, &why).await;
                    return;
                }
            }
            tokio::select! {
                _ = &mut killed => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        };
        let launch = match launch(env) {
            Ok(launch) => launch,
            Err(why) => {
                self.finish(None, &why).await;
                return;
            }
        };
        let id = match self.runner.launch(launch).await {
            Ok(id) => id,
            Err(e) => {
                self.finish(None, &e.to_string()).await;
                return;
            }
        };
        self.patch(serde_json::json!({
            "phase": "Running",
            "startTime": now(),
            "containerStatuses": [container_status(serde_json::json!({
                "running": {"startedAt": now()}
            }), true)],
        }))
        .await;
        tokio::select! {
            observed = self.runner.wait(&id) => {
                let code = match observed {
                    Observed::Exited { code: Some(code) } => Some(code),
                    _ => None,
                };
                self.finish(code, "").await;
            }
            // The Pod was deleted: its runner goes.
            _ = &mut killed => {
                let _ = self.runner.cancel(&id).await;
            }
        }
    }

    /// The container's environment as a kubelet resolves it: `envFrom` first, then `env`
    /// (which wins).
    async fn environment(&self, pod: &Pod) -> Result<Vec<(String, String)>, NotYet> {
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .ok_or_else(|| NotYet::Invalid("no container".into()))?;
        let entrypoint: Vec<&str> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .map(String::as_str)
            .collect();
        let expected: Vec<&str> = runner_image::ENTRYPOINT
            .iter()
            .chain(runner_image::ARGS)
            .copied()
            .collect();
        if entrypoint != expected {
            return Err(NotYet::Invalid(format!(
                "this kubelet runs only the runner image's entrypoint, not {entrypoint:?}"
            )));
        }
        let mut secrets: HashMap<String, Secret> = HashMap::new();
        let mut secret = async |name: &str| -> Result<Secret, NotYet> {
            if let Some(found) = secrets.get(name) {
                return Ok(found.clone());
            }
            match self.secrets.get_opt(name).await {
                Ok(Some(found)) => {
                    secrets.insert(name.to_owned(), found.clone());
                    Ok(found)
                }
                _ => Err(NotYet::MissingSecret),
            }
        };
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |name: String, value: String| {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        };
        for from in container.env_from.iter().flatten() {
            if let Some(reference) = &from.secret_ref {
                let found = secret(&reference.name).await?;
                for (key, value) in found.data.unwrap_or_default() {
                    let prefix = from.prefix.clone().unwrap_or_default();
                    set(
                        format!("{prefix}{key}"),
                        String::from_utf8_lossy(&value.0).into_owned(),
                    );
                }
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    let Some(key) = &from.secret_key_ref else {
                        return Err(NotYet::Invalid(format!("{}: unsupported source", var.name)));
                    };
                    let found = secret(&key.name).await?;
                    let data = found.data.unwrap_or_default();
                    let value = data.get(&key.key).ok_or(NotYet::MissingSecret)?;
                    String::from_utf8_lossy(&value.0).into_owned()
                }
                (None, None) => String::new(),
            };
            set(var.name.clone(), value);
        }
        Ok(env)
    }

    async fn finish(&self, code: Option<i32>, message: &str) {
        let code = code.unwrap_or(137);
        let reason = if code == 0 { "Completed" } else { "Error" };
        self.patch(serde_json::json!({
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [container_status(serde_json::json!({
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "message": message,
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            }), false)],
        }))
        .await;
    }

    async fn patch(&self, status: serde_json::Value) {
        let patch = serde_json::json!({ "status": status });
        // A Pod deleted meanwhile has no status to write.
        let _ = self
            .pods
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

fn container_status(state: serde_json::Value, running: bool) -> serde_json::Value {
    serde_json::json!({
        "name": objects::CONTAINER,
        "image": "bg-agent-runner",
        "imageID": "",
        "ready": running,
        "started": running,
        "restartCount": 0,
        "state": state,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The local executor's launch of what the Pod's environment holds: the variables it
/// sets itself are taken out, the rest passed on as they are.
fn launch(mut env: Vec<(String, String)>) -> Result<Launch, String> {
    let mut take = |name: &str| -> Result<String, String> {
        let at = env
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| format!("the Pod has no {name}"))?;
        Ok(env.remove(at).1)
    };
    let task_id = take(TASK_ID_ENV)?
        .parse()
        .map_err(|_| "a bad task id".to_owned())?;
    let callback_url = take(CALLBACK_URL_ENV)?;
    let task_secret = SecretString::from(take(TASK_SECRET_ENV)?);
    let runner_token = SecretString::from(take(RUNNER_TOKEN_ENV)?);
    let agent_credential = take(AGENT_CREDENTIAL_ENV).ok().map(SecretString::from);
    // The sandbox has its own home.
    let _ = take("HOME");
    Ok(Launch {
        task_id,
        callback_url,
        task_secret,
        runner_token,
        agent_credential,
        timeout: RUN_LIMIT,
        env,
    })
}
