//! GitHub's documented limits on check runs, enforced before sending so a request is
//! never rejected for them.

use std::borrow::Cow;

use super::types::CheckRunAction;

/// `output.summary` and `output.text`, in characters (JSON Schema `maxLength` counts
/// code points, as Rust's `chars` does).
pub const MAX_OUTPUT_CHARS: usize = 65_535;
/// Issue and pull-request comment bodies.
pub const MAX_COMMENT_CHARS: usize = 65_536;
pub const MAX_ANNOTATIONS_PER_REQUEST: usize = 50;
pub const MAX_ACTIONS: usize = 3;
pub const MAX_ACTION_LABEL_CHARS: usize = 20;
pub const MAX_ACTION_DESCRIPTION_CHARS: usize = 40;
pub const MAX_ACTION_IDENTIFIER_CHARS: usize = 20;

/// Appended to text cut to a limit, inside the limit.
pub const TRUNCATION_MARKER: &str = "\n\n… (truncated)";

/// `text` if it has at most `max_chars` characters; otherwise its start followed by
/// [`TRUNCATION_MARKER`], `max_chars` characters in all. Cuts on a character boundary.
pub fn truncate_chars(text: &str, max_chars: usize) -> Cow<'_, str> {
    if text.chars().nth(max_chars).is_none() {
        return Cow::Borrowed(text);
    }
    let marker_chars = TRUNCATION_MARKER.chars().count();
    let Some(keep) = max_chars.checked_sub(marker_chars) else {
        // A limit shorter than the marker: plain cut.
        return Cow::Owned(text.chars().take(max_chars).collect());
    };
    let keep_bytes = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    let mut out = String::with_capacity(keep_bytes + TRUNCATION_MARKER.len());
    out.push_str(&text[..keep_bytes]);
    out.push_str(TRUNCATION_MARKER);
    Cow::Owned(out)
}

