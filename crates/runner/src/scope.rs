//! The scope guard: before an agent's change is pushed, look for what a reviewer should
//! not have to find by chance — test files deleted, skip markers added, CI configuration
//! touched, a diff larger than the budget — and refuse the change or flag it, as the
//! task's [`ScopePolicy`] says. Pure logic over what git prints, plus [`guard`], which
//! asks git and reports.
//!
//! The patterns are heuristics on paths and added lines: they catch the usual ways of
//! making a failing suite pass without fixing anything, not a determined adversary (who
//! is held by validation running the default branch's own checks).

use std::fmt;

use bg_agent_core::protocol::{ScopeMode, ScopePolicy, TaskSpec};
use bg_agent_core::task::{Recipe, RepoConfig, repo_config};

use crate::events::{EventError, EventSender};
use crate::git::{Git, GitError, StagedDiff};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("the scope guard refused this change: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Report(#[from] EventError),
}

/// One thing the guard found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    DeletedTest(String),
    SkipMarker { path: String, marker: &'static str },
    CiConfig(String),
    TooManyFiles { files: usize, max: u32 },
    TooManyLines { lines: u64, max: u32 },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::DeletedTest(path) => write!(f, "deletes the test file {path}"),
            Finding::SkipMarker { path, marker } => {
                write!(f, "adds the test skip marker \"{marker}\" in {path}")
            }
            Finding::CiConfig(path) => write!(f, "changes the CI configuration {path}"),
            Finding::TooManyFiles { files, max } => {
                write!(f, "changes {files} files, more than the budget of {max}")
            }
            Finding::TooManyLines { lines, max } => {
                write!(f, "changes {lines} lines, more than the budget of {max}")
            }
        }
    }
}

/// Checks the staged change of an agent task (recipes are deterministic and not
/// checked) and reports the findings. `refuse` with findings: an error naming them.
pub async fn guard(spec: &TaskSpec, git: &Git, events: &EventSender) -> Result<(), ScopeError> {
    if spec.recipe != Recipe::Agent {
        return Ok(());
    }
    // The repository's own policy as on its default branch (an agent cannot loosen it by
    // editing the file), and only where it is stricter than the server's.
    let policy = match git.base_file(repo_config::PATH).await? {
        Some(text) => match RepoConfig::parse(&String::from_utf8_lossy(&text)) {
            Ok(config) => config
                .scope
                .map_or(spec.scope, |repo| spec.scope.tightened_by(repo)),
            // Reported by validation, which reads the same file.
            Err(_) => spec.scope,
        },
        None => spec.scope,
    };
    if policy.mode == ScopeMode::Off {
        return Ok(());
    }
    let diff = git.staged_diff().await?;
    let found: Vec<String> = findings(&diff, &policy)
        .iter()
        .map(ToString::to_string)
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    for finding in &found {
        events.warn(format!("scope guard: {finding}")).await?;
    }
    events.scope_findings(found.clone()).await?;
    match policy.mode {
        ScopeMode::Refuse => Err(ScopeError::Refused(found)),
        ScopeMode::Flag | ScopeMode::Off => Ok(()),
    }
}

