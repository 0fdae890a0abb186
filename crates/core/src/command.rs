//! The `/bg-agent` comment grammar.
//!
//! Pure on purpose: no I/O, no async, no logging, so every rule can be tested
//! exhaustively and the engine can call it from anywhere.
//!
//! A command is the first line of a comment that starts with [`PREFIX`] (after
//! at most three spaces) and that GitHub shows as text. pulldown-cmark decides
//! what is code (blocks and spans), block quotes or HTML (blocks and comments);
//! a command there is skipped, because a user quoting or documenting a command
//! must not trigger it.

use std::collections::BTreeMap;
use std::fmt;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// Every command line starts with this word.
pub const PREFIX: &str = "/bg-agent";

pub use crate::task::TaskId;

/// Template names are `[a-z][a-z0-9_-]{0,63}`.
const MAX_TEMPLATE_NAME_LEN: usize = 64;

/// User text echoed in error messages is cut here so a replied error stays short.
const MAX_SHOWN_CHARS: usize = 60;

/// Words longer than this are never "typos" of anything; also bounds the edit-distance work.
const MAX_SUGGEST_CHARS: usize = 128;

/// A parsed `/bg-agent` command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// `/bg-agent <template> [positional ...] [key=value ...]`
    Template {
        /// Lowercased template name.
        name: String,
        /// Positional arguments, in the order written.
        positional: Vec<String>,
        /// `key=value` arguments; keys are case-sensitive.
        named: BTreeMap<String, String>,
    },
    /// `/bg-agent run <free-text instructions>`
    Run { instructions: String },
    /// `/bg-agent retry [task-id]`
    Retry { task: Option<TaskId> },
    /// `/bg-agent cancel [task-id]`
    Cancel { task: Option<TaskId> },
    /// `/bg-agent status`
    Status,
    /// `/bg-agent help`, or a bare `/bg-agent`
    Help,
}

impl Command {
    /// The kind of this command. Exhaustive, so a new variant must get a
    /// [`CommandKind`] — and with it a usage line in the help.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Template { .. } => CommandKind::Template,
            Command::Run { .. } => CommandKind::Run,
            Command::Retry { .. } => CommandKind::Retry,
            Command::Cancel { .. } => CommandKind::Cancel,
            Command::Status => CommandKind::Status,
            Command::Help => CommandKind::Help,
        }
    }
}

/// Canonical comment text, quoted so that [`parse_line`] gives the command back
/// (named arguments come after positional ones, in key order).
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Template {
                name,
                positional,
                named,
            } => {
                write!(f, "{PREFIX} {name}")?;
                for arg in positional {
                    write!(f, " {}", quote_arg(arg))?;
                }
                for (key, value) in named {
                    write!(f, " {key}={}", quote_arg(value))?;
                }
                Ok(())
            }
            Command::Run { instructions } => write!(f, "{PREFIX} run {instructions}"),
            Command::Retry { task: None } => write!(f, "{PREFIX} retry"),
            Command::Retry { task: Some(id) } => write!(f, "{PREFIX} retry {id}"),
            Command::Cancel { task: None } => write!(f, "{PREFIX} cancel"),
            Command::Cancel { task: Some(id) } => write!(f, "{PREFIX} cancel {id}"),
            Command::Status => write!(f, "{PREFIX} status"),
            Command::Help => write!(f, "{PREFIX} help"),
        }
    }
}

