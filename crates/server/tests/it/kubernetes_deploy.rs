//! `deploy/kubernetes` against a real kube-apiserver (v1.20.2, `scripts/envtest.sh`): the
//! rendered base passes a server-side dry run, and its Role is exactly enough for the
//! Kubernetes executor in the tasks' namespace and nothing elsewhere — exercised as a user
//! with no groups whose only rights are the ones the Role grants.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bg_agent_testkit::envtest::ControlPlane;
use serde_json::{Value, json};

const TASKS: &str = "bg-agent-tasks";
const SERVER: &str = "bg-agent";

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl --kubeconfig K ARGS` with `stdin`; the output whatever the exit status.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl (scripts/envtest.sh install provides it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(kubeconfig: &Path, args: &[&str], stdin: &str) -> String {
    let out = kubectl(kubeconfig, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn forbidden(kubeconfig: &Path, args: &[&str], stdin: &str) {
    let out = kubectl(kubeconfig, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("forbidden"),
        "kubectl {args:?} should be forbidden; status {}, stderr {stderr}",
        out.status
    );
}

/// The base as an operator applies it, for the 1.20 test apiserver: PodDisruptionBudget is
/// `policy/v1` (current clusters; 1.25 removed `v1beta1`) but 1.20 serves only `v1beta1`,
/// whose fields the manifest's PDB shares.
fn rendered(admin: &Path) -> String {
    ok(admin, &["kustomize", &repo("deploy/kubernetes")], "")
        .lines()
        .map(|l| {
            if l == "apiVersion: policy/v1" {
                "apiVersion: policy/v1beta1"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn namespaces(admin: &Path) {
    ok(
        admin,
        &["apply", "-f", &repo("deploy/kubernetes/namespaces.yaml")],
        "",
    );
}

#[test]
fn the_deploy_base_passes_a_server_side_dry_run() {
    let plane = ControlPlane::start();
    let admin = plane.admin_kubeconfig();
    // A dry run creates nothing, so the namespaced objects need their namespaces first.
    namespaces(&admin);
    let base = rendered(&admin);
    let out = ok(&admin, &["apply", "--dry-run=server", "-f", "-"], &base);
    let mut kinds: Vec<&str> = out.lines().map(|l| l.split('/').next().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "configmap",
            "deployment.apps",
            "namespace",
            "namespace",
            "networkpolicy.networking.k8s.io",
            "poddisruptionbudget.policy",
            "role.rbac.authorization.k8s.io",
            "rolebinding.rbac.authorization.k8s.io",
            "service",
            "serviceaccount",
        ],
        "{out}"
    );
    // The check bites: a misspelt field or an invalid quantity fails it.
    for (good, typo) in [
        ("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
        ("memory: 512Mi", "memory: 512Mx"),
    ] {
        assert!(base.contains(good));
        let out = kubectl(
            &admin,
            &["apply", "--dry-run=server", "-f", "-"],
            &base.replace(good, typo),
        );
        assert!(!out.status.success(), "{typo} was accepted");
    }
    // The Secret example has the keys the server reads, and is valid too.
    let example = ok(
        &admin,
        &[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            &repo("deploy/kubernetes/secret.example.yaml"),
        ],
        "",
    );
    let example: Value = serde_json::from_str(&example).unwrap();
    let mut keys: Vec<&String> = example["data"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "DATABASE_URL",
            "GITHUB_APP_ID",
            "GITHUB_PRIVATE_KEY",
            "GITHUB_WEBHOOK_SECRET"
        ]
    );
}

/// `args` in the tasks' namespace.
fn in_tasks<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-n", TASKS];
    all.extend_from_slice(args);
    all
}

fn get_json(kubeconfig: &Path, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(kubeconfig, &all, "")).unwrap()
}

fn job(name: &str) -> String {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "bg-agent"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "bg-agent"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": "bg-agent-runner:test"}]
                }
            }
        }
    })
    .to_string()
}

#[test]
fn the_deploy_role_grants_the_executor_its_work_in_the_tasks_namespace_only() {
    let plane = ControlPlane::start();
    let admin = plane.admin_kubeconfig();
    let user = plane.user_kubeconfig();
    namespaces(&admin);
    ok(&admin, &["apply", "-f", "-"], &rendered(&admin));

    // The Deployment runs as the ServiceAccount that the RoleBinding binds.
    let deployment = get_json(&admin, &["-n", SERVER, "deployment", "bg-agent"]);
    let binding = get_json(&admin, &["-n", TASKS, "rolebinding", "bg-agent-executor"]);
    assert_eq!(
        binding["subjects"],
        json!([{
            "kind": "ServiceAccount",
            "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": SERVER
        }])
    );

    // Runner Pods (the executor's label) take no connection and reach DNS, the server's
    // Pods on their container port, and 443 only. No CNI enforces it here: the object is
    // what is checked.
    let policy = get_json(&admin, &["-n", TASKS, "networkpolicy", "bg-agent-runners"]);
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"],
        json!({"matchLabels": {"app.kubernetes.io/managed-by": "bg-agent"}})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        spec.get("ingress"),
        None,
        "no ingress rule: nothing may connect"
    );
    let pod = &deployment["spec"]["template"];
    let server_port = &pod["spec"]["containers"][0]["ports"][0]["containerPort"];
    assert_eq!(
        spec["egress"],
        json!([
            {
                "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            },
            {
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SERVER}},
                    "podSelector": {"matchLabels": pod["metadata"]["labels"]}
                }],
                "ports": [{"protocol": "TCP", "port": server_port}]
            },
            {"ports": [{"protocol": "TCP", "port": 443}]}
        ])
    );
    let server_ns = get_json(&admin, &["namespace", SERVER]);
    assert_eq!(
        server_ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        SERVER
    );

    // Without a binding the test user may do nothing.
    forbidden(&user, &["-n", TASKS, "create", "-f", "-"], &job("before"));

    // The same binding for the test user: the Role's rights and nothing else.
    let as_user = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "bg-agent-executor-test-user", "namespace": TASKS},
        "roleRef": binding["roleRef"],
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": ControlPlane::USER
        }]
    });
    ok(&admin, &["apply", "-f", "-"], &as_user.to_string());

    // Launch: the Job, then its Secret owned by it.
    ok(&user, &in_tasks(&["create", "-f", "-"]), &job("task-1"));
    let created = get_json(&user, &in_tasks(&["job", "task-1"]));
    ok(
        &user,
        &in_tasks(&[
            "create",
            "secret",
            "generic",
            "task-1",
            "--from-literal=BG_AGENT_TASK_SECRET=s",
        ]),
        "",
    );
    let owner = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "task-1",
        "uid": created["metadata"]["uid"]
    }]}});
    ok(
        &user,
        &in_tasks(&["patch", "secret", "task-1", "-p", &owner.to_string()]),
        "",
    );
    let secret = get_json(&user, &in_tasks(&["secret", "task-1"]));
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        created["metadata"]["uid"]
    );

    // Observe: list and watch Jobs and Pods; the real Job controller makes the Pod.
    let jobs = get_json(
        &user,
        &in_tasks(&["jobs", "-l", "app.kubernetes.io/managed-by=bg-agent"]),
    );
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1);
    for resource in ["/apis/batch/v1", "/api/v1"] {
        let kind = if resource == "/api/v1" {
            "pods"
        } else {
            "jobs"
        };
        let watch = format!("{resource}/namespaces/{TASKS}/{kind}?watch=1&timeoutSeconds=1");
        ok(&user, &["get", "--raw", &watch], "");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let pods = get_json(&user, &in_tasks(&["pods", "-l", "job-name=task-1"]));
        if let Some(name) = pods["items"][0]["metadata"]["name"].as_str() {
            break name.to_string();
        }
        assert!(Instant::now() < deadline, "the Job controller made no Pod");
        std::thread::sleep(Duration::from_millis(100));
    };
    get_json(&user, &["-n", TASKS, "pod", &pod]);
    // No kubelet runs, so there is no log to read; whether the Role allows it is asked.
    assert_eq!(
        ok(&user, &in_tasks(&["auth", "can-i", "get", "pods/log"]), "").trim(),
        "yes"
    );

    // Cancel: delete the Job; the Secret it owns goes with it (garbage collector).
    ok(
        &user,
        &in_tasks(&["delete", "job", "task-1", "--wait=false"]),
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while kubectl(&user, &in_tasks(&["get", "secret", "task-1"]), "")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the owned Secret outlived its Job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(
        &user,
        &in_tasks(&["create", "secret", "generic", "leftover"]),
        "",
    );
    ok(&user, &in_tasks(&["delete", "secret", "leftover"]), "");

    // Our labelled Secrets are listed (to delete those a crash left without a Job).
    get_json(
        &user,
        &in_tasks(&["secrets", "-l", "app.kubernetes.io/managed-by=bg-agent"]),
    );

    // Nothing more: no watching Secrets, nothing in other namespaces (the server's own
    // Secret least of all), nothing cluster-wide.
    ok(
        &admin,
        &[
            "-n",
            SERVER,
            "create",
            "secret",
            "generic",
            "bg-agent",
            "--from-literal=GITHUB_WEBHOOK_SECRET=x",
        ],
        "",
    );
    let watch_secrets = format!("/api/v1/namespaces/{TASKS}/secrets?watch=1&timeoutSeconds=1");
    forbidden(&user, &["get", "--raw", &watch_secrets], "");
    forbidden(&user, &["-n", SERVER, "get", "secret", "bg-agent"], "");
    forbidden(&user, &["-n", SERVER, "get", "secrets"], "");
    forbidden(
        &user,
        &["-n", "default", "create", "-f", "-"],
        &job("elsewhere"),
    );
    forbidden(
        &user,
        &["-n", "default", "create", "secret", "generic", "elsewhere"],
        "",
    );
    forbidden(&user, &["get", "secrets", "--all-namespaces"], "");
    forbidden(&user, &["get", "jobs", "--all-namespaces"], "");
    forbidden(
        &user,
        &in_tasks(&["create", "-f", "-"]),
        &as_user.to_string(),
    );
}
