//! Making the change: the deterministic npm upgrade, and the generic coding agent (a
//! configured program given the instructions on stdin).

use std::ops::Range;
use std::path::Path;

use regex::Regex;

use super::process::{self, ChildEnv, ProcessError};
use crate::events::{EventError, EventSender};
use bg_agent_core::protocol::{OUTPUT_TAIL_CHARS, TaskSpec};
use bg_agent_core::task::Recipe;

/// Where `package.json` may declare a dependency, in the order they are looked at.
pub const DEPENDENCY_SECTIONS: [&str; 4] = [
    "dependencies",
    "devDependencies",
    "optionalDependencies",
    "peerDependencies",
];

/// Lockfiles of other package managers: the runner cannot refresh them, and a PR that
/// leaves one stale would break that project's installs.
const FOREIGN_LOCKFILES: [&str; 4] = ["yarn.lock", "pnpm-lock.yaml", "bun.lock", "bun.lockb"];
/// npm's lockfiles, refreshed with `npm install --package-lock-only`.
const NPM_LOCKFILES: [&str; 2] = ["package-lock.json", "npm-shrinkwrap.json"];

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("the {name} parameter is missing")]
    MissingParam { name: &'static str },
    #[error("{value:?} is not a valid {name}: expected {expected}")]
    InvalidParam {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("there is no package.json at the root of the repository")]
    NoPackageJson,
    #[error("package.json is not valid JSON: {0}")]
    PackageJson(String),
    #[error("{0} is not a dependency in package.json")]
    NotADependency(String),
    #[error(
        "{package} is declared as {spec:?} in package.json, not as a version from the registry, so it cannot be upgraded to {version}"
    )]
    NotFromRegistry {
        package: String,
        spec: String,
        version: String,
    },
    #[error(
        "{package} is only a peer dependency ({spec:?}) in package.json: there is no installed version to upgrade"
    )]
    OnlyPeer { package: String, spec: String },
    #[error("the repository uses {0}; only npm's package-lock.json can be updated")]
    ForeignLockfile(&'static str),
    #[error("npm install --package-lock-only failed ({0})")]
    Npm(String),
    #[error("no coding agent is configured")]
    NoAgent,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Report(#[from] EventError),
}

/// What applying the recipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Known to have changed nothing (the dependency already is at the version).
    NoChanges,
    /// Ran; the work tree tells what changed.
    Ran,
}

/// Applies `spec.recipe` in `repo_dir`.
pub async fn apply(
    spec: &TaskSpec,
    repo_dir: &Path,
    env: &ChildEnv,
    events: &EventSender,
) -> Result<Applied, RecipeError> {
    match spec.recipe {
        Recipe::NpmUpgrade => npm_upgrade(spec, repo_dir, env, events).await,
        // The runner drives coding agents itself (`crate::agent`), between validations.
        Recipe::Agent => Err(RecipeError::NoAgent),
    }
}

// ---- npm upgrade ----

/// npm's rules for a new package name: lowercase, URL-safe, optionally `@scope/`.
pub fn valid_package_name(name: &str) -> bool {
    static PATTERN: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
            .unwrap_or_else(|e| unreachable!("a valid pattern: {e}"))
    });
    name.len() <= 214 && PATTERN.is_match(name)
}

/// An exact semantic version (semver.org's grammar): `4.17.21`, `1.0.0-rc.1+build.5`.
pub fn valid_version(version: &str) -> bool {
    static PATTERN: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(
            r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:-(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$",
        )
        .unwrap_or_else(|e| unreachable!("a valid pattern: {e}"))
    });
    version.len() <= 256 && PATTERN.is_match(version)
}

/// The outcome of rewriting `package.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageJsonUpgrade {
    AlreadyAt,
    Changed {
        text: String,
        /// `(section, old spec, new spec)` for each entry rewritten.
        edits: Vec<(String, String, String)>,
    },
}

