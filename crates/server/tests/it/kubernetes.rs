//! The Kubernetes executor against a real control plane: etcd, kube-apiserver and
//! kube-controller-manager v1.20.2 (`scripts/envtest.sh`), with the real Job controller
//! and garbage collector, and the test kit's stand-in kubelet running each Job's Pod with
//! the real runner in the local sandbox. Each test has a namespace of its own; the
//! executor acts as the `bg-agent` user, whose only rights are `deploy/`'s Role.
//!
//! These tests fail (never skip) when the control plane's binaries are missing: run
//! `scripts/envtest.sh install` once.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bg_agent::executor::kubernetes::{JobSettings, KubernetesExecutor, client, objects};
use bg_agent::executor::{ExecutionId, Executor, Launch, Observed};
use bg_agent_core::task::{Phase, TaskState};
use bg_agent_testkit::envtest::ControlPlane;
use bg_agent_testkit::harness::{LEAD, OnKubernetes, Scenario, WAIT};
use bg_agent_testkit::kubelet::{Kubelet, RUNNER_IMAGE};
use bg_agent_testkit::process::free_port;
use bg_agent_testkit::server_process::ServerProcess;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use secrecy::SecretString;
use serde::Deserialize;

const RUNNER: &str = env!("CARGO_BIN_EXE_bg-agent");

// ---- The control plane and a namespace per test ----

/// One control plane for the tests that run at the same time (each in its own
/// namespace); stopped when the last of them is done with it.
fn shared_plane() -> Arc<ControlPlane> {
    static PLANE: Mutex<Weak<ControlPlane>> = Mutex::new(Weak::new());
    let mut plane = PLANE.lock().unwrap();
    if let Some(running) = plane.upgrade() {
        return running;
    }
    let started = Arc::new(ControlPlane::start());
    *plane = Arc::downgrade(&started);
    started
}

/// A test's namespace, where the `bg-agent` user has `deploy/`'s Role.
struct Cluster {
    plane: Arc<ControlPlane>,
    namespace: String,
    /// As the cluster's administrator (the test's own look at things).
    admin: kube::Client,
}

impl Cluster {
    async fn new(plane: Arc<ControlPlane>) -> Self {
        let namespace = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (admin, _) = client(Some(&plane.admin_kubeconfig())).await.unwrap();
        grant_bg_agent(&admin, &namespace).await;
        Self {
            plane,
            namespace,
            admin,
        }
    }

    async fn shared() -> Self {
        Self::new(shared_plane()).await
    }

    fn on_kubernetes(&self) -> OnKubernetes {
        OnKubernetes {
            kubeconfig: self.plane.user_kubeconfig(),
            kubelet_kubeconfig: self.plane.admin_kubeconfig(),
            namespace: self.namespace.clone(),
            image: RUNNER_IMAGE.to_owned(),
        }
    }

    /// The executor as the server makes it, as the `bg-agent` user.
    async fn executor(&self) -> KubernetesExecutor {
        let (user, _) = client(Some(&self.plane.user_kubeconfig())).await.unwrap();
        KubernetesExecutor::new(user, self.job_settings())
    }

    fn job_settings(&self) -> JobSettings {
        JobSettings {
            namespace: self.namespace.clone(),
            image: RUNNER_IMAGE.into(),
            cpu: "500m".into(),
            memory: "1Gi".into(),
            ttl_secs: 600,
        }
    }

