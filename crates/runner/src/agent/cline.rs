//! Cline CLI (npm `cline`, pinned in `.ci/run`): `cline --json <fixed line>` with the
//! instructions on stdin (Cline appends piped stdin to its prompt argument; with `--json`
//! it needs an argument, so argv holds only a fixed line, never user text) prints one
//! JSON event per line (`agent_event`s, a final `run_result` with `usage`). Its provider
//! settings (`$HOME/.cline/data/settings/providers.json`) are written per invocation: the
//! OpenAI-compatible provider with the base URL, the model and the credential — Cline
//! takes no key from its environment, and its `auth` command wants the key in argv —
//! inside the agent's own `HOME`, which lives in the sandboxed workspace and goes with it.
//! It reads `.clinerules` and `AGENTS.md` from the working directory itself; tools are
//! auto-approved by default in this mode.

use super::{Invocation, Observation, summary};
use bg_agent_core::protocol::{AgentSpec, Usage};

/// What Cline is told on the command line; the task's instructions follow on stdin.
const PROMPT_ARG: &str = "Do the task described below.";
pub const SETTINGS_FILE: &str = ".cline/data/settings/providers.json";

/// `credential` is written into Cline's settings file, the only place it reads one from.
pub fn invocation(agent: &AgentSpec, prompt: &str, credential: Option<&str>) -> Invocation {
    let model = agent
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or("gpt-4.1");
    let base_url = agent
        .base_url
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or("https://api.openai.com/v1");
    let settings = serde_json::json!({
        "version": 1,
        "lastUsedProvider": "openai-compatible",
        "modes": {},
        "providers": {
            "openai-compatible": {
                "settings": {
                    "provider": "openai-compatible",
                    "apiKey": credential.unwrap_or_default(),
                    "model": model,
                    "baseUrl": base_url,
                },
                // Cline ignores an entry without it.
                "updatedAt": "1970-01-01T00:00:00.000Z",
                "tokenSource": "manual",
            }
        }
    });
    let argv = vec![
        "cline".to_owned(),
        "--json".to_owned(),
        "--retries".to_owned(),
        "2".to_owned(),
        PROMPT_ARG.to_owned(),
    ];
    Invocation {
        argv,
        env: Vec::new(),
        credential_var: None,
        stdin: Some(prompt.to_owned()),
        home_files: vec![(SETTINGS_FILE.into(), settings.to_string())],
    }
}

/// One `--json` line: tool calls and the result; usage from `run_result`.
pub fn observe(line: &str, seen: &mut Observation) -> Option<String> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_owned());
    };
    match event["type"].as_str().unwrap_or_default() {
        "agent_event" => {
            let inner = &event["event"];
            match inner["type"].as_str().unwrap_or_default() {
                "iteration_start" => {
                    seen.turns = seen
                        .turns
                        .max(u32::try_from(inner["iteration"].as_u64().unwrap_or(0)).unwrap_or(0));
                    None
                }
                "content_start" | "tool_call_start" if inner["toolName"].is_string() => Some(
                    format!("cline uses {}", inner["toolName"].as_str().unwrap_or("?")),
                ),
                "done" => Some(format!(
                    "cline: {}",
                    summary(inner["text"].as_str().unwrap_or_default())
                )),
                _ => None,
            }
        }
        "run_result" => {
            let usage = &event["aggregateUsage"];
            let cost = usage["totalCost"].as_f64().filter(|c| *c > 0.0);
            seen.usage = Usage {
                input_tokens: usage["inputTokens"].as_u64().unwrap_or(0),
                output_tokens: usage["outputTokens"].as_u64().unwrap_or(0),
                cost_usd: cost,
            };
            let reason = event["finishReason"].as_str().unwrap_or_default();
            if reason == "error" || reason == "max_iterations" {
                seen.error = Some(format!(
                    "it ended with {reason}: {}",
                    summary(event["text"].as_str().unwrap_or_default())
                ));
            }
            Some(format!(
                "Cline finished ({reason}) after {} iterations: {} input and {} output tokens",
                event["iterations"], seen.usage.input_tokens, seen.usage.output_tokens
            ))
        }
        "error" => Some(format!(
            "cline: {}",
            summary(event["message"].as_str().unwrap_or_default())
        )),
        _ => None,
    }
}
