//! Webhooks as GitHub sends them: payloads built from the fake's state, held to
//! GitHub's webhook schemas, signed with the webhook secret, POSTed with
//! GitHub's headers, and recorded for `GET /app/hook/deliveries` and redelivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::{Value, json};

use super::SimError;
use super::render::{Render, ts};
use super::server::Shared;
use super::state::{
    AccountKind, CheckRunRecord, CommentRecord, DeliveryRecord, IssueRecord, RepoRecord,
    ViolationKind, ViolationRecord,
};
use crate::openapi::OpenApiDoc;

/// `User-Agent` of deliveries; GitHub appends a short build hash.
const USER_AGENT: &str = "GitHub-Hookshot/5fa1b2c";

/// A webhook ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub event: String,
    pub action: Option<String>,
    pub payload: Value,
    pub installation_id: Option<u64>,
    pub repository_id: Option<u64>,
}

/// Validates, signs, sends and records a webhook.
pub(crate) async fn deliver(
    shared: &Arc<Shared>,
    outgoing: Outgoing,
) -> Result<DeliveryRecord, SimError> {
    let schemas = OpenApiDoc::github_webhooks();
    if let Err(violations) = schemas.validate_webhook(
        &outgoing.event,
        outgoing.action.as_deref(),
        &outgoing.payload,
    ) {
        let message = violations.to_string();
        shared.record_violation(ViolationRecord {
            kind: ViolationKind::Webhook,
            method: "POST".into(),
            path: match &outgoing.action {
                Some(action) => format!("webhook {}.{action}", outgoing.event),
                None => format!("webhook {}", outgoing.event),
            },
            message: message.clone(),
        });
        return Err(SimError::InvalidWebhook(message));
    }
    let guid = uuid::Uuid::new_v4().to_string();
    Ok(send(shared, &guid, &outgoing, false).await)
}

/// Sends delivery `id` again: same payload, same GUID, marked as a redelivery.
pub(crate) async fn redeliver(shared: &Arc<Shared>, id: u64) -> Result<DeliveryRecord, SimError> {
    let original = shared
        .read(|s| s.delivery(id).cloned())
        .ok_or(SimError::UnknownDelivery(id))?;
    let outgoing = Outgoing {
        event: original.event.clone(),
        action: original.action.clone(),
        payload: original.payload.clone(),
        installation_id: original.installation_id,
        repository_id: original.repository_id,
    };
    Ok(send(shared, &original.guid, &outgoing, true).await)
}