    async fn kubelet(&self) -> Kubelet {
        Kubelet::start(self.admin.clone(), &self.namespace, Path::new(RUNNER)).await
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    async fn job_names(&self) -> Vec<String> {
        names(
            self.jobs()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items,
        )
    }

    async fn secret_names(&self) -> Vec<String> {
        let secrets = self.secrets().list(&ListParams::default()).await.unwrap();
        // The namespace's own service account token is not ours.
        names(secrets.items)
            .into_iter()
            .filter(|n| n.starts_with("bg-agent-"))
            .collect()
    }

    /// Waits (bounded) until `condition` holds of the namespace's Jobs and Secrets.
    async fn wait_until(&self, what: &str, condition: impl Fn(&[String], &[String]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (jobs, secrets) = (self.job_names().await, self.secret_names().await);
            if condition(&jobs, &secrets) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: Jobs {jobs:?}, Secrets {secrets:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Makes `namespace` and gives the `bg-agent` user there exactly the rights of
/// `deploy/`'s Role: whatever the executor does in these tests, that Role allows.
async fn grant_bg_agent(admin: &kube::Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let made: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": namespace}
    }))
    .unwrap();
    namespaces.create(&Default::default(), &made).await.unwrap();
    let manifests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/rbac.yaml"
    ))
    .unwrap();
    let mut role = serde_norway::Deserializer::from_str(&manifests)
        .map(|document| serde_json::Value::deserialize(document).unwrap())
        .find(|document| document["kind"] == "Role")
        .map(|document| serde_json::from_value::<Role>(document).unwrap())
        .expect("deploy/kubernetes/rbac.yaml has a Role");
    role.metadata.namespace = None;
    let role_name = role.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bg-agent-runner"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ControlPlane::USER}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&Default::default(), &binding)
        .await
        .unwrap();
}

/// Kills the control plane's kube-apiserver (etcd and the controller-manager go on).
/// Returns its command line, to start it again with [`start_apiserver`].
fn stop_apiserver(plane: &ControlPlane) -> Vec<String> {
    let pid_file = plane.dir().join("kube-apiserver.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let command: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    // Killed, as a crash would: a graceful stop waits a minute for the open watches.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    {
        assert!(Instant::now() < deadline, "kube-apiserver did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    command
}

/// Starts kube-apiserver again as it ran (recorded where the script's `stop` finds it);
/// returns once it is ready.
async fn start_apiserver(plane: &ControlPlane, command: &[String]) {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(plane.dir().join("kube-apiserver.log"))
        .unwrap();
    let child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(
        plane.dir().join("kube-apiserver.pid"),
        child.id().to_string(),
    )
    .unwrap();
    // Reaped by whoever stops it (the script), as the first one was.
    std::mem::forget(child);
    let (admin, _) = client(Some(&plane.admin_kubeconfig())).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while admin.apiserver_version().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "kube-apiserver did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: the namespace controller removes what the test left.
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        let name = self.namespace.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = namespaces.delete(&name, &Default::default()).await;
            });
        }
    }
}

fn names<K: kube::Resource>(items: Vec<K>) -> Vec<String> {
    let mut names: Vec<String> = items.iter().filter_map(|i| i.meta().name.clone()).collect();
    names.sort();
    names
}

fn launch(task_id: i64, timeout: Duration) -> Launch {
    Launch {
        task_id,
        callback_url: "http://127.0.0.1:9/".into(),
        task_secret: SecretString::from("the-task-secret-0123456789abcdef".to_owned()),
        runner_token: SecretString::from("ghs_theRunnerToken0123456789".to_owned()),
        agent_credential: Some(SecretString::from(
            "sk-ant-theAgentCredential0123".to_owned(),
        )),
        timeout,
        env: vec![
            ("BG_AGENT_TASK_SPEC".into(), "{\"task_id\":7}".into()),
            (
                "BG_AGENT_CALLBACK_CA".into(),
                "-----BEGIN CERTIFICATE-----\n".into(),
            ),
        ],
    }
}

// ---- Exact objects ----

