//! The images' Dockerfiles against what runs them. No container engine runs here, so the
//! Dockerfile is parsed (not trusted from a comment): the runner image's final stage must
//! start the program, as the user, in the directory that the Kubernetes executor's Job
//! assumes (`bg_agent::executor::runner_image`), and the build stage must build the runner
//! crate's one binary.

use bg_agent::executor::runner_image;

fn read(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {full}: {e}"))
}

/// One instruction: its keyword in upper case and its arguments as written.
#[derive(Debug, Clone, PartialEq)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The instructions of each stage, in order (BuildKit's syntax, as far as these files use
/// it: comments, parser directives, `\` continuations, `FROM ... AS name`).
fn stages(dockerfile: &str) -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "a continuation runs off the end");
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.is_empty()) {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .unwrap_or_else(|| panic!("{} before any FROM", instruction.keyword))
            .push(instruction);
    }
    stages
}

/// The last value of `keyword` in a stage (later ones override earlier ones).
fn last<'a>(stage: &'a [Instruction], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
}

/// An exec-form (JSON array) argument; the shell form would run `/bin/sh -c` instead of
/// the program the Job names.
fn exec_form(keyword: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{keyword} must be a JSON array (exec form), not {args:?}: {e}"))
}

/// `ENV` values of a stage, both `ENV K=V ...` and `ENV K V`.
fn env(stage: &[Instruction]) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for i in stage.iter().filter(|i| i.keyword == "ENV") {
        if i.args.contains('=') {
            for pair in i.args.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV K=V");
                vars.push((k.to_string(), v.trim_matches('"').to_string()));
            }
        } else {
            let (k, v) = i.args.split_once(char::is_whitespace).expect("ENV K V");
            vars.push((k.to_string(), v.trim().to_string()));
        }
    }
    vars
}

/// The `[[bin]]` names of a crate.
fn bins(manifest: &str) -> Vec<String> {
    let manifest: toml::Table = toml::from_str(&read(manifest)).unwrap();
    manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

fn package_name(manifest: &str) -> String {
    let manifest: toml::Table = toml::from_str(&read(manifest)).unwrap();
    manifest["package"]["name"].as_str().unwrap().to_string()
}

#[test]
fn the_runner_image_starts_what_the_kubernetes_job_expects() {
    let stages = stages(&read("deploy/runner.Dockerfile"));
    assert_eq!(stages.len(), 2, "a build stage and the final stage");
    let last_stage = stages.last().unwrap();

    let entrypoint = exec_form("ENTRYPOINT", last(last_stage, "ENTRYPOINT").unwrap());
    assert_eq!(entrypoint, runner_image::ENTRYPOINT);
    let cmd = last(last_stage, "CMD").map_or_else(Vec::new, |c| exec_form("CMD", c));
    assert_eq!(cmd, runner_image::ARGS);

    assert_eq!(
        last(last_stage, "USER"),
        Some(runner_image::UID.to_string().as_str()),
        "numeric, so that the Job's runAsNonRoot can check it"
    );
    assert_eq!(last(last_stage, "WORKDIR"), Some(runner_image::WORKSPACE));
    assert!(
        env(last_stage)
            .iter()
            .any(|(k, v)| k == "HOME" && v == runner_image::HOME)
    );

    // The user exists with that uid and home, and owns the workspace.
    let runs: Vec<&str> = last_stage
        .iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    let uid = runner_image::UID;
    assert!(
        runs.iter()
            .any(|r| r.contains(&format!("useradd --uid {uid} "))
                && r.contains(&format!("--home-dir {} ", runner_image::HOME))),
        "{runs:#?}"
    );
    assert!(
        runs.iter().any(|r| r.contains(&format!(
            "install -d -o {uid} -g {uid} {}",
            runner_image::WORKSPACE
        ))),
        "{runs:#?}"
    );
    // The tools a task runs.
    for tool in ["ca-certificates", "git", "nodejs", "npm", "python3"] {
        assert!(
            runs.iter().any(|r| r.split_whitespace().any(|w| w == tool)),
            "{tool} is installed"
        );
    }
    // The root filesystem is read-only in the Job: no volume the image declares would be
    // mounted writable, so none is declared.
    assert_eq!(last(last_stage, "VOLUME"), None);
}

#[test]
fn the_runner_image_builds_the_runner_crates_one_binary() {
    let bins = bins("crates/runner/Cargo.toml");
    assert_eq!(bins.len(), 1, "{bins:?}");
    let bin = &bins[0];
    let package = package_name("crates/runner/Cargo.toml");

    let stages = stages(&read("deploy/runner.Dockerfile"));
    let build = &stages[0];
    let from = &build[0].args;
    let stage_name = from
        .rsplit_once(" AS ")
        .map(|(_, name)| name.trim())
        .expect("the build stage is named");
    let cargo = build
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("the build stage runs cargo build");
    for flag in [
        "--locked".to_string(),
        "--release".to_string(),
        format!("-p {package} "),
        format!("--bin {bin} "),
        format!("target/release/{bin} /{bin}"),
    ] {
        assert!(cargo.args.contains(&flag), "{flag:?} in {:?}", cargo.args);
    }

    // The final stage copies exactly that binary to the entrypoint.
    let copy = stages[1]
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.starts_with("--from="))
        .expect("the final stage copies from the build stage");
    assert_eq!(
        copy.args,
        format!("--from={stage_name} /{bin} {}", runner_image::ENTRYPOINT[0])
    );
    assert!(runner_image::ENTRYPOINT[0].ends_with(&format!("/{bin}")));
}