/// Defines [`CommandKind`] and `CommandKind::ALL` from one list, so `ALL`
/// cannot miss a kind (and therefore the help cannot miss a command).
macro_rules! command_kinds {
    ($($(#[$meta:meta])* $variant:ident),+ $(,)?) => {
        /// The kinds of [`Command`], used for help and error messages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandKind {
            $($(#[$meta])* $variant),+
        }

        impl CommandKind {
            /// Every kind, in help order.
            pub const ALL: &'static [CommandKind] = &[$(CommandKind::$variant),+];
        }
    };
}

command_kinds! {
    /// Any word that is not a keyword: a task template.
    Template,
    Run,
    Retry,
    Cancel,
    Status,
    Help,
}

impl CommandKind {
    /// The builtin keyword; `None` for templates, whose first word is the template name.
    pub fn keyword(self) -> Option<&'static str> {
        match self {
            CommandKind::Template => None,
            CommandKind::Run => Some("run"),
            CommandKind::Retry => Some("retry"),
            CommandKind::Cancel => Some("cancel"),
            CommandKind::Status => Some("status"),
            CommandKind::Help => Some("help"),
        }
    }

    /// The usage line shown in help and error replies.
    pub fn usage(self) -> &'static str {
        match self {
            CommandKind::Template => "/bg-agent <template> [args...] [key=value...]",
            CommandKind::Run => "/bg-agent run <instructions>",
            CommandKind::Retry => "/bg-agent retry [task-id]",
            CommandKind::Cancel => "/bg-agent cancel [task-id]",
            CommandKind::Status => "/bg-agent status",
            CommandKind::Help => "/bg-agent help",
        }
    }

    /// One sentence for the help list.
    pub fn summary(self) -> &'static str {
        match self {
            CommandKind::Template => {
                "Start a task from a template, with positional and `key=value` arguments \
                 (quote values that contain spaces: `note=\"a b\"`)."
            }
            CommandKind::Run => {
                "Start a free-form task; the instructions are the rest of the line \
                 and every line below it."
            }
            CommandKind::Retry => {
                "Retry a task (`42` or `#42`); without an id, the latest task here."
            }
            CommandKind::Cancel => {
                "Cancel a queued or running task; without an id, the latest task here."
            }
            CommandKind::Status => "Show your latest tasks in this repository.",
            CommandKind::Help => "Show this help.",
        }
    }

    /// A concrete example, when it says more than the usage line.
    pub fn example(self) -> Option<&'static str> {
        match self {
            CommandKind::Template => Some("/bg-agent upgrade lodash 4.17.21"),
            CommandKind::Run => Some("/bg-agent run Add a --json flag to the export command"),
            CommandKind::Retry => Some("/bg-agent retry #42"),
            CommandKind::Cancel => Some("/bg-agent cancel 42"),
            CommandKind::Status | CommandKind::Help => None,
        }
    }

    /// `/bg-agent run`, or `/bg-agent <template>` for templates.
    fn invocation(self) -> String {
        match self.keyword() {
            Some(keyword) => format!("{PREFIX} {keyword}"),
            None => format!("{PREFIX} <template>"),
        }
    }
}

/// Builtin keywords, derived from [`CommandKind::ALL`] so parsing and typo
/// detection follow new kinds automatically.
fn keywords() -> Vec<&'static str> {
    CommandKind::ALL
        .iter()
        .filter_map(|k| k.keyword())
        .collect()
}

/// Why a command line could not be parsed. `Display` is one short sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first word is neither a keyword nor a valid template name, or it is
    /// so close to a keyword that it is more likely a typo than a template.
    #[error("Unknown command {}.{}", code(.given), did_you_mean(.suggestion.as_deref()))]
    UnknownCommand {
        given: String,
        suggestion: Option<String>,
    },
    #[error("{} needs {argument}.", code(&.command.invocation()))]
    MissingArgument {
        command: CommandKind,
        argument: &'static str,
    },
    #[error("Argument {} is given more than once.", code(.key))]
    DuplicateKey { command: CommandKind, key: String },
    #[error("Unclosed quote {}: add the closing quote.", code(&.quote.to_string()))]
    UnclosedQuote { command: CommandKind, quote: char },
    #[error("Unexpected argument {} for {}.", code(.argument), code(&.command.invocation()))]
    UnexpectedArgument {
        command: CommandKind,
        argument: String,
    },
    #[error("{} is not a task id; use a number such as `42` or `#42`.", code(.given))]
    InvalidTaskId { command: CommandKind, given: String },
}

impl ParseError {
    /// The command the error is about; for unknown commands the suggested
    /// keyword, else templates (the form an unknown word is read as).
    pub fn command_kind(&self) -> CommandKind {
        match self {
            ParseError::UnknownCommand { suggestion, .. } => suggestion
                .as_deref()
                .and_then(|s| {
                    CommandKind::ALL
                        .iter()
                        .copied()
                        .find(|k| k.keyword() == Some(s))
                })
                .unwrap_or(CommandKind::Template),
            ParseError::MissingArgument { command, .. }
            | ParseError::DuplicateKey { command, .. }
            | ParseError::UnclosedQuote { command, .. }
            | ParseError::UnexpectedArgument { command, .. }
            | ParseError::InvalidTaskId { command, .. } => *command,
        }
    }

