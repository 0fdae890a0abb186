//! `/settings`: the model-provider credentials of each installation the viewer manages
//! (admin on one of its repositories; `web::auth`), with their fingerprints, when they
//! were set and last used, and forms to set (a password field, never filled in), test
//! and delete them. Each form post carries the session's CSRF token and is checked like
//! every other (`AuthState::check_form`); the work is the API's
//! (`web::api::credentials`), so the page and the API cannot disagree.
//!
//! A user's own credential (`?user=` in the API, `--user` on the command line) is listed
//! here but managed there: the page manages the installation's.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, extract::FromRef};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use secrecy::SecretString;
use serde::Deserialize;

use super::api::ApiError;
use super::api::credentials::{self as operations, CredentialView, TestResult};
use super::auth::{AuthState, Viewer};
use super::pages::{Nav, PageError, forbidden, page};
use crate::credentials::{Manager, Provider};

#[derive(Clone)]
pub struct SettingsState {
    pub auth: AuthState,
    pub credentials: Manager,
}

impl FromRef<SettingsState> for AuthState {
    fn from_ref(state: &SettingsState) -> Self {
        state.auth.clone()
    }
}

pub fn routes(state: SettingsState) -> Router {
    Router::new()
        .route("/settings", get(settings_page))
        .route("/settings/credentials/set", post(set_credential))
        .route("/settings/credentials/test", post(test_credential))
        .route("/settings/credentials/delete", post(delete_credential))
        // A form carries a key of a few hundred bytes, a provider and a token.
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// One installation as the page shows it.
#[derive(Debug, Clone)]
pub struct InstallationView {
    pub id: i64,
    pub account: Option<String>,
    pub credentials: Vec<CredentialView>,
}

/// What the last form post did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Done(String),
    Failed(String),
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct SettingsView {
    pub installations: Vec<InstallationView>,
    /// Whether BG_AGENT_ENCRYPTION_KEY is set (without it nothing can be set or tested).
    pub can_encrypt: bool,
    pub notice: Option<Notice>,
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn installation_title(i: &InstallationView) -> String {
    match &i.account {
        Some(account) => format!("{account} (installation {})", i.id),
        None => format!("Installation {}", i.id),
    }
}

/// A post form with the CSRF token and the installation and provider it is about.
fn action_form(
    action: &str,
    csrf: &str,
    installation: i64,
    provider: Provider,
    label: &str,
    danger: bool,
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="installation" value=(installation);
            input type="hidden" name="provider" value=(provider.as_str());
            @if danger {
                button.danger type="submit" aria-label={(label) " the " (provider) " credential of installation " (installation)} { (label) }
            } @else {
                button type="submit" aria-label={(label) " the " (provider) " credential of installation " (installation)} { (label) }
            }
        }
    }
}

pub fn render_settings(who: Nav<'_>, view: &SettingsView) -> Markup {
    let csrf = who.csrf.unwrap_or_default();
    page(
        "bg-agent settings",
        Some(who),
        html! {
            h1 { "Settings" }
            @match &view.notice {
                Some(Notice::Done(text)) => p.notice role="status" { (text) },
                Some(Notice::Failed(text)) => p.notice.failed role="alert" { (text) },
                None => {},
            }
            h2 { "Model-provider credentials" }
            p.muted {
                "The API keys coding agents use, per installation. A key is stored encrypted and never shown again: only its fingerprint (the first 8 hex digits of its SHA-256)."
            }
            @if !view.can_encrypt {
                p role="alert" {
                    "This server has no encryption key (" code { "BG_AGENT_ENCRYPTION_KEY" } "): credentials cannot be set or tested until its operator sets one."
                }
            }
            @if view.installations.is_empty() {
                p { "You manage no installation: that takes admin permission on one of its repositories." }
            }
            @for i in &view.installations {
                section aria-labelledby={"installation-" (i.id)} {
                    h3 id={"installation-" (i.id)} { (installation_title(i)) }
                    div.table {
                        table {
                            caption.muted { "The installation's credentials, used for every user without one of their own" }
                            tr {
                                th scope="col" { "Provider" }
                                th scope="col" { "Fingerprint" }
                                th scope="col" { "Set on" }
                                th scope="col" { "Last used" }
                                th scope="col" { "Actions" }
                            }
                            @for provider in Provider::ALL {
                                @let stored = i.credentials.iter().find(|c| c.user_id.is_none() && c.provider == provider.as_str());
                                tr {
                                    th scope="row" { (provider) }
                                    @if let Some(c) = stored {
                                        td { code { (c.fingerprint) } }
                                        td { (when(c.updated_at)) }
                                        td { @if let Some(at) = c.last_used_at { (when(at)) } @else { "never" } }
                                        td {
                                            div.actions {
                                                (action_form("/settings/credentials/test", csrf, i.id, provider, "Test", false))
                                                (action_form("/settings/credentials/delete", csrf, i.id, provider, "Delete", true))
                                            }
                                        }
                                    } @else {
                                        td.muted { "not set" }
                                        td {}
                                        td {}
                                        td {}
                                    }
                                }
                            }
                        }
                    }
                    @let own: Vec<&CredentialView> = i.credentials.iter().filter(|c| c.user_id.is_some()).collect();
                    @if !own.is_empty() {
                        p.muted { "Users' own credentials (managed through the API or " code { "bg-agent credentials" } "):" }
                        ul {
                            @for c in own {
                                li {
                                    "user " (c.user_id.unwrap_or_default()) ": " (c.provider) " " code { (c.fingerprint) }
                                    ", last used " @if let Some(at) = c.last_used_at { (when(at)) } @else { "never" }
                                }
                            }
                        }
                    }
                    @if view.can_encrypt {
                        form.filters method="post" action="/settings/credentials/set" {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="installation" value=(i.id);
                            label for={"provider-" (i.id)} {
                                "Provider"
                                select id={"provider-" (i.id)} name="provider" {
                                    @for provider in Provider::ALL {
                                        option value=(provider.as_str()) { (provider) }
                                    }
                                }
                            }
                            label for={"value-" (i.id)} {
                                "API key (replaces the one set)"
                                input id={"value-" (i.id)} type="password" name="value" autocomplete="off" spellcheck="false" required;
                            }
                            button type="submit" { "Save" }
                        }
                    }
                }
            }
        },
    )
}