/// Splits annotations into requests of at most [`MAX_ANNOTATIONS_PER_REQUEST`]; GitHub
/// appends the annotations of each update to the run's. Never empty: the first batch
/// goes with the first request even when it has none.
pub fn annotation_batches<T>(annotations: Vec<T>) -> Vec<Vec<T>> {
    let mut batches = Vec::with_capacity(annotations.len().div_ceil(MAX_ANNOTATIONS_PER_REQUEST));
    let mut rest = annotations.into_iter().peekable();
    loop {
        batches.push(rest.by_ref().take(MAX_ANNOTATIONS_PER_REQUEST).collect());
        if rest.peek().is_none() {
            return batches;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("{count} actions given; GitHub accepts at most {MAX_ACTIONS}")]
    TooMany { count: usize },
    #[error("action {index}: {field} has {chars} characters; at most {max} are allowed")]
    TooLong {
        index: usize,
        field: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("action {index}: {field} is empty")]
    Empty { index: usize, field: &'static str },
}

/// Checks actions against GitHub's limits; they are not shortened because an identifier
/// cut short would no longer be recognised when the button is clicked.
pub fn validate_actions(actions: &[CheckRunAction]) -> Result<(), ActionError> {
    if actions.len() > MAX_ACTIONS {
        return Err(ActionError::TooMany {
            count: actions.len(),
        });
    }
    for (index, action) in actions.iter().enumerate() {
        let fields = [
            ("label", &action.label, MAX_ACTION_LABEL_CHARS),
            (
                "description",
                &action.description,
                MAX_ACTION_DESCRIPTION_CHARS,
            ),
            (
                "identifier",
                &action.identifier,
                MAX_ACTION_IDENTIFIER_CHARS,
            ),
        ];
        for (field, value, max) in fields {
            let chars = value.chars().count();
            if chars > max {
                return Err(ActionError::TooLong {
                    index,
                    field,
                    chars,
                    max,
                });
            }
            if chars == 0 && field != "description" {
                return Err(ActionError::Empty { index, field });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert!(matches!(truncate_chars("hello", 5), Cow::Borrowed("hello")));
        let exactly = "é".repeat(MAX_OUTPUT_CHARS);
        assert!(matches!(
            truncate_chars(&exactly, MAX_OUTPUT_CHARS),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn long_text_is_cut_to_the_limit_with_a_visible_marker() {
        let long = "x".repeat(MAX_OUTPUT_CHARS + 1);
        let cut = truncate_chars(&long, MAX_OUTPUT_CHARS);
        assert_eq!(cut.chars().count(), MAX_OUTPUT_CHARS);
        assert!(cut.ends_with(TRUNCATION_MARKER));
        assert!(cut.contains("(truncated)"));
        assert!(cut.starts_with("xxxx"));
    }

    #[test]
    fn multi_byte_characters_count_as_one_and_are_never_split() {
        // 4-byte characters: a byte-based cut would exceed the limit or split one.
        let crabs = "🦀".repeat(70_000);
        let cut = truncate_chars(&crabs, MAX_OUTPUT_CHARS);
        assert_eq!(cut.chars().count(), MAX_OUTPUT_CHARS);
        assert!(cut.ends_with(TRUNCATION_MARKER));
        let kept = cut.strip_suffix(TRUNCATION_MARKER).unwrap();
        assert!(kept.chars().all(|c| c == '🦀'));
        assert_eq!(
            kept.chars().count(),
            MAX_OUTPUT_CHARS - TRUNCATION_MARKER.chars().count()
        );
        let mixed = "aé🦀".repeat(30_000);
        let cut = truncate_chars(&mixed, MAX_OUTPUT_CHARS);
        assert_eq!(cut.chars().count(), MAX_OUTPUT_CHARS);
    }

    #[test]
    fn a_limit_shorter_than_the_marker_still_holds() {
        assert_eq!(truncate_chars("abcdef", 3), "abc");
    }

    #[test]
    fn annotations_go_fifty_per_request() {
        let sizes = |n: usize| -> Vec<usize> {
            annotation_batches((0..n).collect::<Vec<_>>())
                .iter()
                .map(Vec::len)
                .collect()
        };
        assert_eq!(sizes(120), vec![50, 50, 20]);
        assert_eq!(sizes(100), vec![50, 50]);
        assert_eq!(sizes(50), vec![50]);
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(0), vec![0]);
        let batches = annotation_batches((0..120).collect::<Vec<_>>());
        assert_eq!(batches.concat(), (0..120).collect::<Vec<_>>());
    }

    #[test]
    fn actions_within_limits_pass() {
        let actions = vec![
            CheckRunAction::new("Retry", "Run the task again", "retry"),
            CheckRunAction::new("x".repeat(20), "é".repeat(40), "i".repeat(20)),
            CheckRunAction::new("Cancel", "", "cancel"),
        ];
        assert_eq!(validate_actions(&actions), Ok(()));
        assert_eq!(validate_actions(&[]), Ok(()));
    }

    #[test]
    fn invalid_actions_are_typed_errors() {
        let ok = CheckRunAction::new("Retry", "Run the task again", "retry");
        assert_eq!(
            validate_actions(&vec![ok.clone(); 4]),
            Err(ActionError::TooMany { count: 4 })
        );
        let long_label = CheckRunAction::new("x".repeat(21), "d", "id");
        assert_eq!(
            validate_actions(&[ok.clone(), long_label]),
            Err(ActionError::TooLong {
                index: 1,
                field: "label",
                chars: 21,
                max: 20
            })
        );
        let long_description = CheckRunAction::new("l", "é".repeat(41), "id");
        assert!(matches!(
            validate_actions(&[long_description]),
            Err(ActionError::TooLong {
                field: "description",
                chars: 41,
                ..
            })
        ));
        let long_identifier = CheckRunAction::new("l", "d", "i".repeat(21));
        assert!(matches!(
            validate_actions(&[long_identifier]),
            Err(ActionError::TooLong {
                field: "identifier",
                ..
            })
        ));
        let empty_identifier = CheckRunAction::new("l", "d", "");
        assert_eq!(
            validate_actions(&[empty_identifier]),
            Err(ActionError::Empty {
                index: 0,
                field: "identifier"
            })
        );
    }
}
