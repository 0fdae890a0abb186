//! Holds the webhook fixtures (tests/fixtures/webhooks) to GitHub's own webhook
//! schemas, proves the validator rejects broken payloads, checks a few REST
//! request/response bodies against GitHub's REST description, and checks that
//! every fixture belongs to the same fictional world.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use github_fake::openapi::{OpenApiDoc, SchemaViolations};
use serde_json::{Value, json};

const APP_ID: u64 = 310001;
const BOT_ID: u64 = 410001;
const INSTALLATION_ID: u64 = 4200001;
const ORG_ID: u64 = 5100001;
const LEAD_ID: u64 = 600001;
const DRIVE_BY_ID: u64 = 600002;
const WIDGETS_ID: u64 = 700001;
const GADGETS_ID: u64 = 700002;
const COMMAND: &str = "/bg-agent upgrade lodash 4.17.21";

/// Every fixture the rest of the test suite may rely on.
const EXPECTED_FIXTURES: &[&str] = &[
    "check_run.requested_action.cancel.json",
    "check_run.requested_action.retry.json",
    "check_run.rerequested.json",
    "installation.created.json",
    "installation.deleted.json",
    "installation_repositories.added.json",
    "installation_repositories.removed.json",
    "issue_comment.created.bot.json",
    "issue_comment.created.json",
    "issue_comment.created.no_command.json",
    "issue_comment.created.non_owner.json",
    "issue_comment.created.pull_request.json",
    "issue_comment.edited.json",
    "issues.labeled.json",
    "issues.labeled.other.json",
    "issues.labeled.template.json",
    "ping.json",
    "pull_request.closed.json",
    "pull_request.closed.unmerged.json",
    "pull_request.reopened.json",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/webhooks")
}

/// All `tests/fixtures/webhooks/*.json`, by file name.
fn fixtures() -> BTreeMap<String, Value> {
    let dir = fixtures_dir();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_else(|| panic!("odd file name {}", path.display()))
            .to_owned();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
        out.insert(name, value);
    }
    out
}

fn fixture(name: &str) -> Value {
    fixtures()
        .remove(name)
        .unwrap_or_else(|| panic!("missing fixture {name}"))
}

/// (X-GitHub-Event, action) of a fixture: the file name up to the first dot,
/// and the payload's `action`.
fn event_of(name: &str, payload: &Value) -> (String, Option<String>) {
    let event = name.split('.').next().unwrap_or_default().to_owned();
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (event, action)
}

fn validate_fixture(name: &str, payload: &Value) -> Result<(), SchemaViolations> {
    let (event, action) = event_of(name, payload);
    OpenApiDoc::github_webhooks().validate_webhook(&event, action.as_deref(), payload)
}

fn expect_violation(result: Result<(), SchemaViolations>, instance_path: &str, needle: &str) {
    let err = match result {
        Ok(()) => panic!("expected a violation at {instance_path:?}, but the value was accepted"),
        Err(err) => err,
    };
    assert!(
        err.lookup_error().is_none(),
        "expected violations, got a lookup error: {err}"
    );
    assert!(
        err.violations()
            .iter()
            .any(|v| v.instance_path == instance_path && v.message.contains(needle)),
        "expected a violation at {instance_path:?} mentioning {needle:?}, got:\n{err}"
    );
}

fn remove(value: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let removed = value
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|object| object.remove(key));
    assert!(removed.is_some(), "nothing to remove at {pointer}");
}

fn set(value: &mut Value, pointer: &str, new: Value) {
    let slot = value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("nothing at {pointer}"));
    *slot = new;
}

// ---------------------------------------------------------------------------
// Fixtures against GitHub's webhook schemas

