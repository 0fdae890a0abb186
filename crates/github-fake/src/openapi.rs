//! Validation of JSON values against an OpenAPI document.
//!
//! [`OpenApiDoc`] wraps one OpenAPI 3.0 or 3.1 document and validates JSON
//! values against the schemas it contains: a named component
//! (`#/components/schemas/{name}`), a webhook payload (OpenAPI 3.1 `webhooks`),
//! or the request / response body of a REST operation found by matching a
//! concrete path such as `/repos/acme/widgets/check-runs` against the
//! document's path templates.
//!
//! Two documents are vendored under `tests/fixtures/github/` and embedded in the
//! binary: GitHub's webhook payload schemas ([`OpenApiDoc::github_webhooks`],
//! OpenAPI 3.1, i.e. JSON Schema 2020-12) and a subset of GitHub's REST API
//! ([`OpenApiDoc::github_rest`], OpenAPI 3.0.3).
//!
//! OpenAPI 3.0 schemas are not JSON Schema; they are converted once, when the
//! document is loaded:
//! - `nullable: true` next to a `type` becomes `type: [T, "null"]` (and `null`
//!   is added to an `enum`);
//! - `nullable: true` on a `$ref`/`allOf`/`anyOf`/`oneOf`/untyped `enum` wraps the
//!   schema as `anyOf: [schema, {type: "null"}]`;
//! - siblings of `$ref` are dropped (3.0 ignores them);
//! - boolean `exclusiveMinimum`/`exclusiveMaximum` become the numeric form.
//!
//! Every schema is then validated as JSON Schema 2020-12 with the whole
//! document registered as one resource, so `$ref: "#/components/schemas/..."`
//! resolves naturally. `format` is an annotation only (GitHub's examples do not
//! always agree with strict format checkers). Validators are compiled lazily,
//! once per schema location, and cached.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Registry, ValidationError, Validator};
use serde_json::{Map, Value};

/// URI under which a document is registered as a JSON Schema resource.
const DOC_URI: &str = "urn:bg-agent:openapi-document";

/// Longest rendering of an instance value inside a violation message.
const MAX_VALUE_CHARS: usize = 120;

static GITHUB_WEBHOOKS_JSON: &str =
    include_str!("../../../tests/fixtures/github/webhooks-subset.json");
static GITHUB_REST_JSON: &str = include_str!("../../../tests/fixtures/github/rest-api-subset.json");

/// An error finding something in (or loading) an OpenAPI document.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("the OpenAPI document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an OpenAPI 3.x document: {0}")]
    NotOpenApi(String),
    #[error("the OpenAPI document cannot be registered as a schema resource: {0}")]
    Registry(String),
    #[error("no schema #/components/schemas/{0} in the document")]
    UnknownSchema(String),
    #[error(
        "no webhook schema for event {event:?} with action {action:?} (looked for {looked_for:?})"
    )]
    UnknownWebhook {
        event: String,
        action: Option<String>,
        looked_for: Vec<String>,
    },
    #[error("no path template matches {0:?}")]
    UnknownPath(String),
    #[error("{method} is not an operation of {template}")]
    UnknownMethod { method: String, template: String },
    #[error("{method} {template} takes no JSON request body")]
    NoRequestBody { method: String, template: String },
    #[error("{method} {template} declares no response for status {status}")]
    UnknownStatus {
        method: String,
        template: String,
        status: u16,
    },
    #[error("broken reference {0:?} in the document")]
    BrokenRef(String),
    #[error("the schema at #{pointer} cannot be compiled: {message}")]
    Compile { pointer: String, message: String },
}

/// One way in which a value does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the validated value (`""` is the value itself).
    pub instance_path: String,
    /// Keyword location in the schema, for debugging the schema side. Where
    /// one `$ref`ed schema is used in several places this may name the first
    /// place it was compiled at rather than the one that failed.
    pub schema_path: String,
    /// Human-readable description; long values are abbreviated.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.instance_path.is_empty() {
            "(root)"
        } else {
            &self.instance_path
        };
        write!(f, "at {at}: {}", self.message)
    }
}

