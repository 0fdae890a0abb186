//! A repository's own configuration, `.github/bg-agent.yml` on its default branch:
//! validation commands and templates.
//!
//! ```yaml
//! validation:               # run in order after the change; any failure means no PR
//!   - npm run lint
//!   - [npm, test, --, --ci] # or an explicit argv list
//! templates:
//!   - name: bump-node
//!     description: Move the project to another Node major
//!     parameters:
//!       - { name: major, type: integer, pattern: "1[89]|2[0-9]" }
//!     instructions: Move the project to Node {{major}}.
//!     timeout_secs: 900
//! scope:                    # the scope guard, only ever stricter than the server's
//!   mode: refuse            # refuse | flag | off
//!   max_files: 20
//!   max_lines: 500
//!     agent: { provider: codex, model: gpt-5 }   # this template's coding agent
//! agent: { provider: claude_code }              # the others' (else the installation's
//!                                               # default, else the server's)
//! ```
//!
//! Commands are argv, never a shell line: a string is split on whitespace, with single
//! or double quotes grouping words, and nothing else is interpreted.

use super::template::{Recipe, Template, TemplateError, TemplateSource};

pub const PATH: &str = ".github/bg-agent.yml";
const MAX_COMMANDS: usize = 20;
const MAX_TEMPLATES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidationCommand {
    pub argv: Vec<String>,
}

