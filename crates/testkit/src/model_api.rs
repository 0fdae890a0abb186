//! A scripted fake model API on loopback, for testing the real coding-agent CLIs without
//! a model: Anthropic Messages, OpenAI Responses and Chat Completions, and Gemini
//! `generateContent`/`streamGenerateContent`, each answering from one script of steps
//! ("call tool X with these arguments", "reply with text and stop"), written in the
//! tool names of the CLI under test. Every request is recorded (path, headers, body),
//! so a test can assert the prompt, the untrusted marking, the tool results fed back and
//! the credential; a request with another credential is answered 401.
//!
//! Only requests that offer tools (the agent's own loop; for Chat Completions and
//! Responses, every request) take a step; others (a CLI's side requests, such as a title or a token count) get a
//! short text reply.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One answer of the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Call the CLI's tool `name` with `input` (its arguments as JSON).
    Tool { name: String, input: Value },
    /// Say this and end the turn.
    Text(String),
}

impl Step {
    pub fn tool(name: &str, input: Value) -> Self {
        Step::Tool {
            name: name.to_owned(),
            input,
        }
    }

    pub fn text(text: &str) -> Self {
        Step::Text(text.to_owned())
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// Whether it carried the expected credential.
    pub authorized: bool,
    /// Whether it took a step of the script.
    pub scripted: bool,
    /// When it arrived (for overhead measurements, never for assertions).
    pub at: std::time::Instant,
    /// When it arrived and when its answer was ready, by the wall clock: comparable with
    /// the times the server stores (the runner's reports), for the agent-overhead
    /// benchmark; never for assertions.
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub answered_at: chrono::DateTime<chrono::Utc>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body as text: what the model was shown.
    pub fn text(&self) -> String {
        self.body.to_string()
    }
}

struct Inner {
    credential: String,
    script: VecDeque<Step>,
    /// Answered once the script is used up (a model that never stops asking).
    forever: Option<Step>,
    requests: Vec<Recorded>,
    calls: u64,
    /// Tokens reported per answer.
    usage: (u64, u64),
}

#[derive(Clone)]
pub struct ModelApi {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    _server: Arc<ServerGuard>,
}

struct ServerGuard(tokio::task::JoinHandle<()>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ModelApi {
    /// Serves on 127.0.0.1 (a free port), accepting only `credential`.
    pub async fn start(credential: &str, script: Vec<Step>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            credential: credential.to_owned(),
            script: script.into(),
            forever: None,
            requests: Vec::new(),
            calls: 0,
            usage: (100, 20),
        }));
        let app = Router::new().fallback(answer).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake model API");
        let addr = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            addr,
            _server: Arc::new(ServerGuard(server)),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Once the script is used up, answer every agent request with `step`.
    pub fn forever(&self, step: Step) {
        self.lock().forever = Some(step);
    }

    /// The tokens each answer reports using.
    pub fn usage_per_answer(&self, input: u64, output: u64) {
        self.lock().usage = (input, output);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests that took a step of the script, in order.
    pub fn agent_requests(&self) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.scripted)
            .cloned()
            .collect()
    }

    /// Steps not yet taken.
    pub fn remaining(&self) -> usize {
        self.lock().script.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Anthropic,
    Responses,
    Chat,
    Gemini {
        stream: bool,
    },
    /// Listing models: what `bg-agent credentials test` asks each provider.
    Models,
    Other,
}

fn api_of(path: &str) -> Api {
    let path = path.split('?').next().unwrap_or_default();
    if path.ends_with("/messages") {
        Api::Anthropic
    } else if path.ends_with("/responses") {
        Api::Responses
    } else if path.ends_with("/chat/completions") {
        Api::Chat
    } else if path.contains(":streamGenerateContent") {
        Api::Gemini { stream: true }
    } else if path.contains(":generateContent") {
        Api::Gemini { stream: false }
    } else if path.ends_with("/models") {
        Api::Models
    } else {
        Api::Other
    }
}

fn credential_of(api: Api, headers: &HeaderMap, path: &str) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let bearer = || get("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
    match api {
        Api::Anthropic => get("x-api-key").or_else(bearer),
        Api::Models => get("x-api-key")
            .or_else(|| get("x-goog-api-key"))
            .or_else(bearer),
        Api::Gemini { .. } => get("x-goog-api-key").or_else(|| {
            path.split_once('?').and_then(|(_, query)| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("key=").map(str::to_owned))
            })
        }),
        _ => bearer(),
    }
}

/// Whether a request is the agent's own loop: it offers tools, or it is any chat or
/// response (Aider's chats carry no tools, its edits are text; Codex's default model
/// gets its tools described in the input rather than in `tools`).
fn is_agent_loop(api: Api, body: &Value) -> bool {
    matches!(api, Api::Chat | Api::Responses)
        || body["tools"].as_array().is_some_and(|a| !a.is_empty())
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let api = api_of(&path);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = inner.lock().unwrap_or_else(|e| e.into_inner());
    let authorized = credential_of(api, &headers, &path).as_deref() == Some(&state.credential);
    let scripted = authorized && api != Api::Other && is_agent_loop(api, &body);
    let step = if scripted {
        state
            .script
            .pop_front()
            .or_else(|| state.forever.clone())
            .unwrap_or_else(|| Step::text("Done."))
    } else {
        Step::text("OK.")
    };
    state.calls += 1;
    let call = state.calls;
    let usage = state.usage;
    let index = state.requests.len();
    let received_at = chrono::Utc::now();
    state.requests.push(Recorded {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.clone(),
        authorized,
        scripted,
        at: std::time::Instant::now(),
        received_at,
        answered_at: received_at,
    });
    drop(state);
    let response = respond(api, &path, &body, &step, call, usage, authorized);
    if let Some(recorded) = inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .get_mut(index)
    {
        recorded.answered_at = chrono::Utc::now();
    }
    response
}