async fn send(
    shared: &Arc<Shared>,
    guid: &str,
    outgoing: &Outgoing,
    redelivery: bool,
) -> DeliveryRecord {
    let body = serde_json::to_vec(&outgoing.payload).unwrap_or_default();
    let (app_id, hook_id) = shared.read(|s| (s.app.id, s.app.hook_id));
    let headers: BTreeMap<String, String> = [
        ("Accept", "*/*".to_owned()),
        ("Content-Type", "application/json".to_owned()),
        ("User-Agent", USER_AGENT.to_owned()),
        ("X-GitHub-Delivery", guid.to_owned()),
        ("X-GitHub-Event", outgoing.event.clone()),
        ("X-GitHub-Hook-ID", hook_id.to_string()),
        ("X-GitHub-Hook-Installation-Target-ID", app_id.to_string()),
        (
            "X-GitHub-Hook-Installation-Target-Type",
            "integration".to_owned(),
        ),
        ("X-Hub-Signature-256", sign(&shared.webhook_secret, &body)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let url = shared.webhook_url();
    let started = Instant::now();
    let (status_code, status, response_body) = match &url {
        None => (0, "No webhook URL configured".to_owned(), String::new()),
        Some(url) => {
            let mut request = shared.http.post(url).body(body.clone());
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(response) => {
                    let code = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    let status = if (200..300).contains(&code) {
                        "OK".to_owned()
                    } else {
                        format!("Invalid HTTP Response: {code}")
                    };
                    (code, status, text)
                }
                Err(e) if e.is_timeout() => (0, "timed out".to_owned(), String::new()),
                Err(e) => {
                    tracing::warn!(error = %e, %url, "github-sim: webhook delivery failed");
                    (0, "failed to connect to host".to_owned(), String::new())
                }
            }
        }
    };
    let duration_secs = started.elapsed().as_secs_f64();
    tracing::info!(
        event = %outgoing.event,
        action = outgoing.action.as_deref().unwrap_or_default(),
        guid,
        status_code,
        redelivery,
        "github-sim delivered a webhook"
    );
    shared.mutate(|s| {
        let record = DeliveryRecord {
            id: s.ids.next_delivery(),
            guid: guid.to_owned(),
            event: outgoing.event.clone(),
            action: outgoing.action.clone(),
            installation_id: outgoing.installation_id,
            repository_id: outgoing.repository_id,
            redelivery,
            delivered_at: Utc::now(),
            duration_secs,
            status_code,
            status,
            url,
            request_headers: headers,
            payload: outgoing.payload.clone(),
            response_body,
        };
        s.deliveries.push(record.clone());
        record
    })
}

/// `repository`, `organization`, `sender` and `installation`, as GitHub adds them.
fn with_context(r: &Render<'_>, mut payload: Value, repo: &RepoRecord, sender: &str) -> Value {
    payload["repository"] = r.repository(repo, None);
    if r.state
        .user(&repo.owner)
        .is_some_and(|u| u.kind == AccountKind::Organization)
    {
        payload["organization"] = r.organization(&repo.owner);
    }
    payload["sender"] = r.user(sender);
    if let Some(installation_id) = repo.installation_id {
        payload["installation"] = r.installation_ref(installation_id);
    }
    payload
}

fn repo_of<'a>(r: &'a Render<'_>, repo_id: u64) -> Result<&'a RepoRecord, SimError> {
    r.state
        .repos
        .get(&repo_id)
        .ok_or_else(|| SimError::UnknownRepository(repo_id.to_string()))
}

fn issue_of<'a>(r: &'a Render<'_>, repo_id: u64, number: u64) -> Result<&'a IssueRecord, SimError> {
    r.state
        .issues
        .iter()
        .find(|i| i.repo_id == repo_id && i.number == number)
        .ok_or(SimError::UnknownIssue(number))
}

/// `issue_comment.created` / `.edited` (with the previous body) for a comment.
pub(crate) fn issue_comment(
    r: &Render<'_>,
    comment: &CommentRecord,
    previous_body: Option<&str>,
) -> Result<Outgoing, SimError> {
    let repo = repo_of(r, comment.repo_id)?;
    let issue = issue_of(r, comment.repo_id, comment.issue_number)?;
    let action = if previous_body.is_some() {
        "edited"
    } else {
        "created"
    };
    let mut payload = json!({
        "action": action,
        "issue": r.issue(issue),
        "comment": r.comment(comment),
    });
    if let Some(from) = previous_body {
        payload["changes"] = json!({"body": {"from": from}});
    }
    Ok(Outgoing {
        event: "issue_comment".into(),
        action: Some(action.into()),
        payload: with_context(r, payload, repo, &comment.author),
        installation_id: repo.installation_id,
        repository_id: Some(repo.id),
    })
}

/// `issues.labeled` for a label just added by `sender`.
pub(crate) fn issues_labeled(
    r: &Render<'_>,
    repo_id: u64,
    number: u64,
    label_id: u64,
    sender: &str,
) -> Result<Outgoing, SimError> {
    let repo = repo_of(r, repo_id)?;
    let issue = issue_of(r, repo_id, number)?;
    let label = r
        .state
        .labels
        .iter()
        .find(|l| l.id == label_id)
        .ok_or_else(|| SimError::Invalid(format!("unknown label {label_id}")))?;
    let payload = json!({
        "action": "labeled",
        "issue": r.issue(issue),
        "label": r.label(label),
    });
    Ok(Outgoing {
        event: "issues".into(),
        action: Some("labeled".into()),
        payload: with_context(r, payload, repo, sender),
        installation_id: repo.installation_id,
        repository_id: Some(repo.id),
    })
}

/// `issues.opened` for a new issue.
pub(crate) fn issues_opened(
    r: &Render<'_>,
    repo_id: u64,
    number: u64,
) -> Result<Outgoing, SimError> {
    let repo = repo_of(r, repo_id)?;
    let issue = issue_of(r, repo_id, number)?;
    let payload = json!({"action": "opened", "issue": r.issue(issue)});
    Ok(Outgoing {
        event: "issues".into(),
        action: Some("opened".into()),
        payload: with_context(r, payload, repo, &issue.author),
        installation_id: repo.installation_id,
        repository_id: Some(repo.id),
    })
}

/// `check_run.rerequested`, or `check_run.requested_action` with an identifier.
pub(crate) fn check_run(
    r: &Render<'_>,
    run: &CheckRunRecord,
    sender: &str,
    requested_action: Option<&str>,
) -> Result<Outgoing, SimError> {
    let repo = repo_of(r, run.repo_id)?;
    let head_branch = r
        .state
        .pulls
        .iter()
        .find(|p| p.repo_id == run.repo_id && p.head_sha == run.head_sha)
        .map(|p| p.head_ref.as_str());
    let action = if requested_action.is_some() {
        "requested_action"
    } else {
        "rerequested"
    };
    let mut payload = json!({"action": action, "check_run": r.check_run(run, head_branch)});
    if let Some(identifier) = requested_action {
        payload["requested_action"] = json!({"identifier": identifier});
    }
    Ok(Outgoing {
        event: "check_run".into(),
        action: Some(action.into()),
        payload: with_context(r, payload, repo, sender),
        installation_id: repo.installation_id,
        repository_id: Some(repo.id),
    })
}

/// `installation.created`, sent by `sender` installing the App.
pub(crate) fn installation_created(
    r: &Render<'_>,
    installation_id: u64,
    sender: &str,
) -> Result<Outgoing, SimError> {
    let installation = r
        .state
        .installations
        .get(&installation_id)
        .ok_or(SimError::UnknownInstallation(installation_id))?;
    let repositories: Vec<Value> = installation
        .repository_ids
        .iter()
        .filter_map(|id| r.state.repos.get(id))
        .map(|repo| {
            json!({
                "id": repo.id,
                "node_id": super::render::node_id("R", repo.id),
                "name": repo.name,
                "full_name": repo.full_name(),
                "private": repo.private,
            })
        })
        .collect();
    let mut payload = json!({
        "action": "created",
        "installation": r.installation(installation),
        "repositories": repositories,
        "requester": null,
        "sender": r.user(sender),
    });
    if r.state
        .user(&installation.account_login)
        .is_some_and(|u| u.kind == AccountKind::Organization)
    {
        payload["organization"] = r.organization(&installation.account_login);
    }
    Ok(Outgoing {
        event: "installation".into(),
        action: Some("created".into()),
        payload,
        installation_id: Some(installation_id),
        repository_id: None,
    })
}

/// `ping` for the App's webhook (App pings carry no installation or sender).
pub(crate) fn ping(r: &Render<'_>, webhook_url: Option<&str>) -> Outgoing {
    let app = &r.state.app;
    let payload = json!({
        "zen": "Keep it logically awesome.",
        "hook_id": app.hook_id,
        "hook": {
            "type": "App",
            "id": app.hook_id,
            "name": "web",
            "active": true,
            "events": app.events,
            "config": {
                "content_type": "json",
                "insecure_ssl": "0",
                "secret": "********",
                "url": webhook_url.unwrap_or_default(),
            },
            "updated_at": ts(app.created_at),
            "created_at": ts(app.created_at),
            "app_id": app.id,
            "deliveries_url": format!("{}/app/hook/deliveries", r.base),
        },
    });
    Outgoing {
        event: "ping".into(),
        action: None,
        payload,
        installation_id: None,
        repository_id: None,
    }
}

/// `X-Hub-Signature-256` as GitHub computes it: `sha256=` and the hex HMAC-SHA256 of the
/// body. Written here, not taken from the server, so that the fake checks the server's
/// verification instead of sharing it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod sign_tests {
    /// GitHub's documented test vector for `X-Hub-Signature-256`.
    #[test]
    fn signs_githubs_test_vector() {
        assert_eq!(
            super::sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