impl ValidationCommand {
    /// The command as a person would type it, for reports.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|arg| {
                if arg.is_empty() || arg.contains(char::is_whitespace) {
                    format!("'{arg}'")
                } else {
                    arg.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoConfig {
    /// `None`: not declared, so the runner detects checks from the repository.
    pub validation: Option<Vec<ValidationCommand>>,
    pub templates: Vec<Template>,
    /// The repository's scope-guard policy; it can only tighten the server's
    /// ([`crate::protocol::ScopePolicy::tightened_by`]).
    pub scope: Option<crate::protocol::ScopePolicy>,
    /// The coding agent of this repository's agent tasks (`agent:` at the top level).
    pub agent: Option<AgentChoice>,
    /// Per template (`agent:` in a template), by template name.
    pub template_agents: Vec<(String, AgentChoice)>,
}

/// A repository's choice of coding agent: the provider, and its model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentChoice {
    pub provider: crate::protocol::AgentProvider,
    #[serde(default)]
    pub model: Option<String>,
}

impl RepoConfig {
    /// The agent a task of `template` (`None`: free text) runs, as the repository chose.
    pub fn agent_for(&self, template: Option<&str>) -> Option<&AgentChoice> {
        template
            .and_then(|name| {
                self.template_agents
                    .iter()
                    .find(|(t, _)| t == name)
                    .map(|(_, choice)| choice)
            })
            .or(self.agent.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoConfigError {
    #[error("{PATH} is not valid YAML for bg-agent: {0}")]
    Syntax(String),
    #[error("{PATH}: validation command {index} is empty")]
    EmptyCommand { index: usize },
    #[error("{PATH}: validation command {index} has an unclosed quote")]
    UnclosedQuote { index: usize },
    #[error("{PATH}: at most {MAX_COMMANDS} validation commands and {MAX_TEMPLATES} templates")]
    TooMany,
    #[error("{PATH}: {0}")]
    Template(#[from] TemplateError),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    validation: Option<Vec<RawCommand>>,
    #[serde(default)]
    templates: Vec<RawTemplate>,
    #[serde(default)]
    scope: Option<RawScope>,
    agent: Option<AgentChoice>,
}

/// Unset fields leave the server's values (the loosest a repository can ask for).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    mode: Option<crate::protocol::ScopeMode>,
    #[serde(default)]
    max_files: Option<u32>,
    #[serde(default)]
    max_lines: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Line(String),
    Argv(Vec<String>),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Vec<super::Parameter>,
    instructions: String,
    #[serde(default)]
    recipe: Option<Recipe>,
    #[serde(default)]
    timeout_secs: Option<u32>,
    #[serde(default)]
    agent: Option<AgentChoice>,
}

impl RepoConfig {
    pub fn parse(text: &str) -> Result<Self, RepoConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: RawConfig =
            serde_norway::from_str(text).map_err(|e| RepoConfigError::Syntax(e.to_string()))?;
        if raw
            .validation
            .as_ref()
            .is_some_and(|v| v.len() > MAX_COMMANDS)
            || raw.templates.len() > MAX_TEMPLATES
        {
            return Err(RepoConfigError::TooMany);
        }
        let validation = raw
            .validation
            .map(|commands| {
                commands
                    .into_iter()
                    .enumerate()
                    .map(|(i, command)| {
                        let index = i + 1;
                        let argv = match command {
                            RawCommand::Argv(argv) => argv,
                            RawCommand::Line(line) => split_words(&line)
                                .ok_or(RepoConfigError::UnclosedQuote { index })?,
                        };
                        if argv.first().is_none_or(|program| program.is_empty()) {
                            return Err(RepoConfigError::EmptyCommand { index });
                        }
                        Ok(ValidationCommand { argv })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let template_agents = raw
            .templates
            .iter()
            .filter_map(|t| t.agent.clone().map(|choice| (t.name.clone(), choice)))
            .collect();
        let templates = raw
            .templates
            .into_iter()
            .map(|raw| {
                let template = Template {
                    name: raw.name,
                    description: raw.description,
                    parameters: raw.parameters,
                    instructions: raw.instructions,
                    recipe: raw.recipe.unwrap_or(Recipe::Agent),
                    timeout_secs: raw.timeout_secs,
                    source: TemplateSource::Repository,
                };
                template.validate()?;
                Ok(template)
            })
            .collect::<Result<Vec<_>, RepoConfigError>>()?;
        let scope = raw.scope.map(|raw| crate::protocol::ScopePolicy {
            mode: raw.mode.unwrap_or(crate::protocol::ScopeMode::Off),
            max_files: raw.max_files.unwrap_or(u32::MAX),
            max_lines: raw.max_lines.unwrap_or(u32::MAX),
        });
        Ok(Self {
            validation,
            templates,
            scope,
            agent: raw.agent,
            template_agents,
        })
    }
}

/// Splits on whitespace; quotes group words and are removed. `None` on an unclosed quote.
pub fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut current: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.get_or_insert_with(String::new).push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                current.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() => words.extend(current.take()),
            None => current.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return None;
    }
    words.extend(current);
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_policy_is_read_and_only_tightens_the_servers() {
        use crate::protocol::{ScopeMode, ScopePolicy};
        let config = RepoConfig::parse("scope:\n  max_files: 5\n").unwrap();
        let server = ScopePolicy {
            mode: ScopeMode::Flag,
            ..ScopePolicy::default()
        };
        // Unset fields leave the server's values; a looser mode changes nothing.
        assert_eq!(
            server.tightened_by(config.scope.unwrap()),
            ScopePolicy {
                mode: ScopeMode::Flag,
                max_files: 5,
                max_lines: ScopePolicy::DEFAULT_MAX_LINES,
            }
        );
        let off = RepoConfig::parse("scope: { mode: off, max_lines: 99999 }").unwrap();
        assert_eq!(server.tightened_by(off.scope.unwrap()), server);
        let strict = RepoConfig::parse("scope: { mode: refuse }").unwrap();
        assert_eq!(
            server.tightened_by(strict.scope.unwrap()).mode,
            ScopeMode::Refuse
        );
        assert_eq!(RepoConfig::parse("validation: []").unwrap().scope, None);
        assert!(RepoConfig::parse("scope: { mode: lenient }").is_err());
        assert!(RepoConfig::parse("scope: { max_budget: 3 }").is_err());
    }

    #[test]
    fn the_agent_is_chosen_per_template_or_for_the_repository() {
        use crate::protocol::AgentProvider;
        let config = RepoConfig::parse(
            "agent: { provider: claude_code }\ntemplates:\n  - name: port\n    instructions: Port it.\n    agent: { provider: codex, model: gpt-5 }\n  - name: note\n    instructions: Note it.\n",
        )
        .unwrap();
        let port = config.agent_for(Some("port")).unwrap();
        assert_eq!(
            (port.provider, port.model.as_deref()),
            (AgentProvider::Codex, Some("gpt-5"))
        );
        assert_eq!(
            config.agent_for(Some("note")).map(|c| c.provider),
            Some(AgentProvider::ClaudeCode)
        );
        assert_eq!(
            config.agent_for(None).map(|c| c.provider),
            Some(AgentProvider::ClaudeCode)
        );
        let err = RepoConfig::parse("agent: { provider: skynet }").unwrap_err();
        assert!(matches!(err, RepoConfigError::Syntax(_)), "{err}");
        assert_eq!(RepoConfig::parse("").unwrap().agent_for(None), None);
    }

    #[test]
    fn parses_commands_and_templates() {
        let config = RepoConfig::parse(
            r#"
validation:
  - npm run lint
  - [npm, test, "--", --ci]
  - node -e 'console.log("a b")'
templates:
  - name: bump-node
    parameters:
      - { name: major, type: integer, pattern: "1[89]|2[0-9]" }
    instructions: Move to Node {{major}}.
    timeout_secs: 900
"#,
        )
        .unwrap();
        let validation = config.validation.unwrap();
        assert_eq!(validation[0].argv, ["npm", "run", "lint"]);
        assert_eq!(validation[1].argv, ["npm", "test", "--", "--ci"]);
        assert_eq!(validation[2].argv, ["node", "-e", "console.log(\"a b\")"]);
        assert_eq!(validation[2].display(), "node -e 'console.log(\"a b\")'");
        assert_eq!(config.templates[0].recipe, Recipe::Agent);
        assert_eq!(config.templates[0].timeout_secs, Some(900));
        assert_eq!(config.templates[0].source, TemplateSource::Repository);
    }

    #[test]
    fn shell_syntax_is_not_interpreted() {
        let config = RepoConfig::parse("validation: ['npm test && rm -rf / ; $(id)']").unwrap();
        assert_eq!(
            config.validation.unwrap()[0].argv,
            ["npm", "test", "&&", "rm", "-rf", "/", ";", "$(id)"]
        );
    }

    #[test]
    fn empty_or_absent_means_detect() {
        assert_eq!(RepoConfig::parse("").unwrap(), RepoConfig::default());
        assert_eq!(RepoConfig::parse("templates: []").unwrap().validation, None);
    }

    #[test]
    fn mistakes_are_reported_precisely() {
        assert!(matches!(
            RepoConfig::parse("validaton: [x]"),
            Err(RepoConfigError::Syntax(m)) if m.contains("validaton")
        ));
        assert_eq!(
            RepoConfig::parse("validation: ['npm \"test']"),
            Err(RepoConfigError::UnclosedQuote { index: 1 })
        );
        assert_eq!(
            RepoConfig::parse("validation: [ok, '  ']"),
            Err(RepoConfigError::EmptyCommand { index: 2 })
        );
        let error =
            RepoConfig::parse("templates: [{name: x, instructions: 'use {{y}}'}]").unwrap_err();
        assert!(error.to_string().contains("{{y}}"), "{error}");
    }
}