/// A launch makes exactly one Job and one Secret, as described: the restricted Pod, the
/// deadline, the resources, the labels, the Secret owned by the Job and holding every
/// secret — and no secret value anywhere in the Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_creates_exactly_the_job_and_its_secret() {
    let cluster = Cluster::shared().await;
    let executor = cluster.executor().await;
    let id = executor
        .launch(launch(7, Duration::from_secs(600)))
        .await
        .unwrap();
    let ns = &cluster.namespace;
    assert_eq!(id, ExecutionId(format!("k8s:{ns}/bg-agent-task-7")));
    assert_eq!(cluster.job_names().await, ["bg-agent-task-7"]);
    assert_eq!(cluster.secret_names().await, ["bg-agent-task-7"]);

    let job = cluster.jobs().get("bg-agent-task-7").await.unwrap();
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "bg-agent".to_owned(),
        ),
        ("bg-agent/task-id".to_owned(), "7".to_owned()),
    ]);
    assert_eq!(job.metadata.labels.as_ref(), Some(&labels));
    let spec = job.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    // v1.20 keeps `ttlSecondsAfterFinished` only behind a feature gate; newer clusters
    // keep it. Either way the executor asked for it (see the objects' unit tests).
    assert!(matches!(spec.ttl_seconds_after_finished, None | Some(600)));
    let template = spec.template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    assert!(
        labels.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "{pod_labels:?}"
    );
    let pod = template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(objects::runner_image::UID));
    assert_eq!(
        pod_security.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(RUNNER_IMAGE));
    let entrypoint: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    assert_eq!(entrypoint, objects::runner_image::ENTRYPOINT);
    let args: Vec<&str> = container
        .args
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    assert_eq!(args, objects::runner_image::ARGS);
    assert_eq!(
        container.working_dir.as_deref(),
        Some(objects::runner_image::WORKSPACE)
    );
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.privileged, Some(false));
    assert_eq!(
        security.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        security.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let resources = container.resources.clone().unwrap();
    let expected = BTreeMap::from([
        (
            "cpu".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("500m".into()),
        ),
        (
            "memory".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        ),
    ]);
    assert_eq!(resources.requests.as_ref(), Some(&expected));
    assert_eq!(resources.limits.as_ref(), Some(&expected));
    // Writable: only the emptyDir workspace, home and /tmp.
    let mounts: Vec<(String, String)> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                "workspace".to_owned(),
                objects::runner_image::WORKSPACE.to_owned()
            ),
            ("home".to_owned(), objects::runner_image::HOME.to_owned()),
            ("tmp".to_owned(), "/tmp".to_owned()),
        ]
    );
    let volumes = pod.volumes.unwrap();
    assert_eq!(volumes.len(), 3);
    assert!(volumes.iter().all(|v| v.empty_dir.is_some()), "{volumes:?}");
    // The environment: plain values that are no secret, the secrets from the Secret.
    let env: Vec<(&str, Option<&str>)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env,
        [
            ("BG_AGENT_TASK_ID", Some("7")),
            ("BG_AGENT_CALLBACK_URL", Some("http://127.0.0.1:9/")),
            ("HOME", Some(objects::runner_image::HOME)),
            ("BG_AGENT_TASK_SPEC", Some("{\"task_id\":7}")),
            (
                "BG_AGENT_CALLBACK_CA",
                Some("-----BEGIN CERTIFICATE-----\n")
            ),
        ]
    );
    let from = container.env_from.clone().unwrap();
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0].secret_ref.as_ref().map(|r| r.name.as_str()),
        Some("bg-agent-task-7")
    );
    let serialized = serde_json::to_string(&job).unwrap();
    for secret in [
        "the-task-secret-0123456789abcdef",
        "ghs_theRunnerToken0123456789",
        "sk-ant-theAgentCredential0123",
    ] {
        assert!(
            !serialized.contains(secret),
            "a secret in the Job: {serialized}"
        );
    }

    // The Secret: every secret under the variable that carries it, owned by the Job.
    let secret = cluster.secrets().get("bg-agent-task-7").await.unwrap();
    assert_eq!(secret.metadata.labels.as_ref(), Some(&labels));
    let data: BTreeMap<String, String> = secret
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect();
    assert_eq!(
        data,
        BTreeMap::from([
            (
                "BG_AGENT_AGENT_CREDENTIAL".to_owned(),
                "sk-ant-theAgentCredential0123".to_owned()
            ),
            (
                "BG_AGENT_RUNNER_TOKEN".to_owned(),
                "ghs_theRunnerToken0123456789".to_owned()
            ),
            (
                "BG_AGENT_TASK_SECRET".to_owned(),
                "the-task-secret-0123456789abcdef".to_owned()
            ),
        ])
    );
    let owners = secret.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "Job");
    assert_eq!(owners[0].name, "bg-agent-task-7");
    assert_eq!(Some(&owners[0].uid), job.metadata.uid.as_ref());

    // The same launch again (a retried create) adopts the Job: still one of each.
    let again = executor
        .launch(launch(7, Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(again, id);
    let adopted = cluster.jobs().get("bg-agent-task-7").await.unwrap();
    assert_eq!(adopted.metadata.uid, job.metadata.uid);
    assert_eq!(cluster.job_names().await, ["bg-agent-task-7"]);
    assert_eq!(executor.observe(&id).await, Observed::Running);

    // Cancel: the Job goes, and the garbage collector takes its Secret with it.
    executor.cancel(&id).await.unwrap();
    assert_eq!(executor.observe(&id).await, Observed::Cancelled);
    cluster
        .wait_until("removed the Job and its Secret", |jobs, secrets| {
            jobs.is_empty() && secrets.is_empty()
        })
        .await;
    executor.server_stopping().await;
}

/// A server that starts finds the Jobs a previous one left: those of tasks still active
/// are watched on, those of tasks that have ended are deleted (their Secrets with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_server_keeps_active_tasks_jobs_and_removes_ended_ones() {
    let cluster = Cluster::shared().await;
    let first = cluster.executor().await;
    first
        .launch(launch(21, Duration::from_secs(600)))
        .await
        .unwrap();
    let active = first
        .launch(launch(22, Duration::from_secs(600)))
        .await
        .unwrap();
    first.server_stopping().await;

    let second = cluster.executor().await;
    second.server_starting().await;
    second.remove_ended(&HashSet::from([22])).await;
    cluster
        .wait_until("removed only the ended task's Job", |jobs, secrets| {
            jobs == ["bg-agent-task-22"] && secrets == ["bg-agent-task-22"]
        })
        .await;
    assert_eq!(second.observe(&active).await, Observed::Running);
    second.server_stopping().await;
}

