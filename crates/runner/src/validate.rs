//! Validation: the repository's own checks, run after the change and before any push.
//! The commands come from `.github/bg-agent.yml` when it declares `validation`, else
//! from `package.json` scripts. The first failure stops the run: no commit, no push.

use std::path::Path;

use super::process::{self, ChildEnv, ProcessError};
use super::{PROGRESS_PUSHING, PROGRESS_VALIDATING};
use crate::events::{EventError, EventSender};
use bg_agent_core::protocol::{OUTPUT_TAIL_CHARS, ValidationResult};
use bg_agent_core::task::Phase;
use bg_agent_core::task::{RepoConfig, RepoConfigError, ValidationCommand, repo_config};

/// `package.json` scripts run when the repository declares no validation, in this order,
/// with the command that runs each.
const DETECTED_SCRIPTS: [(&str, &[&str]); 3] = [
    ("lint", &["npm", "run", "lint"]),
    ("format:check", &["npm", "run", "format:check"]),
    ("test", &["npm", "test"]),
];

/// Before detected scripts run, dependencies are installed exactly as locked (scripts of
/// dependencies stay off); this also fails when the change left the lockfile out of step.
const INSTALL: [&str; 5] = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"];

/// The `test` script `npm init` writes: it always fails, and means "no tests".
const NPM_INIT_TEST: &str = "no test specified";

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Config(#[from] RepoConfigError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("package.json is not valid JSON: {0}")]
    PackageJson(String),
    #[error("validation failed: {command} {reason}")]
    Failed {
        command: String,
        reason: String,
        /// The end of its output (what a coding agent is given to fix it).
        output_tail: String,
    },
    #[error(transparent)]
    Report(#[from] EventError),
}

async fn read_optional(
    repo_dir: &Path,
    path: &'static str,
) -> Result<Option<String>, ValidateError> {
    match tokio::fs::read_to_string(repo_dir.join(path)).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ValidateError::Io { path, source }),
    }
}

/// The validation commands for the repository checked out in `repo_dir`: the declared
/// ones as they are, or the detected scripts preceded by `npm ci` when there is a
/// lockfile (scripts such as tests need the dependencies).
pub async fn commands_for(repo_dir: &Path) -> Result<Vec<ValidationCommand>, ValidateError> {
    if let Some(text) = read_optional(repo_dir, repo_config::PATH).await?
        && let Some(commands) = RepoConfig::parse(&text)?.validation
    {
        return Ok(commands);
    }
    let Some(text) = read_optional(repo_dir, "package.json").await? else {
        return Ok(Vec::new());
    };
    let mut commands = detect_from_package_json(&text)?;
    if !commands.is_empty()
        && tokio::fs::try_exists(repo_dir.join("package-lock.json"))
            .await
            .unwrap_or(false)
    {
        commands.insert(
            0,
            ValidationCommand {
                argv: INSTALL.iter().map(|a| (*a).to_owned()).collect(),
            },
        );
    }
    Ok(commands)
}

/// The checks `package.json` scripts offer (`lint`, `format:check`, `test`).
pub fn detect_from_package_json(text: &str) -> Result<Vec<ValidationCommand>, ValidateError> {
    let manifest: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|e| ValidateError::PackageJson(e.to_string()))?;
    let scripts = manifest.get("scripts");
    Ok(DETECTED_SCRIPTS
        .iter()
        .filter(|(name, _)| {
            scripts
                .and_then(|s| s.get(name))
                .and_then(|s| s.as_str())
                .is_some_and(|script| {
                    let placeholder = *name == "test" && script.contains(NPM_INIT_TEST);
                    !script.trim().is_empty() && !placeholder
                })
        })
        .map(|(_, argv)| ValidationCommand {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        })
        .collect())
}

