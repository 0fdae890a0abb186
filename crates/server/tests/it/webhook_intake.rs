//! `POST /webhook` through the real router, workers and PostgreSQL.

use std::collections::HashMap;

use bg_agent::config::WorkerConfig;
use bg_agent::engine::DeliveryWorker;
use bg_agent::store::{DeliveryState, NewDelivery, Store};
use bg_agent::webhook::inbox::FreshDeliveries;
use bg_agent::webhook::trigger::{CheckRunButton, InstallationChange, ParsedCommand};
use bg_agent::webhook::{DecodeContext, Trigger, sign};
use bg_agent_testkit::fixtures::{APP_ID, ROTATED_SECRET, SECRET, fixture};
use bg_agent_testkit::recording::{HandlerMode, RecordingHandler, TestApp};

const COMMENT: &str = "issue_comment.created.json";

#[tokio::test]
async fn signed_delivery_is_stored_acknowledged_and_decoded() {
    let app = TestApp::start().await;
    let answer = app.deliver_fixture(COMMENT).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["status"], "accepted");
    assert_eq!(answer.body["delivery"], answer.guid.as_str());

    let record = app.processed(&answer.guid).await;
    assert_eq!(record.state, DeliveryState::Processed, "{record:?}");
    assert_eq!(record.event, "issue_comment");
    assert_eq!(record.action.as_deref(), Some("created"));
    assert_eq!(record.installation_id, Some(4200001));

    let calls = app.handler.calls_for(&answer.guid);
    assert_eq!(calls.len(), 1);
    let Trigger::Command(command) = &calls[0] else {
        panic!("expected a command trigger, got {:?}", calls[0]);
    };
    assert_eq!(command.repository.full_name, "acme/widgets");
    assert_eq!(command.issue_number, 17);
    assert_eq!(command.sender.login, "octo-lead");
    assert_eq!(
        serde_json::to_value(&command.command).unwrap(),
        serde_json::json!({"status": "valid", "command": {"kind": "template", "name": "upgrade",
            "positional": ["lodash", "4.17.21"], "named": {}}})
    );
}

#[tokio::test]
async fn signatures_are_checked_against_every_rotated_secret() {
    let app = TestApp::start().await;
    let body = fixture(COMMENT);
    let guid = |n: u32| format!("sig-test-{n}");

    // The second (previous) secret still verifies during a rotation.
    let rotated = sign(ROTATED_SECRET.as_bytes(), &body);
    let answer = app
        .deliver_as("issue_comment", &guid(1), &body, Some(&rotated))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    let good = sign(SECRET.as_bytes(), &body);
    let wrong_secret = sign(b"not-our-secret", &body);
    let uppercase = format!("sha256={}", good["sha256=".len()..].to_uppercase());
    let cases: [(Option<&str>, &str); 6] = [
        (None, "missing"),
        (Some(&wrong_secret), "does not match"),
        (Some("sha256=zz"), "64 lowercase hex"),
        (Some(&good["sha256=".len()..]), "64 lowercase hex"),
        (Some(&uppercase), "64 lowercase hex"),
        (Some(&good.replace("sha256=", "sha1=")), "64 lowercase hex"),
    ];
    for (n, (signature, expected)) in (2..).zip(cases) {
        let answer = app
            .deliver_as("issue_comment", &guid(n), &body, signature)
            .await;
        assert_eq!(answer.status, 401, "{signature:?}: {}", answer.body);
        let message = answer.body["error"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{signature:?}: {message}");
        assert!(app.db.store().delivery(&guid(n)).await.unwrap().is_none());
    }
    // A body changed after signing fails too.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let answer = app
        .deliver_as("issue_comment", &guid(99), &tampered, Some(&good))
        .await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn missing_headers_and_oversized_bodies_are_refused() {
    let app = TestApp::start().await;
    let body = fixture(COMMENT);
    let signature = sign(SECRET.as_bytes(), &body);
    let post = || {
        app.client
            .post(format!("{}/webhook", app.url))
            .header("x-hub-signature-256", &signature)
    };

    let no_event = post()
        .header("x-github-delivery", "d-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_event.status(), 400);
    let text = no_event.text().await.unwrap();
    assert!(text.contains("X-GitHub-Event"), "{text}");

    let no_delivery = post()
        .header("x-github-event", "issue_comment")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_delivery.status(), 400);
    assert!(
        no_delivery
            .text()
            .await
            .unwrap()
            .contains("X-GitHub-Delivery")
    );

    let big = vec![b' '; bg_agent::webhook::MAX_PAYLOAD_BYTES + 1];
    let big_signature = sign(SECRET.as_bytes(), &big);
    let answer = app
        .deliver_as("issue_comment", "too-big", &big, Some(&big_signature))
        .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap().contains("26214400"));
    assert_eq!(app.db.store().delivery_counts().await.unwrap().total(), 0);
}

#[tokio::test]
async fn non_json_body_with_a_valid_signature_is_kept_as_failed() {
    let app = TestApp::start().await;
    let answer = app.deliver("issue_comment", b"this is not json").await;
    assert_eq!(answer.status, 202);
    let record = app.processed(&answer.guid).await;
    assert_eq!(record.state, DeliveryState::Failed);
    assert!(record.reason.unwrap().contains("not a JSON object"));
    assert!(app.handler.calls().is_empty());
}

#[tokio::test]
async fn a_redelivery_is_acknowledged_but_processed_once() {
    let app = TestApp::start().await;
    let body = fixture(COMMENT);
    let signature = sign(SECRET.as_bytes(), &body);
    let first = app
        .deliver_as("issue_comment", "redelivered-1", &body, Some(&signature))
        .await;
    assert_eq!(first.status, 202);
    app.processed("redelivered-1").await;
    let again = app
        .deliver_as("issue_comment", "redelivered-1", &body, Some(&signature))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "duplicate");

    // Concurrent copies of one new delivery: exactly one is "new".
    let copies =
        (0..8).map(|_| app.deliver_as("issue_comment", "redelivered-2", &body, Some(&signature)));
    let statuses: Vec<u16> = futures::future::join_all(copies)
        .await
        .into_iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    app.processed("redelivered-2").await;

    assert_eq!(app.handler.calls_for("redelivered-1").len(), 1);
    assert_eq!(app.handler.calls_for("redelivered-2").len(), 1);
}