/// A Job whose deadline passes is failed by the Job controller itself
/// (`DeadlineExceeded`), its Pod deleted — the stand-in kubelet kills the runner — and
/// the executor reports a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_second_deadline_is_enforced_by_the_job_controller() {
    let cluster = Cluster::shared().await;
    let kubelet = cluster.kubelet().await;
    let executor = cluster.executor().await;
    // The runner reports to a server that takes its connection and never answers: it
    // waits there until killed.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let id = executor
        .launch(Launch {
            callback_url: callback,
            env: Vec::new(),
            ..launch(8, Duration::from_secs(3))
        })
        .await
        .unwrap();
    let observed = tokio::time::timeout(WAIT, executor.wait(&id))
        .await
        .unwrap();
    assert_eq!(observed, Observed::TimedOut);
    println!(
        "kubernetes: a 3 s deadline ended the Job after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let job = cluster.jobs().get("bg-agent-task-8").await.unwrap();
    let failed = job
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    // The controller deleted the Pod.
    let deadline = Instant::now() + WAIT;
    while !cluster
        .pods()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the Pod was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    executor.server_stopping().await;
    kubelet.stop().await;
}

// ---- Comment → Job → Pod → runner → pull request ----

fn scenario(cluster: &Cluster) -> Scenario {
    Scenario::engine(RUNNER).on_kubernetes(cluster.on_kubernetes())
}

