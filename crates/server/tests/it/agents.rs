//! The real coding-agent CLIs behind the validation gate, against the test kit's scripted
//! model API: a `/bg-agent run` comment, the CLI (installed by `.ci/run`, found on `PATH`)
//! edits the checkout through its own tools as the script tells it, the repository's
//! checks run, and a pull request is opened. The credential reaches the model API and
//! nothing else; failing checks go back to the agent; limits stop it; a failed change is
//! kept on a WIP branch.

use bg_agent_core::protocol::{AgentProvider, AgentSpec};
use bg_agent_core::task::{TaskRecord, TaskState};
use bg_agent_testkit::harness::{Harness, LEAD, Scenario};
use bg_agent_testkit::model_api::{ModelApi, Step};
use serde_json::json;

/// The provider credential the tests hand to agents; it must reach only the model API.
const CREDENTIAL: &str = "sk-test-agent-credential-7f3a9c";
/// Where the runner's checkout is inside its sandbox (the CLIs want absolute paths).
const CHECKOUT: &str = "/workspace/repo";

/// Validation that fails if any variable of the checks' environment holds the
/// credential or names an API key, then the project's tests.
const VALIDATION: &str = "validation:\n  - [node, -e, \"const leak = Object.entries(process.env).some(([k, v]) => v.includes('sk-test-agent') || /API_KEY/.test(k)); if (leak) { console.error('the credential reached validation'); process.exit(1) }\"]\n  - node test.js\n";

/// The project's test: `hello.txt` must say `fixed`.
const HELLO_TEST: &str = "const text = require('fs').readFileSync('hello.txt', 'utf8');\nif (text !== 'fixed\\n') { console.error('hello.txt is wrong: ' + JSON.stringify(text) + ', expected \"fixed\"'); process.exit(1); }\nconsole.log('1 passed, 0 failed');\n";

/// The only task, once it has ended in `state` (else the test fails with its log).
async fn ended(h: &Harness, state: TaskState) -> TaskRecord {
    let task = h.only_task().await.wait(|t| t.state.is_terminal()).await;
    if task.state != state {
        let log = h.store().log_tail(task.id, 5000).await.unwrap().join("\n");
        panic!(
            "task ended {:?}, not {state:?}: {:?}\n{log}",
            task.state, task.error
        );
    }
    h.task(task.id).reported_end().await
}

fn program_on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The CLI must be installed: `.ci/run` installs the pinned versions and puts them on
/// `PATH`. A missing one fails the test (it is never skipped).
fn require(provider: AgentProvider) {
    let program = provider.program().unwrap_or_default();
    assert!(
        program_on_path(program),
        "{program} is not on PATH: run .ci/run (it installs the pinned coding-agent CLIs into /usr/local/lib/bg-agent-agents)"
    );
}

fn agent(provider: AgentProvider, api: &ModelApi) -> AgentSpec {
    AgentSpec {
        base_url: Some(match provider {
            AgentProvider::Codex => format!("{}/v1", api.url()),
            _ => api.url(),
        }),
        max_turns: 10,
        ..AgentSpec::new(provider)
    }
}

fn scenario(provider: AgentProvider, api: &ModelApi) -> Scenario {
    require(provider);
    Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .tests(HELLO_TEST)
        .file(".github/bg-agent.yml", VALIDATION)
        .agent_spec(agent(provider, api))
        .agent_credential(CREDENTIAL)
}

/// Claude Code's own tools: `Write` a new file, then finish.
fn claude_writes(content: &str) -> Vec<Step> {
    vec![
        Step::tool(
            "Write",
            json!({"file_path": format!("{CHECKOUT}/hello.txt"), "content": content}),
        ),
        Step::text("I wrote hello.txt."),
    ]
}

/// The change is `hello.txt` fixed, alone, in the one pull request.
fn hello_fixed_in_one_pull_request(h: &Harness, task: &TaskRecord) {
    assert_eq!(
        h.show(task.branch.as_deref().unwrap(), "hello.txt"),
        "fixed\n"
    );
    assert_eq!(task.changed_files, vec!["hello.txt".to_owned()]);
    assert_eq!(h.pulls().len(), 1);
}

