//! The GitHub App client's configuration, from the server's [`Config`]. Kept out of
//! `config` so that what the request path reads does not depend on the client's crate;
//! only the binaries that build a client use it.

use bg_agent_github::GitHubConfig;
use secrecy::SecretString;

use crate::config::{Config, ConfigError, PrivateKeySource, env_name};

/// The GitHub client's configuration, or an error naming the first missing variable.
/// Reads the key file named by `GITHUB_PRIVATE_KEY_PATH`.
pub fn client_config(config: &Config) -> Result<GitHubConfig, ConfigError> {
    const NEEDED_FOR: &str = "to act as the GitHub App";
    let app_id = config.app_id.ok_or_else(|| ConfigError::Missing {
        name: env_name("github_app_id"),
        needed_for: NEEDED_FOR,
    })?;
    let private_key_pem = match &config.github.private_key {
        Some(PrivateKeySource::Pem(pem)) => pem.clone(),
        Some(PrivateKeySource::Path(path)) => std::fs::read_to_string(path)
            .map(SecretString::from)
            .map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?,
        None => {
            return Err(ConfigError::Missing {
                name: format!(
                    "{} (or {})",
                    env_name("github_private_key"),
                    env_name("github_private_key_path")
                ),
                needed_for: NEEDED_FOR,
            });
        }
    };
    let github = &config.github;
    Ok(GitHubConfig {
        concurrency_per_installation: github.concurrency_per_installation,
        request_timeout: github.request_timeout,
        max_retry_wait: github.max_retry_wait,
        ..GitHubConfig::new(github.api_url.clone(), app_id, private_key_pem)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::DEFAULT_GITHUB_API_URL;
    use crate::config::tests::vars;

    #[test]
    fn github_is_optional_and_its_absence_names_the_variable() {
        let config = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.github.api_url, DEFAULT_GITHUB_API_URL);
        assert_eq!(config.github.concurrency_per_installation, 10);
        assert_eq!(config.github.request_timeout, Duration::from_secs(30));
        assert_eq!(config.github.max_retry_wait, Duration::from_secs(60));
        let err = client_config(&config).unwrap_err();
        assert!(
            err.to_string().starts_with("GITHUB_APP_ID is not set"),
            "{err}"
        );

        let config = Config::from_vars(&vars(&[
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_WEBHOOK_SECRET", "s"),
        ]))
        .unwrap();
        let err = client_config(&config).unwrap_err();
        assert!(err.to_string().starts_with("GITHUB_PRIVATE_KEY"), "{err}");
    }

    #[test]
    fn github_app_config_from_pem_text_or_file() {
        let pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
        let config = Config::from_vars(&vars(&[
            ("GITHUB_WEBHOOK_SECRET", "s"),
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY", &pem.replace('\n', "\\n")),
            ("GITHUB_API_URL", "https://ghe.example.com/api/v3/"),
            ("BG_AGENT_GITHUB_CONCURRENCY", "3"),
            ("BG_AGENT_GITHUB_TIMEOUT_SECS", "5"),
            ("BG_AGENT_GITHUB_MAX_RETRY_WAIT_SECS", "0"),
        ]))
        .unwrap();
        let github = client_config(&config).unwrap();
        assert_eq!(github.app_id, 42);
        assert_eq!(github.private_key_pem.expose_secret(), pem);
        assert_eq!(github.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(github.concurrency_per_installation, 3);
        assert_eq!(github.request_timeout, Duration::from_secs(5));
        assert_eq!(github.max_retry_wait, Duration::ZERO);
        assert!(!format!("{config:?} {github:?}").contains("abc"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, pem).unwrap();
        let config = Config::from_vars(&vars(&[
            ("GITHUB_WEBHOOK_SECRET", "s"),
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY_PATH", path.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(
            client_config(&config)
                .unwrap()
                .private_key_pem
                .expose_secret(),
            pem
        );

        let missing = Config::from_vars(&vars(&[
            ("GITHUB_WEBHOOK_SECRET", "s"),
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY_PATH", "/nonexistent/key.pem"),
        ]))
        .unwrap();
        assert!(matches!(
            client_config(&missing),
            Err(ConfigError::ReadFile { .. })
        ));
    }
}