/// The quickstart on Kubernetes: an upgrade comment becomes one Job, whose Pod runs the
/// runner, which pushes; one pull request, the check run green.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_comment_runs_as_a_job_and_opens_one_pull_request() {
    let cluster = Cluster::shared().await;
    // The same on the local executor first, for the figures side by side.
    let local = Scenario::engine(RUNNER).start().await;
    let started = Instant::now();
    local
        .comment(LEAD, "/bg-agent upgrade lodash 4.17.21")
        .await;
    local
        .only_task()
        .await
        .expect_state(TaskState::Succeeded)
        .await;
    let on_local = started.elapsed();
    local.finish().await;

    let h = scenario(&cluster).start().await;
    let started = Instant::now();
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
    println!(
        "kubernetes: comment → pull request in {:.1} s (local executor, same run: {:.1} s)",
        started.elapsed().as_secs_f64(),
        on_local.as_secs_f64()
    );
    assert_eq!(task.changed, Some(true));
    assert_eq!(
        task.execution_id.as_deref(),
        Some(format!("k8s:{}/bg-agent-task-{}", cluster.namespace, task.id).as_str())
    );
    let pulls = h.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].title, "[bg-agent] upgrade lodash 4.17.21");
    assert_eq!(Some(pulls[0].head.as_str()), task.branch.as_deref());
    assert_eq!(h.check_run(task.id).conclusion.as_deref(), Some("success"));
    // One Job, and it completed.
    assert_eq!(
        cluster.job_names().await,
        [format!("bg-agent-task-{}", task.id)]
    );
    let job = cluster
        .jobs()
        .get(&format!("bg-agent-task-{}", task.id))
        .await
        .unwrap();
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
    h.finish().await;
}

/// A verdict server for validation: the `n`th runner to ask gets `verdicts[n]` as its
/// exit code (the sandbox shares the host's network, not its files).
async fn verdicts(verdicts: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for verdict in verdicts.iter().cycle() {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.write_all(verdict.to_string().as_bytes()).await;
        }
    });
    port
}

fn judged_validation(port: u16) -> String {
    format!(
        "validation:\n  - node -e \"require('net').connect({port}, '127.0.0.1').on('data', d => process.exit(Number(String(d)))).on('error', () => process.exit(2))\"\n"
    )
}

/// Validation fails on the first Job; Retry makes a second task, a second Job, which
/// passes and opens the pull request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_validation_then_retry_runs_a_second_job_that_succeeds() {
    let cluster = Cluster::shared().await;
    let port = verdicts(&[1, 0]).await;
    let h = scenario(&cluster)
        .file(".github/bg-agent.yml", judged_validation(port))
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let first = h.only_task().await.expect_state(TaskState::Failed).await;
    assert!(h.pulls().is_empty());
    h.task(first.id).wait_button("retry").await;
    h.click(first.id, LEAD, "retry").await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 2);
    let second = h.task(tasks[1].id).expect_state(TaskState::Succeeded).await;
    assert_eq!(second.retry_of, Some(first.id));
    assert_eq!(h.pulls().len(), 1);
    assert_eq!(
        cluster.job_names().await,
        [
            format!("bg-agent-task-{}", first.id),
            format!("bg-agent-task-{}", second.id)
        ]
    );
    h.finish().await;
}

/// Validation that holds the runner until the test lets it go (or forever).
fn held_validation(port: u16) -> String {
    format!(
        "validation:\n  - node -e \"const s = require('net').connect({port}, '127.0.0.1'); s.on('data', () => process.exit(0)); s.on('error', () => process.exit(1));\"\n"
    )
}

/// Cancel deletes the task's Job; its Pod (and runner) and its Secret go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_the_job_and_its_secret_goes_with_it() {
    let cluster = Cluster::shared().await;
    let hold = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hold.local_addr().unwrap().port();
    let h = scenario(&cluster)
        .file(".github/bg-agent.yml", held_validation(port))
        .start()
        .await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await;
    let (_held, _) = tokio::time::timeout(WAIT, hold.accept())
        .await
        .expect("no runner reached its validation")
        .unwrap();
    task.wait_phase(Phase::Validating).await;
    assert_eq!(cluster.secret_names().await.len(), 1);
    h.comment(LEAD, "/bg-agent cancel").await;
    let cancelled = task.expect_state(TaskState::Cancelled).await;
    assert_eq!(
        cancelled.error.as_deref(),
        Some(format!("cancelled by @{LEAD}").as_str())
    );
    cluster
        .wait_until("removed the Job and its Secret", |jobs, secrets| {
            jobs.is_empty() && secrets.is_empty()
        })
        .await;
    assert!(h.pulls().is_empty());
    h.finish().await;
}

