//! The `/bg-agent` comment grammar.
//!
//! Pure on purpose: no I/O, no async, no logging, so every rule can be tested
//! exhaustively and the engine can call it from anywhere.
//!
//! A command is the first line of a comment that starts with [`PREFIX`] and that
//! GitHub renders as plain text: lines in fenced or indented code, block quotes,
//! HTML comments and multi-line inline code spans are skipped, because a user
//! quoting or documenting a command must not trigger it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

/// Every command line starts with this word.
pub const PREFIX: &str = "/bg-agent";

/// Database id of a task, as written in `/bg-agent retry 42`.
pub type TaskId = i64;

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
            CommandKind::Status => "Show the tasks of this issue or pull request.",
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
         comments are ignored.\n\n",
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
        .then(|| digits.parse::<TaskId>().ok())
        .flatten()
        .filter(|id| *id > 0);
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

/// Inline Markdown code for user text: cut to a readable length, with a
/// backtick fence longer than any run inside so user backticks cannot break out.
fn code(text: &str) -> String {
    if text.is_empty() {
        return "`\"\"`".to_string();
    }
    let mut shown: String = text
        .chars()
        .take(MAX_SHOWN_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    let mut longest = 0;
    let mut run = 0;
    for c in shown.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if shown.starts_with('`') || shown.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{shown}{pad}{fence}")
}

// ---------------------------------------------------------------------------
// Finding the command line: a small CommonMark block scanner.
// ---------------------------------------------------------------------------

/// A line of the body, without its line ending, and where it starts.
#[derive(Clone, Copy)]
struct Line<'a> {
    offset: usize,
    text: &'a str,
}

/// The block-level role of a line, as far as finding commands needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Blank,
    /// Four or more columns of indentation: indented code (or a paragraph continuation).
    Indented,
    Fence {
        ch: u8,
        len: usize,
    },
    /// An HTML block opened by `<!--`; `closed` when `-->` is on the same line.
    HtmlComment {
        closed: bool,
    },
    /// `paragraph`: the quote ends in a paragraph, so lazy continuation lines follow it.
    Quote {
        paragraph: bool,
    },
    Heading,
    Text,
}

/// Byte offset of the first line that is a command, or `None`.
fn find_command_line(body: &str) -> Option<usize> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for text in body.split('\n') {
        lines.push(Line {
            offset,
            text: text.strip_suffix('\r').unwrap_or(text),
        });
        offset += text.len() + 1;
    }

    let mut i = 0;
    while let Some(line) = lines.get(i) {
        i += 1;
        match classify(line.text) {
            Block::Blank | Block::Heading | Block::Indented => {}
            Block::Fence { ch, len } => {
                // An unclosed fence runs to the end of the comment.
                while let Some(l) = lines.get(i) {
                    i += 1;
                    if is_closing_fence(l.text, ch, len) {
                        break;
                    }
                }
            }
            Block::HtmlComment { closed } => {
                if !closed {
                    while let Some(l) = lines.get(i) {
                        i += 1;
                        if l.text.contains("-->") {
                            break;
                        }
                    }
                }
            }
            Block::Quote { paragraph } => {
                // Lazy continuation lines render inside the quote, so they are quoted too.
                if paragraph {
                    while lines.get(i).is_some_and(|l| is_continuation(l.text)) {
                        i += 1;
                    }
                }
            }
            Block::Text => {
                let start = i - 1;
                while lines.get(i).is_some_and(|l| is_continuation(l.text)) {
                    i += 1;
                }
                let paragraph = lines.get(start..i).unwrap_or_default();
                if let Some(found) = first_command_in_paragraph(paragraph) {
                    return Some(found);
                }
            }
        }
    }
    None
}

fn is_continuation(text: &str) -> bool {
    matches!(classify(text), Block::Text | Block::Indented)
}

fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| b == b' ' || b == b'\t')
}

/// The line without its 0–3 spaces of indentation; `None` when it is indented
/// four columns or more (a tab always reaches column four).
fn strip_indent(text: &str) -> Option<&str> {
    let spaces = text.bytes().take(4).take_while(|&b| b == b' ').count();
    if spaces == 4 {
        return None;
    }
    let rest = text.get(spaces..)?;
    (!rest.starts_with('\t')).then_some(rest)
}

fn classify(text: &str) -> Block {
    if is_blank(text) {
        return Block::Blank;
    }
    let Some(rest) = strip_indent(text) else {
        return Block::Indented;
    };
    if rest.starts_with('>') {
        return Block::Quote {
            paragraph: quote_has_paragraph(rest),
        };
    }
    if rest.starts_with("<!--") {
        // From the second byte, so `<!-->` and `<!--->` count as closed, as in CommonMark.
        let closed = rest.get(2..).is_some_and(|r| r.contains("-->"));
        return Block::HtmlComment { closed };
    }
    if let Some((ch, len)) = fence_open(rest) {
        return Block::Fence { ch, len };
    }
    let hashes = rest.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&hashes)
        && rest
            .get(hashes..)
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
    {
        return Block::Heading;
    }
    Block::Text
}