    /// A short comment body: the sentence, the usage of the command concerned,
    /// and a pointer to the full help.
    pub fn render_markdown(&self) -> String {
        format!(
            "{self}\n\nUsage: {}\n\nSee {} for all commands.",
            code(self.command_kind().usage()),
            code(&CommandKind::Help.invocation()),
        )
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" Did you mean {}?", code(s)))
        .unwrap_or_default()
}

/// Markdown help, generated from [`CommandKind::ALL`].
pub fn help_markdown() -> String {
    let mut out = String::from(
        "### bg-agent commands\n\n\
         Write a command at the start of a line in a comment. Only the first command \
         in a comment counts; commands in code blocks, inline code, quotes and HTML \
         are ignored.\n\n",
    );
    for kind in CommandKind::ALL {
        out.push_str(&format!("- {} — {}", code(kind.usage()), kind.summary()));
        if let Some(example) = kind.example() {
            out.push_str(&format!(" Example: {}", code(example)));
        }
        out.push('\n');
    }
    out
}

/// Did-you-mean: the candidate closest to `given` (case-insensitive), if it is
/// within 1 edit for candidates of up to 4 characters or 2 edits for longer
/// ones (transpositions count as one edit). Words of 1–2 characters never get
/// a suggestion: nearly everything is close to them.
pub fn suggest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let given_len = given.chars().count();
    if given_len <= 2 || given_len > MAX_SUGGEST_CHARS {
        return None;
    }
    let given: Vec<char> = given.to_lowercase().chars().collect();
    let mut best: Option<(usize, &'a str)> = None;
    for &candidate in candidates {
        let cand: Vec<char> = candidate.to_lowercase().chars().collect();
        let max = if cand.len() <= 4 { 1 } else { 2 };
        // Cheap pre-check; also keeps the distance table small.
        if given.len().abs_diff(cand.len()) > max {
            continue;
        }
        let distance = edit_distance(&given, &cand);
        if distance <= max && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Optimal-string-alignment (restricted Damerau–Levenshtein) distance.
/// Indices stay within the tables by construction of the loop bounds.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut before_prev: Vec<usize> = vec![0; width];
    let mut prev: Vec<usize> = (0..width).collect();
    let mut cur: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..width {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before_prev[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut before_prev, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Finds the first command line in a comment body and parses it (see
/// [`parse_line`]). `None` = the comment has no command at all.
pub fn parse_comment(body: &str) -> Option<Result<Command, ParseError>> {
    parse_comment_with_templates(body, &[])
}

/// Like [`parse_comment`], but words in `templates` are always read as template
/// names, even when they look like a typo of a keyword (a template called
/// `helm` or `stats`). Keywords still win over templates of the same name.
pub fn parse_comment_with_templates(
    body: &str,
    templates: &[&str],
) -> Option<Result<Command, ParseError>> {
    let start = find_command_line(body)?;
    Some(parse_line_with_templates(body.get(start..)?, templates))
}

/// Parses one command. `line` may be the whole line (`/bg-agent status`) or
/// the text after the prefix (`status`); leading whitespace is ignored.
/// Anything after the first newline only matters to `run`, whose instructions
/// continue there; other commands ignore it.
pub fn parse_line(line: &str) -> Result<Command, ParseError> {
    parse_line_with_templates(line, &[])
}

/// [`parse_line`] with known template names; see [`parse_comment_with_templates`].
pub fn parse_line_with_templates(line: &str, templates: &[&str]) -> Result<Command, ParseError> {
    let (first, following) = line.split_once('\n').unwrap_or((line, ""));
    let first = first.strip_suffix('\r').unwrap_or(first).trim_start();
    let args = strip_prefix_word(first).unwrap_or(first).trim_start();
    let (word, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    if word.is_empty() {
        return Ok(Command::Help);
    }

    // Keywords are matched first, so a template can never shadow a builtin.
    let builtin = CommandKind::ALL
        .iter()
        .copied()
        .find(|k| k.keyword().is_some_and(|kw| kw.eq_ignore_ascii_case(word)));
    if let Some(kind) = builtin {
        return match kind {
            CommandKind::Run => parse_run(rest, following),
            CommandKind::Retry => Ok(Command::Retry {
                task: parse_task_arg(kind, rest)?,
            }),
            CommandKind::Cancel => Ok(Command::Cancel {
                task: parse_task_arg(kind, rest)?,
            }),
            CommandKind::Status => no_arguments(kind, rest).map(|()| Command::Status),
            CommandKind::Help => no_arguments(kind, rest).map(|()| Command::Help),
            // Templates have no keyword, so `find` cannot return this.
            CommandKind::Template => parse_template(word, rest),
        };
    }

    let valid_name = is_template_name(word);
    if valid_name && templates.iter().any(|t| t.eq_ignore_ascii_case(word)) {
        return parse_template(word, rest);
    }
    // A near-miss of a keyword is far more likely a typo than a template, and
    // running a template by accident is worse than asking again.
    if let Some(keyword) = suggest(word, &keywords()) {
        return Err(ParseError::UnknownCommand {
            given: word.to_string(),
            suggestion: Some(keyword.to_string()),
        });
    }
    if valid_name {
        return parse_template(word, rest);
    }
    Err(ParseError::UnknownCommand {
        given: word.to_string(),
        suggestion: None,
    })
}

/// The text after [`PREFIX`], if `line` starts with the prefix as a whole word.
fn strip_prefix_word(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(PREFIX)?;
    rest.chars()
        .next()
        .is_none_or(char::is_whitespace)
        .then_some(rest)
}

/// `[a-z][a-z0-9_-]{0,63}`, ASCII case-insensitive. Checked on the original
/// word: Unicode lowercasing could turn e.g. the Kelvin sign into `k`.
fn is_template_name(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && word.len() <= MAX_TEMPLATE_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[A-Za-z_][A-Za-z0-9_-]*`
fn is_key(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_template(word: &str, rest: &str) -> Result<Command, ParseError> {
    let mut positional = Vec::new();
    let mut named = BTreeMap::new();
    for token in tokenize(CommandKind::Template, rest)? {
        match token.key {
            None => positional.push(token.value),
            Some(key) => {
                if named.contains_key(&key) {
                    return Err(ParseError::DuplicateKey {
                        command: CommandKind::Template,
                        key,
                    });
                }
                named.insert(key, token.value);
            }
        }
    }
    Ok(Command::Template {
        name: word.to_ascii_lowercase(),
        positional,
        named,
    })
}

/// Free text: no tokenising, so quotes and `=` reach the agent as written.
fn parse_run(rest: &str, following: &str) -> Result<Command, ParseError> {
    let mut instructions = String::from(rest);
    for line in following.lines() {
        instructions.push('\n');
        instructions.push_str(line);
    }
    let instructions = instructions.trim();
    if instructions.is_empty() {
        return Err(ParseError::MissingArgument {
            command: CommandKind::Run,
            argument: "instructions",
        });
    }
    Ok(Command::Run {
        instructions: instructions.to_string(),
    })
}

fn parse_task_arg(command: CommandKind, rest: &str) -> Result<Option<TaskId>, ParseError> {
    let mut tokens = tokenize(command, rest)?.into_iter();
    let Some(token) = tokens.next() else {
        return Ok(None);
    };
    if let Some(extra) = tokens.next() {
        return Err(ParseError::UnexpectedArgument {
            command,
            argument: extra.to_string(),
        });
    }
    if token.key.is_some() {
        return Err(ParseError::UnexpectedArgument {
            command,
            argument: token.to_string(),
        });
    }
    let digits = token.value.strip_prefix('#').unwrap_or(&token.value);
    // `i64::from_str` would also accept a sign; only plain digits are an id.
    let id = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<i64>().ok())
        .flatten()
        .filter(|id| *id > 0)
        .map(TaskId::from);
    match id {
        Some(id) => Ok(Some(id)),
        None => Err(ParseError::InvalidTaskId {
            command,
            given: token.value,
        }),
    }
}

fn no_arguments(command: CommandKind, rest: &str) -> Result<(), ParseError> {
    match rest.split_whitespace().next() {
        None => Ok(()),
        Some(argument) => Err(ParseError::UnexpectedArgument {
            command,
            argument: argument.to_string(),
        }),
    }
}

/// One argument: `value`, or `key=value` when `key` is set.
#[derive(Debug, PartialEq, Eq)]
struct Token {
    key: Option<String>,
    value: String,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}={}", self.value),
            None => f.write_str(&self.value),
        }
    }
}

/// Shell-like splitting without shell semantics: whitespace separates, `"…"`
/// and `'…'` group (inside `"…"`, `\"` and `\\` are escapes, any other
/// backslash is literal), and adjacent parts join (`a"b c"` is `ab c`). A token
/// whose text before the first `=` is an unquoted key is a named argument, so
/// `"a=b"` stays positional.
fn tokenize(command: CommandKind, text: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(tokens);
        }
        let mut value = String::new();
        let mut key = None;
        let mut quoted = false;
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            match c {
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(ParseError::UnclosedQuote {
                                    command,
                                    quote: '"',
                                });
                            }
                            Some('"') => break,
                            Some('\\') => match chars.next_if(|c| matches!(c, '"' | '\\')) {
                                Some(escaped) => value.push(escaped),
                                None => value.push('\\'),
                            },
                            Some(c) => value.push(c),
                        }
                    }
                }
                '\'' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(ParseError::UnclosedQuote {
                                    command,
                                    quote: '\'',
                                });
                            }
                            Some('\'') => break,
                            Some(c) => value.push(c),
                        }
                    }
                }
                '=' if key.is_none() && !quoted && is_key(&value) => {
                    key = Some(std::mem::take(&mut value));
                }
                c => value.push(c),
            }
        }
        tokens.push(Token { key, value });
    }
}

