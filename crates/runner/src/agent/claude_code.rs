//! Claude Code (npm `@anthropic-ai/claude-code`, pinned in `.ci/run`): `claude -p` with
//! the prompt on stdin, `--output-format stream-json --verbose` (one JSON event per
//! line: `system`/`init`, `assistant` and `user` messages, a final `result` with
//! `usage` and `total_cost_usd`), `--max-turns`, `--max-budget-usd`, and
//! `--permission-mode bypassPermissions`: no prompt can be answered, and the sandbox
//! (not the CLI) bounds what it can touch. Claude Code refuses that mode as root; the
//! runner is uid 1000 in its sandbox. It reads `CLAUDE.md` (and, through its built-in
//! agents-md plugin, `AGENTS.md`) from the working directory itself.
//!
//! `ANTHROPIC_BASE_URL` points it at a proxy or the test kit's scripted model API;
//! `ANTHROPIC_API_KEY` carries the credential. Its own traffic besides the model API
//! (telemetry, error reports, update checks) is turned off.

use super::{Invocation, Observation, summary};
use bg_agent_core::protocol::{AgentSpec, Usage};

pub fn invocation(agent: &AgentSpec, prompt: &str) -> Invocation {
    let mut argv: Vec<String> = [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
        "--max-turns",
    ]
    .map(String::from)
    .to_vec();
    argv.push(agent.max_turns.max(1).to_string());
    if let Some(budget) = agent.budget_usd {
        argv.push("--max-budget-usd".into());
        argv.push(format!("{budget}"));
    }
    if let Some(model) = agent.model.as_deref().filter(|m| !m.is_empty()) {
        argv.push("--model".into());
        argv.push(model.to_owned());
    }
    let mut env: Vec<(String, String)> = [
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    if let Some(base) = agent.base_url.as_deref().filter(|b| !b.is_empty()) {
        env.push(("ANTHROPIC_BASE_URL".into(), base.to_owned()));
    }
    Invocation {
        argv,
        env,
        credential_var: Some("ANTHROPIC_API_KEY"),
        stdin: Some(prompt.to_owned()),
        home_files: Vec::new(),
    }
}

/// One `stream-json` line: a short line for the log, and usage from the `result`.
pub fn observe(line: &str, seen: &mut Observation) -> Option<String> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_owned());
    };
    let kind = event["type"].as_str().unwrap_or_default();
    match kind {
        "system" if event["subtype"] == "init" => Some(format!(
            "Claude Code {}, model {}",
            event["claude_code_version"].as_str().unwrap_or("?"),
            event["model"].as_str().unwrap_or("?")
        )),
        "system" => None,
        "assistant" => {
            seen.turns += 1;
            let mut out = Vec::new();
            for block in event["message"]["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => out.push(format!(
                        "claude: {}",
                        summary(block["text"].as_str().unwrap_or_default())
                    )),
                    Some("tool_use") => out.push(format!(
                        "claude uses {}{}",
                        block["name"].as_str().unwrap_or("?"),
                        tool_target(&block["input"])
                    )),
                    _ => {}
                }
            }
            (!out.is_empty()).then(|| out.join("; "))
        }
        "user" => None,
        "result" => {
            let usage = &event["usage"];
            seen.usage = Usage {
                input_tokens: usage["input_tokens"].as_u64().unwrap_or(0)
                    + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0)
                    + usage["cache_read_input_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
                cost_usd: event["total_cost_usd"].as_f64(),
            };
            if let Some(turns) = event["num_turns"].as_u64() {
                seen.turns = u32::try_from(turns).unwrap_or(u32::MAX);
            }
            let subtype = event["subtype"].as_str().unwrap_or_default();
            seen.result = event["result"].as_str().map(str::to_owned);
            if event["is_error"].as_bool() == Some(true) || subtype != "success" {
                seen.error = Some(match subtype {
                    "error_max_turns" => "it reached its turn limit".to_owned(),
                    "error_max_budget_usd" => "it reached its budget".to_owned(),
                    "" | "success" => "it reported an error".to_owned(),
                    other => format!("it ended with {other}"),
                });
            }
            Some(format!(
                "Claude Code finished ({subtype}): {} turns, {} input and {} output tokens{}",
                seen.turns,
                seen.usage.input_tokens,
                seen.usage.output_tokens,
                seen.usage
                    .cost_usd
                    .map(|c| format!(", ${c:.4}"))
                    .unwrap_or_default()
            ))
        }
        _ => None,
    }
}

/// What a tool call works on, for the log: a file or the command's first line.
fn tool_target(input: &serde_json::Value) -> String {
    ["file_path", "path", "command", "pattern"]
        .iter()
        .find_map(|key| input[*key].as_str())
        .map(|target| format!(" {}", summary(target)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_line_gives_usage_cost_and_errors() {
        let mut seen = Observation::default();
        let line = r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":4,"total_cost_usd":0.25,"usage":{"input_tokens":100,"cache_read_input_tokens":20,"output_tokens":7}}"#;
        let log = observe(line, &mut seen).unwrap();
        assert_eq!(
            log,
            "Claude Code finished (error_max_turns): 4 turns, 120 input and 7 output tokens, $0.2500"
        );
        assert_eq!(seen.usage.cost_usd, Some(0.25));
        assert_eq!(seen.error.as_deref(), Some("it reached its turn limit"));
        let tool = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Write","input":{"file_path":"/w/a.js","content":"x"}}]}}"#;
        assert_eq!(
            observe(tool, &mut seen).as_deref(),
            Some("claude uses Write /w/a.js")
        );
    }
}
