//! Templates: reusable, parameterised instructions. A template declares its parameters
//! (type, required, default, pattern); a command's arguments are bound to them, checked,
//! and rendered into the `{{name}}` placeholders of its instructions.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;

use crate::command::{CommandKind, suggest};
use crate::markdown::{inert, inline_code};

/// Longest instructions a template may render to, so a comment cannot blow up a task row.
const MAX_RENDERED_CHARS: usize = 64 * 1024;
const MAX_VALUE_CHARS: usize = 1024;
/// User text quoted in a reply (a pattern, a default, a template's name) is cut here.
const MAX_SHOWN_CHARS: usize = 120;

/// How a task's change is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum Recipe {
    /// Deterministic: set an npm dependency's version in `package.json` and the lockfile.
    NpmUpgrade,
    /// A coding agent (a configured program) gets the rendered instructions on stdin.
    Agent,
}

impl Recipe {
    pub fn as_str(self) -> &'static str {
        match self {
            Recipe::NpmUpgrade => "npm_upgrade",
            Recipe::Agent => "agent",
        }
    }
}

impl std::str::FromStr for Recipe {
    type Err = super::UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Recipe::NpmUpgrade, Recipe::Agent]
            .into_iter()
            .find(|recipe| recipe.as_str() == s)
            .ok_or_else(|| super::UnknownState(s.to_owned()))
    }
}

/// Where a template was declared; a repository's own shadows the database's, which
/// shadow the built-ins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum TemplateSource {
    BuiltIn,
    Database,
    Repository,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    #[default]
    String,
    Integer,
    Boolean,
}

impl ParamKind {
    fn describe(self) -> &'static str {
        match self {
            ParamKind::String => "text",
            ParamKind::Integer => "a whole number",
            ParamKind::Boolean => "`true` or `false`",
        }
    }

    fn accepts(self, value: &str) -> bool {
        match self {
            ParamKind::String => true,
            ParamKind::Integer => value.parse::<i64>().is_ok(),
            ParamKind::Boolean => matches!(value, "true" | "false"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parameter {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: ParamKind,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Instructions with `{{name}}` placeholders.
    pub instructions: String,
    pub recipe: Recipe,
    /// At most [`super::MAX_TIMEOUT_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    pub source: TemplateSource,
}

/// Why a template definition is unusable (reported to whoever declared it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template name {0:?} must be a lowercase letter then up to 63 of a-z, 0-9, - or _")]
    BadName(String),
    #[error("{0:?} is a built-in command and cannot name a template")]
    ReservedName(String),
    #[error(
        "template {template}: parameter name {name:?} must be a lowercase letter then a-z, 0-9 or _"
    )]
    BadParameterName { template: String, name: String },
    #[error("template {template}: parameter {name} is declared twice")]
    DuplicateParameter { template: String, name: String },
    #[error("template {template}: parameter {name} has an invalid pattern: {reason}")]
    BadPattern {
        template: String,
        name: String,
        reason: String,
    },
    #[error(
        "template {template}: the default of parameter {name} does not match its own type or pattern"
    )]
    BadDefault { template: String, name: String },
    #[error(
        "template {template}: instructions use {{{{{placeholder}}}}}, which is not a parameter"
    )]
    UnknownPlaceholder {
        template: String,
        placeholder: String,
    },
    #[error("template {template}: instructions are empty")]
    EmptyInstructions { template: String },
    #[error("template {template}: a required parameter cannot follow an optional one")]
    RequiredAfterOptional { template: String },
    #[error("template {template}: timeout must be between 60 and 3600 seconds")]
    BadTimeout { template: String },
}

/// Why a command's arguments do not fit a template. Rendered as a reply naming the
/// parameter and the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("missing parameter {name}")]
    Missing { name: String },
    #[error("parameter {name} is {value:?}, which does not match the expected form")]
    Invalid { name: String, value: String },
    #[error("unknown parameter {name}")]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("parameter {name} is given twice")]
    Repeated { name: String },
    #[error("too many arguments: {extra:?} is not expected")]
    TooMany { extra: String },
}

