//! The repository's promises to newcomers and to GitHub: the README's two commands, CI
//! running the same test command, and the App manifest asking for what the app needs.

fn read(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {full}: {e}"))
}

#[test]
fn readme_opens_with_the_run_and_test_commands() {
    let readme = read("README.md");
    let head: String = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains("    cargo run --release -p bg-agent-dev -- demo"),
        "run command near the top"
    );
    assert!(head.contains("    cargo test"), "test command near the top");
}

#[test]
fn ci_runs_the_readme_test_command_and_the_lints() {
    let ci = read(".ci/run");
    assert!(ci.lines().any(|l| l.trim() == "cargo test"));
    assert!(ci.contains("cargo fmt --all -- --check"));
    assert!(ci.contains("cargo clippy --all-targets -- -D warnings"));
}

#[test]
fn app_manifest_requests_the_permissions_and_events_the_app_uses() {
    let manifest = read("app-manifest.yml");
    for line in [
        "name: bg-agent",
        "hook_attributes:",
        "redirect_url:",
        "public: false",
        "  checks: write",
        "  contents: write",
        "  issues: write",
        "  pull_requests: write",
        "  metadata: read",
        "  - issue_comment",
        "  - issues",
        "  - check_run",
        "  - installation_repositories",
        "  - pull_request",
    ] {
        assert!(
            manifest
                .lines()
                .any(|l| l.trim_end() == line || (line.ends_with(':') && l.starts_with(line))),
            "app-manifest.yml lacks `{line}`"
        );
    }
}