/// Sets `package` to `version` wherever `package.json` pins it, keeping `^`/`~`/`=`
/// prefixes and everything else in the file byte for byte (only the spec strings change).
pub fn upgrade_package_json(
    text: &str,
    package: &str,
    version: &str,
) -> Result<PackageJsonUpgrade, RecipeError> {
    serde_json::from_str::<serde_json::Value>(text.trim_start_matches('\u{feff}'))
        .map_err(|e| RecipeError::PackageJson(e.to_string()))?;
    let entries = dependency_entries(text, package)
        .ok_or_else(|| RecipeError::PackageJson("unexpected structure".into()))?;
    if entries.is_empty() {
        return Err(RecipeError::NotADependency(package.to_owned()));
    }
    let mut edits = Vec::new();
    let mut replacements: Vec<(Range<usize>, String)> = Vec::new();
    let mut pinned_somewhere = false;
    let mut peer_range = None;
    for (section, span) in entries {
        let Ok(old) = serde_json::from_str::<String>(&text[span.clone()]) else {
            continue;
        };
        let new = match split_pinned(&old) {
            Some((_, pinned)) if pinned == version => {
                pinned_somewhere = true;
                continue;
            }
            Some((prefix, _)) => format!("{prefix}{version}"),
            // A peer range says which versions the package works with, not which is used.
            None if section == "peerDependencies" => {
                peer_range.get_or_insert(old);
                continue;
            }
            // Aliases, URLs, git and file specs do not name a registry version.
            None if old.contains([':', '/']) => {
                return Err(RecipeError::NotFromRegistry {
                    package: package.to_owned(),
                    spec: old,
                    version: version.to_owned(),
                });
            }
            // A range or a tag (`*`, `latest`, `>=4 <5`) becomes the version asked for.
            None => version.to_owned(),
        };
        pinned_somewhere = true;
        replacements.push((
            span,
            serde_json::to_string(&new).map_err(|e| RecipeError::PackageJson(e.to_string()))?,
        ));
        edits.push((section, old, new));
    }
    if !pinned_somewhere && let Some(spec) = peer_range {
        return Err(RecipeError::OnlyPeer {
            package: package.to_owned(),
            spec,
        });
    }
    if replacements.is_empty() {
        return Ok(PackageJsonUpgrade::AlreadyAt);
    }
    let mut out = text.to_owned();
    // From the end, so earlier spans stay valid.
    replacements.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    for (span, literal) in replacements {
        out.replace_range(span, &literal);
    }
    Ok(PackageJsonUpgrade::Changed { text: out, edits })
}

/// `(prefix, version)` of a spec that pins one version, like `4.17.20` or `^4.17.20`.
fn split_pinned(spec: &str) -> Option<(&str, &str)> {
    let spec = spec.trim();
    let (prefix, rest) = match spec.as_bytes().first() {
        Some(b'^' | b'~' | b'=') => spec.split_at(1),
        _ => ("", spec),
    };
    valid_version(rest).then_some((prefix, rest))
}

/// The spans (quotes included) of every string value `package` has in the top-level
/// dependency sections, with the section's name; `None` if the text is not an object.
fn dependency_entries(text: &str, package: &str) -> Option<Vec<(String, Range<usize>)>> {
    let scanner = Scanner::new(text);
    let top = scanner.object_members(scanner.next_value_start()?)?;
    let mut found = Vec::new();
    for (section, span) in top {
        if !DEPENDENCY_SECTIONS.contains(&section.as_str()) || !text[span.clone()].starts_with('{')
        {
            continue;
        }
        for (name, value) in scanner.object_members(span.start)? {
            if name == package && text[value.clone()].starts_with('"') {
                found.push((section.clone(), value));
            }
        }
    }
    Some(found)
}

/// Just enough of a JSON reader to find where values are, so that an edit can change one
/// value and leave the file's formatting, key order and everything else untouched. The
/// text is known to be valid JSON (serde_json checked it first).
struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            text,
        }
    }

    fn skip_ws(&self, mut at: usize) -> usize {
        while at < self.bytes.len() && matches!(self.bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
            at += 1;
        }
        at
    }

    fn next_value_start(&self) -> Option<usize> {
        // A UTF-8 byte order mark is not JSON, but editors write it.
        let start = if self.text.starts_with('\u{feff}') {
            3
        } else {
            0
        };
        let at = self.skip_ws(start);
        (at < self.bytes.len()).then_some(at)
    }

    /// End (exclusive) of the string starting at `at` (a `"`).
    fn string_end(&self, at: usize) -> Option<usize> {
        let mut i = at + 1;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }

    /// End (exclusive) of the value starting at `at`.
    fn value_end(&self, at: usize) -> Option<usize> {
        match *self.bytes.get(at)? {
            b'"' => self.string_end(at),
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let mut i = self.skip_ws(at + 1);
                if self.bytes.get(i) == Some(&close) {
                    return Some(i + 1);
                }
                loop {
                    if open == b'{' {
                        i = self.string_end(i)?;
                        i = self.skip_ws(i);
                        if self.bytes.get(i) != Some(&b':') {
                            return None;
                        }
                        i = self.skip_ws(i + 1);
                    }
                    i = self.skip_ws(self.value_end(i)?);
                    match self.bytes.get(i)? {
                        b',' => i = self.skip_ws(i + 1),
                        c if *c == close => return Some(i + 1),
                        _ => return None,
                    }
                }
            }
            _ => {
                let mut i = at;
                while i < self.bytes.len()
                    && !matches!(
                        self.bytes[i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    i += 1;
                }
                (i > at).then_some(i)
            }
        }
    }

    /// The members of the object starting at `at` (a `{`): decoded key and value span.
    fn object_members(&self, at: usize) -> Option<Vec<(String, Range<usize>)>> {
        if self.bytes.get(at) != Some(&b'{') {
            return None;
        }
        let mut members = Vec::new();
        let mut i = self.skip_ws(at + 1);
        if self.bytes.get(i) == Some(&b'}') {
            return Some(members);
        }
        loop {
            let key_end = self.string_end(i)?;
            let key: String = serde_json::from_str(&self.text[i..key_end]).ok()?;
            i = self.skip_ws(key_end);
            if self.bytes.get(i) != Some(&b':') {
                return None;
            }
            let value_start = self.skip_ws(i + 1);
            let value_end = self.value_end(value_start)?;
            members.push((key, value_start..value_end));
            i = self.skip_ws(value_end);
            match self.bytes.get(i)? {
                b',' => i = self.skip_ws(i + 1),
                b'}' => return Some(members),
                _ => return None,
            }
        }
    }
}