#[tokio::test]
async fn every_trigger_is_decoded_end_to_end() {
    let app = TestApp::start().await;
    let cases = [
        ("issue_comment.created.json", "command"),
        ("issue_comment.created.pull_request.json", "command"),
        ("issue_comment.created.non_owner.json", "command"),
        ("issues.labeled.json", "label"),
        ("issues.labeled.template.json", "label"),
        ("check_run.rerequested.json", "check_run_rerequested"),
        ("check_run.requested_action.retry.json", "check_run_action"),
        ("check_run.requested_action.cancel.json", "check_run_action"),
        ("installation.created.json", "installation"),
        ("installation_repositories.added.json", "installation"),
        ("ping.json", "ping"),
    ];
    for (name, kind) in cases {
        let answer = app.deliver_fixture(name).await;
        assert_eq!(answer.status, 202, "{name}");
        let record = app.processed(&answer.guid).await;
        assert_eq!(
            record.state,
            DeliveryState::Processed,
            "{name}: {:?}",
            record.reason
        );
        let calls = app.handler.calls_for(&answer.guid);
        assert_eq!(calls.len(), 1, "{name}");
        assert_eq!(calls[0].kind(), kind, "{name}");
    }
}

#[tokio::test]
async fn uninteresting_deliveries_are_recorded_as_ignored_with_a_reason() {
    let app = TestApp::start().await;
    let cases = [
        // Every pull request of the repository is delivered; this one no task opened.
        ("pull_request.closed.json", "not opened by bg-agent"),
        ("issue_comment.edited.json", "not used"),
        (
            "issue_comment.created.no_command.json",
            "no /bg-agent command",
        ),
        ("issue_comment.created.bot.json", "this app"),
        ("issues.labeled.other.json", "is not `bg-agent`"),
    ];
    for (name, reason) in cases {
        let answer = app.deliver_fixture(name).await;
        assert_eq!(answer.status, 202, "{name}");
        let record = app.processed(&answer.guid).await;
        assert_eq!(record.state, DeliveryState::Ignored, "{name}");
        let stored_reason = record.reason.unwrap_or_default();
        assert!(stored_reason.contains(reason), "{name}: {stored_reason}");
        assert!(app.handler.calls_for(&answer.guid).is_empty(), "{name}");
    }
}