/// A runner image that cannot be pulled: the task fails saying so (not a timeout an
/// hour later), and its Job is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_image_that_cannot_be_pulled_fails_the_task_and_removes_its_job() {
    let cluster = Cluster::shared().await;
    let mut on = cluster.on_kubernetes();
    on.image = "Registry.Example/Bg-Agent-Runner:1".into();
    let h = Scenario::engine(RUNNER).on_kubernetes(on).start().await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.expect_state(TaskState::Failed).await;
    assert_eq!(
        task.error.as_deref(),
        Some(
            "Kubernetes: the runner's Pod cannot start (InvalidImageName: cannot pull \
             Registry.Example/Bg-Agent-Runner:1); retry to run it again"
        )
    );
    cluster
        .wait_until("removed the Job and its Secret", |jobs, secrets| {
            jobs.is_empty() && secrets.is_empty()
        })
        .await;
    h.finish().await;
}

// ---- Faults ----

/// The server is killed (SIGKILL) while its Job's runner validates; the Job runs on, a
/// new server on the same database adopts it, and the task succeeds once: one pull
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_its_killed_server_and_its_task_succeeds_once() {
    let cluster = Cluster::shared().await;
    let hold = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hold.local_addr().unwrap().port();
    let h = scenario(&cluster)
        .file(".github/bg-agent.yml", held_validation(port))
        .without_server()
        .start()
        .await;
    let logs = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let kubeconfig = cluster.plane.user_kubeconfig().display().to_string();
    let settings = [
        ("BG_AGENT_EXECUTOR", "kubernetes"),
        ("BG_AGENT_KUBECONFIG", kubeconfig.as_str()),
        ("BG_AGENT_KUBERNETES_NAMESPACE", cluster.namespace.as_str()),
        ("BG_AGENT_RUNNER_IMAGE", RUNNER_IMAGE),
    ];
    let mut first =
        ServerProcess::start_with(RUNNER.as_ref(), &h, &listen, logs.path(), &settings).await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    let (mut held, _) = tokio::time::timeout(WAIT, hold.accept())
        .await
        .expect("no runner reached its validation")
        .unwrap();
    let running = h.task(task).wait_phase(Phase::Validating).await;

    first.kill();
    let killed = Instant::now();
    let second =
        ServerProcess::start_with(RUNNER.as_ref(), &h, &listen, logs.path(), &settings).await;
    let shown = ShowLogs(vec![&first, &second]);
    // The Job is still there and still running: nothing judged it lost.
    assert_eq!(cluster.job_names().await, [format!("bg-agent-task-{task}")]);
    assert_eq!(h.task(task).get().await.state, TaskState::Running);
    {
        use tokio::io::AsyncWriteExt;
        held.write_all(b"go").await.unwrap();
    }
    let done = h.task(task).expect_state(TaskState::Succeeded).await;
    println!(
        "kubernetes: SIGKILL while running: succeeded {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(done.error, None);
    assert_eq!(done.execution_id, running.execution_id);
    assert_eq!(h.tasks().await.len(), 1);
    assert_eq!(h.pulls().len(), 1);
    drop(shown);
    let mut second = second;
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}

/// The server is killed mid-task and its Job deleted meanwhile: the restarted server
/// finds no Job for the running task and ends it `failed`, lost (retryable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_job_is_gone_after_a_restart_ends_lost() {
    let cluster = Cluster::shared().await;
    let hold = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hold.local_addr().unwrap().port();
    let h = scenario(&cluster)
        .file(".github/bg-agent.yml", held_validation(port))
        .without_server()
        .start()
        .await;
    let logs = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let kubeconfig = cluster.plane.user_kubeconfig().display().to_string();
    let settings = [
        ("BG_AGENT_EXECUTOR", "kubernetes"),
        ("BG_AGENT_KUBECONFIG", kubeconfig.as_str()),
        ("BG_AGENT_KUBERNETES_NAMESPACE", cluster.namespace.as_str()),
        ("BG_AGENT_RUNNER_IMAGE", RUNNER_IMAGE),
    ];
    let mut first =
        ServerProcess::start_with(RUNNER.as_ref(), &h, &listen, logs.path(), &settings).await;
    h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
    let task = h.only_task().await.id;
    let _held = tokio::time::timeout(WAIT, hold.accept())
        .await
        .expect("no runner reached its validation")
        .unwrap();
    h.task(task).wait_phase(Phase::Validating).await;

    first.kill();
    cluster
        .jobs()
        .delete(
            &format!("bg-agent-task-{task}"),
            &DeleteParams::background(),
        )
        .await
        .unwrap();
    let mut second =
        ServerProcess::start_with(RUNNER.as_ref(), &h, &listen, logs.path(), &settings).await;
    let shown = ShowLogs(vec![&first, &second]);
    let lost = h.task(task).expect_state(TaskState::Failed).await;
    assert!(
        lost.error
            .as_deref()
            .is_some_and(|e| e.starts_with("lost:")),
        "{lost:?}"
    );
    assert!(h.pulls().is_empty());
    drop(shown);
    assert!(second.stop().await.success(), "{}", second.log());
    h.finish().await;
}