/// What the page lists: each managed installation with its credentials.
async fn load(
    state: &SettingsState,
    viewer: &Viewer,
    notice: Option<Notice>,
) -> Result<SettingsView, Response> {
    let managed = viewer
        .managed_installations(&state.auth)
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    let mut installations = Vec::new();
    for (id, account) in managed {
        let credentials = operations::list(&state.auth, &state.credentials, viewer, id)
            .await
            .map_err(|e| {
                let title = "Settings unavailable";
                (
                    e.status,
                    page(
                        title,
                        Some(Nav::of(viewer)),
                        html! { h1 { (title) } p { (e.body.message) } },
                    ),
                )
                    .into_response()
            })?;
        installations.push(InstallationView {
            id,
            account,
            credentials,
        });
    }
    Ok(SettingsView {
        installations,
        can_encrypt: state.credentials.keys().is_ok(),
        notice,
    })
}

/// The page, with what the last post did, answered with `status`.
async fn respond(
    state: &SettingsState,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    match load(state, viewer, notice).await {
        Ok(view) => (status, render_settings(Nav::of(viewer), &view)).into_response(),
        Err(response) => response,
    }
}

/// `GET /settings`.
pub async fn settings_page(State(state): State<SettingsState>, viewer: Viewer) -> Response {
    respond(&state, &viewer, StatusCode::OK, None).await
}

/// A credential form. The value is a [`SecretString`]: its `Debug` is redacted.
#[derive(Deserialize)]
pub struct CredentialForm {
    csrf: Option<String>,
    installation: i64,
    provider: String,
    value: Option<SecretString>,
}

/// The page after a post that failed: the API's status and its message.
async fn failed(state: &SettingsState, viewer: &Viewer, error: ApiError) -> Response {
    respond(
        state,
        viewer,
        error.status,
        Some(Notice::Failed(error.body.message)),
    )
    .await
}

/// `POST /settings/credentials/set`.
pub async fn set_credential(
    State(state): State<SettingsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CredentialForm>,
) -> Response {
    if !state
        .auth
        .check_form(&viewer, &headers, form.csrf.as_deref())
    {
        return forbidden();
    }
    let value = form
        .value
        .unwrap_or_else(|| SecretString::from(String::new()));
    match operations::set(
        &state.auth,
        &state.credentials,
        &viewer,
        form.installation,
        &form.provider,
        None,
        &value,
    )
    .await
    {
        Ok((_, c)) => {
            let text = format!(
                "Saved the {} credential of installation {} (fingerprint {}).",
                c.provider, c.installation_id, c.fingerprint
            );
            respond(&state, &viewer, StatusCode::OK, Some(Notice::Done(text))).await
        }
        Err(e) => failed(&state, &viewer, e).await,
    }
}

fn tested(result: &TestResult) -> Notice {
    let text = format!("Test: {}.", result.message);
    if result.outcome == "accepted" {
        Notice::Done(text)
    } else {
        Notice::Failed(text)
    }
}