#[test]
fn every_webhook_fixture_matches_githubs_schema() {
    let all = fixtures();
    let missing: Vec<_> = EXPECTED_FIXTURES
        .iter()
        .filter(|name| !all.contains_key(**name))
        .collect();
    assert!(missing.is_empty(), "missing fixtures: {missing:?}");

    let failures: Vec<String> = all
        .iter()
        .filter_map(|(name, payload)| {
            validate_fixture(name, payload)
                .err()
                .map(|err| format!("{name}: {err}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures do not match GitHub's webhook schemas:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn validator_rejects_a_missing_required_field() {
    let mut payload = fixture("issue_comment.created.json");
    remove(&mut payload, "/comment/user/login");
    expect_violation(
        validate_fixture("issue_comment.created.json", &payload),
        "/comment/user",
        "\"login\" is a required property",
    );

    let mut payload = fixture("check_run.rerequested.json");
    remove(&mut payload, "/check_run/head_sha");
    expect_violation(
        validate_fixture("check_run.rerequested.json", &payload),
        "/check_run",
        "\"head_sha\" is a required property",
    );

    let mut payload = fixture("issues.labeled.json");
    remove(&mut payload, "/sender");
    expect_violation(
        validate_fixture("issues.labeled.json", &payload),
        "",
        "\"sender\" is a required property",
    );
}

#[test]
fn validator_rejects_a_wrong_type() {
    let mut payload = fixture("issue_comment.created.json");
    set(&mut payload, "/issue/number", json!("17"));
    expect_violation(
        validate_fixture("issue_comment.created.json", &payload),
        "/issue/number",
        "is not of type \"integer\"",
    );

    let mut payload = fixture("installation.created.json");
    set(&mut payload, "/installation/id", json!(4200001.5));
    expect_violation(
        validate_fixture("installation.created.json", &payload),
        "/installation/id",
        "integer",
    );

    let mut payload = fixture("check_run.requested_action.retry.json");
    set(&mut payload, "/check_run/status", json!("done"));
    expect_violation(
        validate_fixture("check_run.requested_action.retry.json", &payload),
        "/check_run/status",
        "is not one of",
    );
}

#[test]
fn validator_rejects_null_where_not_nullable() {
    let mut payload = fixture("issue_comment.created.json");
    set(&mut payload, "/comment/body", Value::Null);
    expect_violation(
        validate_fixture("issue_comment.created.json", &payload),
        "/comment/body",
        "null is not of type \"string\"",
    );

    let mut payload = fixture("pull_request.closed.json");
    set(&mut payload, "/repository/full_name", Value::Null);
    expect_violation(
        validate_fixture("pull_request.closed.json", &payload),
        "/repository/full_name",
        "null",
    );

    // ...while the nullable ones accept null.
    let mut payload = fixture("issue_comment.created.json");
    set(&mut payload, "/issue/body", Value::Null);
    set(&mut payload, "/repository/description", Value::Null);
    set(
        &mut payload,
        "/comment/performed_via_github_app",
        Value::Null,
    );
    if let Err(err) = validate_fixture("issue_comment.created.json", &payload) {
        panic!("nullable fields set to null were rejected: {err}");
    }
}

#[test]
fn validator_reports_problems_inside_nullable_objects() {
    // `issue.milestone` is `object | null`: a broken milestone must be reported
    // field by field, not as an opaque "not valid under any of the schemas".
    let mut payload = fixture("issue_comment.created.json");
    set(&mut payload, "/issue/milestone", json!({"id": "x"}));
    let err = match validate_fixture("issue_comment.created.json", &payload) {
        Err(err) => err,
        Ok(()) => panic!("a broken milestone was accepted"),
    };
    assert!(
        err.violations()
            .iter()
            .any(|v| v.instance_path.starts_with("/issue/milestone")),
        "{err}"
    );
}

#[test]
fn unknown_webhooks_are_lookup_errors() {
    let doc = OpenApiDoc::github_webhooks();
    for (event, action) in [("sponsorship", None), ("issue_comment", Some("exploded"))] {
        let err = match doc.validate_webhook(event, action, &json!({})) {
            Err(err) => err,
            Ok(()) => panic!("{event}/{action:?} was accepted"),
        };
        assert!(err.lookup_error().is_some(), "{err}");
        assert!(err.violations().is_empty());
    }
}

// ---------------------------------------------------------------------------
// The fictional world

/// Collects, anywhere in `value`, every user-like object (`login` + `id`),
/// every repository-like object (`full_name` + `id`) and every
/// `installation` object.
fn collect_world(
    value: &Value,
    key: Option<&str>,
    users: &mut Vec<(String, u64)>,
    repos: &mut Vec<(String, u64)>,
    installations: &mut Vec<u64>,
) {
    match value {
        Value::Object(map) => {
            let id = map.get("id").and_then(Value::as_u64);
            if let (Some(login), Some(id)) = (map.get("login").and_then(Value::as_str), id) {
                users.push((login.to_owned(), id));
            }
            if let (Some(name), Some(id)) = (map.get("full_name").and_then(Value::as_str), id) {
                repos.push((name.to_owned(), id));
            }
            if key == Some("installation") {
                installations.push(id.unwrap_or_default());
            }
            for (k, v) in map {
                collect_world(v, Some(k), users, repos, installations);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_world(item, None, users, repos, installations);
            }
        }
        _ => {}
    }
}

#[test]
fn every_fixture_lives_in_the_same_fictional_world() {
    let known_users = BTreeMap::from([
        ("acme", ORG_ID),
        ("octo-lead", LEAD_ID),
        ("drive-by", DRIVE_BY_ID),
        ("bg-agent[bot]", BOT_ID),
    ]);
    let known_repos = BTreeMap::from([("acme/widgets", WIDGETS_ID), ("acme/gadgets", GADGETS_ID)]);
    let mut problems = Vec::new();
    for (name, payload) in fixtures() {
        let (mut users, mut repos, mut installations) = (Vec::new(), Vec::new(), Vec::new());
        collect_world(&payload, None, &mut users, &mut repos, &mut installations);
        for (login, id) in users {
            if known_users.get(login.as_str()) != Some(&id) {
                problems.push(format!("{name}: unknown user {login} ({id})"));
            }
        }
        for (full_name, id) in repos {
            if known_repos.get(full_name.as_str()) != Some(&id) {
                problems.push(format!("{name}: unknown repository {full_name} ({id})"));
            }
        }
        for id in &installations {
            if *id != INSTALLATION_ID {
                problems.push(format!("{name}: installation id {id}"));
            }
        }
        // GitHub sends `installation` with every App delivery but the App's ping.
        if name != "ping.json" && installations.is_empty() {
            problems.push(format!("{name}: no installation"));
        }
        if let Some(org) = payload.get("organization")
            && org.get("id").and_then(Value::as_u64) != Some(ORG_ID)
        {
            problems.push(format!("{name}: organization is not acme"));
        }
        if let Some(repo) = payload.get("repository") {
            if repo.get("id").and_then(Value::as_u64) != Some(WIDGETS_ID) {
                problems.push(format!("{name}: repository is not acme/widgets"));
            }
            let expected = [
                ("default_branch", "main"),
                ("clone_url", "https://github.com/acme/widgets.git"),
                ("html_url", "https://github.com/acme/widgets"),
            ];
            for (field, want) in expected {
                if repo.get(field).and_then(Value::as_str) != Some(want) {
                    problems.push(format!("{name}: repository.{field} is not {want}"));
                }
            }
        }
        for pointer in [
            "/check_run/app/id",
            "/check_run/check_suite/app/id",
            "/comment/performed_via_github_app/id",
            "/installation/app_id",
            "/hook/app_id",
        ] {
            if let Some(id) = payload.pointer(pointer).and_then(Value::as_u64)
                && id != APP_ID
            {
                problems.push(format!("{name}: {pointer} is {id}, not our app"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn fixtures_tell_the_story_the_tests_rely_on() {
    let str_at = |payload: &Value, pointer: &str| -> String {
        payload
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer}"))
            .to_owned()
    };
    let u64_at = |payload: &Value, pointer: &str| -> u64 {
        payload
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no integer at {pointer}"))
    };

    let p = fixture("issue_comment.created.json");
    assert_eq!(u64_at(&p, "/comment/id"), 900001);
    assert_eq!(str_at(&p, "/comment/body"), COMMAND);
    assert_eq!(str_at(&p, "/comment/user/login"), "octo-lead");
    assert_eq!(str_at(&p, "/comment/author_association"), "MEMBER");
    assert_eq!(u64_at(&p, "/issue/number"), 17);
    assert_eq!(str_at(&p, "/issue/title"), "Upgrade lodash");
    assert!(p.pointer("/issue/pull_request").is_none());

    let p = fixture("issue_comment.created.pull_request.json");
    assert_eq!(u64_at(&p, "/issue/number"), 18);
    assert!(p.pointer("/issue/pull_request/url").is_some());
    assert_eq!(str_at(&p, "/comment/body"), COMMAND);

    let p = fixture("issue_comment.created.non_owner.json");
    assert_eq!(str_at(&p, "/comment/user/login"), "drive-by");
    assert_eq!(str_at(&p, "/comment/author_association"), "NONE");
    assert_eq!(str_at(&p, "/comment/body"), COMMAND);

    let p = fixture("issue_comment.created.bot.json");
    assert_eq!(str_at(&p, "/sender/type"), "Bot");
    assert_eq!(u64_at(&p, "/sender/id"), BOT_ID);
    assert_eq!(u64_at(&p, "/comment/performed_via_github_app/id"), APP_ID);
    assert!(
        str_at(&p, "/comment/body")
            .lines()
            .any(|l| l.starts_with("/bg-agent ")),
        "the bot's comment must contain a command line (to prove we ignore it)"
    );

    let p = fixture("issue_comment.created.no_command.json");
    assert_eq!(str_at(&p, "/comment/body"), "Thanks, looks good!");

    let p = fixture("issue_comment.edited.json");
    assert_eq!(str_at(&p, "/comment/body"), COMMAND);
    assert!(p.pointer("/changes/body/from").is_some());

    for (name, label) in [
        ("issues.labeled.json", "bg-agent"),
        ("issues.labeled.template.json", "bg-agent:upgrade"),
        ("issues.labeled.other.json", "bug"),
    ] {
        let p = fixture(name);
        assert_eq!(str_at(&p, "/label/name"), label, "{name}");
        assert_eq!(u64_at(&p, "/issue/number"), 17, "{name}");
        assert_eq!(str_at(&p, "/sender/login"), "octo-lead", "{name}");
        assert!(!str_at(&p, "/issue/body").is_empty(), "{name}");
    }

    for (name, identifier) in [
        ("check_run.rerequested.json", None),
        ("check_run.requested_action.retry.json", Some("retry")),
        ("check_run.requested_action.cancel.json", Some("cancel")),
    ] {
        let p = fixture(name);
        assert_eq!(u64_at(&p, "/check_run/id"), 800001, "{name}");
        assert_eq!(str_at(&p, "/check_run/external_id"), "42", "{name}");
        let head_sha = str_at(&p, "/check_run/head_sha");
        assert!(
            head_sha.len() == 40 && head_sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}: head_sha {head_sha}"
        );
        assert_eq!(str_at(&p, "/sender/login"), "octo-lead", "{name}");
        assert_eq!(
            p.pointer("/requested_action/identifier")
                .and_then(Value::as_str),
            identifier,
            "{name}"
        );
    }

    let p = fixture("installation.created.json");
    let ids: Vec<u64> = p["repositories"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [WIDGETS_ID, GADGETS_ID]);
    assert_eq!(str_at(&p, "/installation/account/login"), "acme");
    assert_eq!(str_at(&p, "/installation/app_slug"), "bg-agent");

    let p = fixture("installation_repositories.added.json");
    assert_eq!(u64_at(&p, "/repositories_added/0/id"), GADGETS_ID);
    let p = fixture("installation_repositories.removed.json");
    assert_eq!(u64_at(&p, "/repositories_removed/0/id"), GADGETS_ID);

    let p = fixture("ping.json");
    assert_eq!(u64_at(&p, "/hook_id"), u64_at(&p, "/hook/id"));
    assert!(!str_at(&p, "/zen").is_empty());

    let p = fixture("pull_request.closed.json");
    assert_eq!(u64_at(&p, "/number"), 18);
}

// ---------------------------------------------------------------------------
// REST bodies against GitHub's REST description (OpenAPI 3.0)

#[test]
fn check_run_creation_bodies() {
    let rest = OpenApiDoc::github_rest();
    let path = "/repos/acme/widgets/check-runs";
    let head_sha = "87af25fe56eef598c5b2052997c39f01dd358db2";
    if let Err(err) = rest.validate_request(
        "POST",
        path,
        &json!({"name": "bg-agent", "head_sha": head_sha}),
    ) {
        panic!("a minimal check run was rejected: {err}");
    }
    let full = json!({
        "name": "bg-agent",
        "head_sha": head_sha,
        "external_id": "42",
        "details_url": "https://bg-agent.acme.example/tasks/42",
        "status": "completed",
        "conclusion": "failure",
        "completed_at": "2025-06-02T09:08:40Z",
        "output": {"title": "upgrade lodash 4.17.21", "summary": "Task 42 failed."},
        "actions": [{"label": "Retry", "description": "Run the task again", "identifier": "retry"}]
    });
    if let Err(err) = rest.validate_request("post", path, &full) {
        panic!("a complete check run was rejected: {err}");
    }

    expect_violation(
        rest.validate_request("POST", path, &json!({"name": "bg-agent"})),
        "",
        "\"head_sha\" is a required property",
    );
    expect_violation(
        rest.validate_request(
            "POST",
            path,
            &json!({"name": "bg-agent", "head_sha": head_sha, "status": "running"}),
        ),
        "/status",
        "is not one of",
    );
}

#[test]
fn issue_comment_bodies() {
    let rest = OpenApiDoc::github_rest();
    let path = "/repos/acme/widgets/issues/17/comments";
    if let Err(err) = rest.validate_request("POST", path, &json!({"body": "x"})) {
        panic!("{err}");
    }
    expect_violation(
        rest.validate_request("POST", path, &json!({})),
        "",
        "\"body\" is a required property",
    );
    expect_violation(
        rest.validate_request("POST", path, &json!({"body": 17})),
        "/body",
        "is not of type \"string\"",
    );
}

#[test]
fn rest_lookup_errors_are_not_violations() {
    let rest = OpenApiDoc::github_rest();
    let cases = [
        rest.validate_request("POST", "/repos/acme/widgets/no-such-thing", &json!({})),
        rest.validate_request("DELETE", "/repos/acme/widgets/check-runs", &json!({})),
        rest.validate_request("GET", "/repos/acme/widgets/check-runs/800001", &json!({})),
        rest.validate_response("GET", "/repos/acme/widgets", 418, &json!({})),
    ];
    for result in cases {
        match result {
            Err(err) => assert!(err.lookup_error().is_some(), "{err}"),
            Ok(()) => panic!("a lookup failure was accepted"),
        }
    }
}

/// A `full-repository` as `GET /repos/acme/widgets` returns it: every field
/// GitHub's schema requires, nothing more.
fn full_repository() -> Value {
    let api = "https://api.github.com/repos/acme/widgets";
    let mut repo = json!({
        "id": WIDGETS_ID,
        "node_id": "R_kgDOAAquYQ",
        "name": "widgets",
        "full_name": "acme/widgets",
        "private": true,
        "owner": {
            "login": "acme",
            "id": ORG_ID,
            "node_id": "O_kgDOAE3R4Q",
            "avatar_url": "https://avatars.githubusercontent.com/u/5100001?v=4",
            "gravatar_id": "",
            "url": "https://api.github.com/users/acme",
            "html_url": "https://github.com/acme",
            "followers_url": "https://api.github.com/users/acme/followers",
            "following_url": "https://api.github.com/users/acme/following{/other_user}",
            "gists_url": "https://api.github.com/users/acme/gists{/gist_id}",
            "starred_url": "https://api.github.com/users/acme/starred{/owner}{/repo}",
            "subscriptions_url": "https://api.github.com/users/acme/subscriptions",
            "organizations_url": "https://api.github.com/users/acme/orgs",
            "repos_url": "https://api.github.com/users/acme/repos",
            "events_url": "https://api.github.com/users/acme/events{/privacy}",
            "received_events_url": "https://api.github.com/users/acme/received_events",
            "type": "Organization",
            "site_admin": false
        },
        "html_url": "https://github.com/acme/widgets",
        "description": "The Acme widget storefront",
        "fork": false,
        "url": api,
        "clone_url": "https://github.com/acme/widgets.git",
        "git_url": "git://github.com/acme/widgets.git",
        "ssh_url": "git@github.com:acme/widgets.git",
        "svn_url": "https://github.com/acme/widgets",
        "mirror_url": null,
        "homepage": null,
        "language": "JavaScript",
        "default_branch": "main",
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "open_issues": 2,
        "open_issues_count": 2,
        "size": 2184,
        "has_issues": true,
        "has_projects": true,
        "has_wiki": false,
        "has_pages": false,
        "has_discussions": false,
        "archived": false,
        "disabled": false,
        "license": null,
        "pushed_at": "2025-06-02T09:14:03Z",
        "created_at": "2023-03-01T10:00:00Z",
        "updated_at": "2025-06-02T09:14:03Z",
        "network_count": 0,
        "subscribers_count": 3
    });
    let urls = [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ];
    if let Some(object) = repo.as_object_mut() {
        for (field, suffix) in urls {
            object.insert(field.to_owned(), json!(format!("{api}{suffix}")));
        }
    }
    repo
}

#[test]
fn repository_responses_and_nullable_fields() {
    let rest = OpenApiDoc::github_rest();
    let path = "/repos/acme/widgets";
    let repo = full_repository();
    if let Err(err) = rest.validate_response("GET", path, 200, &repo) {
        panic!("the minimal full repository was rejected: {err}");
    }

    // OpenAPI 3.0 `nullable: true` fields accept null...
    let mut nulls = repo.clone();
    set(&mut nulls, "/description", Value::Null);
    set(&mut nulls, "/language", Value::Null);
    set(
        &mut nulls,
        "/license",
        json!({"key": "mit", "name": "MIT License", "url": "https://api.github.com/licenses/mit", "spdx_id": "MIT", "node_id": "MDc6TGljZW5zZTEz"}),
    );
    if let Err(err) = rest.validate_response("GET", path, 200, &nulls) {
        panic!("null in nullable fields was rejected: {err}");
    }
    // ...the others do not.
    let mut bad = repo.clone();
    set(&mut bad, "/name", Value::Null);
    expect_violation(
        rest.validate_response("GET", path, 200, &bad),
        "/name",
        "null is not of type \"string\"",
    );
    let mut bad = repo.clone();
    remove(&mut bad, "/subscribers_count");
    expect_violation(
        rest.validate_response("GET", path, 200, &bad),
        "",
        "\"subscribers_count\" is a required property",
    );
    let mut bad = repo;
    set(&mut bad, "/private", json!("yes"));
    set(&mut bad, "/license", json!({"key": "mit"}));
    let err = match rest.validate_response("GET", path, 200, &bad) {
        Err(err) => err,
        Ok(()) => panic!("a broken repository was accepted"),
    };
    assert!(err.has_violation_at("/private"), "{err}");
    // A broken nullable object names the missing fields inside it.
    assert!(
        err.violations()
            .iter()
            .any(|v| v.instance_path == "/license" && v.message.contains("\"spdx_id\"")),
        "{err}"
    );

    // Error responses come from `#/components/responses/...`.
    let not_found = json!({
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest/repos/repos#get-a-repository",
        "status": "404"
    });
    if let Err(err) = rest.validate_response("GET", path, 404, &not_found) {
        panic!("{err}");
    }
}
