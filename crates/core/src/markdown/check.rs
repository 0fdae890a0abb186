//! Test support: hostile strings, and checks that a text we post is inert the way GitHub
//! reads it. Markdown is parsed with pulldown-cmark (GitHub's flavour, math included);
//! every run of text outside code and outside our own links is then searched for what
//! GitHub would turn into a mention, a reference, a link or a closing keyword. Entities
//! are decoded by the parser first, so `&#64;user` counts as a mention.

use std::sync::LazyLock;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use regex::Regex;

/// Strings that try every way out: code fences of every length, mentions, references and
/// closing keywords in each of GitHub's forms, HTML, links, images, autolinks, entities,
/// line breaks, zero-width and bidirectional characters, Unicode tags.
pub(crate) const HOSTILE: &[&str] = &[
    "`",
    "``",
    "```",
    "a ``b`` c ````````",
    "`@octo-lead`",
    " padded ",
    "@everyone please look, cc @octo-lead and @acme/security-team",
    "Fixes #1",
    "closes acme/widgets#2",
    "Resolved: #3, fix GH-4, CLOSED gh-5",
    "fixes https://github.com/acme/widgets/issues/6",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1)) ![pixel](https://evil.example/p.png)",
    "<https://evil.example> www.evil.example mail@evil.example",
    "<!-- hidden",
    "</details><details open><summary>x</summary>",
    "&#64;octo-lead &#x23;7 &commat;acme &amp;",
    "line one\nline two\r\nFixes #8\r",
    "tab\tand \u{1b}[31mescape\u{7}",
    "zero\u{200B}width @\u{200B}octo-lead #\u{2060}9",
    "bidi \u{202E}gpj.exe\u{202C} \u{2066}isolate\u{2069}",
    "tags \u{E0046}\u{E0069}\u{E0078}",
    "deadbeefcafe1234 a5c3785ed8d6a35868bc169f07e40e889087fd2e",
    "octo-lead@a5c3785 acme/widgets@a5c3785ed",
    "**bold** _em_ ~~strike~~ $x^2$ $$y$$ | a | b |",
    "\\`escaped\\` \\",
    "- [ ] task\n> quote\n# heading\n    indented\n---",
    "[^1]: footnote [x]: https://evil.example",
];

/// A line of 10,000 characters, with a mention at its end.
pub(crate) fn very_long_line() -> String {
    format!("{} @octo-lead #10", "long ".repeat(2000))
}

/// What our own text may mention, reference or link to.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Allowed<'a> {
    /// Logins, without `@`.
    pub mentions: &'a [&'a str],
    /// References such as `#17`.
    pub references: &'a [&'a str],
    /// Link destinations.
    pub links: &'a [&'a str],
}

static MENTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"@([A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?)").unwrap()
});
static REFERENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?#[0-9]+").unwrap());
static OTHER_LIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bgh-[0-9]|[a-z][a-z0-9+.-]*://|\bwww\.|\b[0-9a-f]{7,40}\b").unwrap()
});
static CLOSING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\b:?\s*(?:#[0-9]|[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#[0-9]|gh-[0-9]|https?://)",
    )
    .unwrap()
});

/// What in `text` (one text node, or a plain-text field) GitHub would make live.
pub(crate) fn live_references(text: &str, allowed: &Allowed<'_>) -> Vec<String> {
    let mut live = Vec::new();
    for m in MENTION.captures_iter(text) {
        if !allowed.mentions.contains(&&m[1]) {
            live.push(m[0].to_owned());
        }
    }
    for m in REFERENCE.find_iter(text) {
        if !allowed.references.contains(&m.as_str()) {
            live.push(m.as_str().to_owned());
        }
    }
    live.extend(OTHER_LIVE.find_iter(text).map(|m| m.as_str().to_owned()));
    live.extend(CLOSING.find_iter(text).map(|m| m.as_str().to_owned()));
    live
}