/// Why a value was not accepted.
///
/// Either the value violates its schema ([`SchemaViolations::Invalid`], every
/// violation listed), or no schema could be found for what was asked
/// ([`SchemaViolations::Lookup`], e.g. an unknown path or event).
#[derive(Debug, thiserror::Error)]
pub enum SchemaViolations {
    #[error("{}", render_violations(.target, .violations))]
    Invalid {
        /// What the value was validated against, e.g. `webhook issue_comment.created`.
        target: String,
        violations: Vec<Violation>,
    },
    #[error(transparent)]
    Lookup(#[from] OpenApiError),
}

impl SchemaViolations {
    /// The violations (empty for [`SchemaViolations::Lookup`]).
    pub fn violations(&self) -> &[Violation] {
        match self {
            Self::Invalid { violations, .. } => violations,
            Self::Lookup(_) => &[],
        }
    }

    /// The lookup error, when no schema was found.
    pub fn lookup_error(&self) -> Option<&OpenApiError> {
        match self {
            Self::Invalid { .. } => None,
            Self::Lookup(err) => Some(err),
        }
    }

    /// True when some violation is at `instance_path` (a JSON pointer).
    pub fn has_violation_at(&self, instance_path: &str) -> bool {
        self.violations()
            .iter()
            .any(|v| v.instance_path == instance_path)
    }
}

fn render_violations(target: &str, violations: &[Violation]) -> String {
    let mut out = format!(
        "value does not match {target}: {} violation(s)",
        violations.len()
    );
    for v in violations {
        let _ = write!(out, "\n  - {v}");
    }
    out
}

/// A concrete path matched against one of the document's path templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    /// The template, e.g. `/repos/{owner}/{repo}/check-runs`.
    pub template: String,
    /// Template parameters in order, e.g. `[("owner", "acme"), ("repo", "widgets")]`,
    /// exactly as they appear in the path (not percent-decoded).
    pub params: Vec<(String, String)>,
}

impl PathMatch {
    /// The value of one path parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug)]
struct PathTemplate {
    template: String,
    segments: Vec<Segment>,
}

type CompiledSlot = Arc<OnceLock<Result<Arc<Validator>, String>>>;

/// An OpenAPI document ready to validate values against its schemas.
pub struct OpenApiDoc {
    /// The document, with OpenAPI 3.0 schemas converted to JSON Schema.
    doc: Value,
    version: String,
    registry: Registry,
    templates: Vec<PathTemplate>,
    /// Compiled validators keyed by the JSON pointer of their schema.
    cache: Mutex<HashMap<String, CompiledSlot>>,
}

impl fmt::Debug for OpenApiDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenApiDoc")
            .field("openapi", &self.version)
            .field("paths", &self.templates.len())
            .finish_non_exhaustive()
    }
}

impl OpenApiDoc {
    /// Parses an OpenAPI 3.0.x or 3.1.x document.
    pub fn from_json_str(s: &str) -> Result<Self, OpenApiError> {
        let doc: Value = serde_json::from_str(s)?;
        Self::from_value(doc)
    }

