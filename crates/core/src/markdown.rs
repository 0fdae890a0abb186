//! User text inside the Markdown we post to GitHub. What people wrote (instructions,
//! parameters, errors quoting them) is shown, never interpreted: it cannot @-mention
//! anyone, reference or close an issue, or break out of the code it is shown in.

/// Inline code for one line of user text, at most `max_chars` characters (cut with `…`),
/// control characters shown as spaces, fenced with more backticks than any run inside.
pub fn inline_code(text: &str, max_chars: usize) -> String {
    if text.is_empty() {
        return "`\"\"`".to_string();
    }
    let mut shown: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        shown.push('…');
    }
    let fence = "`".repeat(longest_run(&shown, '`') + 1);
    // A code span that starts or ends with a backtick needs a space inside its fence.
    let pad = if shown.starts_with('`') || shown.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{shown}{pad}{fence}")
}

/// A fenced code block holding `text` as it is, its fence longer than any run of
/// backticks inside, so nothing in it is Markdown.
pub fn code_block(text: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`').max(2) + 1);
    format!("{fence}text\n{text}\n{fence}")
}

/// Prose from a user, kept readable but inert: a zero-width space after every `@` and
/// `#` so GitHub links no one and no issue (and no closing keyword finds its issue).
pub fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        out.push(c);
        if matches!(c, '@' | '#') {
            out.push('\u{200B}');
        }
    }
    out
}

fn longest_run(text: &str, of: char) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == of { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_code_cannot_be_broken_out_of() {
        insta::assert_snapshot!(inline_code("a ``b`` c", 60), @"```a ``b`` c```");
        insta::assert_snapshot!(inline_code("`x", 60), @"`` `x ``");
        insta::assert_snapshot!(inline_code("line\nbreak", 60), @"`line break`");
        insta::assert_snapshot!(inline_code("abcdef", 3), @"`abc…`");
        insta::assert_snapshot!(inline_code("", 3), @r#"`""`"#);
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
            text.replace('\u{200B}', ""),
            "closes #12, thanks @octo-lead and @acme/team"
        );
    }
}