/// Runs `commands` in order in `repo_dir`, reporting each result; stops at the first
/// that fails.
pub async fn run_all(
    commands: &[ValidationCommand],
    repo_dir: &Path,
    env: &ChildEnv,
    events: &EventSender,
) -> Result<(), ValidateError> {
    if commands.is_empty() {
        events
            .warn("no validation commands: .github/bg-agent.yml declares none and package.json has no lint, format:check or test script")
            .await?;
        return Ok(());
    }
    let total = commands.len();
    let span = usize::from(PROGRESS_PUSHING - PROGRESS_VALIDATING);
    for (i, command) in commands.iter().enumerate() {
        if i > 0 {
            let progress = usize::from(PROGRESS_VALIDATING) + span * i / total;
            events
                .phase(
                    Phase::Validating,
                    u8::try_from(progress).unwrap_or(PROGRESS_PUSHING),
                )
                .await?;
        }
        let (result, reason) = run_one(command, repo_dir, env, events).await?;
        let passed = result.passed();
        let display = result.command.clone();
        let output_tail = result.output_tail.clone();
        events.validation(result).await?;
        if !passed {
            return Err(ValidateError::Failed {
                command: display,
                reason,
                output_tail,
            });
        }
    }
    Ok(())
}

/// The result, and how it ended in words (for the error if it failed).
async fn run_one(
    command: &ValidationCommand,
    repo_dir: &Path,
    env: &ChildEnv,
    events: &EventSender,
) -> Result<(ValidationResult, String), ValidateError> {
    let display = command.display();
    events.info(format!("$ {display}")).await?;
    let program = command.argv.first().cloned().unwrap_or_default();
    let not_started = |why: String| {
        (
            ValidationResult {
                command: display.clone(),
                exit_code: None,
                duration_ms: 0,
                output_tail: why,
            },
            "could not start".to_owned(),
        )
    };
    let Some(child) = env.command(&command.argv, repo_dir) else {
        return Ok(not_started("cannot start an empty command".into()));
    };
    match process::run_streamed(child, &program, None, events, OUTPUT_TAIL_CHARS).await {
        Ok(finished) => {
            let reason = match finished.code {
                Some(code) => format!("exited with {code}"),
                None => "was killed by a signal".to_owned(),
            };
            let result = ValidationResult {
                command: display,
                exit_code: finished.code,
                duration_ms: u64::try_from(finished.duration.as_millis()).unwrap_or(u64::MAX),
                output_tail: finished.tail,
            };
            Ok((result, reason))
        }
        Err(ProcessError::Report(e)) => Err(e.into()),
        // A missing program is the repository's check failing, not the runner's fault.
        Err(e) => {
            let why = format!("cannot start {program}: {e}");
            events.error(&why).await?;
            Ok(not_started(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argvs(commands: &[ValidationCommand]) -> Vec<String> {
        commands.iter().map(ValidationCommand::display).collect()
    }

    #[test]
    fn scripts_are_detected_in_order() {
        let text = r#"{"scripts": {"test": "jest", "build": "tsc", "format:check": "prettier --check .", "lint": "eslint ."}}"#;
        assert_eq!(
            argvs(&detect_from_package_json(text).unwrap()),
            ["npm run lint", "npm run format:check", "npm test"]
        );
        assert!(
            detect_from_package_json(r#"{"name": "x"}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn npm_inits_placeholder_test_is_not_a_check() {
        let text = r#"{"scripts": {"test": "echo \"Error: no test specified\" && exit 1"}}"#;
        assert!(detect_from_package_json(text).unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_repository_configuration_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts": {"test": "jest"}}"#,
        )
        .unwrap();
        assert_eq!(
            argvs(&commands_for(dir.path()).await.unwrap()),
            ["npm test"]
        );
        std::fs::create_dir(dir.path().join(".github")).unwrap();
        std::fs::write(dir.path().join(".github/bg-agent.yml"), "templates: []\n").unwrap();
        // No `validation` key: still detected.
        assert_eq!(
            argvs(&commands_for(dir.path()).await.unwrap()),
            ["npm test"]
        );
        std::fs::write(
            dir.path().join(".github/bg-agent.yml"),
            "validation:\n  - node check.js\n  - [make, 'test all']\n",
        )
        .unwrap();
        assert_eq!(
            argvs(&commands_for(dir.path()).await.unwrap()),
            ["node check.js", "make 'test all'"]
        );
    }
}