static PLACEHOLDER: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}").expect("a constant, valid regex")
});

fn is_template_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_parameter_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Compiles a parameter pattern so that it must match the whole value.
fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

impl Parameter {
    fn matches(&self, value: &str) -> bool {
        value.chars().count() <= MAX_VALUE_CHARS
            && self.kind.accepts(value)
            && self
                .pattern
                .as_deref()
                .is_none_or(|p| anchored(p).is_ok_and(|re| re.is_match(value)))
    }

    /// "`<package>` (text matching `^...$`)" — the form a reply shows.
    pub fn expected_form(&self) -> String {
        // A repository's template is text from people too: its pattern, default and
        // description are shown, never read as Markdown.
        let mut form = format!("`<{}>`: {}", self.name, self.kind.describe());
        if let Some(pattern) = &self.pattern {
            let _ = write!(form, " matching {}", inline_code(pattern, MAX_SHOWN_CHARS));
        }
        if let Some(default) = &self.default {
            let _ = write!(form, " (default {})", inline_code(default, MAX_SHOWN_CHARS));
        } else if !self.required {
            form.push_str(" (optional)");
        }
        if !self.description.is_empty() {
            let _ = write!(form, " — {}", inert(&self.description));
        }
        form
    }
}

impl Template {
    /// Checks a definition once, when it is declared or loaded, so binding can trust it.
    pub fn validate(&self) -> Result<(), TemplateError> {
        let template = || self.name.clone();
        if !is_template_name(&self.name) {
            return Err(TemplateError::BadName(self.name.clone()));
        }
        if CommandKind::ALL
            .iter()
            .filter_map(|kind| kind.keyword())
            .any(|keyword| keyword == self.name)
        {
            return Err(TemplateError::ReservedName(self.name.clone()));
        }
        if self.instructions.trim().is_empty() {
            return Err(TemplateError::EmptyInstructions {
                template: template(),
            });
        }
        if self
            .timeout_secs
            .is_some_and(|t| !(60..=super::MAX_TIMEOUT_SECS).contains(&t))
        {
            return Err(TemplateError::BadTimeout {
                template: template(),
            });
        }
        let mut seen_optional = false;
        for (i, param) in self.parameters.iter().enumerate() {
            if !is_parameter_name(&param.name) {
                return Err(TemplateError::BadParameterName {
                    template: template(),
                    name: param.name.clone(),
                });
            }
            if self.parameters[..i].iter().any(|p| p.name == param.name) {
                return Err(TemplateError::DuplicateParameter {
                    template: template(),
                    name: param.name.clone(),
                });
            }
            if let Some(pattern) = &param.pattern
                && let Err(e) = anchored(pattern)
            {
                return Err(TemplateError::BadPattern {
                    template: template(),
                    name: param.name.clone(),
                    reason: e.to_string(),
                });
            }
            if param.default.as_deref().is_some_and(|d| !param.matches(d)) {
                return Err(TemplateError::BadDefault {
                    template: template(),
                    name: param.name.clone(),
                });
            }
            // Positional arguments fill parameters in order; an optional one in the middle
            // would make `a b` ambiguous.
            let optional = !param.required || param.default.is_some();
            if seen_optional && !optional {
                return Err(TemplateError::RequiredAfterOptional {
                    template: template(),
                });
            }
            seen_optional |= optional;
        }
        for capture in PLACEHOLDER.captures_iter(&self.instructions) {
            let name = &capture[1];
            if !self.parameters.iter().any(|p| p.name == name) {
                return Err(TemplateError::UnknownPlaceholder {
                    template: template(),
                    placeholder: name.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// `/bg-agent upgrade <package> <version>`
    pub fn usage(&self) -> String {
        let mut usage = format!("/bg-agent {}", self.name);
        for param in &self.parameters {
            if param.required && param.default.is_none() {
                let _ = write!(usage, " <{}>", param.name);
            } else {
                let _ = write!(usage, " [{}]", param.name);
            }
        }
        usage
    }

    /// Binds a command's arguments: positionals fill parameters in declaration order,
    /// `key=value` names one; defaults fill the rest. Every value is checked against its
    /// parameter's type and pattern.
    pub fn bind(
        &self,
        positional: &[String],
        named: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ParamError> {
        if let Some(extra) = positional.get(self.parameters.len()) {
            return Err(ParamError::TooMany {
                extra: extra.clone(),
            });
        }
        let names: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
        for key in named.keys() {
            if !names.contains(&key.as_str()) {
                return Err(ParamError::Unknown {
                    name: key.clone(),
                    suggestion: suggest(key, &names).map(str::to_owned),
                });
            }
        }
        let mut bound = BTreeMap::new();
        for (i, param) in self.parameters.iter().enumerate() {
            let value = match (positional.get(i), named.get(&param.name)) {
                (Some(_), Some(_)) => {
                    return Err(ParamError::Repeated {
                        name: param.name.clone(),
                    });
                }
                (Some(value), None) | (None, Some(value)) => Some(value.clone()),
                (None, None) => param.default.clone(),
            };
            match value {
                Some(value) if param.matches(&value) => {
                    bound.insert(param.name.clone(), value);
                }
                Some(value) => {
                    return Err(ParamError::Invalid {
                        name: param.name.clone(),
                        value,
                    });
                }
                None if param.required => {
                    return Err(ParamError::Missing {
                        name: param.name.clone(),
                    });
                }
                None => {}
            }
        }
        Ok(bound)
    }

    /// The instructions with every `{{name}}` replaced; an unset optional one becomes empty.
    pub fn render(&self, params: &BTreeMap<String, String>) -> String {
        let rendered = PLACEHOLDER.replace_all(&self.instructions, |caps: &regex::Captures| {
            params.get(&caps[1]).cloned().unwrap_or_default()
        });
        rendered.chars().take(MAX_RENDERED_CHARS).collect()
    }

    /// A one-line summary of a use of this template, e.g. for a PR title: `upgrade lodash 4.17.21`.
    pub fn summary(&self, params: &BTreeMap<String, String>) -> String {
        let mut summary = self.name.clone();
        for param in &self.parameters {
            if let Some(value) = params.get(&param.name) {
                summary.push(' ');
                summary.push_str(value);
            }
        }
        summary
    }

    /// The reply to a command whose arguments do not fit.
    pub fn render_param_error(&self, error: &ParamError) -> String {
        // The error quotes what the commenter wrote.
        let mut reply = format!(
            "**bg-agent:** {} for `{}`.",
            inert(&error.to_string()),
            self.name
        );
        let named = match error {
            ParamError::Missing { name } | ParamError::Invalid { name, .. } => Some(name),
            ParamError::Repeated { name } => Some(name),
            ParamError::Unknown { suggestion, .. } => suggestion.as_ref(),
            ParamError::TooMany { .. } => None,
        };
        if let ParamError::Unknown {
            suggestion: Some(s),
            ..
        } = error
        {
            let _ = write!(reply, " Did you mean {}?", inline_code(s, MAX_SHOWN_CHARS));
        }
        let _ = write!(reply, "\n\nUsage: `{}`", self.usage());
        if let Some(param) = named.and_then(|n| self.parameters.iter().find(|p| &p.name == n)) {
            let _ = write!(reply, "\n\nExpected {}", param.expected_form());
        } else if !self.parameters.is_empty() {
            reply.push_str("\n\nParameters:");
            for param in &self.parameters {
                let _ = write!(reply, "\n- {}", param.expected_form());
            }
        }
        reply
    }
}

/// The reply to `/bg-agent <name>` when no template has that name.
pub fn unknown_template_reply(name: &str, available: &[&str]) -> String {
    // A label names any template it likes (`bg-agent:<anything>`).
    let mut reply = format!(
        "**bg-agent:** there is no template {}.",
        inline_code(name, MAX_SHOWN_CHARS)
    );
    if let Some(s) = suggest(name, available) {
        let _ = write!(reply, " Did you mean {}?", inline_code(s, MAX_SHOWN_CHARS));
    }
    if available.is_empty() {
        reply.push_str(" No templates are available here; use `/bg-agent run <instructions>`.");
    } else {
        let mut sorted = available.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let list: Vec<String> = sorted
            .iter()
            .map(|t| inline_code(t, MAX_SHOWN_CHARS))
            .collect();
        let _ = write!(reply, "\n\nAvailable templates: {}.", list.join(", "));
    }
    reply
}

/// npm's package-name rules (lowercase, optional scope, URL-safe), and a semantic version.
/// The runner checks these again before anything reaches npm.
pub const NPM_PACKAGE_PATTERN: &str = r"(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]{0,213}";
pub const SEMVER_PATTERN: &str =
    r"[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}(-[0-9A-Za-z.-]{1,64})?(\+[0-9A-Za-z.-]{1,64})?";

/// The templates every installation has.
pub fn builtin_templates() -> Vec<Template> {
    vec![Template {
        name: "upgrade".into(),
        description: "Upgrade an npm dependency to an exact version, updating package.json and the lockfile.".into(),
        parameters: vec![
            Parameter {
                name: "package".into(),
                kind: ParamKind::String,
                required: true,
                default: None,
                pattern: Some(NPM_PACKAGE_PATTERN.into()),
                description: "the npm package, e.g. lodash or @types/node".into(),
            },
            Parameter {
                name: "version".into(),
                kind: ParamKind::String,
                required: true,
                default: None,
                pattern: Some(SEMVER_PATTERN.into()),
                description: "an exact version, e.g. 4.17.21".into(),
            },
        ],
        instructions: "Upgrade the npm dependency {{package}} to version {{version}}, updating package.json and the lockfile, and make the repository's checks pass.".into(),
        recipe: Recipe::NpmUpgrade,
        timeout_secs: None,
        source: TemplateSource::BuiltIn,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> Template {
        builtin_templates().remove(0)
    }

    fn args(
        positional: &[&str],
        named: &[(&str, &str)],
    ) -> (Vec<String>, BTreeMap<String, String>) {
        (
            positional.iter().map(|s| s.to_string()).collect(),
            named
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn bind(
        t: &Template,
        positional: &[&str],
        named: &[(&str, &str)],
    ) -> Result<BTreeMap<String, String>, ParamError> {
        let (p, n) = args(positional, named);
        t.bind(&p, &n)
    }

    #[test]
    fn builtins_are_valid() {
        for template in builtin_templates() {
            template.validate().unwrap();
        }
    }

    #[test]
    fn upgrade_binds_renders_and_summarises() {
        let t = upgrade();
        let params = bind(&t, &["lodash", "4.17.21"], &[]).unwrap();
        assert_eq!(params["package"], "lodash");
        assert!(
            t.render(&params)
                .starts_with("Upgrade the npm dependency lodash to version 4.17.21,")
        );
        assert_eq!(t.summary(&params), "upgrade lodash 4.17.21");
        let named = bind(&t, &["@types/node"], &[("version", "20.1.0-rc.1")]).unwrap();
        assert_eq!(named["package"], "@types/node");
    }

    #[test]
    fn bad_values_name_the_parameter_and_the_expected_form() {
        let t = upgrade();
        let error = bind(&t, &["lodash", "latest"], &[]).unwrap_err();
        assert_eq!(
            error,
            ParamError::Invalid {
                name: "version".into(),
                value: "latest".into()
            }
        );
        let reply = t.render_param_error(&error);
        assert!(reply.contains("parameter version is \"latest\""), "{reply}");
        assert!(
            reply.contains("Usage: `/bg-agent upgrade <package> <version>`"),
            "{reply}"
        );
        assert!(reply.contains("`<version>`: text matching"), "{reply}");

        for evil in [
            "lodash; rm -rf /",
            "--registry=http://evil",
            "../x",
            "LODASH",
            "$(id)",
        ] {
            assert!(bind(&t, &[evil, "1.0.0"], &[]).is_err(), "{evil}");
        }
        assert!(bind(&t, &["lodash", "1.0.0\n"], &[]).is_err());
    }

    #[test]
    fn missing_unknown_repeated_and_extra_arguments() {
        let t = upgrade();
        assert_eq!(
            bind(&t, &["lodash"], &[]),
            Err(ParamError::Missing {
                name: "version".into()
            })
        );
        assert_eq!(
            bind(&t, &["lodash"], &[("verison", "1.0.0")]),
            Err(ParamError::Unknown {
                name: "verison".into(),
                suggestion: Some("version".into())
            })
        );
        assert_eq!(
            bind(&t, &["lodash", "1.0.0"], &[("version", "1.0.0")]),
            Err(ParamError::Repeated {
                name: "version".into()
            })
        );
        assert_eq!(
            bind(&t, &["lodash", "1.0.0", "x"], &[]),
            Err(ParamError::TooMany { extra: "x".into() })
        );
        let reply = t.render_param_error(&ParamError::Unknown {
            name: "verison".into(),
            suggestion: Some("version".into()),
        });
        assert!(reply.contains("Did you mean `version`?"), "{reply}");
    }

    fn custom() -> Template {
        Template {
            name: "bump-node".into(),
            description: String::new(),
            parameters: vec![
                Parameter {
                    name: "major".into(),
                    kind: ParamKind::Integer,
                    required: true,
                    default: None,
                    pattern: Some("1[89]|2[0-9]".into()),
                    description: String::new(),
                },
                Parameter {
                    name: "lts".into(),
                    kind: ParamKind::Boolean,
                    required: false,
                    default: Some("true".into()),
                    pattern: None,
                    description: String::new(),
                },
            ],
            instructions: "Move to Node {{ major }} (lts: {{lts}}).".into(),
            recipe: Recipe::Agent,
            timeout_secs: Some(600),
            source: TemplateSource::Repository,
        }
    }

    #[test]
    fn defaults_types_and_whole_value_patterns() {
        let t = custom();
        t.validate().unwrap();
        let params = bind(&t, &["20"], &[]).unwrap();
        assert_eq!(t.render(&params), "Move to Node 20 (lts: true).");
        assert!(bind(&t, &["200"], &[]).is_err(), "pattern is anchored");
        assert!(bind(&t, &["20"], &[("lts", "yes")]).is_err(), "boolean");
        assert_eq!(t.usage(), "/bg-agent bump-node <major> [lts]");
    }

    #[test]
    fn broken_definitions_are_rejected_with_the_reason() {
        let mut t = custom();
        t.instructions = "Use {{version}}".into();
        assert!(
            matches!(t.validate(), Err(TemplateError::UnknownPlaceholder { placeholder, .. }) if placeholder == "version")
        );
        let mut t = custom();
        t.parameters[0].pattern = Some("(".into());
        assert!(matches!(
            t.validate(),
            Err(TemplateError::BadPattern { .. })
        ));
        let mut t = custom();
        t.parameters[1].default = Some("maybe".into());
        assert!(matches!(
            t.validate(),
            Err(TemplateError::BadDefault { .. })
        ));
        let mut t = custom();
        t.parameters.swap(0, 1);
        assert!(matches!(
            t.validate(),
            Err(TemplateError::RequiredAfterOptional { .. })
        ));
        let mut t = custom();
        t.name = "status".into();
        assert!(matches!(t.validate(), Err(TemplateError::ReservedName(_))));
        let mut t = custom();
        t.name = "Bump".into();
        assert!(matches!(t.validate(), Err(TemplateError::BadName(_))));
        let mut t = custom();
        t.timeout_secs = Some(7200);
        assert!(matches!(
            t.validate(),
            Err(TemplateError::BadTimeout { .. })
        ));
    }

    #[test]
    fn unknown_templates_list_what_is_available() {
        let reply = unknown_template_reply("upgarde", &["upgrade", "bump-node"]);
        assert!(reply.contains("no template `upgarde`"), "{reply}");
        assert!(reply.contains("Did you mean `upgrade`?"), "{reply}");
        assert!(
            reply.contains("Available templates: `bump-node`, `upgrade`."),
            "{reply}"
        );
    }
}