/// Everything the guard finds in `diff` under `policy`, in a stable order: deleted tests,
/// skip markers, CI files, then the budget.
pub fn findings(diff: &StagedDiff, policy: &ScopePolicy) -> Vec<Finding> {
    let statuses = name_status(&diff.name_status);
    let mut found: Vec<Finding> = statuses
        .iter()
        .filter(|(status, path)| *status == 'D' && is_test_path(path))
        .map(|(_, path)| Finding::DeletedTest(path.clone()))
        .collect();
    let mut marked: Vec<(String, &'static str)> = Vec::new();
    for (path, line) in added_lines(&diff.patch) {
        if let Some(marker) = skip_marker(&line)
            && !marked.iter().any(|(p, m)| *p == path && *m == marker)
        {
            marked.push((path, marker));
        }
    }
    found.extend(
        marked
            .into_iter()
            .map(|(path, marker)| Finding::SkipMarker { path, marker }),
    );
    found.extend(
        statuses
            .iter()
            .filter(|(_, path)| is_ci_path(path))
            .map(|(_, path)| Finding::CiConfig(path.clone())),
    );
    let files = statuses.len();
    if files > policy.max_files as usize {
        found.push(Finding::TooManyFiles {
            files,
            max: policy.max_files,
        });
    }
    let lines = changed_lines(&diff.numstat);
    if lines > u64::from(policy.max_lines) {
        found.push(Finding::TooManyLines {
            lines,
            max: policy.max_lines,
        });
    }
    found
}

/// `--name-status -z` output: (status letter, path).
fn name_status(raw: &[u8]) -> Vec<(char, String)> {
    let mut fields = raw.split(|b| *b == 0).filter(|f| !f.is_empty());
    let mut entries = Vec::new();
    while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
        let status = status.first().map_or('?', |b| char::from(*b));
        entries.push((status, String::from_utf8_lossy(path).into_owned()));
    }
    entries
}

/// Lines added and removed in all, from `--numstat -z` (binary files count none).
fn changed_lines(raw: &[u8]) -> u64 {
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let mut parts = entry.splitn(3, '\t');
            let added = parts.next()?.parse::<u64>().ok()?;
            let removed = parts.next()?.parse::<u64>().ok()?;
            Some(added + removed)
        })
        .sum()
}

/// The added lines of a patch, with the path of the file each is in.
fn added_lines(patch: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(patch);
    let mut path = String::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        if let Some(target) = line.strip_prefix("+++ ") {
            // `b/<path>` (quoted by git when unusual), or `/dev/null` for a deletion.
            let target = target.trim_matches('"');
            path = target.strip_prefix("b/").unwrap_or(target).to_owned();
        } else if line.starts_with("diff --git ") {
            path.clear();
        } else if let Some(added) = line.strip_prefix('+') {
            lines.push((path.clone(), added.to_owned()));
        }
    }
    lines
}

/// Whether `path` is a test file: under a test directory, or named like a test in one of
/// the common conventions.
pub fn is_test_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let mut parts: Vec<&str> = lower.split('/').collect();
    let Some(name) = parts.pop() else {
        return false;
    };
    const TEST_DIRS: [&str; 6] = ["test", "tests", "__tests__", "spec", "specs", "testdata"];
    if parts.iter().any(|dir| TEST_DIRS.contains(dir)) {
        return true;
    }
    let stem = name.split('.').next().unwrap_or(name);
    // `a.test.js`, `a.spec.ts`, `a.test.tsx`: a `test`/`spec` part before the extension.
    let parts: Vec<&str> = name.split('.').skip(1).collect();
    let dotted = parts
        .split_last()
        .is_some_and(|(_, middle)| middle.iter().any(|p| matches!(*p, "test" | "spec")));
    // `FooTest.java`, `FooTests.cs`: the JVM and .NET convention, case-sensitive.
    let original = path.rsplit('/').next().unwrap_or(path);
    let original_stem = original.split('.').next().unwrap_or(original);
    let jvm = [".java", ".kt", ".scala", ".cs"]
        .iter()
        .any(|ext| lower.ends_with(ext))
        && (original_stem.ends_with("Test") || original_stem.ends_with("Tests"));
    dotted
        || jvm
        || stem.ends_with("_test")
        || stem.ends_with("_spec")
        || stem.starts_with("test_")
        || matches!(stem, "test" | "tests" | "conftest")
}

/// Whether `path` is CI configuration.
pub fn is_ci_path(path: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        ".github/workflows/",
        ".github/actions/",
        ".circleci/",
        ".buildkite/",
        ".gitlab/",
    ];
    const FILES: [&str; 7] = [
        ".gitlab-ci.yml",
        ".travis.yml",
        "azure-pipelines.yml",
        "Jenkinsfile",
        "bitbucket-pipelines.yml",
        ".drone.yml",
        "appveyor.yml",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p)) || FILES.contains(&path)
}

