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

/// The reply a person reads for `err`. Its first paragraph is the error's
/// `Display`, so a snapshot of the reply shows both.
fn reply(err: &ParseError) -> String {
    let reply = err.render_markdown();
    assert!(reply.starts_with(&format!("{err}\n\n")), "{reply}");
    reply
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
        Ok(Command::Cancel {
            task: Some(TaskId::from(3))
        })
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
fn quotes_inside_lists_are_ignored() {
    // A line without `>` continues the quote's paragraph, even inside a list item.
    assert_eq!(parse_comment("- > quote\n  /bg-agent status"), None);
    assert_eq!(parse_comment("1. > a\n/bg-agent status"), None);
    assert_eq!(parse_comment("- a\n- > b\n/bg-agent status"), None);
    assert_eq!(parse_comment("> - a\n/bg-agent status"), None);
    // A GitHub alert is a quote too.
    assert_eq!(parse_comment("> [!NOTE]\n/bg-agent status"), None);
    // After a blank line, the list item's own paragraph is text again.
    assert_eq!(
        parse("- item\n\n  > quote\n\n  /bg-agent status"),
        Ok(Command::Status)
    );
}

#[test]
fn tilde_fences() {
    assert_eq!(
        parse("~~~\n/bg-agent help\n~~~\n/bg-agent status"),
        Ok(Command::Status)
    );
    // A shorter tilde fence does not close a longer one.
    assert_eq!(parse_comment("~~~~\n~~~\n/bg-agent status\n~~~~"), None);
    // Backticks do not close a tilde fence, tildes do.
    assert_eq!(
        parse("~~~\n```\n~~~\n/bg-agent status"),
        Ok(Command::Status)
    );
}

#[test]
fn code_inside_list_items_is_ignored() {
    assert_eq!(
        parse("- ```\n  /bg-agent help\n  ```\n/bg-agent status"),
        Ok(Command::Status)
    );
    assert_eq!(parse_comment("- `x\n  /bg-agent status`"), None);
}

#[test]
fn command_after_a_closed_fence() {
    // The closing fence may be indented up to three spaces.
    assert_eq!(
        parse("```\n/bg-agent help\n   ```\n/bg-agent status"),
        Ok(Command::Status)
    );
    // A fence opened in a quote ends with the quote.
    assert_eq!(parse("> ```\n/bg-agent status"), Ok(Command::Status));
}

#[test]
fn html_blocks_are_ignored() {
    assert_eq!(parse_comment("<div>\n/bg-agent status\n</div>"), None);
    // A tag alone on the first line starts an HTML block that runs to a blank line.
    assert_eq!(parse_comment("<span>\n/bg-agent status"), None);
    assert_eq!(parse_comment("<?php\n\n/bg-agent status\n?>"), None);
    // Such a tag cannot interrupt a paragraph: it is inline HTML there.
    assert_eq!(parse("text\n<span>\n/bg-agent status"), Ok(Command::Status));
    // Markdown between blank lines inside `<details>` is text.
    assert_eq!(
        parse("<details>\n<summary>Log</summary>\n\n/bg-agent status\n\n</details>"),
        Ok(Command::Status)
    );
}

#[test]
fn html_comments_containing_a_command() {
    assert_eq!(
        parse("<!--\n/bg-agent status -->\n/bg-agent help"),
        Ok(Command::Help)
    );
    assert_eq!(parse_comment("- x <!--\n  /bg-agent status\n  -->"), None);
    assert_eq!(parse("<!-- a -->b\n/bg-agent status"), Ok(Command::Status));
    assert_eq!(parse("<!--->\n/bg-agent status"), Ok(Command::Status));
}

#[test]
fn text_that_is_not_shown_is_ignored() {
    // A link title is a tooltip, not text in the comment.
    assert_eq!(parse_comment("[a](u \"\n/bg-agent status\")"), None);
}

#[test]
fn headings_and_rules_are_text() {
    // `---` under a line makes it a heading, which is still shown as text.
    assert_eq!(parse("/bg-agent status\n---"), Ok(Command::Status));
    assert_eq!(parse("* * *\n/bg-agent status"), Ok(Command::Status));
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
    insta::assert_snapshot!(reply(&err), @"
    Argument `a` is given more than once.

    Usage: `/bg-agent <template> [args...] [key=value...]`

    See `/bg-agent help` for all commands.
    ");
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
    insta::assert_snapshot!(reply(&err), @r#"
    Unclosed quote `"`: add the closing quote.

    Usage: `/bg-agent <template> [args...] [key=value...]`

    See `/bg-agent help` for all commands.
    "#);
    let single = ParseError::UnclosedQuote {
        command: CommandKind::Retry,
        quote: '\'',
    };
    assert_eq!(parse("/bg-agent retry 'x"), Err(single.clone()));
    insta::assert_snapshot!(reply(&single), @"
    Unclosed quote `'`: add the closing quote.

    Usage: `/bg-agent retry [task-id]`

    See `/bg-agent help` for all commands.
    ");
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
    insta::assert_snapshot!(reply(&err), @"
    Unknown command `stauts`. Did you mean `status`?

    Usage: `/bg-agent status`

    See `/bg-agent help` for all commands.
    ");
    let err = unknown("123", None);
    insta::assert_snapshot!(reply(&err), @"
    Unknown command `123`.

    Usage: `/bg-agent <template> [args...] [key=value...]`

    See `/bg-agent help` for all commands.
    ");
}

#[test]
fn user_text_cannot_break_out_of_code() {
    insta::assert_snapshot!(unknown("a`b", None).to_string(), @"Unknown command ``a`b``.");
    insta::assert_snapshot!(unknown("`x", None).to_string(), @"Unknown command `` `x ``.");
    let long = unknown(&"x".repeat(500), None).to_string();
    assert!(long.len() < 100, "{long}");
    insta::assert_snapshot!(long, @"Unknown command `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`.");
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
    insta::assert_snapshot!(reply(&err), @"
    `/bg-agent run` needs instructions.

    Usage: `/bg-agent run <instructions>`

    See `/bg-agent help` for all commands.
    ");
}

// --- retry / cancel / status / help -----------------------------------------

#[test]
fn task_ids() {
    assert_eq!(
        parse("/bg-agent retry 42"),
        Ok(Command::Retry {
            task: Some(TaskId::from(42))
        })
    );
    assert_eq!(
        parse("/bg-agent retry #42"),
        Ok(Command::Retry {
            task: Some(TaskId::from(42))
        })
    );
    assert_eq!(
        parse("/bg-agent cancel #7"),
        Ok(Command::Cancel {
            task: Some(TaskId::from(7))
        })
    );
    assert_eq!(
        parse("/bg-agent cancel \"9\""),
        Ok(Command::Cancel {
            task: Some(TaskId::from(9))
        })
    );
    assert_eq!(
        parse(&format!("/bg-agent retry {}", i64::MAX)),
        Ok(Command::Retry {
            task: Some(TaskId::from(i64::MAX))
        })
    );
    // Other lines are ignored.
    assert_eq!(
        parse("/bg-agent retry 1\nbecause it flaked"),
        Ok(Command::Retry {
            task: Some(TaskId::from(1))
        })
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
    let empty = ParseError::InvalidTaskId {
        command: CommandKind::Cancel,
        given: String::new(),
    };
    assert_eq!(parse("/bg-agent cancel \"\""), Err(empty.clone()));
    insta::assert_snapshot!(reply(&empty), @r#"
    `""` is not a task id; use a number such as `42` or `#42`.

    Usage: `/bg-agent cancel [task-id]`

    See `/bg-agent help` for all commands.
    "#);
    insta::assert_snapshot!(reply(&err), @"
    `abc` is not a task id; use a number such as `42` or `#42`.

    Usage: `/bg-agent retry [task-id]`

    See `/bg-agent help` for all commands.
    ");
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
    // A `key=value` argument where none is taken.
    insta::assert_snapshot!(reply(&unexpected(CommandKind::Retry, "task=1")), @"
    Unexpected argument `task=1` for `/bg-agent retry`.

    Usage: `/bg-agent retry [task-id]`

    See `/bg-agent help` for all commands.
    ");
    let err = unexpected(CommandKind::Status, "all");
    insta::assert_snapshot!(reply(&err), @"
    Unexpected argument `all` for `/bg-agent status`.

    Usage: `/bg-agent status`

    See `/bg-agent help` for all commands.
    ");
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
        Command::Cancel {
            task: Some(TaskId::from(1)),
        },
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
fn help_text() {
    insta::assert_snapshot!(help_markdown(), @r#"
    ### bg-agent commands

    Write a command at the start of a line in a comment. Only the first command in a comment counts; commands in code blocks, inline code, quotes and HTML are ignored.

    - `/bg-agent <template> [args...] [key=value...]` — Start a task from a template, with positional and `key=value` arguments (quote values that contain spaces: `note="a b"`). Example: `/bg-agent upgrade lodash 4.17.21`
    - `/bg-agent run <instructions>` — Start a free-form task; the instructions are the rest of the line and every line below it. Example: `/bg-agent run Add a --json flag to the export command`
    - `/bg-agent retry [task-id]` — Retry a task (`42` or `#42`); without an id, the latest task here. Example: `/bg-agent retry #42`
    - `/bg-agent cancel [task-id]` — Cancel a queued or running task; without an id, the latest task here. Example: `/bg-agent cancel 42`
    - `/bg-agent status` — Show your latest tasks in this repository.
    - `/bg-agent help` — Show this help.
    "#);
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
    fn nothing_in_an_unclosed_fence_is_a_command(
        parts in prop::collection::vec(fragment(), 0..60)
    ) {
        let body = parts.concat();
        prop_assume!(!body.contains("~~~~~~~~~~"));
        prop_assert_eq!(parse_comment(&format!("~~~~~~~~~~\n{body}")), None);
    }

    #[test]
    fn nothing_in_an_unclosed_html_comment_is_a_command(
        parts in prop::collection::vec(fragment(), 0..60)
    ) {
        let body = parts.concat();
        prop_assume!(!body.contains("-->"));
        prop_assert_eq!(parse_comment(&format!("<!--\n{body}")), None);
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
