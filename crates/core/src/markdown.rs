//! User text inside what we post to GitHub. What people wrote (issue titles and bodies,
//! instructions, parameters, errors quoting them) is shown, never interpreted: it cannot
//! @-mention anyone, reference, link or close an issue, pull request or commit, inject a
//! link, an image or HTML, or break out of the code it is shown in.
//!
//! GitHub's rules, and how each is defused (a zero-width space, U+200B, is invisible and
//! is not part of any name, number or URL GitHub recognises):
//!
//! - mentions `@user`, `@org/team`, and `user@sha` commit references: a zero-width space
//!   after every `@`;
//! - issue and pull request references `#N`, `owner/repo#N`, `GH-N`: one after every `#`
//!   and after the `-` of `GH-` before a digit. A closing keyword (`fixes #1`,
//!   `Closes: owner/repo#2`) then has no reference to close;
//! - URLs (`https://github.com/o/r/issues/1` is a reference too, and a closing one after a
//!   keyword) and `www.` autolinks: one after `:` before `//` and inside `www.`;
//! - commit SHAs (a word of 7 to 40 hexadecimal digits): one after the sixth digit;
//! - in Markdown ([`inert`]), everything that starts a link, an image, HTML, an entity
//!   (`&#64;` would render as `@` and mention), emphasis, code, a table cell or math is
//!   backslash-escaped, and the text is one line;
//! - everywhere, characters that hide or reorder what a reader sees (bidirectional
//!   overrides and isolates, zero-width spaces, word joiners, byte-order marks, Unicode
//!   tag characters) are dropped and control characters shown as spaces, so every
//!   zero-width space in our output is one of ours.
//!
//! Code spans and code blocks ([`inline_code`], [`code_block`]) need none of the defusing:
//! GitHub links, mentions and references nothing inside code.

/// The one invisible character we add: it ends a name, a number or a URL scheme.
pub const ZWSP: char = '\u{200B}';