/// Every event GitHub documents ("Webhook events and payloads"), including the names with
/// digits, is stored and answered 202; those the app has no use for are ignored with a
/// reason, never refused (GitHub would not send them again).
#[tokio::test]
async fn every_documented_event_is_accepted_and_unused_ones_are_ignored() {
    const DOCUMENTED: &[&str] = &[
        "branch_protection_configuration",
        "branch_protection_rule",
        "check_run",
        "check_suite",
        "code_scanning_alert",
        "commit_comment",
        "create",
        "custom_property",
        "custom_property_values",
        "delete",
        "dependabot_alert",
        "deploy_key",
        "deployment",
        "deployment_protection_rule",
        "deployment_review",
        "deployment_status",
        "discussion",
        "discussion_comment",
        "fork",
        "github_app_authorization",
        "gollum",
        "installation",
        "installation_repositories",
        "installation_target",
        "issue_comment",
        "issue_dependencies",
        "issues",
        "label",
        "marketplace_purchase",
        "member",
        "membership",
        "merge_group",
        "meta",
        "milestone",
        "org_block",
        "organization",
        "package",
        "page_build",
        "personal_access_token_request",
        "ping",
        "project",
        "project_card",
        "project_column",
        "projects_v2",
        "projects_v2_item",
        "projects_v2_status_update",
        "public",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "pull_request_review_thread",
        "push",
        "registry_package",
        "release",
        "repository",
        "repository_advisory",
        "repository_dispatch",
        "repository_import",
        "repository_ruleset",
        "repository_vulnerability_alert",
        "secret_scanning_alert",
        "secret_scanning_alert_location",
        "secret_scanning_scan",
        "security_advisory",
        "security_and_analysis",
        "sponsorship",
        "star",
        "status",
        "sub_issues",
        "team",
        "team_add",
        "watch",
        "workflow_dispatch",
        "workflow_job",
        "workflow_run",
    ];
    let app = TestApp::start().await;
    let body = br#"{"action": "created", "installation": {"id": 4200001}}"#;
    for event in DOCUMENTED {
        let answer = app.deliver(event, body).await;
        assert_eq!(answer.status, 202, "{event}: {}", answer.body);
        let record = app.processed(&answer.guid).await;
        assert_eq!(record.event, *event);
        assert_ne!(record.state, DeliveryState::Pending, "{event}");
    }
    let unknown = app.deliver("a_future_event_v3", body).await;
    assert_eq!(unknown.status, 202, "{}", unknown.body);
    let record = app.processed(&unknown.guid).await;
    assert_eq!(record.state, DeliveryState::Ignored);
}

#[tokio::test]
async fn a_malformed_payload_fails_alone_and_the_next_delivery_is_processed() {
    let app = TestApp::start().await;
    let malformed =
        br#"{"action": "created", "issue": "not an object", "installation": {"id": 4200001}}"#;
    let bad = app.deliver("issue_comment", malformed).await;
    assert_eq!(bad.status, 202);
    let good = app.deliver_fixture(COMMENT).await;

    let bad = app.processed(&bad.guid).await;
    assert_eq!(bad.state, DeliveryState::Failed);
    assert!(bad.reason.unwrap().contains("does not match the event"));
    let good = app.processed(&good.guid).await;
    assert_eq!(good.state, DeliveryState::Processed);
}

#[tokio::test]
async fn handler_failures_are_retried_or_recorded() {
    let app = TestApp::start().await;
    app.handler.set_mode(HandlerMode::FailTransiently);
    let transient = app.deliver_fixture(COMMENT).await;
    let record = app
        .wait_for_delivery(&transient.guid, |d| d.attempts >= 1)
        .await;
    assert_eq!(
        record.state,
        DeliveryState::Pending,
        "stays pending for a retry"
    );
    assert_eq!(record.reason.as_deref(), Some("GitHub is down"));

    app.handler.set_mode(HandlerMode::FailPermanently);
    let permanent = app.deliver_fixture("issues.labeled.json").await;
    let record = app.processed(&permanent.guid).await;
    assert_eq!(record.state, DeliveryState::Failed);
    assert_eq!(record.reason.as_deref(), Some("cannot ever work"));
}