    /// Wraps an already-parsed OpenAPI 3.0.x or 3.1.x document.
    pub fn from_value(mut doc: Value) -> Result<Self, OpenApiError> {
        let version = doc
            .get("openapi")
            .and_then(Value::as_str)
            .ok_or_else(|| OpenApiError::NotOpenApi("no `openapi` version string".into()))?
            .to_owned();
        if !version.starts_with("3.") {
            return Err(OpenApiError::NotOpenApi(format!(
                "unsupported version {version}"
            )));
        }
        if version.starts_with("3.0") {
            convert_openapi_30(&mut doc);
        }
        let templates = doc
            .get("paths")
            .and_then(Value::as_object)
            .map(|paths| paths.keys().map(|t| parse_template(t)).collect())
            .unwrap_or_default();
        let registry = Registry::try_new(DOC_URI, Draft::Draft202012.create_resource(doc.clone()))
            .map_err(|e| OpenApiError::Registry(e.to_string()))?;
        Ok(Self {
            doc,
            version,
            registry,
            templates,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// GitHub's webhook payload schemas (`@octokit/openapi-webhooks` 12.1.0, subset).
    pub fn github_webhooks() -> &'static OpenApiDoc {
        static DOC: OnceLock<OpenApiDoc> = OnceLock::new();
        DOC.get_or_init(|| embedded(GITHUB_WEBHOOKS_JSON, "webhooks-subset.json"))
    }

    /// GitHub's REST API description (`@octokit/openapi` 23.0.2, subset).
    pub fn github_rest() -> &'static OpenApiDoc {
        static DOC: OnceLock<OpenApiDoc> = OnceLock::new();
        DOC.get_or_init(|| embedded(GITHUB_REST_JSON, "rest-api-subset.json"))
    }

    /// The document's `openapi` version, e.g. `3.0.3`.
    pub fn openapi_version(&self) -> &str {
        &self.version
    }

    /// The (converted) document itself.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// The schema `#/components/schemas/{name}` (converted to JSON Schema).
    pub fn component_schema(&self, name: &str) -> Option<&Value> {
        self.doc.get("components")?.get("schemas")?.get(name)
    }

    /// Validates `value` against `#/components/schemas/{name}`.
    pub fn validate_component(&self, name: &str, value: &Value) -> Result<(), SchemaViolations> {
        if self.component_schema(name).is_none() {
            return Err(OpenApiError::UnknownSchema(name.to_owned()).into());
        }
        let pointer = format!("/components/schemas/{}", escape_pointer_token(name));
        self.validate_pointer(&pointer, &format!("#/components/schemas/{name}"), value)
    }

    /// Validates a webhook payload, given the `X-GitHub-Event` header value and
    /// the payload's `action`: `("issue_comment", Some("created"))` is checked
    /// against webhook `issue-comment-created` (schema
    /// `webhook-issue-comment-created`), `("ping", None)` against `ping`.
    pub fn validate_webhook(
        &self,
        event: &str,
        action: Option<&str>,
        value: &Value,
    ) -> Result<(), SchemaViolations> {
        let pointer = self.webhook_schema_pointer(event, action)?;
        let target = match action {
            Some(action) => format!("webhook {event}.{action}"),
            None => format!("webhook {event}"),
        };
        self.validate_pointer(&pointer, &target, value)
    }

    /// The JSON pointer of the schema of a webhook payload.
    pub fn webhook_schema_pointer(
        &self,
        event: &str,
        action: Option<&str>,
    ) -> Result<String, OpenApiError> {
        let key = match action {
            Some(action) => format!("{event}-{action}"),
            None => event.to_owned(),
        }
        .replace('_', "-");
        let in_webhooks = format!(
            "/webhooks/{}/post/requestBody/content/application~1json/schema",
            escape_pointer_token(&key)
        );
        if self.doc.pointer(&in_webhooks).is_some() {
            return Ok(in_webhooks);
        }
        let component = format!("webhook-{key}");
        if self.component_schema(&component).is_some() {
            return Ok(format!(
                "/components/schemas/{}",
                escape_pointer_token(&component)
            ));
        }
        Err(OpenApiError::UnknownWebhook {
            event: event.to_owned(),
            action: action.map(str::to_owned),
            looked_for: vec![
                format!("#{in_webhooks}"),
                format!("#/components/schemas/{component}"),
            ],
        })
    }

    /// Matches a concrete path (`/repos/acme/widgets/check-runs`, an optional
    /// `?query` is ignored) against the document's path templates. Literal
    /// segments win over parameters; a trailing parameter may span several
    /// segments (`/contents/{path}`, `/git/refs/{ref}`) when nothing else
    /// matches.
    pub fn match_path(&self, path: &str) -> Option<PathMatch> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Rank: an exact segment count beats a spanning trailing parameter,
        // then a literal segment beats a parameter at the first difference.
        let mut best: Option<((bool, Vec<bool>), PathMatch)> = None;
        for template in &self.templates {
            let Some((params, greedy)) = match_segments(&template.segments, &parts) else {
                continue;
            };
            let literal_mask = template
                .segments
                .iter()
                .map(|s| matches!(s, Segment::Literal(_)))
                .collect();
            let rank = (!greedy, literal_mask);
            if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
                let found = PathMatch {
                    template: template.template.clone(),
                    params,
                };
                best = Some((rank, found));
            }
        }
        best.map(|(_, found)| found)
    }

    /// The JSON pointer of the request body schema of `method path`.
    pub fn request_schema_pointer(&self, method: &str, path: &str) -> Result<String, OpenApiError> {
        let (op_pointer, template, method) = self.operation(method, path)?;
        let no_body = || OpenApiError::NoRequestBody {
            method: method.clone(),
            template: template.clone(),
        };
        let body_pointer = format!("{op_pointer}/requestBody");
        if self.doc.pointer(&body_pointer).is_none() {
            return Err(no_body());
        }
        let (body_pointer, _) = self.follow_refs(&body_pointer)?;
        json_content_schema_pointer(&self.doc, &body_pointer).ok_or_else(no_body)
    }

    /// The JSON pointer of the response body schema of `method path` for
    /// `status` (exact status, then `2XX`-style range, then `default`), or
    /// `None` when that response has no JSON body (e.g. `204`).
    pub fn response_schema_pointer(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<Option<String>, OpenApiError> {
        let (op_pointer, template, method) = self.operation(method, path)?;
        let responses = self
            .doc
            .pointer(&format!("{op_pointer}/responses"))
            .and_then(Value::as_object);
        let exact = status.to_string();
        let range = format!("{}XX", status / 100);
        let key = responses.and_then(|responses| {
            [exact.as_str(), range.as_str(), "default"]
                .into_iter()
                .find_map(|wanted| {
                    responses
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(wanted))
                        .cloned()
                })
        });
        let Some(key) = key else {
            return Err(OpenApiError::UnknownStatus {
                method,
                template,
                status,
            });
        };
        let (response_pointer, _) = self.follow_refs(&format!(
            "{op_pointer}/responses/{}",
            escape_pointer_token(&key)
        ))?;
        Ok(json_content_schema_pointer(&self.doc, &response_pointer))
    }

    /// Validates the JSON request body of `method path` (a concrete path,
    /// matched against the path templates).
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<(), SchemaViolations> {
        let pointer = self.request_schema_pointer(method, path)?;
        let target = format!("request body of {} {path}", method.to_ascii_uppercase());
        self.validate_pointer(&pointer, &target, body)
    }

    /// Validates the JSON response body of `method path` with `status`. A
    /// response declared without a JSON body only accepts `null` (no body).
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), SchemaViolations> {
        let target = format!(
            "{status} response body of {} {path}",
            method.to_ascii_uppercase()
        );
        match self.response_schema_pointer(method, path, status)? {
            Some(pointer) => self.validate_pointer(&pointer, &target, body),
            None if body.is_null() => Ok(()),
            None => Err(SchemaViolations::Invalid {
                target,
                violations: vec![Violation {
                    instance_path: String::new(),
                    schema_path: String::new(),
                    message: "this response is declared without a JSON body".into(),
                }],
            }),
        }
    }

    /// Validates `value` against the schema at a JSON pointer into the
    /// document (e.g. `/components/schemas/simple-user`); `target` names it
    /// in the error.
    pub fn validate_pointer(
        &self,
        pointer: &str,
        target: &str,
        value: &Value,
    ) -> Result<(), SchemaViolations> {
        let validator = self.validator(pointer)?;
        let mut violations = Vec::new();
        for error in validator.iter_errors(value) {
            collect_violations(&error, &mut violations);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(SchemaViolations::Invalid {
                target: target.to_owned(),
                violations,
            })
        }
    }

    /// The compiled validator of the schema at `pointer`, compiled on first use.
    fn validator(&self, pointer: &str) -> Result<Arc<Validator>, OpenApiError> {
        let (pointer, _) = self.follow_refs(pointer)?;
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(cache.entry(pointer.clone()).or_default())
        };
        // Compiled outside the map lock: other schemas compile concurrently,
        // while the OnceLock makes each schema compile exactly once.
        let compiled = slot.get_or_init(|| self.compile(&pointer));
        compiled.clone().map_err(|message| OpenApiError::Compile {
            pointer: pointer.clone(),
            message,
        })
    }

    fn compile(&self, pointer: &str) -> Result<Arc<Validator>, String> {
        let schema = serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("{DOC_URI}#{}", encode_fragment(pointer)),
        });
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(false)
            .with_registry(self.registry.clone())
            .build(&schema)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// Follows local `$ref`s (`#/...`) starting at `pointer` until a value
    /// that is not a bare reference; returns its pointer and the value.
    fn follow_refs(&self, pointer: &str) -> Result<(String, &Value), OpenApiError> {
        let mut pointer = pointer.to_owned();
        for _ in 0..32 {
            let value = self
                .doc
                .pointer(&pointer)
                .ok_or_else(|| OpenApiError::BrokenRef(format!("#{pointer}")))?;
            let reference = value
                .as_object()
                .and_then(|o| o.get("$ref"))
                .and_then(Value::as_str);
            match reference {
                // A `$ref` that carries other keywords is a schema of its own.
                Some(r)
                    if r.starts_with('#') && value.as_object().is_some_and(|o| o.len() == 1) =>
                {
                    pointer = percent_encoding::percent_decode_str(&r[1..])
                        .decode_utf8_lossy()
                        .into_owned();
                }
                _ => return Ok((pointer, value)),
            }
        }
        Err(OpenApiError::BrokenRef(format!(
            "#{pointer} (reference loop)"
        )))
    }

    /// Finds the operation for `method path`: its pointer, template and the
    /// lower-case method.
    fn operation(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(String, String, String), OpenApiError> {
        let matched = self
            .match_path(path)
            .ok_or_else(|| OpenApiError::UnknownPath(path.to_owned()))?;
        let method = method.to_ascii_lowercase();
        let item_pointer = format!("/paths/{}", escape_pointer_token(&matched.template));
        let (item_pointer, _) = self.follow_refs(&item_pointer)?;
        let op_pointer = format!("{item_pointer}/{}", escape_pointer_token(&method));
        let is_operation = matches!(
            method.as_str(),
            "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
        );
        if !is_operation || self.doc.pointer(&op_pointer).is_none() {
            return Err(OpenApiError::UnknownMethod {
                method: method.to_ascii_uppercase(),
                template: matched.template,
            });
        }
        Ok((op_pointer, matched.template, method.to_ascii_uppercase()))
    }
}