/// Quotes an argument for [`Command`]'s `Display` only when the tokenizer needs it.
fn quote_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '='));
    if plain {
        return arg.to_string();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Inline Markdown code for user text, cut to a readable length.
fn code(text: &str) -> String {
    crate::markdown::inline_code(text, MAX_SHOWN_CHARS)
}

// ---------------------------------------------------------------------------
// Finding the command line: pulldown-cmark decides what GitHub renders as text.
// ---------------------------------------------------------------------------

/// GitHub's flavour. These extensions make nothing code, a quote or HTML; they
/// keep the block structure the same as on GitHub.
const MARKDOWN: Options = Options::ENABLE_TABLES
    .union(Options::ENABLE_STRIKETHROUGH)
    .union(Options::ENABLE_TASKLISTS)
    .union(Options::ENABLE_GFM);

/// Byte offset of the first command: the prefix of a line for which
/// [`is_command_line`] holds, where it is text outside code, block quotes and HTML.
fn find_command_line(body: &str) -> Option<usize> {
    // Where `/bg-agent` starts on each candidate line, in order. Most comments
    // have none, and then the Markdown is not parsed at all.
    let mut candidates = Vec::new();
    let mut offset = 0;
    for line in body.split('\n') {
        let text = line.strip_suffix('\r').unwrap_or(line);
        if is_command_line(text) {
            candidates.push(offset + text.len() - text.trim_start_matches(' ').len());
        }
        offset += line.len() + 1;
    }
    let last = *candidates.last()?;

    // Depth of the blocks whose text is not plain text. Code spans and inline
    // HTML are single events (`Code`, `InlineHtml`), never `Text`.
    let mut hidden = 0usize;
    for (event, range) in Parser::new_ext(body, MARKDOWN).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(_) | Tag::BlockQuote(_) | Tag::HtmlBlock) => hidden += 1,
            Event::End(TagEnd::CodeBlock | TagEnd::BlockQuote(_) | TagEnd::HtmlBlock) => {
                hidden = hidden.saturating_sub(1);
            }
            // Text comes in document order, so nothing after the last candidate can match.
            Event::Text(_) if range.start > last => return None,
            Event::Text(_) if hidden == 0 => {
                let next = candidates.partition_point(|&c| c < range.start);
                if let Some(&start) = candidates.get(next).filter(|&&c| c < range.end) {
                    return Some(start);
                }
            }
            _ => {}
        }
    }
    None
}

/// `/bg-agent` after at most three spaces, followed by whitespace or the end:
/// four columns of indentation (or a tab) would make it code or a continuation.
fn is_command_line(text: &str) -> bool {
    let spaces = text.bytes().take(4).take_while(|&b| b == b' ').count();
    spaces < 4 && text.get(spaces..).and_then(strip_prefix_word).is_some()
}

#[cfg(test)]
mod tests;
