//! The fixtures' world: GitHub's payloads under the repository's `tests/fixtures/`, the
//! secrets and ids they are signed and numbered with, the sample npm project.

use std::path::PathBuf;

use bg_agent_github::GitHubConfig;
use github_fake::RunningSim;

/// The repository's `tests/fixtures/` (GitHub's payloads and descriptions, with notices).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// The configuration that points the App client at `sim` as its App.
pub fn github_config(sim: &RunningSim) -> GitHubConfig {
    GitHubConfig::new(
        sim.api_url(),
        sim.app_id(),
        sim.app_private_key_pem().into(),
    )
}

pub const SECRET: &str = "current-test-secret";
pub const ROTATED_SECRET: &str = "previous-test-secret";
/// The fixtures' App id (tests/fixtures/webhooks/README.md).
pub const APP_ID: u64 = 310001;

/// `BG_AGENT_ENCRYPTION_KEY` of the tests' servers (32 bytes, base64, named `test`).
pub const ENCRYPTION_KEY: &str = "test:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The keyring of [`ENCRYPTION_KEY`].
pub fn encryption_keys() -> bg_agent::credentials::Keyring {
    bg_agent::credentials::Keyring::parse(&secrecy::SecretString::from(ENCRYPTION_KEY.to_owned()))
        .expect("the test key parses")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join("webhooks").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A small npm project's `package.json`: `lodash` at `lodash`, and `npm test` runs `test`.
pub fn package_json(name: &str, lodash: &str, test: &str) -> String {
    format!(
        "{{\n  \"name\": \"{name}\",\n  \"version\": \"1.0.0\",\n  \"private\": true,\n  \"scripts\": {{\n    \"test\": \"{test}\"\n  }},\n  \"dependencies\": {{\n    \"lodash\": \"{lodash}\"\n  }}\n}}\n"
    )
}

/// That project's `test.js` when its tests pass.
pub fn passing_test(name: &str) -> String {
    format!("console.log('{name} tests passed');\n")
}

/// A `test.js` that fails once `package.json` asks for lodash 4.17.21.
pub fn picky_test(name: &str) -> String {
    format!(
        "const v = require('./package.json').dependencies.lodash;\nif (v.includes('4.17.21')) {{ console.error('lodash ' + v + ' breaks the {name}'); process.exit(1); }}\nconsole.log('{name} tests passed with lodash ' + v);\n"
    )
}

/// A free-text task ("Do it.") as store-level tests create it: by `user-<creator_id>` in
/// `acme/repo-<repository_id>` of installation 1, from a comment on issue 1.
pub fn agent_task(
    key: &str,
    creator_id: i64,
    repository_id: i64,
) -> bg_agent::store::tasks::NewTask {
    use bg_agent::store::tasks::{NewTask, TaskTrigger};
    NewTask {
        installation_id: 1,
        repository_id,
        repository: format!("acme/repo-{repository_id}"),
        issue_number: Some(1),
        comment_id: Some(creator_id),
        delivery_guid: None,
        trigger: TaskTrigger::Comment,
        idempotency_key: key.to_owned(),
        creator_login: format!("user-{creator_id}"),
        creator_id,
        template: None,
        params: std::collections::BTreeMap::new(),
        recipe: bg_agent_core::task::Recipe::Agent,
        instructions: "Do it.".into(),
        summary: "Do it.".into(),
        timeout_secs: 600,
        retry_of: None,
        base_branch: None,
        clone_url: None,
    }
}
