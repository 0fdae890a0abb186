//! A real Kubernetes control plane for a test: etcd, kube-apiserver and
//! kube-controller-manager v1.20.2 on 127.0.0.1, started by `scripts/envtest.sh start` in a
//! temporary directory and stopped (by the PIDs the script recorded) on drop. The binaries
//! come from `scripts/envtest.sh install` (`.ci/run` runs it); `BG_AGENT_ENVTEST_BIN`
//! overrides the directory holding them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The project's script, whichever crate's tests run.
pub fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/envtest.sh"
    ))
}

/// One running control plane, private to the test that started it.
pub struct ControlPlane {
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and returns once the
    /// apiserver is ready (about 4 s). Panics with the script's output if it cannot.
    pub fn start() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("bg-agent-envtest-")
            .tempdir()
            .unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        let plane = ControlPlane { dir };
        assert!(
            out.status.success(),
            "scripts/envtest.sh start failed ({}):\n{}{}\n(binaries missing? run `scripts/envtest.sh install`)",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        plane
    }

    /// Kubeconfig of `admin`, in group `system:masters` (may do anything).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Kubeconfig of `bg-agent`, a user with no groups: forbidden everything until a
    /// RoleBinding names it (the RBAC tests bind `deploy/`'s Role to it).
    pub fn user_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("bg-agent.kubeconfig")
    }

    /// The user name in [`ControlPlane::user_kubeconfig`], as RBAC subjects spell it.
    pub const USER: &'static str = "bg-agent";

    /// The run directory: the processes' logs (`kube-apiserver.log`, ...) and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!(
                "scripts/envtest.sh stop {} failed: {stopped:?}",
                self.dir.path().display()
            );
        }
    }
}