/// The answer to one request, in its API's shape.
fn respond(
    api: Api,
    path: &str,
    body: &Value,
    step: &Step,
    call: u64,
    usage: (u64, u64),
    authorized: bool,
) -> Response {
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key", "code": 401, "status": "UNAUTHENTICATED"}})),
        )
            .into_response();
    }
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    match api {
        Api::Anthropic if path.contains("count_tokens") => {
            axum::Json(json!({"input_tokens": usage.0})).into_response()
        }
        Api::Anthropic => sse(anthropic(step, &model, call, usage)),
        Api::Responses => sse(responses(step, &model, call, usage)),
        Api::Chat if stream => sse(chat_stream(step, &model, call, usage)),
        Api::Chat => axum::Json(chat_whole(step, &model, call, usage)).into_response(),
        Api::Gemini { stream: true } => sse([gemini(step, usage)]
            .iter()
            .map(|v| format!("data: {v}\n\n"))
            .collect()),
        Api::Gemini { stream: false } => axum::Json(gemini(step, usage)).into_response(),
        Api::Models => axum::Json(json!({"data": [], "models": []})).into_response(),
        Api::Other => (StatusCode::NOT_FOUND, "not a model API path").into_response(),
    }
}

fn sse(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Anthropic Messages, streamed: `message_start`, one content block, `message_delta`
/// with the stop reason and usage, `message_stop`.
fn anthropic(step: &Step, model: &str, call: u64, (input, output): (u64, u64)) -> String {
    let mut out = event(
        "message_start",
        &json!({"type": "message_start", "message": {"id": format!("msg_{call}"), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
    );
    let stop = match step {
        Step::Tool { name, input } => {
            out += &event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": format!("toolu_{call}"), "name": name, "input": {}}}),
            );
            out += &event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            );
            "tool_use"
        }
        Step::Text(text) => {
            out += &event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            out += &event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            );
            "end_turn"
        }
    };
    out += &event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    out += &event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}}),
    );
    out += &event("message_stop", &json!({"type": "message_stop"}));
    out
}

/// OpenAI Responses, streamed: `response.created`, the output item, `response.completed`
/// with usage.
fn responses(step: &Step, model: &str, call: u64, (input, output): (u64, u64)) -> String {
    let item = match step {
        Step::Tool { name, input } => json!({
            "type": "function_call", "id": format!("fc_{call}"), "call_id": format!("call_{call}"),
            "name": name, "arguments": input.to_string(), "status": "completed"
        }),
        Step::Text(text) => json!({
            "type": "message", "id": format!("msg_{call}"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]
        }),
    };
    let id = format!("resp_{call}");
    let mut out = event(
        "response.created",
        &json!({"type": "response.created", "response": {"id": id, "object": "response", "status": "in_progress", "model": model, "output": []}}),
    );
    out += &event(
        "response.output_item.added",
        &json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
    );
    out += &event(
        "response.output_item.done",
        &json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    );
    out += &event(
        "response.completed",
        &json!({"type": "response.completed", "response": {
            "id": id, "object": "response", "status": "completed", "model": model, "output": [item],
            "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": input + output}
        }}),
    );
    out
}

fn chat_message(step: &Step, call: u64) -> (Value, &'static str) {
    match step {
        Step::Tool { name, input } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": format!("call_{call}"), "type": "function", "function": {"name": name, "arguments": input.to_string()}}]}),
            "tool_calls",
        ),
        Step::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
    }
}

fn chat_usage((input, output): (u64, u64)) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// OpenAI Chat Completions, streamed: the whole message in one chunk, then the finish
/// reason with usage, then `[DONE]`.
fn chat_stream(step: &Step, model: &str, call: u64, usage: (u64, u64)) -> String {
    let (message, finish) = chat_message(step, call);
    let id = format!("chatcmpl-{call}");
    let first = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": message, "finish_reason": null}]});
    let last = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": chat_usage(usage)});
    format!("data: {first}\n\ndata: {last}\n\ndata: [DONE]\n\n")
}

fn chat_whole(step: &Step, model: &str, call: u64, usage: (u64, u64)) -> Value {
    let (mut message, finish) = chat_message(step, call);
    if let Some(calls) = message["tool_calls"].as_array_mut() {
        for c in calls {
            if let Some(o) = c.as_object_mut() {
                o.remove("index");
            }
        }
    }
    json!({"id": format!("chatcmpl-{call}"), "object": "chat.completion", "created": 0, "model": model,
           "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": chat_usage(usage)})
}

/// Gemini `GenerateContentResponse`.
fn gemini(step: &Step, (input, output): (u64, u64)) -> Value {
    let part = match step {
        Step::Tool { name, input } => json!({"functionCall": {"name": name, "args": input}}),
        Step::Text(text) => json!({"text": text}),
    };
    json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": input, "candidatesTokenCount": output, "totalTokenCount": input + output}
    })
}