fn param<'a>(spec: &'a TaskSpec, name: &'static str) -> Result<&'a str, RecipeError> {
    spec.params
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or(RecipeError::MissingParam { name })
}

fn exit_status(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".into(),
    }
}

async fn npm_upgrade(
    spec: &TaskSpec,
    repo_dir: &Path,
    env: &ChildEnv,
    events: &EventSender,
) -> Result<Applied, RecipeError> {
    // The server validated these already; they are checked again here because they end
    // up in a file and in npm's view of the project.
    let package = param(spec, "package")?;
    if !valid_package_name(package) {
        return Err(RecipeError::InvalidParam {
            name: "package name",
            value: package.to_owned(),
            expected: "an npm package name such as lodash or @scope/name",
        });
    }
    let version = param(spec, "version")?;
    if !valid_version(version) {
        return Err(RecipeError::InvalidParam {
            name: "version",
            value: version.to_owned(),
            expected: "an exact version such as 4.17.21",
        });
    }
    let path = repo_dir.join("package.json");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RecipeError::NoPackageJson);
        }
        Err(source) => {
            return Err(RecipeError::Io {
                action: "read",
                path: "package.json".into(),
                source,
            });
        }
    };
    if let Some(foreign) = FOREIGN_LOCKFILES
        .into_iter()
        .find(|name| repo_dir.join(name).exists())
    {
        return Err(RecipeError::ForeignLockfile(foreign));
    }
    let (text, edits) = match upgrade_package_json(&text, package, version)? {
        PackageJsonUpgrade::AlreadyAt => {
            events
                .info(format!("{package} is already at {version} in package.json"))
                .await?;
            return Ok(Applied::NoChanges);
        }
        PackageJsonUpgrade::Changed { text, edits } => (text, edits),
    };
    tokio::fs::write(&path, text)
        .await
        .map_err(|source| RecipeError::Io {
            action: "write",
            path: "package.json".into(),
            source,
        })?;
    for (section, old, new) in edits {
        events
            .info(format!("package.json: {section}.{package}: {old} -> {new}"))
            .await?;
    }
    if !NPM_LOCKFILES
        .into_iter()
        .any(|name| repo_dir.join(name).exists())
    {
        events
            .info("no package-lock.json: only package.json changes")
            .await?;
        return Ok(Applied::Ran);
    }
    // Only the lockfile: no node_modules, and no package scripts run during the refresh.
    let argv = [
        "npm",
        "install",
        "--package-lock-only",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
    ]
    .map(String::from);
    events.info(format!("$ {}", argv.join(" "))).await?;
    let command = env.command(&argv, repo_dir).ok_or(ProcessError::Empty)?;
    let finished = process::run_streamed(command, "npm", None, events, OUTPUT_TAIL_CHARS).await?;
    if !finished.success() {
        return Err(RecipeError::Npm(exit_status(finished.code)));
    }
    Ok(Applied::Ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_checked_strictly() {
        for good in ["lodash", "@types/node", "lodash.merge", "left-pad", "a_b~c"] {
            assert!(valid_package_name(good), "{good}");
        }
        for bad in [
            "",
            "Lodash",
            "-rf",
            ".hidden",
            "a b",
            "@scope",
            "@scope/",
            "a/b",
            "../x",
            "lodash;rm",
            "lodash@4",
            "@s/n/x",
        ] {
            assert!(!valid_package_name(bad), "{bad}");
        }
        assert!(!valid_package_name(&"a".repeat(215)));
    }

    #[test]
    fn versions_must_be_exact() {
        for good in [
            "4.17.21",
            "0.0.1",
            "1.0.0-rc.1",
            "1.0.0-alpha+001",
            "10.20.30",
        ] {
            assert!(valid_version(good), "{good}");
        }
        for bad in [
            "", "4", "4.17", "^4.17.21", "v4.17.21", "4.17.21 ", "01.2.3", "latest", "1.2.3-",
            "1.2.3;x", "*",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    const PACKAGE_JSON: &str = "{\n  \"name\": \"shop\",\n  \"version\": \"1.0.0\",\n  \"scripts\": {\n    \"test\": \"node test.js\"\n  },\n  \"dependencies\": {\n    \"express\": \"^4.18.0\",\n    \"lodash\": \"^4.17.20\"\n  },\n  \"devDependencies\": {\n    \"lodash\": \"4.17.20\"\n  }\n}\n";

    #[test]
    fn upgrades_keep_the_prefix_and_the_formatting() {
        let PackageJsonUpgrade::Changed { text, edits } =
            upgrade_package_json(PACKAGE_JSON, "lodash", "4.17.21").unwrap()
        else {
            panic!("expected a change");
        };
        assert_eq!(
            text,
            PACKAGE_JSON
                .replace("\"^4.17.20\"", "\"^4.17.21\"")
                .replace("\"4.17.20\"", "\"4.17.21\"")
        );
        assert_eq!(
            edits,
            vec![
                ("dependencies".into(), "^4.17.20".into(), "^4.17.21".into()),
                ("devDependencies".into(), "4.17.20".into(), "4.17.21".into()),
            ]
        );
    }

    #[test]
    fn the_same_version_is_no_change() {
        let text = PACKAGE_JSON.replace("4.17.20", "4.17.21");
        assert_eq!(
            upgrade_package_json(&text, "lodash", "4.17.21").unwrap(),
            PackageJsonUpgrade::AlreadyAt
        );
    }

    #[test]
    fn a_missing_dependency_is_named() {
        let err = upgrade_package_json(PACKAGE_JSON, "react", "18.2.0").unwrap_err();
        assert_eq!(err.to_string(), "react is not a dependency in package.json");
        // The name alone, elsewhere in the file, is not a dependency.
        let err = upgrade_package_json(PACKAGE_JSON, "shop", "1.0.1").unwrap_err();
        assert!(matches!(err, RecipeError::NotADependency(_)));
    }

    #[test]
    fn specs_that_are_not_registry_versions() {
        let compact = r#"{"dependencies":{"a":"*","b":"github:x/b","c":"npm:d@1.0.0"},"peerDependencies":{"a":"^1 || ^2","e":">=2"}}"#;
        let PackageJsonUpgrade::Changed { text, .. } =
            upgrade_package_json(compact, "a", "2.0.0").unwrap()
        else {
            panic!("expected a change");
        };
        // The range in dependencies is replaced; the peer range is left alone.
        assert_eq!(text, compact.replacen("\"*\"", "\"2.0.0\"", 1));
        assert!(matches!(
            upgrade_package_json(compact, "b", "1.0.0"),
            Err(RecipeError::NotFromRegistry { .. })
        ));
        assert!(matches!(
            upgrade_package_json(compact, "c", "1.0.1"),
            Err(RecipeError::NotFromRegistry { .. })
        ));
        assert!(matches!(
            upgrade_package_json(compact, "e", "3.0.0"),
            Err(RecipeError::OnlyPeer { .. })
        ));
    }

    #[test]
    fn escapes_and_nesting_do_not_confuse_the_scanner() {
        let text = "\u{feff}{ \"description\": \"a \\\"dependencies\\\": {} }\", \"x\": [1, {\"dependencies\": {\"lodash\": \"1.0.0\"}}], \"dependencies\" : { \"lo\\u0064ash\" : \"1.0.0\" } }";
        let PackageJsonUpgrade::Changed { text: out, .. } =
            upgrade_package_json(text, "lodash", "1.0.1").unwrap()
        else {
            panic!("expected a change");
        };
        assert!(out.ends_with("\"lo\\u0064ash\" : \"1.0.1\" } }"), "{out}");
        assert!(out.contains("{\"lodash\": \"1.0.0\"}"), "{out}");
        assert!(matches!(
            upgrade_package_json("[1]", "lodash", "1.0.0"),
            Err(RecipeError::PackageJson(_))
        ));
        assert!(matches!(
            upgrade_package_json("{", "lodash", "1.0.0"),
            Err(RecipeError::PackageJson(_))
        ));
    }
}
