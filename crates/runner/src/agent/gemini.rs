//! Gemini CLI (npm `@google/gemini-cli`, pinned in `.ci/run`): `gemini -p "" --yolo
//! --output-format stream-json` with the prompt on stdin (`-p` appends its own, empty,
//! text to it) prints one JSON event per line (`init`, `message`, `tool_use`,
//! `tool_result`, a final `result` with token `stats`). Settings go in
//! `$HOME/.gemini/settings.json`, written per invocation: the API-key auth type (so that
//! `GOOGLE_GEMINI_BASE_URL` points the API-key client at a proxy or the test kit; without
//! it, a base URL selects a "gateway" auth that non-interactive mode refuses), folder
//! trust off (a checkout is not "trusted", which would switch `--yolo` off), no usage
//! statistics, and `model.maxSessionTurns` as the turn limit. Node's WebAssembly guard
//! regions are switched off (`--disable-wasm-trap-handler`): they reserve ~10 GiB of
//! address space, over the sandbox's `RLIMIT_AS`. It reads `GEMINI.md` from the working
//! directory itself. It reports tokens, not money. Without `--model` it asks the model
//! API to route the request first; with one it does not.

use super::{Invocation, Observation, summary};
use bg_agent_core::protocol::{AgentSpec, Usage};

pub fn invocation(agent: &AgentSpec, prompt: &str) -> Invocation {
    let mut argv: Vec<String> = [
        "gemini",
        "-p",
        "",
        "--yolo",
        "--output-format",
        "stream-json",
    ]
    .map(String::from)
    .to_vec();
    if let Some(model) = agent.model.as_deref().filter(|m| !m.is_empty()) {
        argv.push("--model".into());
        argv.push(model.to_owned());
    }
    let mut env = vec![(
        "NODE_OPTIONS".to_owned(),
        "--disable-wasm-trap-handler".to_owned(),
    )];
    if let Some(base) = agent.base_url.as_deref().filter(|b| !b.is_empty()) {
        env.push(("GOOGLE_GEMINI_BASE_URL".into(), base.to_owned()));
    }
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": false}},
        "privacy": {"usageStatisticsEnabled": false},
        "model": {"maxSessionTurns": agent.max_turns.max(1)},
    });
    Invocation {
        argv,
        env,
        credential_var: Some("GEMINI_API_KEY"),
        stdin: Some(prompt.to_owned()),
        home_files: vec![(".gemini/settings.json".into(), settings.to_string())],
    }
}

/// One `stream-json` line: a short line for the log; usage from the `result`.
pub fn observe(line: &str, seen: &mut Observation) -> Option<String> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_owned());
    };
    match event["type"].as_str().unwrap_or_default() {
        "init" => Some(format!(
            "Gemini CLI, model {}",
            event["model"].as_str().unwrap_or("?")
        )),
        "tool_use" => {
            seen.turns += 1;
            let params = &event["parameters"];
            let target = ["file_path", "command", "dir_path"]
                .iter()
                .find_map(|k| params[*k].as_str())
                .map(|t| format!(" {}", summary(t)))
                .unwrap_or_default();
            Some(format!(
                "gemini uses {}{target}",
                event["tool_name"].as_str().unwrap_or("?")
            ))
        }
        "message" if event["role"] == "assistant" => Some(format!(
            "gemini: {}",
            summary(event["content"].as_str().unwrap_or_default())
        )),
        "result" => {
            let stats = &event["stats"];
            seen.usage = Usage {
                input_tokens: stats["input_tokens"].as_u64().unwrap_or(0),
                output_tokens: stats["output_tokens"].as_u64().unwrap_or(0),
                cost_usd: None,
            };
            let status = event["status"].as_str().unwrap_or_default();
            if status != "success" {
                seen.error = Some(format!(
                    "it ended with {}",
                    if status.is_empty() {
                        "an error"
                    } else {
                        status
                    }
                ));
            }
            Some(format!(
                "Gemini CLI finished ({status}): {} input and {} output tokens",
                seen.usage.input_tokens, seen.usage.output_tokens
            ))
        }
        "error" => Some(format!(
            "gemini: {}",
            summary(event["message"].as_str().unwrap_or_default())
        )),
        _ => None,
    }
}