#[test]
fn the_server_image_runs_the_server_binary_as_the_deployment_expects() {
    let bins = bins("crates/server/Cargo.toml");
    assert_eq!(bins, ["bg-agent"]);
    let stages = stages(&read("deploy/server.Dockerfile"));
    assert_eq!(stages.len(), 2);
    let final_stage = &stages[1];
    assert_eq!(
        exec_form("ENTRYPOINT", last(final_stage, "ENTRYPOINT").unwrap()),
        ["/usr/local/bin/bg-agent"]
    );
    assert_eq!(
        exec_form("CMD", last(final_stage, "CMD").unwrap()),
        ["serve"]
    );
    // The Deployment's runAsUser is the image's user.
    let deployment = read("deploy/kubernetes/server.yaml");
    let user = last(final_stage, "USER").unwrap();
    assert!(
        deployment.contains(&format!("runAsUser: {user}\n")),
        "the Deployment runs as the image's user {user}"
    );
}

#[test]
fn the_dockerfile_parser_reads_continuations_stages_and_overrides() {
    let parsed = stages(
        "# syntax=docker/dockerfile:1\nFROM a AS b\nRUN x \\\n    && y\n\nfrom c\nUSER 1\nUSER 2\nENV A=1 HOME=/h\nENV B two\n",
    );
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0][1].args, "x && y");
    assert_eq!(last(&parsed[1], "USER"), Some("2"));
    assert_eq!(
        env(&parsed[1]),
        [
            ("A".to_string(), "1".to_string()),
            ("HOME".to_string(), "/h".to_string()),
            ("B".to_string(), "two".to_string())
        ]
    );
}

#[test]
fn the_release_workflow_builds_both_images_from_their_dockerfiles() {
    let workflow = read(".github/workflows/release.yml");
    for (name, dockerfile) in [
        ("bg-agent", "deploy/server.Dockerfile"),
        ("bg-agent-runner", "deploy/runner.Dockerfile"),
    ] {
        assert!(
            workflow.contains(&format!(
                "          - name: {name}\n            dockerfile: {dockerfile}\n"
            )),
            "{name} from {dockerfile}"
        );
        read(dockerfile);
    }
    assert!(workflow.contains("  push:\n    tags: [\"v*\"]\n"));
    assert!(workflow.contains("permissions:\n  contents: read\n  packages: write\n"));
    // Every action is pinned to a release, not a moving major tag.
    let uses: Vec<&str> = workflow
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("uses: "))
        .collect();
    assert_eq!(uses.len(), 5, "{uses:?}");
    let pinned = regex::Regex::new(r"^[a-z-]+/[a-z-]+@v\d+\.\d+\.\d+$").unwrap();
    for action in uses {
        assert!(
            pinned.is_match(action),
            "{action} is not pinned to a release"
        );
    }
}
