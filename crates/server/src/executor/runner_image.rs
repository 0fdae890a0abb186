//! What the runner image (`deploy/runner.Dockerfile`) provides, as the Kubernetes executor
//! must spell it in a Job. A test (`tests/it/runner_image.rs`) parses the Dockerfile and
//! holds it to these, so the image and the Job cannot drift apart.

/// The container's `command`: the image's `ENTRYPOINT`, the runner crate's one binary.
pub const ENTRYPOINT: &[&str] = &["/usr/local/bin/bg-agent-runner"];

/// The container's `args`: none; the runner reads everything from its environment.
pub const ARGS: &[&str] = &[];

/// The image's `USER` (numeric, so that `runAsNonRoot` can verify it), and the Job's
/// `runAsUser`/`runAsGroup`/`fsGroup`.
pub const UID: i64 = 10001;

/// The image's `WORKDIR`: the runner works in its current directory, so the Job mounts
/// the workspace volume here.
pub const WORKSPACE: &str = "/workspace";

/// The runner user's `HOME` (an `emptyDir` in the Job: the root filesystem is read-only).
pub const HOME: &str = "/home/runner";