/// `POST /settings/credentials/test`: one minimal request to the provider.
pub async fn test_credential(
    State(state): State<SettingsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CredentialForm>,
) -> Response {
    if !state
        .auth
        .check_form(&viewer, &headers, form.csrf.as_deref())
    {
        return forbidden();
    }
    match operations::test(
        &state.auth,
        &state.credentials,
        &viewer,
        form.installation,
        &form.provider,
        None,
    )
    .await
    {
        Ok(result) => respond(&state, &viewer, StatusCode::OK, Some(tested(&result))).await,
        Err(e) => failed(&state, &viewer, e).await,
    }
}

/// `POST /settings/credentials/delete`.
pub async fn delete_credential(
    State(state): State<SettingsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CredentialForm>,
) -> Response {
    if !state
        .auth
        .check_form(&viewer, &headers, form.csrf.as_deref())
    {
        return forbidden();
    }
    match operations::delete(
        &state.auth,
        &state.credentials,
        &viewer,
        form.installation,
        &form.provider,
        None,
    )
    .await
    {
        Ok(()) => {
            let text = format!(
                "Deleted the {} credential of installation {}.",
                form.provider, form.installation
            );
            respond(&state, &viewer, StatusCode::OK, Some(Notice::Done(text))).await
        }
        Err(e) => failed(&state, &viewer, e).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: &str) -> DateTime<Utc> {
        time.parse().unwrap()
    }

    fn nav() -> Nav<'static> {
        Nav {
            login: "octo-lead",
            csrf: Some("csrf-token-of-the-session"),
            signed_in: true,
        }
    }

    fn outline(html: &str) -> String {
        html.replace("><", ">\n<")
    }

    /// The page from `<main>` on (the head and navigation are `pages`').
    fn main_of(html: &str) -> String {
        let start = html.find("<main>").unwrap();
        outline(&html[start..])
    }

    fn credential(provider: &str, user: Option<i64>, used: Option<&str>) -> CredentialView {
        CredentialView {
            installation_id: 42,
            provider: provider.into(),
            user_id: user,
            fingerprint: "ba7816bf".into(),
            key_id: "k2026".into(),
            created_at: at("2026-11-20T09:00:00Z"),
            updated_at: at("2026-11-21T09:30:00Z"),
            last_used_at: used.map(at),
        }
    }

    #[test]
    fn the_settings_page_lists_fingerprints_and_forms_per_installation() {
        let view = SettingsView {
            installations: vec![InstallationView {
                id: 42,
                account: Some("acme".into()),
                credentials: vec![
                    credential("anthropic", None, Some("2026-11-21T10:00:00Z")),
                    credential("openai", Some(7), None),
                ],
            }],
            can_encrypt: true,
            notice: Some(Notice::Done(
                "Saved the anthropic credential of installation 42 (fingerprint ba7816bf).".into(),
            )),
        };
        let html = render_settings(nav(), &view).into_string();
        insta::assert_snapshot!(main_of(&html));
        // The navigation links here, and the password field is never filled in.
        assert!(
            html.contains(r#"<a href="/settings">Settings</a>"#),
            "{html}"
        );
        assert!(!html.contains("type=\"password\" value"), "{html}");
    }

    #[test]
    fn without_a_key_or_an_installation_the_page_says_why() {
        let view = SettingsView {
            installations: Vec::new(),
            can_encrypt: false,
            notice: Some(Notice::Failed(
                "no encryption key: set BG_AGENT_ENCRYPTION_KEY".into(),
            )),
        };
        insta::assert_snapshot!(main_of(&render_settings(nav(), &view).into_string()), @r#"
        <main>
        <h1>Settings</h1>
        <p class="notice failed" role="alert">no encryption key: set BG_AGENT_ENCRYPTION_KEY</p>
        <h2>Model-provider credentials</h2>
        <p class="muted">The API keys coding agents use, per installation. A key is stored encrypted and never shown again: only its fingerprint (the first 8 hex digits of its SHA-256).</p>
        <p role="alert">This server has no encryption key (<code>BG_AGENT_ENCRYPTION_KEY</code>): credentials cannot be set or tested until its operator sets one.</p>
        <p>You manage no installation: that takes admin permission on one of its repositories.</p>
        </main>
        </body>
        </html>
        "#);
    }

    #[test]
    fn an_account_name_is_escaped() {
        let view = SettingsView {
            installations: vec![InstallationView {
                id: 1,
                account: Some("<script>alert(1)</script>".into()),
                credentials: Vec::new(),
            }],
            can_encrypt: true,
            notice: Some(Notice::Failed("<img src=x>".into())),
        };
        let html = render_settings(nav(), &view).into_string();
        assert!(
            !html.contains("<script>alert") && !html.contains("<img"),
            "{html}"
        );
    }
}