/// The skip marker an added line holds, if any. Matched on code, not on prose: a marker
/// must be followed by what makes it one (`(`, or the attribute's end).
pub fn skip_marker(line: &str) -> Option<&'static str> {
    const MARKERS: [&str; 22] = [
        // JavaScript / TypeScript (Jest, Mocha, Vitest, Jasmine, Cypress, Playwright)
        "it.skip(",
        "describe.skip(",
        "test.skip(",
        "context.skip(",
        "xit(",
        "xdescribe(",
        "xtest(",
        "xcontext(",
        "pending(",
        "it.todo(",
        "test.todo(",
        // Rust
        "#[ignore",
        // Python
        "@pytest.mark.skip",
        "@pytest.mark.xfail",
        "@unittest.skip",
        "pytest.skip(",
        // Go
        "t.Skip(",
        "t.SkipNow(",
        "t.Skipf(",
        // JVM, .NET
        "@Disabled",
        "@Ignore",
        "[Ignore",
    ];
    let code = line.trim_start();
    if let Some(marker) = MARKERS.iter().find(|m| contains_token(code, m)) {
        return Some(marker);
    }
    // Ruby (RSpec): `skip "reason"`, `xit "..."`, `pending "..."` at the start of a line.
    for marker in ["skip ", "xit ", "xspecify ", "xdescribe "] {
        if code.starts_with(marker) && code[marker.len()..].trim_start().starts_with(['"', '\'']) {
            return Some(marker.trim_end());
        }
    }
    None
}