/// Parses an embedded document; these are compiled into the binary and
/// covered by tests, so failing here is a build defect, not bad input.
fn embedded(json: &str, name: &str) -> OpenApiDoc {
    match OpenApiDoc::from_json_str(json) {
        Ok(doc) => doc,
        Err(err) => panic!("embedded tests/fixtures/github/{name} is broken: {err}"),
    }
}

/// The pointer of the `application/json` (or other `+json`) schema of a
/// request body or response object at `pointer`.
fn json_content_schema_pointer(doc: &Value, pointer: &str) -> Option<String> {
    let content = doc.pointer(pointer)?.get("content")?.as_object()?;
    let media = if content.contains_key("application/json") {
        "application/json"
    } else {
        content.keys().find(|k| {
            let essence = k.split(';').next().unwrap_or_default().trim();
            essence.ends_with("/json") || essence.ends_with("+json")
        })?
    };
    content.get(media)?.get("schema")?;
    Some(format!(
        "{pointer}/content/{}/schema",
        escape_pointer_token(media)
    ))
}

fn parse_template(template: &str) -> PathTemplate {
    let segments = template
        .trim_matches('/')
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(s.to_owned()),
            },
        )
        .collect();
    PathTemplate {
        template: template.to_owned(),
        segments,
    }
}

