//! Payload → trigger decoding edge cases, on fixtures altered the way real deliveries vary.

use bg_agent::webhook::trigger::ParsedCommand;
use bg_agent::webhook::{DecodeContext, Decoded, Trigger, decode};
use bg_agent_core::command::Command;
use bg_agent_testkit::fixtures::{APP_ID, fixture};
use serde_json::{Value, json};

fn context() -> DecodeContext {
    DecodeContext {
        app_id: Some(APP_ID as i64),
        app_slug: "bg-agent".into(),
    }
}

fn decode_value(event: &str, payload: &Value) -> Decoded {
    decode(event, &serde_json::to_vec(payload).unwrap(), &context())
}

fn payload(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn command_of(decoded: Decoded) -> ParsedCommand {
    match decoded {
        Decoded::Trigger(trigger) => match *trigger {
            Trigger::Command(c) => c.command,
            other => panic!("expected a command, got {other:?}"),
        },
        other => panic!("expected a trigger, got {other:?}"),
    }
}

#[test]
fn a_bad_command_carries_a_helpful_reply() {
    let mut p = payload("issue_comment.created.json");
    p["comment"]["body"] = json!("Please:\n/bg-agent stauts\nthanks");
    match command_of(decode_value("issue_comment", &p)) {
        ParsedCommand::Invalid { error, reply } => {
            assert!(error.contains("stauts"), "{error}");
            assert!(reply.contains("status"), "{reply}");
            assert!(reply.contains("/bg-agent help"), "{reply}");
        }
        valid => panic!("expected an invalid command, got {valid:?}"),
    }
}

#[test]
fn commands_in_code_or_quotes_are_not_commands() {
    let mut p = payload("issue_comment.created.json");
    p["comment"]["body"] = json!("> /bg-agent upgrade lodash 4.17.21\n\n```\n/bg-agent run x\n```");
    assert!(matches!(
        decode_value("issue_comment", &p),
        Decoded::Ignored(_)
    ));
}

#[test]
fn the_first_command_line_counts() {
    let mut p = payload("issue_comment.created.json");
    p["comment"]["body"] = json!("/bg-agent run make it faster\n/bg-agent cancel 3");
    let ParsedCommand::Valid { command } = command_of(decode_value("issue_comment", &p)) else {
        panic!("valid command expected");
    };
    assert_eq!(
        command,
        Command::Run {
            instructions: "make it faster\n/bg-agent cancel 3".into()
        }
    );
}

#[test]
fn bots_and_this_app_are_ignored_but_humans_are_not() {
    let mut p = payload("issue_comment.created.json");
    p["sender"]["type"] = json!("Bot");
    p["comment"]["user"]["type"] = json!("Bot");
    let Decoded::Ignored(reason) = decode_value("issue_comment", &p) else {
        panic!("a bot's comment must be ignored");
    };
    assert!(reason.contains("bot"), "{reason}");

    // Another app's bot named like ours is still recognised by login.
    let mut p = payload("issue_comment.created.json");
    p["comment"]["user"]["login"] = json!("bg-agent[bot]");
    assert!(matches!(
        decode_value("issue_comment", &p),
        Decoded::Ignored(_)
    ));
}

#[test]
fn check_runs_of_other_apps_and_unknown_buttons_are_ignored() {
    let mut p = payload("check_run.rerequested.json");
    p["check_run"]["app"]["id"] = json!(999);
    let Decoded::Ignored(reason) = decode_value("check_run", &p) else {
        panic!("another app's check run must be ignored");
    };
    assert!(reason.contains("another app"), "{reason}");

    let mut p = payload("check_run.requested_action.retry.json");
    p["requested_action"]["identifier"] = json!("explode");
    let Decoded::Ignored(reason) = decode_value("check_run", &p) else {
        panic!("unknown action identifiers are ignored");
    };
    assert!(reason.contains("explode"), "{reason}");
}

#[test]
fn payloads_of_the_wrong_shape_are_malformed_with_the_reason() {
    let mut p = payload("issue_comment.created.json");
    p.as_object_mut().unwrap().remove("installation");
    let Decoded::Malformed(reason) = decode_value("issue_comment", &p) else {
        panic!("a delivery without installation is not for an App");
    };
    assert!(reason.contains("installation"), "{reason}");

    let mut p = payload("issues.labeled.json");
    p["issue"]["number"] = json!("seventeen");
    let Decoded::Malformed(reason) = decode_value("issues", &p) else {
        panic!("a wrong type is malformed");
    };
    assert!(reason.contains("does not match the event"), "{reason}");

    assert!(matches!(
        decode("issues", b"[]", &context()),
        Decoded::Malformed(_)
    ));
}

#[test]
fn label_templates_are_read_from_the_label() {
    let mut p = payload("issues.labeled.json");
    p["label"]["name"] = json!("bg-agent:");
    assert!(matches!(decode_value("issues", &p), Decoded::Ignored(_)));
    p["label"]["name"] = json!("bg-agent:migrate-jest");
    let Decoded::Trigger(trigger) = decode_value("issues", &p) else {
        panic!("label trigger expected");
    };
    let Trigger::Label(label) = *trigger else {
        panic!("label trigger expected");
    };
    assert_eq!(label.template.as_deref(), Some("migrate-jest"));
    assert_eq!(label.issue_number, 17);
}

#[test]
fn a_closed_pull_request_is_merged_or_closed_and_a_reopened_one_open_again() {
    use bg_agent_core::task::PrState;
    let state_of = |name: &str| match decode("pull_request", &fixture(name), &context()) {
        Decoded::Trigger(trigger) => match *trigger {
            Trigger::PullRequest(change) => {
                assert_eq!(change.number, 18);
                assert_eq!(change.repository_id, 700001);
                assert_eq!(change.repository, "acme/widgets");
                assert_eq!(change.installation_id, 4200001);
                assert_eq!(change.sender.login, "octo-lead");
                (change.state, change.updated_at.map(|t| t.to_rfc3339()))
            }
            other => panic!("{name}: expected a pull request change, got {other:?}"),
        },
        other => panic!("{name}: expected a trigger, got {other:?}"),
    };
    let closed_at = Some("2025-06-02T09:33:39+00:00".to_owned());
    assert_eq!(
        state_of("pull_request.closed.json"),
        (PrState::Merged, closed_at.clone())
    );
    assert_eq!(
        state_of("pull_request.closed.unmerged.json"),
        (PrState::Closed, closed_at)
    );
    assert_eq!(
        state_of("pull_request.reopened.json"),
        (PrState::Open, Some("2025-06-02T09:40:12+00:00".to_owned()))
    );
    // Other actions (a push to the branch, an edit) say nothing about the outcome.
    let mut p = payload("pull_request.reopened.json");
    p["action"] = json!("synchronize");
    let Decoded::Ignored(reason) = decode_value("pull_request", &p) else {
        panic!("synchronize is not used");
    };
    assert_eq!(reason, "`pull_request.synchronize` is not used");
    // A payload missing its pull request is malformed, not a panic.
    let mut p = payload("pull_request.closed.json");
    p.as_object_mut().unwrap().remove("pull_request");
    assert!(matches!(
        decode_value("pull_request", &p),
        Decoded::Malformed(_)
    ));
}

#[test]
fn unknown_events_are_ignored() {
    assert!(matches!(
        decode("star", br#"{"action":"created"}"#, &context()),
        Decoded::Ignored(_)
    ));
}

#[test]
fn the_envelope_comes_from_the_same_parse_for_every_event() {
    use bg_agent::webhook::trigger::{Envelope, decode_delivery};
    let (envelope, _) = decode_delivery(
        "pull_request",
        &fixture("pull_request.closed.json"),
        &context(),
    );
    assert_eq!(
        envelope,
        Envelope {
            action: Some("closed".into()),
            installation_id: Some(4200001)
        }
    );
    let (envelope, decoded) =
        decode_delivery("issues", &fixture("issues.labeled.json"), &context());
    assert_eq!(envelope.action.as_deref(), Some("labeled"));
    assert!(matches!(decoded, Decoded::Trigger(_)));
    let (envelope, decoded) = decode_delivery("issues", b"not json", &context());
    assert_eq!(envelope, Envelope::default());
    let Decoded::Malformed(reason) = decoded else {
        panic!("non-JSON is malformed");
    };
    assert!(reason.contains("not a JSON object"), "{reason}");
}