#[tokio::test]
async fn installations_and_their_repositories_are_recorded() {
    let app = TestApp::start().await;
    let store = app.db.store();
    for name in ["installation.created.json"] {
        let answer = app.deliver_fixture(name).await;
        app.processed(&answer.guid).await;
    }
    let installation = store
        .installation(4200001)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(installation.account.account_login, "acme");
    assert!(!installation.deleted);
    let names = |i: &bg_agent::store::InstallationRow| {
        i.repositories
            .iter()
            .map(|r| r.full_name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&installation), ["acme/widgets", "acme/gadgets"]);

    let removed = app
        .deliver_fixture("installation_repositories.removed.json")
        .await;
    app.processed(&removed.guid).await;
    let installation = store.installation(4200001).await.unwrap().unwrap();
    assert_eq!(names(&installation), ["acme/widgets"]);

    let added = app
        .deliver_fixture("installation_repositories.added.json")
        .await;
    app.processed(&added.guid).await;
    let installation = store.installation(4200001).await.unwrap().unwrap();
    assert_eq!(names(&installation), ["acme/widgets", "acme/gadgets"]);

    let deleted = app.deliver_fixture("installation.deleted.json").await;
    app.processed(&deleted.guid).await;
    let installation = store.installation(4200001).await.unwrap().unwrap();
    assert!(installation.deleted);
    assert!(installation.repositories.is_empty());
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::start().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready");
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = TestApp::start().await;
    app.db.store().close().await;
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn graceful_shutdown_keeps_every_acknowledged_delivery() {
    let mut app = TestApp::start().await;
    let body = fixture(COMMENT);
    let signature = sign(SECRET.as_bytes(), &body);
    let url = format!("{}/webhook", app.url);
    let senders: Vec<_> = (0..200)
        .map(|n| {
            let (client, url, body, signature) = (
                app.client.clone(),
                url.clone(),
                body.clone(),
                signature.clone(),
            );
            tokio::spawn(async move {
                let guid = format!("shutdown-{n}");
                let response = client
                    .post(&url)
                    .header("x-github-event", "issue_comment")
                    .header("x-github-delivery", &guid)
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await;
                (guid, response.map(|r| r.status().as_u16()).ok())
            })
        })
        .collect();
    app.stop().await;
    let mut acknowledged = 0;
    for sender in senders {
        let (guid, status) = sender.await.unwrap();
        if status == Some(202) {
            acknowledged += 1;
            assert!(
                app.db.store().delivery(&guid).await.unwrap().is_some(),
                "{guid} was acknowledged but not stored"
            );
        }
    }
    let stored = app.db.store().delivery_counts().await.unwrap().total();
    assert_eq!(
        stored, acknowledged,
        "stored rows = acknowledged deliveries"
    );
}

/// Two workers on separate pools (as two replicas would be) share one inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_never_process_one_delivery_twice() {
    let db = bg_agent_testkit::db::TestDb::new().await;
    let body = bytes::Bytes::from(fixture(COMMENT));
    let deliveries: Vec<NewDelivery> = (0..300)
        .map(|n| NewDelivery {
            guid: format!("race-{n}"),
            event: "issue_comment".into(),
            body: body.clone(),
        })
        .collect();
    db.store()
        .insert_deliveries(&deliveries, std::time::Duration::ZERO)
        .await
        .unwrap();

    let handler = RecordingHandler::new();
    let config = WorkerConfig {
        workers: 1,
        poll_interval: std::time::Duration::from_millis(20),
        claim_batch: 7,
    };
    let context = DecodeContext {
        app_id: Some(APP_ID as i64),
        app_slug: "bg-agent".into(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = Store::connect(db.connect_options(), 4).await.unwrap();
        let worker = DeliveryWorker::new(store, handler.clone(), context.clone(), config.clone());
        for _ in 0..2 {
            replicas.push(tokio::spawn(
                worker
                    .clone()
                    .run(FreshDeliveries::none(), shutdown.clone()),
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.store().delivery_counts().await.unwrap().processed < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    for replica in replicas {
        replica.await.unwrap();
    }
    let mut per_guid: HashMap<String, usize> = HashMap::new();
    for (meta, _) in handler.calls() {
        *per_guid.entry(meta.guid).or_default() += 1;
    }
    assert_eq!(per_guid.len(), 300);
    assert!(
        per_guid.values().all(|n| *n == 1),
        "a delivery was handled twice"
    );
}

#[tokio::test]
async fn decoded_triggers_carry_what_the_engine_needs() {
    let app = TestApp::start().await;
    let label = app.deliver_fixture("issues.labeled.template.json").await;
    app.processed(&label.guid).await;
    let Trigger::Label(label) = &app.handler.calls_for(&label.guid)[0] else {
        panic!("label trigger expected");
    };
    assert_eq!(label.template.as_deref(), Some("upgrade"));
    assert!(!label.issue_title.is_empty());

    let cancel = app
        .deliver_fixture("check_run.requested_action.cancel.json")
        .await;
    app.processed(&cancel.guid).await;
    let Trigger::CheckRunAction { check_run, action } = &app.handler.calls_for(&cancel.guid)[0]
    else {
        panic!("check run action expected");
    };
    assert_eq!(*action, CheckRunButton::Cancel);
    assert_eq!(check_run.external_id.as_deref(), Some("42"));
    assert_eq!(check_run.check_run_id, 800001);

    let pr = app
        .deliver_fixture("issue_comment.created.pull_request.json")
        .await;
    app.processed(&pr.guid).await;
    let Trigger::Command(command) = &app.handler.calls_for(&pr.guid)[0] else {
        panic!("command expected");
    };
    assert!(command.is_pull_request);
    assert!(matches!(command.command, ParsedCommand::Valid { .. }));

    let installed = app.deliver_fixture("installation.created.json").await;
    app.processed(&installed.guid).await;
    let Trigger::Installation(InstallationChange::Created { repositories, .. }) =
        &app.handler.calls_for(&installed.guid)[0]
    else {
        panic!("installation expected");
    };
    assert_eq!(repositories.len(), 2);
}

/// A delivery stored by a process that died before its workers got to it is left alone
/// for the grace period, then taken by any poller.
#[tokio::test]
async fn deliveries_left_by_a_dead_process_are_polled_after_the_grace() {
    let db = bg_agent_testkit::db::TestDb::new().await;
    let grace = std::time::Duration::from_millis(300);
    let delivery = NewDelivery {
        guid: "orphan-1".into(),
        event: "issue_comment".into(),
        body: bytes::Bytes::from(fixture(COMMENT)),
    };
    let stored_at = tokio::time::Instant::now();
    db.store()
        .insert_deliveries(&[delivery], grace)
        .await
        .unwrap();

    let handler = RecordingHandler::new();
    let context = DecodeContext {
        app_id: Some(APP_ID as i64),
        app_slug: "bg-agent".into(),
    };
    let config = bg_agent_testkit::recording::test_config().worker;
    let worker = DeliveryWorker::new(db.store().clone(), handler.clone(), context, config);
    let deadline = stored_at + std::time::Duration::from_secs(20);
    loop {
        let handled = worker.run_once().await.unwrap();
        if handled == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never polled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        stored_at.elapsed() >= grace,
        "taken before the grace period ended"
    );
    assert_eq!(handler.calls_for("orphan-1").len(), 1);
    let record = db.store().delivery("orphan-1").await.unwrap().unwrap();
    assert_eq!(record.state, DeliveryState::Processed);
}

/// The database goes away mid-intake: every delivery in the outage is answered 503 (GitHub
/// keeps it for redelivery), none is acknowledged unstored, and once the database is back
/// the same deliveries are stored and processed exactly once.
#[tokio::test]
async fn a_database_outage_answers_503_and_loses_nothing_acknowledged() {
    let db = bg_agent_testkit::db::TestDb::new().await;
    let (proxy, through) = db.outage_proxy().await;
    let store = Store::connect(through, 4).await.unwrap();
    let app = TestApp::start_on(bg_agent_testkit::recording::test_config(), db, store).await;
    let body = fixture(COMMENT);
    let signature = sign(SECRET.as_bytes(), &body);

    let before = app
        .deliver_as("issue_comment", "before-outage", &body, Some(&signature))
        .await;
    assert_eq!(before.status, 202, "{}", before.body);

    proxy.cut();
    let mut refused = Vec::new();
    for n in 0..3 {
        let guid = format!("during-outage-{n}");
        let answer = app
            .deliver_as("issue_comment", &guid, &body, Some(&signature))
            .await;
        assert_eq!(answer.status, 503, "{guid}: {}", answer.body);
        assert!(
            answer.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("redeliver"),
            "{}",
            answer.body
        );
        refused.push(guid);
    }

    proxy.restore();
    // GitHub's redelivery of each refused delivery (same id) is stored and processed.
    for guid in &refused {
        let answer = app
            .deliver_as("issue_comment", guid, &body, Some(&signature))
            .await;
        assert_eq!(answer.status, 202, "{guid}: {}", answer.body);
    }
    for guid in refused.iter().chain([&before.guid]) {
        let record = app.processed(guid).await;
        assert_eq!(record.state, DeliveryState::Processed, "{guid}");
        assert_eq!(app.handler.calls_for(guid).len(), 1, "{guid}");
    }
    assert_eq!(app.db.store().delivery_counts().await.unwrap().total(), 4);
}