/// Matches path parts against template segments; returns the parameters and
/// whether a trailing parameter had to span several parts.
fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<(Vec<(String, String)>, bool)> {
    let greedy = match parts.len().cmp(&segments.len()) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Greater if matches!(segments.last(), Some(Segment::Param(_))) => true,
        _ => return None,
    };
    let mut params = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let part = parts.get(i)?;
        match segment {
            Segment::Literal(literal) => {
                if literal != part {
                    return None;
                }
            }
            Segment::Param(name) => {
                if part.is_empty() {
                    return None;
                }
                let value = if greedy && i + 1 == segments.len() {
                    parts[i..].join("/")
                } else {
                    (*part).to_owned()
                };
                params.push((name.clone(), value));
            }
        }
    }
    Some((params, greedy))
}

fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Percent-encodes a JSON pointer for use as a URI fragment.
fn encode_fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for byte in pointer.bytes() {
        if byte.is_ascii_alphanumeric() || b"/~-._!$&'()*+,;=:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Turns one jsonschema error into violations. For an `anyOf`/`oneOf` that
/// nothing matched, the errors of the closest alternative are reported
/// instead (so a bad field inside a nullable object is named), unless every
/// alternative already fails on the value's type.
fn collect_violations(error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    let alternatives = match error.kind() {
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            Some(context)
        }
        _ => None,
    };
    if let Some(alternatives) = alternatives {
        let instance_path = error.instance_path().as_str();
        let closest = alternatives
            .iter()
            .filter(|errors| {
                !errors.is_empty()
                    && !errors.iter().any(|e| {
                        e.instance_path().as_str() == instance_path
                            && matches!(e.kind(), ValidationErrorKind::Type { .. })
                    })
            })
            .min_by_key(|errors| errors.len());
        if let Some(errors) = closest {
            for nested in errors {
                collect_violations(nested, out);
            }
            return;
        }
    }
    out.push(Violation {
        instance_path: error.instance_path().as_str().to_owned(),
        schema_path: error.schema_path().as_str().to_owned(),
        message: error.masked_with(abbreviate(error.instance())).to_string(),
    });
}

