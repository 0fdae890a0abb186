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
