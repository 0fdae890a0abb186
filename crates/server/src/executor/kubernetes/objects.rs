//! The objects one task's launch creates, built without I/O: a `Secret` holding every
//! secret of the [`Launch`] and a `batch/v1` Job whose Pod takes its environment from it
//! (no secret value is ever in the Job), under the restricted Pod security standard.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretEnvSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use bg_agent_core::protocol::{
    AGENT_CREDENTIAL_ENV, CALLBACK_URL_ENV, RUNNER_TOKEN_ENV, TASK_ID_ENV, TASK_SECRET_ENV,
};

use super::super::Launch;

/// What the runner image provides, as the Job must spell it.
pub use crate::executor::runner_image;

/// On every object the executor makes (its watch selects on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "bg-agent");
/// The task an object belongs to.
pub const TASK_ID_LABEL: &str = "bg-agent/task-id";
/// The SHA-256 of the launch's task secret (the server stores the same hash): tells a
/// Job of this very launch, adopted after a retried create, from one an earlier launch
/// of the task left behind, whose runner holds a secret no longer accepted.
pub const SECRET_HASH_ANNOTATION: &str = "bg-agent/task-secret-sha256";
/// The runner's container.
pub const CONTAINER: &str = "runner";
/// `app.kubernetes.io/managed-by=bg-agent`.
pub fn selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// What every Job gets from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub namespace: String,
    pub image: String,
    /// CPU and memory (Kubernetes quantities), requested and limited alike.
    pub cpu: String,
    pub memory: String,
    /// `ttlSecondsAfterFinished`.
    pub ttl_secs: i32,
}

/// The Job's and its Secret's name: one per task, so a launch tried again finds the
/// Job the first attempt made.
pub fn object_name(task_id: i64) -> String {
    format!("bg-agent-task-{task_id}")
}

fn labels(task_id: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (TASK_ID_LABEL.to_owned(), task_id.to_string()),
    ])
}

/// Every secret the runner is given, by the environment variable that carries it. A
/// new secret of [`Launch`] goes here, and so into the Secret, never into the Job.
fn secret_env(launch: &Launch) -> Vec<(&'static str, &str)> {
    let mut env = vec![
        (TASK_SECRET_ENV, launch.task_secret.expose_secret()),
        (RUNNER_TOKEN_ENV, launch.runner_token.expose_secret()),
    ];
    if let Some(credential) = &launch.agent_credential {
        env.push((AGENT_CREDENTIAL_ENV, credential.expose_secret()));
    }
    env
}

pub fn secret_hash(launch: &Launch) -> String {
    hex::encode(Sha256::digest(
        launch.task_secret.expose_secret().as_bytes(),
    ))
}

/// The task's Secret, owned by its Job (`owner`: the Job as created), so that deleting
/// the Job deletes it too.
pub fn secret(launch: &Launch, settings: &JobSettings, owner: &OwnerReference) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(object_name(launch.task_id)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(launch.task_id)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            secret_env(launch)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// `job` as the owner of its Secret. Not a controller, and not blocking the Job's
/// deletion (that would need rights on `jobs/finalizers`).
pub fn owner(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// The task's Job: one Pod, never retried (`backoffLimit: 0`, `restartPolicy: Never`: a
/// second run is the user's Retry), ended by the Job controller at the task's timeout,
/// removed `ttl` after it finished.
pub fn job(launch: &Launch, settings: &JobSettings) -> Job {
    let name = object_name(launch.task_id);
    let uid = runner_image::UID;
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(settings.cpu.clone())),
        ("memory".to_owned(), Quantity(settings.memory.clone())),
    ]);
    let seccomp = SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    };
    let mut env_vars = vec![
        env(TASK_ID_ENV, launch.task_id.to_string()),
        env(CALLBACK_URL_ENV, &launch.callback_url),
        env("HOME", runner_image::HOME),
    ];
    env_vars.extend(launch.env.iter().map(|(k, v)| env(k, v)));
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(
            runner_image::ENTRYPOINT
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        ),
        args: Some(runner_image::ARGS.iter().map(|s| (*s).to_owned()).collect()),
        working_dir: Some(runner_image::WORKSPACE.to_owned()),
        env: Some(env_vars),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            seccomp_profile: Some(seccomp.clone()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("workspace", runner_image::WORKSPACE),
            mount("home", runner_image::HOME),
            mount("tmp", "/tmp"),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(launch.task_id)),
            annotations: Some(BTreeMap::from([(
                SECRET_HASH_ANNOTATION.to_owned(),
                secret_hash(launch),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from(launch.timeout.as_secs().max(1)).unwrap_or(i64::MAX),
            ),
            ttl_seconds_after_finished: Some(settings.ttl_secs),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(launch.task_id)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    // No Service addresses in the environment: the runner needs none.
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(seccomp),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        empty_dir("workspace"),
                        empty_dir("home"),
                        empty_dir("tmp"),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;

    fn launch() -> Launch {
        Launch {
            task_id: 42,
            callback_url: "http://bg-agent.bg-agent.svc:3000".into(),
            task_secret: SecretString::from("task-secret-value"),
            runner_token: SecretString::from("ghs_runner-token-value"),
            agent_credential: Some(SecretString::from("sk-agent-credential-value")),
            timeout: Duration::from_secs(600),
            env: vec![("BG_AGENT_TASK_SPEC".into(), "{\"task_id\":42}".into())],
        }
    }

    fn settings() -> JobSettings {
        JobSettings {
            namespace: "runners".into(),
            image: "registry.example/bg-agent-runner:1".into(),
            cpu: "1".into(),
            memory: "2Gi".into(),
            ttl_secs: 3600,
        }
    }

    #[test]
    fn no_secret_value_is_in_the_job() {
        let job = serde_json::to_string(&job(&launch(), &settings())).unwrap();
        assert!(!job.contains("task-secret-value"), "{job}");
        assert!(!job.contains("ghs_runner-token-value"), "{job}");
        assert!(!job.contains("sk-agent-credential-value"), "{job}");
        assert!(job.contains("\"envFrom\":[{\"secretRef\":{\"name\":\"bg-agent-task-42\""));
    }

    #[test]
    fn the_secret_holds_every_secret_under_its_variable() {
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "bg-agent-task-42".into(),
            uid: "uid-1".into(),
            ..OwnerReference::default()
        };
        let secret = secret(&launch(), &settings(), &owner);
        let data = secret.data.unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [
                "BG_AGENT_AGENT_CREDENTIAL",
                "BG_AGENT_RUNNER_TOKEN",
                "BG_AGENT_TASK_SECRET"
            ]
        );
        assert_eq!(data["BG_AGENT_TASK_SECRET"].0, b"task-secret-value");
        assert_eq!(
            data["BG_AGENT_AGENT_CREDENTIAL"].0,
            b"sk-agent-credential-value"
        );
        assert_eq!(secret.metadata.owner_references.unwrap(), [owner]);
    }

    #[test]
    fn the_deadline_is_the_timeout_and_never_zero() {
        let spec = job(&launch(), &settings()).spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.backoff_limit, Some(0));
        let mut short = launch();
        short.timeout = Duration::from_millis(10);
        let spec = job(&short, &settings()).spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(1));
    }
}