fn abbreviate(value: &Value) -> String {
    let rendered = value.to_string();
    if rendered.chars().count() <= MAX_VALUE_CHARS {
        return rendered;
    }
    let summary = match value {
        Value::Object(map) => format!("an object with {} keys", map.len()),
        Value::Array(items) => format!("an array of {} items", items.len()),
        _ => String::new(),
    };
    let head: String = rendered.chars().take(MAX_VALUE_CHARS).collect();
    if summary.is_empty() {
        format!("{head}…")
    } else {
        format!("{summary} ({head}…)")
    }
}

/// Converts every schema of an OpenAPI 3.0 document to JSON Schema 2020-12.
fn convert_openapi_30(doc: &mut Value) {
    walk_openapi(doc);
}

/// Walks OpenAPI structure (not schemas) looking for schemas.
fn walk_openapi(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match key.as_str() {
                    "schema" => convert_schema(child),
                    "schemas" => {
                        if let Value::Object(schemas) = child {
                            schemas.values_mut().for_each(convert_schema);
                        }
                    }
                    // Example payloads and extensions are data, not schemas.
                    "example" | "examples" | "default" => {}
                    k if k.starts_with("x-") => {}
                    _ => walk_openapi(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk_openapi),
        _ => {}
    }
}

/// Converts one OpenAPI 3.0 schema object (and its subschemas) in place.
fn convert_schema(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Value::Object(children) = child {
                    children.values_mut().for_each(convert_schema);
                }
            }
            "items" | "prefixItems" | "allOf" | "anyOf" | "oneOf" => match child {
                Value::Array(children) => children.iter_mut().for_each(convert_schema),
                other => convert_schema(other),
            },
            "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "unevaluatedProperties"
            | "unevaluatedItems" => convert_schema(child),
            _ => {}
        }
    }
    // OpenAPI 3.0: "properties adjacent to $ref are ignored" — except
    // `nullable`, which GitHub never puts there but is handled below anyway.
    if map.contains_key("$ref") {
        map.retain(|k, _| k == "$ref" || k == "nullable");
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(flag)) = map.get(exclusive).cloned() {
            map.remove(exclusive);
            if flag && let Some(limit) = map.remove(bound) {
                map.insert(exclusive.to_owned(), limit);
            }
        }
    }
    let nullable = matches!(map.remove("nullable"), Some(Value::Bool(true)));
    if !nullable {
        return;
    }
    let composed = ["$ref", "allOf", "anyOf", "oneOf"]
        .iter()
        .any(|k| map.contains_key(*k));
    let has_enum = map.contains_key("enum");
    match map.get_mut("type") {
        Some(Value::String(ty)) if !composed => {
            let ty = std::mem::take(ty);
            let types = if ty == "null" {
                vec![Value::from("null")]
            } else {
                vec![Value::from(ty), Value::from("null")]
            };
            map.insert("type".into(), Value::Array(types));
            allow_null_in_enum(map);
        }
        Some(Value::Array(types)) if !composed => {
            if !types.iter().any(|t| t == "null") {
                types.push(Value::from("null"));
            }
            allow_null_in_enum(map);
        }
        // No type, no composition, no enum: the schema already accepts null.
        None if !composed && !has_enum => {}
        _ => {
            let original = Value::Object(std::mem::take(map));
            map.insert(
                "anyOf".into(),
                Value::Array(vec![original, serde_json::json!({"type": "null"})]),
            );
        }
    }
}