/// Whether the innermost content of a quote line is paragraph text. Nested
/// markers are stripped in a loop so `>>>>…` cannot exhaust the stack.
fn quote_has_paragraph(mut rest: &str) -> bool {
    while let Some(after) = rest.strip_prefix('>') {
        let inner = after.strip_prefix(' ').unwrap_or(after);
        if is_blank(inner) {
            return false;
        }
        match strip_indent(inner) {
            None => return false,
            Some(r) if r.starts_with('>') => rest = r,
            // `r` does not start with `>`, so this does not recurse further.
            Some(r) => return classify(r) == Block::Text,
        }
    }
    false
}

/// `(fence char, length)` of an opening code fence (indentation already stripped).
fn fence_open(rest: &str) -> Option<(u8, usize)> {
    let ch = rest.bytes().next().filter(|&b| b == b'`' || b == b'~')?;
    let len = rest.bytes().take_while(|&b| b == ch).count();
    if len < 3 {
        return None;
    }
    // A backtick "fence" whose info string has a backtick is inline code instead.
    if ch == b'`' && rest.get(len..)?.contains('`') {
        return None;
    }
    Some((ch, len))
}

/// Same char, at least as long as the opening fence, nothing but spaces after it.
fn is_closing_fence(text: &str, ch: u8, open_len: usize) -> bool {
    let Some(rest) = strip_indent(text) else {
        return false;
    };
    let len = rest.bytes().take_while(|&b| b == ch).count();
    len >= open_len && rest.get(len..).is_some_and(is_blank)
}

/// `/bg-agent` after at most three spaces, followed by whitespace or the end.
fn is_command_line(text: &str) -> bool {
    strip_indent(text).and_then(strip_prefix_word).is_some()
}