/// `marker` in `code`, not as the tail of a longer name (`myxit(` is not `xit(`,
/// `mytest.skip(` not `test.skip(`). Markers starting with `#`, `@` or `[` stand alone.
fn contains_token(code: &str, marker: &str) -> bool {
    if marker.starts_with(['#', '@', '[']) {
        return code.contains(marker);
    }
    code.match_indices(marker).any(|(at, _)| {
        code[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths_of_every_convention_are_tests() {
        for path in [
            "test/a.js",
            "tests/unit/b.py",
            "src/__tests__/c.jsx",
            "spec/models/user_spec.rb",
            "src/a.test.js",
            "src/a.spec.ts",
            "src/a.test.tsx",
            "pkg/server_test.go",
            "lib/user_spec.rb",
            "test_models.py",
            "pkg/conftest.py",
            "src/test/java/FooTest.java",
            "Foo/BarTests.cs",
            "crates/x/tests/it/main.rs",
        ] {
            assert!(is_test_path(path), "{path} is a test");
        }
    }

    #[test]
    fn names_that_merely_contain_test_are_not_tests() {
        for path in [
            "contest.js",
            "src/latest.js",
            "src/attestation.rs",
            "protest.py",
            "src/testing_utils_helper.rb",
            "docs/testimonials.md",
            "src/Contest.java",
            "src/manifest.json",
            "README.md",
        ] {
            assert!(!is_test_path(path), "{path} is not a test");
        }
    }

    #[test]
    fn ci_configuration_is_recognised_and_lookalikes_are_not() {
        for path in [
            ".github/workflows/ci.yml",
            ".github/actions/setup/action.yml",
            ".gitlab-ci.yml",
            ".circleci/config.yml",
            ".travis.yml",
            "Jenkinsfile",
            "azure-pipelines.yml",
            ".buildkite/pipeline.yml",
        ] {
            assert!(is_ci_path(path), "{path} is CI");
        }
        for path in [
            ".github/bg-agent.yml",
            ".github/CODEOWNERS",
            "docs/workflows/ci.md",
            "src/.gitlab-ci.yml.md",
            "ci.yml",
        ] {
            assert!(!is_ci_path(path), "{path} is not CI");
        }
    }

    #[test]
    fn skip_markers_of_every_framework_are_found() {
        for (line, marker) in [
            ("  it.skip('works', () => {", "it.skip("),
            ("describe.skip('suite', () => {", "describe.skip("),
            ("test.skip('x', () => {})", "test.skip("),
            ("  xit('works', () => {", "xit("),
            ("xdescribe('suite', () => {", "xdescribe("),
            ("    pending('not yet')", "pending("),
            ("#[ignore]", "#[ignore"),
            ("#[ignore = \"flaky\"]", "#[ignore"),
            ("@pytest.mark.skip(reason='slow')", "@pytest.mark.skip"),
            (
                "@pytest.mark.skipif(sys.platform == 'win32')",
                "@pytest.mark.skip",
            ),
            ("@unittest.skip('later')", "@unittest.skip"),
            ("\tt.Skip(\"flaky\")", "t.Skip("),
            ("    @Disabled", "@Disabled"),
            ("  @Ignore(\"slow\")", "@Ignore"),
            ("  skip \"not ready\"", "skip"),
            ("  xit 'does things' do", "xit"),
        ] {
            assert_eq!(skip_marker(line), Some(marker), "{line}");
        }
    }

    #[test]
    fn ordinary_code_is_not_a_skip_marker() {
        for line in [
            "it('works', () => {",
            "const skip = items.skip(3);",
            "function myxit() {}",
            "myxit('a')",
            "// we skip empty lines",
            "let ignored = true;",
            "def test_skip_parsing():",
            "if t.Skipped() {",
            "skipping = true",
            "expect(result).toBe(pending)",
        ] {
            assert_eq!(skip_marker(line), None, "{line}");
        }
    }

    fn diff(name_status: &str, numstat: &str, patch: &str) -> StagedDiff {
        StagedDiff {
            name_status: name_status.replace('|', "\0").into_bytes(),
            numstat: numstat.replace('|', "\0").into_bytes(),
            patch: patch.as_bytes().to_vec(),
        }
    }

    #[test]
    fn findings_name_deleted_tests_markers_ci_and_the_budget() {
        let d = diff(
            "D|test/a.test.js|M|src/b.test.js|M|.github/workflows/ci.yml|D|src/old.js|",
            "0\t12\ttest/a.test.js|1\t1\tsrc/b.test.js|1\t0\t.github/workflows/ci.yml|0\t3\tsrc/old.js|",
            "diff --git a/src/b.test.js b/src/b.test.js\n--- a/src/b.test.js\n+++ b/src/b.test.js\n@@ -1 +1 @@\n-it('a', f)\n+it.skip('a', f)\n",
        );
        let policy = ScopePolicy {
            mode: ScopeMode::Refuse,
            max_files: 3,
            max_lines: 10,
        };
        let found: Vec<String> = findings(&d, &policy)
            .iter()
            .map(ToString::to_string)
            .collect();
        insta::assert_snapshot!(found.join("\n"), @r#"
        deletes the test file test/a.test.js
        adds the test skip marker "it.skip(" in src/b.test.js
        changes the CI configuration .github/workflows/ci.yml
        changes 4 files, more than the budget of 3
        changes 18 lines, more than the budget of 10
        "#);
    }

    #[test]
    fn an_ordinary_change_within_budget_has_no_findings() {
        let d = diff(
            "M|src/a.js|A|src/a.test.js|D|src/contest.js|",
            "2\t1\tsrc/a.js|10\t0\tsrc/a.test.js|-\t-\tlogo.png|",
            "diff --git a/src/a.js b/src/a.js\n--- a/src/a.js\n+++ b/src/a.js\n@@ -1 +1,2 @@\n-a\n+b\n+c\n",
        );
        assert_eq!(findings(&d, &ScopePolicy::default()), Vec::new());
    }

    #[test]
    fn a_repository_may_tighten_the_policy_but_not_loosen_it() {
        let server = ScopePolicy {
            mode: ScopeMode::Flag,
            max_files: 50,
            max_lines: 2000,
        };
        let repo = ScopePolicy {
            mode: ScopeMode::Off,
            max_files: 10,
            max_lines: 5000,
        };
        assert_eq!(
            server.tightened_by(repo),
            ScopePolicy {
                mode: ScopeMode::Flag,
                max_files: 10,
                max_lines: 2000
            }
        );
    }
}