/// Panics if `text`, shown as plain text (a title, a commit message), has anything live.
pub(crate) fn assert_inert_plain(text: &str, allowed: &Allowed<'_>) {
    let live = live_references(text, allowed);
    assert!(live.is_empty(), "live {live:?} in plain text {text:?}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control character in {text:?}"
    );
}

const GITHUB_FLAVOUR: Options = Options::ENABLE_TABLES
    .union(Options::ENABLE_STRIKETHROUGH)
    .union(Options::ENABLE_TASKLISTS)
    .union(Options::ENABLE_FOOTNOTES)
    .union(Options::ENABLE_MATH)
    .union(Options::ENABLE_GFM);

/// Panics if the Markdown `md` has HTML, an image, math, a footnote, a link that is not
/// ours, or a live mention or reference in its text.
pub(crate) fn assert_inert_markdown(md: &str, allowed: &Allowed<'_>) {
    let mut text = String::new();
    let mut in_link = 0usize;
    let mut in_code = 0usize;
    let check = |text: &mut String| {
        let live = live_references(text, allowed);
        assert!(live.is_empty(), "live {live:?} in {text:?} of:\n{md}");
        text.clear();
    };
    for event in Parser::new_ext(md, GITHUB_FLAVOUR) {
        match event {
            Event::Text(t) => {
                if in_link == 0 && in_code == 0 {
                    text.push_str(&t);
                }
                continue;
            }
            Event::Html(html) | Event::InlineHtml(html) => panic!("HTML {html:?} in:\n{md}"),
            Event::InlineMath(m) | Event::DisplayMath(m) => panic!("math {m:?} in:\n{md}"),
            Event::FootnoteReference(f) => panic!("footnote {f:?} in:\n{md}"),
            Event::Start(Tag::Image { dest_url, .. }) => panic!("image {dest_url} in:\n{md}"),
            Event::Start(Tag::FootnoteDefinition(f)) => panic!("footnote {f:?} in:\n{md}"),
            Event::Start(Tag::Link { dest_url, .. }) => {
                assert!(
                    allowed.links.contains(&dest_url.as_ref()),
                    "link to {dest_url} in:\n{md}"
                );
                in_link += 1;
            }
            Event::End(TagEnd::Link) => in_link -= 1,
            Event::Start(Tag::CodeBlock(_)) => in_code += 1,
            Event::End(TagEnd::CodeBlock) => in_code -= 1,
            _ => {}
        }
        // GitHub finds mentions and references within one text node: anything else ends
        // the run.
        check(&mut text);
    }
    check(&mut text);
}

/// Pieces that combine into what GitHub reads as mentions, references, closing keywords,
/// links and HTML, and ways of hiding or splitting them.
pub(crate) fn hostile_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just("@".to_owned()),
        Just("#".to_owned()),
        Just("fixes ".to_owned()),
        Just("Closes: ".to_owned()),
        Just("RESOLVED ".to_owned()),
        Just("acme/widgets".to_owned()),
        Just("GH-".to_owned()),
        Just("https://".to_owned()),
        Just("www.".to_owned()),
        Just("`".to_owned()),
        Just("<".to_owned()),
        Just(">".to_owned()),
        Just("&#64;".to_owned()),
        Just("&#35;".to_owned()),
        Just("[".to_owned()),
        Just("](".to_owned()),
        Just("!".to_owned()),
        Just("\\".to_owned()),
        Just("$".to_owned()),
        Just("|".to_owned()),
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\u{200B}".to_owned()),
        Just("\u{202E}".to_owned()),
        Just("\u{E0041}".to_owned()),
        Just("deadbeef".to_owned()),
        "[0-9]{1,3}",
        "[a-z-]{1,8}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// The Markdown as a list of events, for tests that want the exact structure.
pub(crate) fn events(md: &str) -> Vec<Event<'_>> {
    Parser::new_ext(md, GITHUB_FLAVOUR).collect()
}