fn allow_null_in_enum(map: &mut Map<String, Value>) {
    if let Some(Value::Array(options)) = map.get_mut("enum")
        && !options.iter().any(Value::is_null)
    {
        options.push(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc_30(schemas: Value) -> OpenApiDoc {
        let doc = json!({
            "openapi": "3.0.3",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/things/{id}": {
                    "get": {"responses": {
                        "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/thing"}}}},
                        "204": {"description": "none"},
                        "4XX": {"$ref": "#/components/responses/error"}
                    }},
                    "put": {
                        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/thing"}}}},
                        "responses": {"default": {"description": "x"}}
                    }
                },
                "/things/special": {"get": {"responses": {"200": {"description": "ok"}}}},
                "/files/{path}": {"get": {"responses": {"200": {"description": "ok"}}}}
            },
            "components": {
                "schemas": schemas,
                "responses": {"error": {"description": "e", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}
                }}}}}
            }
        });
        match OpenApiDoc::from_value(doc) {
            Ok(doc) => doc,
            Err(err) => panic!("{err}"),
        }
    }

    fn sample() -> OpenApiDoc {
        doc_30(json!({
            "thing": {
                "type": "object",
                "required": ["name", "color", "owner", "tag", "any"],
                "properties": {
                    "name": {"type": "string", "nullable": true},
                    "color": {"type": "string", "enum": ["red", "blue"], "nullable": true},
                    "owner": {"allOf": [{"$ref": "#/components/schemas/user"}], "nullable": true},
                    "tag": {"enum": ["a", "b"], "nullable": true},
                    "any": {"nullable": true},
                    "count": {"type": "integer", "minimum": 0, "exclusiveMinimum": true},
                    "nullable": {"type": "boolean"}
                }
            },
            "user": {"type": "object", "required": ["login"], "properties": {"login": {"type": "string"}}},
            "ref_user": {"$ref": "#/components/schemas/user", "nullable": true, "description": "ignored"}
        }))
    }

    #[test]
    fn openapi_nullable_conversion() {
        let doc = sample();
        let thing = doc.component_schema("thing").cloned().unwrap_or_default();
        assert_eq!(
            thing["properties"]["name"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(
            thing["properties"]["color"]["enum"],
            json!(["red", "blue", null])
        );
        assert_eq!(
            thing["properties"]["owner"]["anyOf"][1],
            json!({"type": "null"})
        );
        assert_eq!(
            thing["properties"]["tag"]["anyOf"][1],
            json!({"type": "null"})
        );
        assert_eq!(thing["properties"]["any"], json!({}));
        assert_eq!(thing["properties"]["count"]["exclusiveMinimum"], json!(0));
        // A property *named* `nullable` is left alone.
        assert_eq!(thing["properties"]["nullable"], json!({"type": "boolean"}));
        let all_null =
            json!({"name": null, "color": null, "owner": null, "tag": null, "any": null});
        assert!(doc.validate_component("thing", &all_null).is_ok());
        let set = json!({"name": "n", "color": "red", "owner": {"login": "o"}, "tag": "a", "any": 1, "count": 1});
        assert!(doc.validate_component("thing", &set).is_ok());
        assert!(doc.validate_component("ref_user", &Value::Null).is_ok());
        assert!(
            doc.validate_component("ref_user", &json!({"login": "x"}))
                .is_ok()
        );
    }

    #[test]
    fn openapi_violations_are_listed() {
        let doc = sample();
        let bad = json!({"name": 1, "color": "green", "owner": {}, "tag": "c", "count": 0});
        let err = match doc.validate_component("thing", &bad) {
            Err(err) => err,
            Ok(()) => panic!("accepted {bad}"),
        };
        let text = err.to_string();
        for path in ["/name", "/color", "/tag", "/count"] {
            assert!(err.has_violation_at(path), "{path} missing in {text}");
        }
        // The nullable `owner` reports the missing field inside it, not just "anyOf".
        assert!(err.has_violation_at("/owner"), "{text}");
        assert!(text.contains("\"login\" is a required property"), "{text}");
        assert!(text.contains("\"any\" is a required property"), "{text}");
    }

    #[test]
    fn openapi_paths_and_lookups() {
        let doc = sample();
        let m = doc.match_path("/things/42?x=1");
        assert_eq!(
            m.as_ref().map(|m| m.template.as_str()),
            Some("/things/{id}")
        );
        assert_eq!(m.as_ref().and_then(|m| m.param("id")), Some("42"));
        let special = doc.match_path("/things/special").map(|m| m.template);
        assert_eq!(special.as_deref(), Some("/things/special"));
        let file = doc.match_path("/files/src/lib.rs");
        assert_eq!(
            file.and_then(|m| m.param("path").map(str::to_owned))
                .as_deref(),
            Some("src/lib.rs")
        );
        assert!(doc.match_path("/nope").is_none());

        let ok = json!({"name": null, "color": null, "owner": null, "tag": null, "any": null});
        assert!(doc.validate_request("put", "/things/1", &ok).is_ok());
        assert!(
            doc.validate_request("PUT", "/things/1", &json!({}))
                .is_err()
        );
        assert!(doc.validate_response("GET", "/things/1", 200, &ok).is_ok());
        assert!(
            doc.validate_response("GET", "/things/1", 204, &Value::Null)
                .is_ok()
        );
        assert!(
            doc.validate_response("GET", "/things/1", 204, &json!({}))
                .is_err()
        );
        assert!(
            doc.validate_response("GET", "/things/1", 404, &json!({"message": "Not Found"}))
                .is_ok()
        );
        assert!(
            doc.validate_response("GET", "/things/1", 404, &json!({}))
                .is_err()
        );

        let lookup = |r: Result<(), SchemaViolations>| {
            r.err()
                .and_then(|e| e.lookup_error().map(ToString::to_string))
        };
        assert!(
            lookup(doc.validate_request("GET", "/things/1", &ok))
                .is_some_and(|e| e.contains("no JSON request body"))
        );
        assert!(
            lookup(doc.validate_request("POST", "/things/1", &ok))
                .is_some_and(|e| e.contains("not an operation"))
        );
        assert!(
            lookup(doc.validate_request("PUT", "/other", &ok))
                .is_some_and(|e| e.contains("no path template"))
        );
        assert!(
            lookup(doc.validate_response("GET", "/things/special", 500, &ok))
                .is_some_and(|e| e.contains("status 500"))
        );
        assert!(lookup(doc.validate_component("missing", &ok)).is_some());
        assert!(lookup(doc.validate_webhook("push", None, &ok)).is_some());
    }

    #[test]
    fn openapi_rejects_non_openapi_documents() {
        assert!(OpenApiDoc::from_json_str("{").is_err());
        assert!(OpenApiDoc::from_json_str("{}").is_err());
        assert!(OpenApiDoc::from_json_str(r#"{"openapi": "2.0"}"#).is_err());
    }

    #[test]
    fn openapi_fragment_round_trip() {
        let pointer =
            "/paths/~1repos~1{owner}~1{repo}/get/responses/200/content/application~1json/schema";
        assert_eq!(
            percent_encoding::percent_decode_str(&encode_fragment(pointer)).decode_utf8_lossy(),
            pointer
        );
    }

    #[test]
    fn openapi_github_docs_load() {
        assert!(
            OpenApiDoc::github_webhooks()
                .openapi_version()
                .starts_with("3.1")
        );
        assert!(
            OpenApiDoc::github_rest()
                .openapi_version()
                .starts_with("3.0")
        );
        assert!(
            OpenApiDoc::github_rest()
                .component_schema("simple-user")
                .is_some()
        );
        let rest = OpenApiDoc::github_rest();
        let routes = [
            ("/repos/acme/widgets", "/repos/{owner}/{repo}", None),
            (
                "/repos/acme/widgets/issues/comments/900001/reactions",
                "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
                Some(("comment_id", "900001")),
            ),
            (
                "/repos/acme/widgets/issues/17/labels/bg-agent%3Aupgrade",
                "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}",
                Some(("name", "bg-agent%3Aupgrade")),
            ),
            (
                "/repos/acme/widgets/git/refs/heads/bg-agent/17-upgrade-lodash",
                "/repos/{owner}/{repo}/git/refs/{ref}",
                Some(("ref", "heads/bg-agent/17-upgrade-lodash")),
            ),
            (
                "/repos/acme/widgets/contents/src/index.js",
                "/repos/{owner}/{repo}/contents/{path}",
                Some(("path", "src/index.js")),
            ),
        ];
        for (path, template, param) in routes {
            let found = rest.match_path(path);
            assert_eq!(
                found.as_ref().map(|m| m.template.as_str()),
                Some(template),
                "{path}"
            );
            if let Some((name, value)) = param {
                assert_eq!(
                    found.as_ref().and_then(|m| m.param(name)),
                    Some(value),
                    "{path}"
                );
            }
        }
        let pointer =
            OpenApiDoc::github_webhooks().webhook_schema_pointer("issue_comment", Some("created"));
        assert!(pointer.is_ok_and(|p| p.contains("issue-comment-created")));
    }
}