/// The servers' logs, shown when a test fails.
struct ShowLogs<'a>(Vec<&'a ServerProcess>);

impl Drop for ShowLogs<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (n, server) in self.0.iter().enumerate() {
                eprintln!("---- server {n} ----\n{}", server.log());
            }
        }
    }
}

/// The API server is stopped and started again (etcd kept) while a Job runs: meanwhile
/// the executor still calls it running (never lost for lack of an answer); then the Job
/// completes, and the resumed watch sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_watch_survives_an_api_server_restart() {
    // Its own control plane: the restart would disturb the other tests'.
    let cluster = Cluster::new(Arc::new(ControlPlane::start())).await;
    let executor = cluster.executor().await;
    let id = executor
        .launch(launch(9, Duration::from_secs(600)))
        .await
        .unwrap();
    // The Job controller makes the Pod (no kubelet here: the test plays it below).
    let deadline = Instant::now() + WAIT;
    let pod = loop {
        let pods = cluster.pods().list(&ListParams::default()).await.unwrap();
        if let Some(pod) = pods.items.into_iter().next() {
            break pod.metadata.name.unwrap();
        }
        assert!(Instant::now() < deadline, "the Job controller made no Pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(executor.observe(&id).await, Observed::Running);

    let restarted = Instant::now();
    let apiserver = stop_apiserver(&cluster.plane);
    assert_eq!(executor.observe(&id).await, Observed::Running);
    start_apiserver(&cluster.plane, &apiserver).await;
    println!(
        "kubernetes: API server down and up again in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    // A fresh client: the old one's connections died with the server.
    let (admin, _) = client(Some(&cluster.plane.admin_kubeconfig()))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin, &cluster.namespace);
    let status = serde_json::json!({"status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": "runner", "image": RUNNER_IMAGE, "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        }],
    }});
    // A restarted API server answers /version before it is ready for everything (its
    // post-start hooks, the watch cache): a refusal then is tried again.
    let deadline = Instant::now() + WAIT;
    while let Err(e) = pods
        .patch_status(&pod, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        assert!(Instant::now() < deadline, "the Pod's status: {e}");
        println!("kubernetes: the Pod's status not taken yet: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Ok(observed) = tokio::time::timeout(WAIT, executor.wait(&id)).await else {
        // What stood still: the Job controller (its log) or our watch (the Job's status).
        let jobs: Api<Job> = Api::namespaced(pods.into_client(), &cluster.namespace);
        let job = jobs.list(&ListParams::default()).await.map(|l| l.items);
        let log = std::fs::read_to_string(cluster.plane.dir().join("kube-controller-manager.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the Job's end was not seen; Jobs: {job:#?}\ncontroller log (newest first):\n{}",
            tail.join("\n")
        );
    };
    assert_eq!(observed, Observed::Exited { code: Some(0) });
    println!(
        "kubernetes: Job completion seen {:.1} s after the restart began",
        restarted.elapsed().as_secs_f64()
    );
    executor.server_stopping().await;
}