/// Characters that hide or reorder text without showing themselves: bidirectional
/// embeddings, overrides and isolates, zero-width spaces and word joiners, the byte-order
/// mark, and Unicode tag characters (invisible ASCII look-alikes). Joiners (ZWJ, ZWNJ) and
/// the plain direction marks stay: scripts and emoji need them, and they reorder nothing.
pub(crate) fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// User text as one visible line: hidden characters dropped, control characters
/// (newlines, `\r`, tabs, escapes) shown as spaces.
fn visible_line(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars()
        .filter(|c| !is_hidden(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
}

/// Inline code for one line of user text, at most `max_chars` characters (cut with `…`),
/// control characters shown as spaces, fenced with more backticks than any run inside.
pub fn inline_code(text: &str, max_chars: usize) -> String {
    let mut chars = visible_line(text);
    let mut shown: String = chars.by_ref().take(max_chars).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    if shown.is_empty() {
        return "`\"\"`".to_string();
    }
    let fence = "`".repeat(longest_run(&shown, '`') + 1);
    // A code span that starts or ends with a backtick needs a space inside its fence; one
    // that starts and ends with a space loses one at each end, so it gets one more.
    let spaced = shown.starts_with(' ') && shown.ends_with(' ') && shown.chars().any(|c| c != ' ');
    let pad = if shown.starts_with('`') || shown.ends_with('`') || spaced {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{shown}{pad}{fence}")
}

/// A fenced code block holding `text` as it is (less hidden characters), its fence
/// longer than any run of backticks inside, so nothing in it is Markdown.
pub fn code_block(text: &str) -> String {
    let text: String = text.chars().filter(|c| !is_hidden(*c)).collect();
    let fence = "`".repeat(longest_run(&text, '`').max(2) + 1);
    format!("{fence}text\n{text}\n{fence}")
}

/// Prose from a user inside our Markdown, kept readable but inert, on one line: it
/// mentions, references, links and formats nothing (see the module's list).
pub fn inert(text: &str) -> String {
    defuse(visible_line(text).collect(), true)
}

/// User text where GitHub shows plain text but still finds references: a pull request's
/// title (it becomes the squash commit's title), a commit message (pushed to the default
/// branch, its closing keywords close issues), a check run's title. One line, nothing
/// escaped, every mention, reference and URL defused.
pub fn inert_plain(text: &str) -> String {
    defuse(visible_line(text).collect(), false)
}

/// Markdown characters escaped in [`inert`] text: the ones that can open a link or an
/// image (`[`, `]`, `!`), HTML, an autolink or an entity (`<`, `>`, `&`), code, emphasis
/// or strikethrough, a table cell, math, and the escape itself.
fn escaped_in_markdown(c: char) -> bool {
    matches!(
        c,
        '\\' | '`' | '*' | '_' | '[' | ']' | '!' | '<' | '>' | '&' | '|' | '~' | '$'
    )
}

fn defuse(chars: Vec<char>, markdown: bool) -> String {
    let sha_cuts = sha_cuts(&chars);
    let mut out = String::with_capacity(chars.len() + 16);
    for (i, &c) in chars.iter().enumerate() {
        let at = |k: usize| chars.get(k).copied();
        if markdown && escaped_in_markdown(c) {
            out.push('\\');
        }
        // `www.`: the space goes before the dot.
        if c == '.' && i >= 3 && chars[i - 3..i].iter().all(|w| w.eq_ignore_ascii_case(&'w')) {
            out.push(ZWSP);
        }
        out.push(c);
        let breaks_after = match c {
            '@' | '#' => true,
            ':' => at(i + 1) == Some('/') && at(i + 2) == Some('/'),
            '-' => {
                i >= 2
                    && chars[i - 2].eq_ignore_ascii_case(&'g')
                    && chars[i - 1].eq_ignore_ascii_case(&'h')
                    && at(i + 1).is_some_and(|d| d.is_ascii_digit())
            }
            _ => sha_cuts.contains(&i),
        };
        if breaks_after {
            out.push(ZWSP);
        }
    }
    out
}

/// Where a word of 7 to 40 hexadecimal digits (what GitHub links as a commit) is cut:
/// after every sixth digit, so no piece is long enough to be a commit.
fn sha_cuts(chars: &[char]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        // ASCII words: a hexadecimal run GitHub sees between non-word characters is one.
        if !chars[start].is_ascii_alphanumeric() {
            start += 1;
            continue;
        }
        let end = chars[start..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .map_or(chars.len(), |n| start + n);
        let word = &chars[start..end];
        if (7..=40).contains(&word.len()) && word.iter().all(char::is_ascii_hexdigit) {
            cuts.extend((start + 5..end - 1).step_by(6));
        }
        start = end;
    }
    cuts
}

pub(crate) fn longest_run(text: &str, of: char) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == of { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

#[cfg(test)]
pub(crate) mod check;

#[cfg(test)]
mod tests {
    use super::check::{
        Allowed, HOSTILE, assert_inert_markdown, assert_inert_plain, events, hostile_text,
        very_long_line,
    };
    use super::*;
    use proptest::prelude::*;
    use pulldown_cmark::{Event, Tag, TagEnd};

    /// Shows our zero-width spaces, and what is left of control characters.
    fn shown(text: &str) -> String {
        text.replace(ZWSP, "<zwsp>")
    }

    #[test]
    fn inline_code_cannot_be_broken_out_of() {
        insta::assert_snapshot!(inline_code("a ``b`` c", 60), @"```a ``b`` c```");
        insta::assert_snapshot!(inline_code("`x", 60), @"`` `x ``");
        insta::assert_snapshot!(inline_code("line\nbreak", 60), @"`line break`");
        insta::assert_snapshot!(inline_code("abcdef", 3), @"`abc…`");
        insta::assert_snapshot!(inline_code("", 3), @r#"`""`"#);
        insta::assert_snapshot!(inline_code(" padded ", 60), @"`  padded  `");
    }

    #[test]
    fn a_code_block_outlasts_any_fence_inside() {
        insta::assert_snapshot!(code_block("Fixes #1, cc @octo-lead\n````\nnot the end"), @r"
        `````text
        Fixes #1, cc @octo-lead
        ````
        not the end
        `````
        ");
    }

    #[test]
    fn inert_text_mentions_and_references_nothing() {
        let text = inert("closes #12, thanks @octo-lead and @acme/team");
        assert!(!text.contains("@o") && !text.contains("@a") && !text.contains("#1"));
        assert_eq!(
            text.replace(ZWSP, ""),
            "closes #12, thanks @octo-lead and @acme/team"
        );
    }

    /// Every hostile string, as each function shows it.
    #[test]
    fn hostile_strings_as_shown() {
        let mut table = String::new();
        for hostile in HOSTILE {
            table.push_str(&format!(
                "{hostile:?}\n  inert: {}\n  plain: {}\n  code:  {}\n",
                shown(&inert(hostile)),
                shown(&inert_plain(hostile)),
                shown(&inline_code(hostile, 80)),
            ));
        }
        insta::assert_snapshot!(table, @r#"
        "`"
          inert: \`
          plain: `
          code:  `` ` ``
        "``"
          inert: \`\`
          plain: ``
          code:  ``` `` ```
        "```"
          inert: \`\`\`
          plain: ```
          code:  ```` ``` ````
        "a ``b`` c ````````"
          inert: a \`\`b\`\` c \`\`\`\`\`\`\`\`
          plain: a ``b`` c ````````
          code:  ````````` a ``b`` c ```````` `````````
        "`@octo-lead`"
          inert: \`@<zwsp>octo-lead\`
          plain: `@<zwsp>octo-lead`
          code:  `` `@octo-lead` ``
        " padded "
          inert:  padded 
          plain:  padded 
          code:  `  padded  `
        "@everyone please look, cc @octo-lead and @acme/security-team"
          inert: @<zwsp>everyone please look, cc @<zwsp>octo-lead and @<zwsp>acme/security-team
          plain: @<zwsp>everyone please look, cc @<zwsp>octo-lead and @<zwsp>acme/security-team
          code:  `@everyone please look, cc @octo-lead and @acme/security-team`
        "Fixes #1"
          inert: Fixes #<zwsp>1
          plain: Fixes #<zwsp>1
          code:  `Fixes #1`
        "closes acme/widgets#2"
          inert: closes acme/widgets#<zwsp>2
          plain: closes acme/widgets#<zwsp>2
          code:  `closes acme/widgets#2`
        "Resolved: #3, fix GH-4, CLOSED gh-5"
          inert: Resolved: #<zwsp>3, fix GH-<zwsp>4, CLOSED gh-<zwsp>5
          plain: Resolved: #<zwsp>3, fix GH-<zwsp>4, CLOSED gh-<zwsp>5
          code:  `Resolved: #3, fix GH-4, CLOSED gh-5`
        "fixes https://github.com/acme/widgets/issues/6"
          inert: fixes https:<zwsp>//github.com/acme/widgets/issues/6
          plain: fixes https:<zwsp>//github.com/acme/widgets/issues/6
          code:  `fixes https://github.com/acme/widgets/issues/6`
        "<img src=x onerror=alert(1)>"
          inert: \<img src=x onerror=alert(1)\>
          plain: <img src=x onerror=alert(1)>
          code:  `<img src=x onerror=alert(1)>`
        "[click](javascript:alert(1)) ![pixel](https://evil.example/p.png)"
          inert: \[click\](javascript:alert(1)) \!\[pixel\](https:<zwsp>//evil.example/p.png)
          plain: [click](javascript:alert(1)) ![pixel](https:<zwsp>//evil.example/p.png)
          code:  `[click](javascript:alert(1)) ![pixel](https://evil.example/p.png)`
        "<https://evil.example> www.evil.example mail@evil.example"
          inert: \<https:<zwsp>//evil.example\> www<zwsp>.evil.example mail@<zwsp>evil.example
          plain: <https:<zwsp>//evil.example> www<zwsp>.evil.example mail@<zwsp>evil.example
          code:  `<https://evil.example> www.evil.example mail@evil.example`
        "<!-- hidden"
          inert: \<\!-- hidden
          plain: <!-- hidden
          code:  `<!-- hidden`
        "</details><details open><summary>x</summary>"
          inert: \</details\>\<details open\>\<summary\>x\</summary\>
          plain: </details><details open><summary>x</summary>
          code:  `</details><details open><summary>x</summary>`
        "&#64;octo-lead &#x23;7 &commat;acme &amp;"
          inert: \&#<zwsp>64;octo-lead \&#<zwsp>x23;7 \&commat;acme \&amp;
          plain: &#<zwsp>64;octo-lead &#<zwsp>x23;7 &commat;acme &amp;
          code:  `&#64;octo-lead &#x23;7 &commat;acme &amp;`
        "line one\nline two\r\nFixes #8\r"
          inert: line one line two  Fixes #<zwsp>8 
          plain: line one line two  Fixes #<zwsp>8 
          code:  `line one line two  Fixes #8 `
        "tab\tand \u{1b}[31mescape\u{7}"
          inert: tab and  \[31mescape 
          plain: tab and  [31mescape 
          code:  `tab and  [31mescape `
        "zero\u{200b}width @\u{200b}octo-lead #\u{2060}9"
          inert: zerowidth @<zwsp>octo-lead #<zwsp>9
          plain: zerowidth @<zwsp>octo-lead #<zwsp>9
          code:  `zerowidth @octo-lead #9`
        "bidi \u{202e}gpj.exe\u{202c} \u{2066}isolate\u{2069}"
          inert: bidi gpj.exe isolate
          plain: bidi gpj.exe isolate
          code:  `bidi gpj.exe isolate`
        "tags \u{e0046}\u{e0069}\u{e0078}"
          inert: tags 
          plain: tags 
          code:  `tags `
        "deadbeefcafe1234 a5c3785ed8d6a35868bc169f07e40e889087fd2e"
          inert: deadbe<zwsp>efcafe<zwsp>1234 a5c378<zwsp>5ed8d6<zwsp>a35868<zwsp>bc169f<zwsp>07e40e<zwsp>889087<zwsp>fd2e
          plain: deadbe<zwsp>efcafe<zwsp>1234 a5c378<zwsp>5ed8d6<zwsp>a35868<zwsp>bc169f<zwsp>07e40e<zwsp>889087<zwsp>fd2e
          code:  `deadbeefcafe1234 a5c3785ed8d6a35868bc169f07e40e889087fd2e`
        "octo-lead@a5c3785 acme/widgets@a5c3785ed"
          inert: octo-lead@<zwsp>a5c378<zwsp>5 acme/widgets@<zwsp>a5c378<zwsp>5ed
          plain: octo-lead@<zwsp>a5c378<zwsp>5 acme/widgets@<zwsp>a5c378<zwsp>5ed
          code:  `octo-lead@a5c3785 acme/widgets@a5c3785ed`
        "**bold** _em_ ~~strike~~ $x^2$ $$y$$ | a | b |"
          inert: \*\*bold\*\* \_em\_ \~\~strike\~\~ \$x^2\$ \$\$y\$\$ \| a \| b \|
          plain: **bold** _em_ ~~strike~~ $x^2$ $$y$$ | a | b |
          code:  `**bold** _em_ ~~strike~~ $x^2$ $$y$$ | a | b |`
        "\\`escaped\\` \\"
          inert: \\\`escaped\\\` \\
          plain: \`escaped\` \
          code:  ``\`escaped\` \``
        "- [ ] task\n> quote\n# heading\n    indented\n---"
          inert: - \[ \] task \> quote #<zwsp> heading     indented ---
          plain: - [ ] task > quote #<zwsp> heading     indented ---
          code:  `- [ ] task > quote # heading     indented ---`
        "[^1]: footnote [x]: https://evil.example"
          inert: \[^1\]: footnote \[x\]: https:<zwsp>//evil.example
          plain: [^1]: footnote [x]: https:<zwsp>//evil.example
          code:  `[^1]: footnote [x]: https://evil.example`
        "#);
    }

    #[test]
    fn hostile_strings_are_inert_in_every_form() {
        let long = very_long_line();
        let all = HOSTILE.iter().copied().chain([long.as_str()]);
        for hostile in all {
            assert_inert_markdown(&format!("> {}", inert(hostile)), &Allowed::default());
            assert_inert_markdown(&format!("**{}**", inert(hostile)), &Allowed::default());
            assert_inert_plain(&inert_plain(hostile), &Allowed::default());
            assert_one_code_span(hostile, 200);
            assert_one_code_block(hostile);
        }
        assert_eq!(inline_code(&long, 200).chars().count(), 203);
    }

    /// `x <code> y` is a paragraph of text, one code span showing the visible line, text.
    fn assert_one_code_span(text: &str, max: usize) {
        let md = format!("x {} y", inline_code(text, max));
        let events = events(&md);
        let expected: String = {
            let mut chars = visible_line(text);
            let mut shown: String = chars.by_ref().take(max).collect();
            if chars.next().is_some() {
                shown.push('…');
            }
            if shown.is_empty() {
                "\"\"".into()
            } else {
                shown
            }
        };
        assert!(
            matches!(
                &events[..],
                [
                    Event::Start(Tag::Paragraph),
                    Event::Text(before),
                    Event::Code(code),
                    Event::Text(after),
                    Event::End(TagEnd::Paragraph),
                ] if before.as_ref() == "x " && code.as_ref() == expected && after.as_ref() == " y"
            ),
            "{md:?} → {events:?}"
        );
    }

    /// A code block is one code block, holding the text.
    fn assert_one_code_block(text: &str) {
        let md = format!("{}\n\nafter", code_block(text));
        let events = events(&md);
        let end = events
            .iter()
            .position(|e| matches!(e, Event::End(TagEnd::CodeBlock)))
            .unwrap_or_else(|| panic!("no code block in {md:?}"));
        assert!(
            matches!(events[0], Event::Start(Tag::CodeBlock(_))),
            "{events:?}"
        );
        assert!(
            events[1..end].iter().all(|e| matches!(e, Event::Text(_))),
            "{events:?}"
        );
        assert!(
            matches!(
                &events[end + 1..],
                [Event::Start(Tag::Paragraph), Event::Text(t), Event::End(TagEnd::Paragraph)]
                    if t.as_ref() == "after"
            ),
            "{md:?} → {events:?}"
        );
    }

    proptest! {
        #[test]
        fn no_user_text_comes_out_live(text in hostile_text()) {
            assert_inert_markdown(&format!("> {}", inert(&text)), &Allowed::default());
            assert_inert_markdown(&format!("**{}** · after", inert(&text)), &Allowed::default());
            assert_inert_plain(&inert_plain(&text), &Allowed::default());
            assert_one_code_span(&text, 60);
            assert_one_code_block(&text);
        }

        #[test]
        fn inert_text_reads_as_written(text in "[ -~]{0,40}") {
            // Printable ASCII: only zero-width spaces are added, and the rendered text
            // is the text.
            prop_assert_eq!(inert_plain(&text).replace(ZWSP, ""), text.clone());
            let rendered: String = events(&format!("x {}", inert(&text)))
                .into_iter()
                .filter_map(|e| match e {
                    Event::Text(t) => Some(t.to_string()),
                    Event::SoftBreak | Event::HardBreak => Some("\n".into()),
                    _ => None,
                })
                .collect();
            let expected = format!("x {text}");
            let rendered = rendered.replace(ZWSP, "");
            prop_assert_eq!(rendered.trim_end(), expected.trim_end());
        }
    }
}