/// Every request the model API received carried the credential in `header`.
fn every_request_carried(api: &ModelApi, header: &str, value: &str) {
    for request in api.requests() {
        assert_eq!(request.header(header), Some(value), "{}", request.path);
    }
}

/// Codex's own shell tool fixes `hello.txt`, then it finishes.
fn codex_fixes_hello() -> Vec<Step> {
    vec![
        Step::tool(
            "exec_command",
            json!({"cmd": "printf 'fixed\\n' > hello.txt"}),
        ),
        Step::text("I wrote hello.txt."),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_edits_through_its_tools_and_the_change_becomes_a_pull_request() {
    let api = ModelApi::start(CREDENTIAL, claude_writes("fixed\n")).await;
    let h = scenario(AgentProvider::ClaudeCode, &api).start().await;
    let commented = std::time::Instant::now();
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    // The harness's own overhead, reported (not asserted): comment -> first model request
    // (intake, launch, clone, CLI start) and last model request -> the task's reported
    // end (the checks, the commit, the push, the PR).
    let requests = api.requests();
    if let (Some(first), Some(last)) = (requests.first(), requests.last()) {
        eprintln!(
            "overhead: comment -> first model request {:?}; last model request -> reported end {:?}",
            first.at - commented,
            last.at.elapsed()
        );
    }
    // The real CLI wrote the file through its Write tool.
    let branch = task.branch.clone().unwrap();
    assert_eq!(h.show(&branch, "hello.txt"), "fixed\n");
    assert_eq!(h.pulls().len(), 1);
    assert_eq!(task.changed_files, vec!["hello.txt".to_owned()]);
    // What the model was asked, and what came back to it.
    let asked = api.agent_requests();
    assert_eq!(
        asked.len(),
        2,
        "{:#?}",
        api.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(asked[0].text().contains("Make hello.txt say fixed"));
    assert!(
        asked[1].text().contains("tool_result"),
        "the Write result is fed back"
    );
    // The credential reached the model API, as the provider's own header, every time.
    for request in api.requests() {
        assert!(request.authorized, "{}", request.path);
        assert_eq!(request.header("x-api-key"), Some(CREDENTIAL));
    }
    // ...and nothing else: not the checks (the first validation command passed), not
    // the log, the check run or the pull request.
    assert_eq!(task.agent_provider.as_deref(), Some("claude_code"));
    assert_eq!(task.agent_rounds, 1);
    assert_eq!(task.agent_input_tokens, 200);
    assert_eq!(task.agent_output_tokens, 40);
    assert!(task.agent_cost_microusd.is_some_and(|c| c > 0));
    let log = h.store().log_tail(task.id, 5000).await.unwrap().join("\n");
    assert!(
        log.contains("claude uses Write /workspace/repo/hello.txt"),
        "{log}"
    );
    let pr = h.pr(task.pr_number.unwrap() as u64);
    let check = h.check_run(task.id);
    for text in [
        log.as_str(),
        pr.body.as_str(),
        format!("{:?}", check.output).as_str(),
        &format!("{:?}", h.bot_comments()),
    ] {
        assert!(!text.contains(CREDENTIAL));
    }
    assert!(
        pr.body.contains(
            "### Coding agent\n\nClaude Code, 1 round: 200 input and 40 output tokens, $"
        ),
        "{}",
        pr.body
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_goes_back_to_claude_code_and_the_second_round_passes() {
    let api = ModelApi::start(
        CREDENTIAL,
        vec![
            Step::tool(
                "Write",
                json!({"file_path": format!("{CHECKOUT}/hello.txt"), "content": "broken\n"}),
            ),
            Step::text("Done."),
            Step::tool(
                "Bash",
                json!({"command": "printf 'fixed\\n' > hello.txt", "description": "Fix hello.txt"}),
            ),
            Step::text("Fixed."),
        ],
    )
    .await;
    let h = scenario(AgentProvider::ClaudeCode, &api).start().await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    assert_eq!(
        h.show(task.branch.as_deref().unwrap(), "hello.txt"),
        "fixed\n"
    );
    let asked = api.agent_requests();
    assert_eq!(asked.len(), 4);
    // The second round's first request holds the failing command and its output.
    let second = asked[2].text();
    assert!(
        second.contains("failed the repository's checks: `node test.js`"),
        "{second}"
    );
    assert!(second.contains("hello.txt is wrong"), "{second}");
    assert!(!asked[0].text().contains("hello.txt is wrong"));
    assert_eq!(task.agent_rounds, 2);
    // Each round is kept with what Claude Code reported for it (the page and API show them).
    let rounds = h.store().agent_rounds(task.id).await.unwrap();
    let used: Vec<(i32, &str, i64, i64)> = rounds
        .iter()
        .map(|r| {
            (
                r.round,
                r.provider.as_str(),
                r.input_tokens,
                r.output_tokens,
            )
        })
        .collect();
    assert_eq!(
        used,
        [(1, "claude_code", 200, 40), (2, "claude_code", 200, 40)]
    );
    assert_eq!(h.pulls().len(), 1);
    let validations = h.task(task.id).validations().await;
    assert_eq!(
        validations.iter().filter(|v| !v.passed()).count(),
        1,
        "{validations:#?}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_still_fails_is_kept_on_a_wip_branch_without_a_pull_request() {
    let api = ModelApi::start(CREDENTIAL, claude_writes("broken\n")).await;
    let h = scenario(AgentProvider::ClaudeCode, &api)
        .agent_spec(AgentSpec {
            verifier_rounds: 0,
            ..agent(AgentProvider::ClaudeCode, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Failed).await;
    let wip = format!("bg-agent/wip/{}", task.id);
    assert_eq!(task.wip_branch.as_deref(), Some(wip.as_str()));
    assert_eq!(h.show(&wip, "hello.txt"), "broken\n");
    assert!(h.pulls().is_empty());
    assert_eq!(task.failing_command.as_deref(), Some("node test.js"));
    let comment = h.task(task.id).reported_end().await;
    let _ = comment;
    let comments = h.bot_comments();
    let tracking = comments
        .iter()
        .find(|c| c.contains("**failed**"))
        .expect("the tracking comment says failed");
    assert!(
        tracking.contains(&format!("kept on branch `{wip}` (no pull request)")),
        "{tracking}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_limit_stops_claude_code_when_the_model_keeps_asking_for_more() {
    let api = ModelApi::start(CREDENTIAL, Vec::new()).await;
    api.forever(Step::tool(
        "Bash",
        json!({"command": "echo still working", "description": "Work"}),
    ));
    let h = scenario(AgentProvider::ClaudeCode, &api)
        .agent_spec(AgentSpec {
            max_turns: 3,
            verifier_rounds: 0,
            ..agent(AgentProvider::ClaudeCode, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Failed).await;
    let error = task.error.clone().unwrap_or_default();
    assert!(
        // The runner counts the turns the CLI reports and stops it past the limit.
        error.starts_with("Claude Code was stopped: it passed the limit of 3 turns"),
        "{error}"
    );
    assert!(
        api.agent_requests().len() <= 4,
        "{}",
        api.agent_requests().len()
    );
    assert!(h.pulls().is_empty());
    assert_eq!(task.wip_branch, None, "no change, nothing kept");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_stops_claude_code_once_its_reported_cost_passes_it() {
    let api = ModelApi::start(CREDENTIAL, Vec::new()).await;
    api.forever(Step::tool(
        "Bash",
        json!({"command": "echo still working", "description": "Work"}),
    ));
    // A million tokens each way per answer: dollars per turn at any price.
    api.usage_per_answer(1_000_000, 1_000_000);
    let h = scenario(AgentProvider::ClaudeCode, &api)
        .agent_spec(AgentSpec {
            budget_usd: Some(0.5),
            verifier_rounds: 0,
            ..agent(AgentProvider::ClaudeCode, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Failed).await;
    let error = task.error.clone().unwrap_or_default();
    assert!(error.contains("budget"), "{error}");
    assert!(
        api.agent_requests().len() < 10,
        "{}",
        api.agent_requests().len()
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_issue_is_marked_as_such_in_what_the_model_receives() {
    let api = ModelApi::start(CREDENTIAL, claude_writes("fixed\n")).await;
    let h = scenario(AgentProvider::ClaudeCode, &api).start().await;
    h.label(LEAD, "bg-agent").await;
    ended(&h, TaskState::Succeeded).await;
    let first = api.agent_requests()[0].text();
    assert!(first.contains("untrusted-issue-text"), "{first}");
    assert!(
        first.contains("untrusted input written by a person"),
        "{first}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_crashes_fails_the_task_with_its_last_output() {
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .agent(&[
            "sh",
            "-c",
            "echo reading the task; echo 'panic: the model vanished' >&2; exit 3",
        ])
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Failed).await;
    let error = task.error.clone().unwrap_or_default();
    assert!(error.contains("agent command failed (exit 3)"), "{error}");
    assert!(error.contains("panic: the model vanished"), "{error}");
    assert!(h.pulls().is_empty());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_hangs_is_stopped_after_its_time_limit() {
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .agent(&["sh", "-c", "echo thinking; exec sleep 600"])
        .agent_spec(AgentSpec {
            timeout_secs: Some(2),
            ..AgentSpec::new(AgentProvider::Command)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Failed).await;
    let error = task.error.clone().unwrap_or_default();
    assert!(
        error.contains("agent command was stopped: it ran past its time limit (2s)"),
        "{error}"
    );
    assert!(error.contains("thinking"), "{error}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_edits_through_its_tools_and_the_change_becomes_a_pull_request() {
    let api = ModelApi::start(CREDENTIAL, codex_fixes_hello()).await;
    let h = scenario(AgentProvider::Codex, &api).start().await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    let log = h.store().log_tail(task.id, 5000).await.unwrap().join("\n");
    assert_eq!(task.changed_files, vec!["hello.txt".to_owned()], "{log}");
    assert_eq!(
        h.show(task.branch.as_deref().unwrap(), "hello.txt"),
        "fixed\n"
    );
    assert_eq!(h.pulls().len(), 1);
    let asked = api.agent_requests();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[0].path.starts_with("/v1/responses"),
        "{}",
        asked[0].path
    );
    assert!(asked[0].text().contains("Make hello.txt say fixed"));
    assert!(
        asked[1].text().contains("function_call_output"),
        "the command's result is fed back"
    );
    every_request_carried(&api, "authorization", &format!("Bearer {CREDENTIAL}"));
    assert_eq!(task.agent_provider.as_deref(), Some("codex"));
    assert_eq!(
        (task.agent_input_tokens, task.agent_output_tokens),
        (200, 40)
    );
    assert_eq!(task.agent_cost_microusd, None, "Codex reports no cost");
    let log = h.store().log_tail(task.id, 5000).await.unwrap().join("\n");
    assert!(!log.contains(CREDENTIAL));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_limit_stops_codex_which_takes_none_itself() {
    let api = ModelApi::start(CREDENTIAL, Vec::new()).await;
    api.forever(Step::tool(
        "exec_command",
        json!({"cmd": "echo still working"}),
    ));
    let h = scenario(AgentProvider::Codex, &api)
        .agent_spec(AgentSpec {
            max_turns: 2,
            verifier_rounds: 0,
            ..agent(AgentProvider::Codex, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Failed).await;
    let error = task.error.clone().unwrap_or_default();
    assert!(
        error.contains("Codex CLI was stopped: it passed the limit of 2 turns"),
        "{error}"
    );
    assert!(h.pulls().is_empty());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_edits_through_its_tools_and_the_change_becomes_a_pull_request() {
    let api = ModelApi::start(
        CREDENTIAL,
        vec![
            Step::tool(
                "write_file",
                json!({"file_path": format!("{CHECKOUT}/hello.txt"), "content": "fixed\n"}),
            ),
            Step::text("I wrote hello.txt."),
        ],
    )
    .await;
    let h = scenario(AgentProvider::Gemini, &api)
        .agent_spec(AgentSpec {
            model: Some("gemini-2.5-flash".into()),
            ..agent(AgentProvider::Gemini, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    assert_eq!(
        h.show(task.branch.as_deref().unwrap(), "hello.txt"),
        "fixed\n"
    );
    assert_eq!(h.pulls().len(), 1);
    let asked = api.agent_requests();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[0]
            .path
            .starts_with("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
        "{}",
        asked[0].path
    );
    assert!(asked[0].text().contains("Make hello.txt say fixed"));
    assert!(
        asked[1].text().contains("functionResponse"),
        "the write's result is fed back"
    );
    every_request_carried(&api, "x-goog-api-key", CREDENTIAL);
    assert_eq!(task.agent_provider.as_deref(), Some("gemini"));
    assert_eq!(
        (task.agent_input_tokens, task.agent_output_tokens),
        (200, 40)
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aider_edits_in_its_whole_format_and_the_change_becomes_a_pull_request() {
    // Aider uses no tool calls: the model's answer is the edit, in the `whole` format.
    let api = ModelApi::start(CREDENTIAL, vec![Step::text("hello.txt\n```\nfixed\n```\n")]).await;
    let h = scenario(AgentProvider::Aider, &api)
        .agent_spec(AgentSpec {
            base_url: Some(format!("{}/v1", api.url())),
            model: Some("gpt-4.1".into()),
            ..agent(AgentProvider::Aider, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    // No Aider files in the change.
    hello_fixed_in_one_pull_request(&h, &task);
    let asked = api.agent_requests();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].path.starts_with("/v1/chat/completions"),
        "{}",
        asked[0].path
    );
    assert!(asked[0].text().contains("Make hello.txt say fixed"));
    every_request_carried(&api, "authorization", &format!("Bearer {CREDENTIAL}"));
    assert_eq!(task.agent_provider.as_deref(), Some("aider"));
    assert_eq!(
        (task.agent_input_tokens, task.agent_output_tokens),
        (100, 20)
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cline_edits_through_its_tools_and_the_change_becomes_a_pull_request() {
    let api = ModelApi::start(
        CREDENTIAL,
        vec![
            Step::tool(
                "run_commands",
                json!({"commands": ["printf 'fixed\\n' > hello.txt"]}),
            ),
            Step::text("I wrote hello.txt."),
        ],
    )
    .await;
    let h = scenario(AgentProvider::Cline, &api)
        .agent_spec(AgentSpec {
            base_url: Some(format!("{}/v1", api.url())),
            model: Some("gpt-4.1".into()),
            ..agent(AgentProvider::Cline, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    hello_fixed_in_one_pull_request(&h, &task);
    let asked = api.agent_requests();
    assert!(
        asked[0].path.starts_with("/v1/chat/completions"),
        "{}",
        asked[0].path
    );
    assert!(asked[0].text().contains("Make hello.txt say fixed"));
    every_request_carried(&api, "authorization", &format!("Bearer {CREDENTIAL}"));
    assert_eq!(task.agent_provider.as_deref(), Some("cline"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_chooses_its_coding_agent_in_its_config() {
    // The server's default is Aider; the repository's .github/bg-agent.yml says Codex.
    let api = ModelApi::start(CREDENTIAL, codex_fixes_hello()).await;
    require(AgentProvider::Codex);
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .tests(HELLO_TEST)
        .file(
            ".github/bg-agent.yml",
            format!("{VALIDATION}agent: {{ provider: codex, model: gpt-test }}\n"),
        )
        .agent_spec(AgentSpec {
            base_url: Some(format!("{}/v1", api.url())),
            ..AgentSpec::new(AgentProvider::Aider)
        })
        .agent_credential(CREDENTIAL)
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let task = ended(&h, TaskState::Succeeded).await;
    assert_eq!(task.agent_provider.as_deref(), Some("codex"));
    assert_eq!(api.agent_requests()[0].body["model"], "gpt-test");
    assert_eq!(
        h.show(task.branch.as_deref().unwrap(), "hello.txt"),
        "fixed\n"
    );
    h.finish().await;
}

/// Work is never lost, and Retry picks it up: the first attempt's change fails the checks
/// and is kept on its WIP branch; Retry starts the next attempt from that change (the
/// agent sees the earlier files), and the pull request holds both attempts' work,
/// measured against the default branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_starts_from_the_wip_branch_and_the_pull_request_holds_both_changes() {
    let api = ModelApi::start(
        CREDENTIAL,
        vec![
            // Attempt 1: a note, and a hello.txt that fails the test.
            Step::tool(
                "Write",
                json!({"file_path": format!("{CHECKOUT}/NOTE.md"), "content": "kept from attempt one\n"}),
            ),
            Step::tool(
                "Write",
                json!({"file_path": format!("{CHECKOUT}/hello.txt"), "content": "broken\n"}),
            ),
            Step::text("Done."),
            // Attempt 2: looks at what is there, then fixes hello.txt only.
            Step::tool(
                "Bash",
                json!({"command": "cat NOTE.md hello.txt", "description": "Look at the earlier change"}),
            ),
            Step::tool(
                "Bash",
                json!({"command": "printf 'fixed\\n' > hello.txt", "description": "Fix hello.txt"}),
            ),
            Step::text("Fixed."),
        ],
    )
    .await;
    let h = scenario(AgentProvider::ClaudeCode, &api)
        .agent_spec(AgentSpec {
            verifier_rounds: 0,
            ..agent(AgentProvider::ClaudeCode, &api)
        })
        .start()
        .await;
    h.comment(LEAD, "/bg-agent run Make hello.txt say fixed")
        .await;
    let first = ended(&h, TaskState::Failed).await;
    let wip = format!("bg-agent/wip/{}", first.id);
    assert_eq!(first.wip_branch.as_deref(), Some(wip.as_str()));
    assert_eq!(h.show(&wip, "NOTE.md"), "kept from attempt one\n");
    let asked_first = api.agent_requests().len();

    h.click(first.id, LEAD, "retry").await;
    let second = h
        .tasks()
        .await
        .into_iter()
        .find(|t| t.retry_of == Some(first.id))
        .expect("the retry made an attempt");
    let second = h.task(second.id).wait(|t| t.state.is_terminal()).await;
    let log = h
        .store()
        .log_tail(second.id, 5000)
        .await
        .unwrap()
        .join("\n");
    assert_eq!(
        second.state,
        TaskState::Succeeded,
        "{:?}\n{log}",
        second.error
    );
    assert!(
        log.contains(&format!(
            "starting from the earlier attempt's change on {wip}"
        )),
        "{log}"
    );
    let audit = h.task(second.id).audit().await.join("\n");
    assert!(
        audit.contains(&format!(
            "starts from the earlier attempt's change on {wip}"
        )),
        "{audit}"
    );

    // The second run's agent was told, and saw the earlier files in its checkout: the
    // output of `cat` went back to the model.
    let asked = api.agent_requests();
    let opening = asked[asked_first].text();
    assert!(
        opening.contains(&format!(
            "its change (kept on branch {wip}) is already in the working tree"
        )),
        "{opening}"
    );
    let after_cat = asked[asked_first + 1].text();
    assert!(after_cat.contains("kept from attempt one"), "{after_cat}");
    assert!(after_cat.contains("broken"), "{after_cat}");

    // One pull request, with both attempts' work against the default branch.
    let second = h.task(second.id).reported_end().await;
    let branch = second.branch.clone().unwrap();
    assert_eq!(h.show(&branch, "NOTE.md"), "kept from attempt one\n");
    assert_eq!(h.show(&branch, "hello.txt"), "fixed\n");
    assert_eq!(
        second.changed_files,
        vec!["NOTE.md".to_owned(), "hello.txt".to_owned()]
    );
    let pulls = h.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].head, branch);
    h.finish().await;
}

/// The provider the repository chooses for a template is the one that runs, with its own
/// credential: not the installation's default agent, nor that one's credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repositorys_agent_for_a_template_runs_with_its_own_providers_credential() {
    use bg_agent::credentials::{Keyring, Provider, Scope, fingerprint};
    use secrecy::SecretString;

    const OPENAI: &str = "sk-openai-credential-for-codex-51c2";
    const ANTHROPIC: &str = "sk-ant-credential-of-the-default-9d0e";
    let api = ModelApi::start(OPENAI, codex_fixes_hello()).await;
    require(AgentProvider::Codex);
    let keys = Keyring::parse(&SecretString::from(
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
    ))
    .unwrap();
    let configured = keys.clone();
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .tests(HELLO_TEST)
        .file(
            ".github/bg-agent.yml",
            format!(
                "{VALIDATION}templates:\n  - name: fix-hello\n    instructions: Make hello.txt say fixed.\n    agent: {{ provider: codex, model: gpt-test }}\n"
            ),
        )
        // The server's own default is Gemini CLI; the installation's (below) Claude Code:
        // each needs another provider's credential than Codex.
        .agent_spec(AgentSpec {
            base_url: Some(format!("{}/v1", api.url())),
            max_turns: 10,
            ..AgentSpec::new(AgentProvider::Gemini)
        })
        .configure(move |config| config.run.encryption_keys = Some(configured))
        .start()
        .await;
    let installation = github_fake::world::INSTALLATION_ID as i64;
    h.store()
        .set_default_agent(installation, "claude_code", None)
        .await
        .unwrap();
    for (provider, value) in [(Provider::OpenAi, OPENAI), (Provider::Anthropic, ANTHROPIC)] {
        let scope = Scope {
            installation_id: installation,
            user_id: None,
            provider,
        };
        let sealed = keys
            .seal(&scope, &SecretString::from(value.to_owned()))
            .unwrap();
        h.store()
            .put_credential(&scope, &sealed, &fingerprint(value))
            .await
            .unwrap();
    }

    h.comment(LEAD, "/bg-agent fix-hello").await;
    let task = ended(&h, TaskState::Succeeded).await;
    assert_eq!(task.agent_provider.as_deref(), Some("codex"));
    let audit = h.task(task.id).audit().await.join("\n");
    assert!(
        audit.contains(
            "runs Codex CLI (model gpt-test), chosen by the repository's .github/bg-agent.yml"
        ),
        "{audit}"
    );
    // Codex ran with OpenAI's credential, and the model the repository named.
    let requests = api.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert!(request.authorized, "{}", request.path);
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {OPENAI}").as_str())
        );
    }
    assert_eq!(api.agent_requests()[0].body["model"], "gpt-test");
    assert_eq!(
        h.show(task.branch.as_deref().unwrap(), "hello.txt"),
        "fixed\n"
    );
    // The credential recorded as used is OpenAI's; Anthropic's never left the database.
    let used = h
        .store()
        .task_credential(task.id)
        .await
        .unwrap()
        .expect("the task used a stored credential");
    assert_eq!(used.scope.provider, Provider::OpenAi);
    let log = h.store().log_tail(task.id, 5000).await.unwrap().join("\n");
    for secret in [OPENAI, ANTHROPIC] {
        assert!(!log.contains(secret));
        assert!(!requests.iter().any(|r| r.text().contains(secret)));
    }
    h.finish().await;
}