/// Offset of the first line of a paragraph that is a command and does not
/// start inside a code span or inline HTML comment opened on an earlier line.
fn first_command_in_paragraph(lines: &[Line<'_>]) -> Option<usize> {
    if !lines.iter().any(|l| is_command_line(l.text)) {
        return None;
    }
    // Joined, because code spans and inline comments may span lines within a paragraph.
    let mut text = String::new();
    let mut starts = Vec::with_capacity(lines.len());
    for line in lines {
        starts.push(text.len());
        text.push_str(line.text);
        text.push('\n');
    }
    let hidden = hidden_ranges(&text);
    let mut hidden = hidden.iter().peekable();
    for (line, &start) in lines.iter().zip(&starts) {
        while hidden.next_if(|r| r.end <= start).is_some() {}
        let inside = hidden.peek().is_some_and(|r| r.start < start);
        if !inside && is_command_line(line.text) {
            return Some(line.offset);
        }
    }
    None
}

/// Byte ranges of code spans and HTML comments in paragraph text, in order.
/// Linear: closers are looked up per run length with cursors that only move
/// forward, and a failed `-->` search is never repeated.
fn hidden_ranges(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let run_end = |from: usize| {
        let mut end = from;
        while bytes.get(end) == Some(&b'`') {
            end += 1;
        }
        end
    };

    // Start offsets of all maximal backtick runs, by length, plus a cursor.
    let mut runs: HashMap<usize, (Vec<usize>, usize)> = HashMap::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'`' {
            let end = run_end(i);
            runs.entry(end - i).or_default().0.push(i);
            i = end;
        } else {
            i += 1;
        }
    }

    let mut hidden = Vec::new();
    let mut no_more_comment_ends = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            // Outside code spans a backslash escapes the next character (e.g. a backtick).
            b'\\' => i += 2,
            b'`' => {
                let end = run_end(i);
                let len = end - i;
                let closer = runs.get_mut(&len).and_then(|(starts, cursor)| {
                    while starts.get(*cursor).is_some_and(|&p| p < end) {
                        *cursor += 1;
                    }
                    starts.get(*cursor).copied()
                });
                match closer {
                    Some(close) => {
                        hidden.push(i..close + len);
                        i = close + len;
                    }
                    // No closer: the backticks are literal text.
                    None => i = end,
                }
            }
            b'<' if !no_more_comment_ends && bytes.get(i..i + 4) == Some(b"<!--") => {
                match text.get(i + 2..).and_then(|r| r.find("-->")) {
                    Some(pos) => {
                        let end = i + 2 + pos + 3;
                        hidden.push(i..end);
                        i = end;
                    }
                    None => {
                        no_more_comment_ends = true;
                        i += 4;
                    }
                }
            }
            _ => i += 1,
        }
    }
    hidden
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(body: &str) -> Result<Command, ParseError> {
        match parse_comment(body) {
            Some(result) => result,
            None => panic!("no command found in {body:?}"),
        }
    }

    fn template(name: &str, positional: &[&str], named: &[(&str, &str)]) -> Command {
        Command::Template {
            name: name.to_string(),
            positional: positional.iter().map(|s| s.to_string()).collect(),
            named: named
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn run(instructions: &str) -> Command {
        Command::Run {
            instructions: instructions.to_string(),
        }
    }

    fn unknown(given: &str, suggestion: Option<&str>) -> ParseError {
        ParseError::UnknownCommand {
            given: given.to_string(),
            suggestion: suggestion.map(str::to_string),
        }
    }

    // --- recognising a command line -------------------------------------

    #[test]
    fn builtins() {
        assert_eq!(parse("/bg-agent status"), Ok(Command::Status));
        assert_eq!(parse("/bg-agent help"), Ok(Command::Help));
        assert_eq!(parse("/bg-agent retry"), Ok(Command::Retry { task: None }));
        assert_eq!(
            parse("/bg-agent cancel"),
            Ok(Command::Cancel { task: None })
        );
        assert_eq!(parse("/bg-agent run fix it"), Ok(run("fix it")));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse("/bg-agent STATUS"), Ok(Command::Status));
        assert_eq!(parse("/bg-agent Run x"), Ok(run("x")));
    }

    #[test]
    fn bare_prefix_is_help() {
        assert_eq!(parse("/bg-agent"), Ok(Command::Help));
        assert_eq!(parse("/bg-agent   \t "), Ok(Command::Help));
        assert_eq!(parse("/bg-agent\nrun this please"), Ok(Command::Help));
    }

    #[test]
    fn prefix_must_be_a_whole_word() {
        assert_eq!(parse_comment("/bg-agentx status"), None);
        assert_eq!(parse_comment("/bg-agents"), None);
        assert_eq!(parse("/bg-agent\tstatus"), Ok(Command::Status));
        assert_eq!(parse_comment("/BG-AGENT status"), None);
    }

    #[test]
    fn no_command() {
        assert_eq!(parse_comment(""), None);
        assert_eq!(parse_comment("LGTM, thanks!"), None);
        assert_eq!(parse_comment("please /bg-agent status"), None);
        assert_eq!(parse_comment("- /bg-agent status"), None);
    }

    #[test]
    fn indentation() {
        assert_eq!(parse("   /bg-agent status"), Ok(Command::Status));
        assert_eq!(parse_comment("    /bg-agent status"), None);
        assert_eq!(parse_comment("\t/bg-agent status"), None);
        assert_eq!(parse_comment("  \t/bg-agent status"), None);
        // Indented lines continuing a paragraph are not commands either.
        assert_eq!(parse_comment("text\n    /bg-agent status"), None);
    }

    #[test]
    fn command_inside_a_paragraph() {
        assert_eq!(
            parse("Hi bot,\n/bg-agent status\nthanks"),
            Ok(Command::Status)
        );
    }

    #[test]
    fn crlf() {
        assert_eq!(parse("hello\r\n/bg-agent status\r\n"), Ok(Command::Status));
        assert_eq!(parse("/bg-agent\r\n"), Ok(Command::Help));
        assert_eq!(
            parse("/bg-agent run first\r\nsecond\r\n\r\n"),
            Ok(run("first\nsecond"))
        );
        assert_eq!(
            parse("```\r\n/bg-agent help\r\n```\r\n/bg-agent status\r\n"),
            Ok(Command::Status)
        );
        assert_eq!(
            parse("/bg-agent upgrade a b=c\r\n"),
            Ok(template("upgrade", &["a"], &[("b", "c")]))
        );
    }

    #[test]
    fn first_command_wins() {
        assert_eq!(
            parse("/bg-agent status\n/bg-agent help"),
            Ok(Command::Status)
        );
        // Even when the first one is an error.
        assert_eq!(
            parse("/bg-agent stauts\n/bg-agent status"),
            Err(unknown("stauts", Some("status")))
        );
        assert_eq!(
            parse("intro\n\n/bg-agent cancel 3\n\n/bg-agent retry 4"),
            Ok(Command::Cancel { task: Some(3) })
        );
    }

    // --- markdown exclusions ----------------------------------------------

    #[test]
    fn fenced_code_is_ignored() {
        assert_eq!(parse_comment("```\n/bg-agent status\n```"), None);
        assert_eq!(parse_comment("~~~\n/bg-agent status\n~~~"), None);
        assert_eq!(parse_comment("```sh\n/bg-agent status\n```"), None);
        assert_eq!(
            parse("```\n/bg-agent help\n```\n/bg-agent status"),
            Ok(Command::Status)
        );
        // Fences can interrupt a paragraph and be indented up to three spaces.
        assert_eq!(parse_comment("text\n   ```\n/bg-agent status\n```"), None);
    }

    #[test]
    fn fence_closing_rules() {
        // A shorter closing fence does not close.
        assert_eq!(parse_comment("````\n```\n/bg-agent status\n````"), None);
        // Nor does the other fence character.
        assert_eq!(parse_comment("```\n~~~\n/bg-agent status\n```"), None);
        // A longer one does.
        assert_eq!(
            parse("```\nx\n`````\n/bg-agent status"),
            Ok(Command::Status)
        );
        // A closing fence has nothing but spaces after it.
        assert_eq!(parse_comment("```\n``` not closed\n/bg-agent status"), None);
        // An unclosed fence runs to the end.
        assert_eq!(parse_comment("```\n\n/bg-agent status\n\nmore"), None);
        // An indented "fence" is indented code, not a fence.
        assert_eq!(parse("    ```\n/bg-agent status\n```"), Ok(Command::Status));
    }

    #[test]
    fn backtick_fence_info_with_backtick_is_not_a_fence() {
        // "``` a ` b" is inline text, so the next line is a command.
        assert_eq!(parse("``` a ` b\n\n/bg-agent status"), Ok(Command::Status));
        // Tilde fences may have backticks in their info string.
        assert_eq!(parse_comment("~~~ a ` b\n/bg-agent status\n~~~"), None);
    }

    #[test]
    fn block_quotes_are_ignored() {
        assert_eq!(parse_comment("> /bg-agent status"), None);
        assert_eq!(parse_comment("   > /bg-agent status"), None);
        assert_eq!(parse_comment(">/bg-agent status"), None);
        assert_eq!(parse_comment("> > /bg-agent status"), None);
        // A lazy continuation line renders inside the quote.
        assert_eq!(parse_comment("> quoted\n/bg-agent status"), None);
        // A blank line ends the quote.
        assert_eq!(
            parse("> /bg-agent run x\n\n/bg-agent status"),
            Ok(Command::Status)
        );
        // After an empty quote line there is no paragraph to continue.
        assert_eq!(parse(">\n/bg-agent status"), Ok(Command::Status));
        // Deep nesting is handled without recursion.
        let deep = format!("{}x\n\n/bg-agent status", ">".repeat(100_000));
        assert_eq!(parse(&deep), Ok(Command::Status));
    }

    #[test]
    fn html_comments_are_ignored() {
        assert_eq!(parse_comment("<!-- /bg-agent status -->"), None);
        assert_eq!(parse_comment("<!--\n/bg-agent status\n-->"), None);
        assert_eq!(parse_comment("<!--\n\n/bg-agent status\n\n-->"), None);
        assert_eq!(
            parse("<!--\n/bg-agent help\n-->\n/bg-agent status"),
            Ok(Command::Status)
        );
        assert_eq!(parse("<!-- x -->\n/bg-agent status"), Ok(Command::Status));
        assert_eq!(parse("<!-->\n/bg-agent status"), Ok(Command::Status));
        // Inline comment spanning lines inside a paragraph.
        assert_eq!(parse_comment("text <!--\n/bg-agent status\n-->"), None);
        // Unclosed inline comment is literal text.
        assert_eq!(parse("text <!--\n/bg-agent status"), Ok(Command::Status));
    }

    #[test]
    fn inline_code_is_ignored() {
        assert_eq!(parse_comment("`/bg-agent status`"), None);
        assert_eq!(parse_comment("try `x\n/bg-agent status` out"), None);
        assert_eq!(parse_comment("try ``x\n/bg-agent status`` out"), None);
        // A run of a different length does not close the span.
        assert_eq!(
            parse("try ``x\n/bg-agent status\n` out"),
            Ok(Command::Status)
        );
        // An unmatched backtick is literal.
        assert_eq!(parse("a ` b\n/bg-agent status"), Ok(Command::Status));
        // An escaped backtick does not open a span.
        assert_eq!(parse("a \\` b\n/bg-agent status\n`"), Ok(Command::Status));
        // Code spans end at the paragraph.
        assert_eq!(parse("a ` b\n\n/bg-agent status\n`"), Ok(Command::Status));
        // A backtick inside a closed span does not open another one.
        assert_eq!(parse("`a` and `b`\n/bg-agent status"), Ok(Command::Status));
    }

    #[test]
    fn pathological_input_is_fast() {
        let backticks = "` ".repeat(200_000) + "\n/bg-agent status";
        assert_eq!(parse(&backticks), Ok(Command::Status));
        let comments = "text ".to_string() + &"<!-- ".repeat(200_000) + "\n/bg-agent status";
        assert_eq!(parse(&comments), Ok(Command::Status));
        let mixed: String = (1..2_000).map(|n| "`".repeat(n) + " x ").collect();
        assert_eq!(parse(&(mixed + "\n/bg-agent status")), Ok(Command::Status));
        let lines = "text\n".repeat(200_000) + "/bg-agent status";
        assert_eq!(parse(&lines), Ok(Command::Status));
        let long_word = format!("/bg-agent {}", "a".repeat(1_000_000));
        assert!(matches!(
            parse(&long_word),
            Err(ParseError::UnknownCommand { .. })
        ));
    }

    // --- templates ----------------------------------------------------------

    #[test]
    fn template_invocation() {
        assert_eq!(
            parse("/bg-agent upgrade lodash 4.17.21"),
            Ok(template("upgrade", &["lodash", "4.17.21"], &[]))
        );
        assert_eq!(parse("/bg-agent lint"), Ok(template("lint", &[], &[])));
        assert_eq!(
            parse("/bg-agent Upgrade-Deps_2 x"),
            Ok(template("upgrade-deps_2", &["x"], &[]))
        );
    }

    #[test]
    fn template_name_rules() {
        let longest = "a".repeat(64);
        assert_eq!(
            parse(&format!("/bg-agent {longest}")),
            Ok(template(&longest, &[], &[]))
        );
        let too_long = "a".repeat(65);
        assert_eq!(
            parse(&format!("/bg-agent {too_long}")),
            Err(unknown(&too_long, None))
        );
        assert_eq!(parse("/bg-agent 123"), Err(unknown("123", None)));
        assert_eq!(parse("/bg-agent _x"), Err(unknown("_x", None)));
        assert_eq!(parse("/bg-agent fix!"), Err(unknown("fix!", None)));
        assert_eq!(
            parse("/bg-agent \"upgrade\""),
            Err(unknown("\"upgrade\"", None))
        );
        // The Kelvin sign lowercases to `k` but is not a template name.
        assert_eq!(
            parse("/bg-agent \u{212A}eep"),
            Err(unknown("\u{212A}eep", None))
        );
    }

    #[test]
    fn named_arguments() {
        assert_eq!(
            parse("/bg-agent upgrade lodash version=4.17.21 note=\"a b\" x"),
            Ok(template(
                "upgrade",
                &["lodash", "x"],
                &[("version", "4.17.21"), ("note", "a b")]
            ))
        );
        assert_eq!(
            parse("/bg-agent t a=b=c _k-2=v Key=V"),
            Ok(template(
                "t",
                &[],
                &[("a", "b=c"), ("_k-2", "v"), ("Key", "V")]
            ))
        );
        assert_eq!(
            parse("/bg-agent t k= k2=''"),
            Ok(template("t", &[], &[("k", ""), ("k2", "")]))
        );
    }

    #[test]
    fn things_that_are_not_keys_stay_positional() {
        assert_eq!(
            parse("/bg-agent t =x 1a=b -f=1 \"a=b\" 'k'=v a\"b\"=c"),
            Ok(template(
                "t",
                &["=x", "1a=b", "-f=1", "a=b", "k=v", "ab=c"],
                &[]
            ))
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(
            parse(r#"/bg-agent t "a b" 'c d' "" '' e"f g"h"#),
            Ok(template("t", &["a b", "c d", "", "", "ef gh"], &[]))
        );
        assert_eq!(
            parse(r#"/bg-agent t "q\"uote" "back\\slash" "lit\eral" 'single\' c\d"#),
            Ok(template(
                "t",
                &["q\"uote", "back\\slash", "lit\\eral", "single\\", "c\\d"],
                &[]
            ))
        );
        assert_eq!(
            parse(r#"/bg-agent t "it's" 'say "hi"'"#),
            Ok(template("t", &["it's", "say \"hi\""], &[]))
        );
        // No shell semantics.
        assert_eq!(
            parse("/bg-agent t $HOME *.rs a;b `x` #1"),
            Ok(template("t", &["$HOME", "*.rs", "a;b", "`x`", "#1"], &[]))
        );
    }

    #[test]
    fn duplicate_key() {
        let err = ParseError::DuplicateKey {
            command: CommandKind::Template,
            key: "a".to_string(),
        };
        assert_eq!(parse("/bg-agent t a=1 a=2"), Err(err.clone()));
        assert_eq!(err.to_string(), "Argument `a` is given more than once.");
        assert_eq!(
            err.render_markdown(),
            "Argument `a` is given more than once.\n\n\
             Usage: `/bg-agent <template> [args...] [key=value...]`\n\n\
             See `/bg-agent help` for all commands."
        );
        // Keys are case-sensitive.
        assert_eq!(
            parse("/bg-agent t a=1 A=2"),
            Ok(template("t", &[], &[("a", "1"), ("A", "2")]))
        );
    }

    #[test]
    fn unclosed_quote() {
        let err = ParseError::UnclosedQuote {
            command: CommandKind::Template,
            quote: '"',
        };
        assert_eq!(parse("/bg-agent t \"a b"), Err(err.clone()));
        assert_eq!(parse("/bg-agent t \"a\\\""), Err(err.clone()));
        assert_eq!(
            err.to_string(),
            "Unclosed quote `\"`: add the closing quote."
        );
        assert_eq!(
            err.render_markdown(),
            "Unclosed quote `\"`: add the closing quote.\n\n\
             Usage: `/bg-agent <template> [args...] [key=value...]`\n\n\
             See `/bg-agent help` for all commands."
        );
        assert_eq!(
            parse("/bg-agent retry 'x"),
            Err(ParseError::UnclosedQuote {
                command: CommandKind::Retry,
                quote: '\''
            })
        );
        // A quote on the next line does not close it: arguments are one line.
        assert_eq!(
            parse("/bg-agent t note=\"a\nb\""),
            Err(ParseError::UnclosedQuote {
                command: CommandKind::Template,
                quote: '"'
            })
        );
    }

    // --- typos and unknown commands ------------------------------------------

    #[test]
    fn keyword_typos() {
        for (typo, keyword) in [
            ("stauts", "status"),
            ("statu", "status"),
            ("stats", "status"),
            ("hlep", "help"),
            ("hepl", "help"),
            ("helm", "help"),
            ("cancle", "cancel"),
            ("cancl", "cancel"),
            ("retyr", "retry"),
            ("rety", "retry"),
            ("rnu", "run"),
            ("runn", "run"),
            ("STAUTS", "status"),
        ] {
            assert_eq!(
                parse(&format!("/bg-agent {typo}")),
                Err(unknown(typo, Some(keyword))),
                "{typo}"
            );
        }
        // Too far from any keyword: a template.
        assert_eq!(parse("/bg-agent rerun"), Ok(template("rerun", &[], &[])));
        assert_eq!(parse("/bg-agent hello"), Ok(template("hello", &[], &[])));
        // Words of two characters are never typos.
        assert_eq!(parse("/bg-agent ru"), Ok(template("ru", &[], &[])));
        // Invalid names still get a suggestion when one is close.
        assert_eq!(
            parse("/bg-agent status!"),
            Err(unknown("status!", Some("status")))
        );
    }

    #[test]
    fn known_templates_beat_typo_detection() {
        assert_eq!(
            parse_comment_with_templates("/bg-agent helm chart", &["helm"]),
            Some(Ok(template("helm", &["chart"], &[])))
        );
        assert_eq!(
            parse_line_with_templates("/bg-agent STATS", &["stats"]),
            Ok(template("stats", &[], &[]))
        );
        // But not keywords.
        assert_eq!(
            parse_comment_with_templates("/bg-agent status", &["status"]),
            Some(Ok(Command::Status))
        );
    }

    #[test]
    fn unknown_command_rendering() {
        let err = unknown("stauts", Some("status"));
        assert_eq!(
            err.to_string(),
            "Unknown command `stauts`. Did you mean `status`?"
        );
        assert_eq!(
            err.render_markdown(),
            "Unknown command `stauts`. Did you mean `status`?\n\n\
             Usage: `/bg-agent status`\n\n\
             See `/bg-agent help` for all commands."
        );
        let err = unknown("123", None);
        assert_eq!(err.to_string(), "Unknown command `123`.");
        assert_eq!(
            err.render_markdown(),
            "Unknown command `123`.\n\n\
             Usage: `/bg-agent <template> [args...] [key=value...]`\n\n\
             See `/bg-agent help` for all commands."
        );
    }

    #[test]
    fn user_text_cannot_break_out_of_code() {
        assert_eq!(unknown("a`b", None).to_string(), "Unknown command ``a`b``.");
        assert_eq!(unknown("`x", None).to_string(), "Unknown command `` `x ``.");
        let long = unknown(&"x".repeat(500), None).to_string();
        assert!(long.len() < 100, "{long}");
        assert!(long.contains('…'));
    }

    // --- run ------------------------------------------------------------------

    #[test]
    fn run_instructions() {
        assert_eq!(
            parse("/bg-agent run  fix the bug  "),
            Ok(run("fix the bug"))
        );
        assert_eq!(
            parse("Hey\n/bg-agent run Fix it.\n\nDetails:\n- \"quoted\" a=b\n```\ncode\n```\n\n"),
            Ok(run("Fix it.\n\nDetails:\n- \"quoted\" a=b\n```\ncode\n```"))
        );
        // Instructions may start on the next line.
        assert_eq!(parse("/bg-agent run\n\n  \nFix it."), Ok(run("Fix it.")));
        // Quotes are kept literally, even unbalanced ones.
        assert_eq!(
            parse(r#"/bg-agent run say "hi and it's"#),
            Ok(run(r#"say "hi and it's"#))
        );
        // A later command line is just part of the instructions.
        assert_eq!(
            parse("/bg-agent run a\n/bg-agent status"),
            Ok(run("a\n/bg-agent status"))
        );
    }

    #[test]
    fn run_missing_instructions() {
        let err = ParseError::MissingArgument {
            command: CommandKind::Run,
            argument: "instructions",
        };
        assert_eq!(parse("/bg-agent run"), Err(err.clone()));
        assert_eq!(parse("/bg-agent run   \n \r\n\t"), Err(err.clone()));
        assert_eq!(err.to_string(), "`/bg-agent run` needs instructions.");
        assert_eq!(
            err.render_markdown(),
            "`/bg-agent run` needs instructions.\n\n\
             Usage: `/bg-agent run <instructions>`\n\n\
             See `/bg-agent help` for all commands."
        );
    }

    // --- retry / cancel / status / help -----------------------------------------

    #[test]
    fn task_ids() {
        assert_eq!(
            parse("/bg-agent retry 42"),
            Ok(Command::Retry { task: Some(42) })
        );
        assert_eq!(
            parse("/bg-agent retry #42"),
            Ok(Command::Retry { task: Some(42) })
        );
        assert_eq!(
            parse("/bg-agent cancel #7"),
            Ok(Command::Cancel { task: Some(7) })
        );
        assert_eq!(
            parse("/bg-agent cancel \"9\""),
            Ok(Command::Cancel { task: Some(9) })
        );
        assert_eq!(
            parse(&format!("/bg-agent retry {}", i64::MAX)),
            Ok(Command::Retry {
                task: Some(i64::MAX)
            })
        );
        // Other lines are ignored.
        assert_eq!(
            parse("/bg-agent retry 1\nbecause it flaked"),
            Ok(Command::Retry { task: Some(1) })
        );
    }

    #[test]
    fn invalid_task_ids() {
        for bad in [
            "0",
            "#0",
            "-1",
            "+1",
            "#",
            "##1",
            "abc",
            "4x",
            "1.0",
            "9223372036854775808",
            "",
        ] {
            let line = if bad.is_empty() {
                "/bg-agent cancel \"\"".to_string()
            } else {
                format!("/bg-agent cancel {bad}")
            };
            assert_eq!(
                parse(&line),
                Err(ParseError::InvalidTaskId {
                    command: CommandKind::Cancel,
                    given: bad.to_string()
                }),
                "{bad}"
            );
        }
        let err = ParseError::InvalidTaskId {
            command: CommandKind::Retry,
            given: "abc".to_string(),
        };
        assert_eq!(
            err.to_string(),
            "`abc` is not a task id; use a number such as `42` or `#42`."
        );
        assert_eq!(
            err.render_markdown(),
            "`abc` is not a task id; use a number such as `42` or `#42`.\n\n\
             Usage: `/bg-agent retry [task-id]`\n\n\
             See `/bg-agent help` for all commands."
        );
    }

    #[test]
    fn unexpected_arguments() {
        let unexpected = |command, argument: &str| ParseError::UnexpectedArgument {
            command,
            argument: argument.to_string(),
        };
        assert_eq!(
            parse("/bg-agent retry 1 2"),
            Err(unexpected(CommandKind::Retry, "2"))
        );
        assert_eq!(
            parse("/bg-agent cancel abc def"),
            Err(unexpected(CommandKind::Cancel, "def"))
        );
        assert_eq!(
            parse("/bg-agent retry task=1"),
            Err(unexpected(CommandKind::Retry, "task=1"))
        );
        assert_eq!(
            parse("/bg-agent status all"),
            Err(unexpected(CommandKind::Status, "all"))
        );
        assert_eq!(
            parse("/bg-agent help me please"),
            Err(unexpected(CommandKind::Help, "me"))
        );
        let err = unexpected(CommandKind::Status, "all");
        assert_eq!(
            err.to_string(),
            "Unexpected argument `all` for `/bg-agent status`."
        );
        assert_eq!(
            err.render_markdown(),
            "Unexpected argument `all` for `/bg-agent status`.\n\n\
             Usage: `/bg-agent status`\n\n\
             See `/bg-agent help` for all commands."
        );
    }

    // --- parse_line ---------------------------------------------------------------

    #[test]
    fn parse_line_accepts_both_forms() {
        assert_eq!(parse_line("/bg-agent status"), Ok(Command::Status));
        assert_eq!(parse_line("status"), Ok(Command::Status));
        assert_eq!(
            parse_line("  upgrade x"),
            Ok(template("upgrade", &["x"], &[]))
        );
        assert_eq!(parse_line(""), Ok(Command::Help));
        assert_eq!(parse_line("/bg-agent"), Ok(Command::Help));
        assert_eq!(parse_line("run a\nb"), Ok(run("a\nb")));
        assert_eq!(parse_line("/bg-agentx"), Err(unknown("/bg-agentx", None)));
    }

    // --- help and kinds --------------------------------------------------------

    /// One sample per `Command` variant. The `match` has no wildcard, so a new
    /// variant does not compile until it gets a sample here.
    fn samples() -> Vec<Command> {
        let samples = vec![
            template("upgrade", &["lodash"], &[]),
            run("x"),
            Command::Retry { task: None },
            Command::Cancel { task: Some(1) },
            Command::Status,
            Command::Help,
        ];
        for sample in &samples {
            match sample {
                Command::Template { .. }
                | Command::Run { .. }
                | Command::Retry { .. }
                | Command::Cancel { .. }
                | Command::Status
                | Command::Help => {}
            }
        }
        samples
    }

    #[test]
    fn every_command_kind_is_listed_and_documented() {
        let samples = samples();
        let kinds: Vec<CommandKind> = samples.iter().map(Command::kind).collect();
        for kind in &kinds {
            assert!(CommandKind::ALL.contains(kind), "{kind:?} missing from ALL");
        }
        for kind in CommandKind::ALL {
            assert!(kinds.contains(kind), "no Command maps to {kind:?}");
        }
        assert_eq!(
            kinds.len(),
            CommandKind::ALL.len(),
            "two variants share a kind"
        );

        let help = help_markdown();
        for kind in CommandKind::ALL {
            assert!(help.contains(kind.usage()), "{kind:?} undocumented");
            assert!(help.contains(kind.summary()));
            if let Some(example) = kind.example() {
                assert!(help.contains(example));
            }
        }
        assert!(help.contains("`/bg-agent upgrade lodash 4.17.21`"));
    }

    #[test]
    fn every_keyword_parses_and_examples_are_valid() {
        for kind in CommandKind::ALL {
            if let Some(keyword) = kind.keyword() {
                assert!(is_template_name(keyword));
                let parsed = parse_line(&format!("{PREFIX} {keyword}"));
                // `run` alone needs instructions; everything else parses bare.
                match parsed {
                    Ok(command) => assert_eq!(command.kind(), *kind),
                    Err(err) => assert_eq!(err.command_kind(), *kind),
                }
            }
            if let Some(example) = kind.example() {
                assert_eq!(parse(example).map(|c| c.kind()), Ok(*kind), "{example}");
            }
        }
    }

    #[test]
    fn samples_round_trip_through_display_and_json() {
        for sample in samples() {
            assert_eq!(parse_line(&sample.to_string()), Ok(sample.clone()));
            let json = serde_json::to_string(&sample).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Command>(&json).ok(), Some(sample));
        }
        assert_eq!(
            serde_json::to_value(template("upgrade", &["lodash"], &[("v", "1")])).ok(),
            Some(serde_json::json!({
                "kind": "template",
                "name": "upgrade",
                "positional": ["lodash"],
                "named": {"v": "1"}
            }))
        );
        assert_eq!(
            serde_json::to_value(Command::Status).ok(),
            Some(serde_json::json!({"kind": "status"}))
        );
    }

    #[test]
    fn suggest_picks_the_closest() {
        let candidates = ["upgrade", "update", "lint"];
        assert_eq!(suggest("upgrad", &candidates), Some("upgrade"));
        assert_eq!(suggest("updte", &candidates), Some("update"));
        assert_eq!(suggest("UPDATE", &candidates), Some("update"));
        assert_eq!(suggest("litn", &candidates), Some("lint"));
        assert_eq!(suggest("lnt", &candidates), Some("lint"));
        assert_eq!(suggest("linters", &candidates), None);
        assert_eq!(suggest("li", &candidates), None);
        assert_eq!(suggest("anything", &[]), None);
        assert_eq!(suggest(&"u".repeat(10_000), &candidates), None);
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("", ""), 0);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("hlep", "help"), 1);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("ca", "abc"), 3);
    }

    // --- properties ----------------------------------------------------------

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/bg-agent".to_string()),
            Just("/bg-agent ".to_string()),
            Just("run ".to_string()),
            Just("retry".to_string()),
            Just("status".to_string()),
            Just("\"".to_string()),
            Just("'".to_string()),
            Just("\\".to_string()),
            Just("`".to_string()),
            Just("```".to_string()),
            Just("~~~".to_string()),
            Just("<!--".to_string()),
            Just("-->".to_string()),
            Just(">".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\r".to_string()),
            Just(" ".to_string()),
            Just("    ".to_string()),
            Just("\t".to_string()),
            Just("=".to_string()),
            Just("#".to_string()),
            Just("#42".to_string()),
            Just("k=".to_string()),
            "[a-z]{1,6}",
            "\\PC{1,3}",
            any::<char>().prop_map(String::from),
        ]
    }

    fn safe_arg() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9._/@-]{0,8}", "\\PC{0,8}", "[ \"'\\\\=a]{0,6}"]
    }

    fn template_command() -> impl Strategy<Value = Command> {
        let name = "[a-z][a-z0-9_-]{0,20}".prop_filter("not a keyword or a typo of one", |n| {
            suggest(n, &keywords()).is_none()
        });
        (
            name,
            prop::collection::vec(safe_arg(), 0..5),
            prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_-]{0,8}", safe_arg(), 0..4),
        )
            .prop_map(|(name, positional, named)| Command::Template {
                name,
                positional,
                named,
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(body in any::<String>()) {
            let _ = parse_comment(&body);
            let _ = parse_line(&body);
        }

        #[test]
        fn never_panics_on_interesting_fragments(
            parts in prop::collection::vec(fragment(), 0..60)
        ) {
            let body = parts.concat();
            if let Some(Err(err)) = parse_comment(&body) {
                let _ = err.render_markdown();
            }
            let _ = parse_line(&body);
        }

        #[test]
        fn templates_round_trip(command in template_command(), before in "[a-z ]{0,10}") {
            let line = command.to_string();
            prop_assert_eq!(parse_line(&line), Ok(command.clone()));
            let body = format!("{before}\n\n{line}\r\nmore text\n");
            prop_assert_eq!(parse_comment(&body), Some(Ok(command)));
        }

        #[test]
        fn found_command_is_a_command_line(
            parts in prop::collection::vec(fragment(), 0..40)
        ) {
            let body = parts.concat();
            // Whatever is found starts a line with the prefix.
            if let Some(start) = find_command_line(&body) {
                let rest = body.get(start..).unwrap_or_default();
                prop_assert!(is_command_line(rest.split('\n').next().unwrap_or_default()));
            }
        }
    }
}
