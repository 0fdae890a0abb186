//! Sign-in with GitHub (the App's OAuth client, user-to-server web flow) and sign-out.
//!
//! `/login` sends the browser to GitHub with a fresh `state` and a PKCE challenge, both
//! remembered in a short-lived signed cookie; `/login/callback` checks the `state`,
//! exchanges the code with the verifier, asks GitHub who the token belongs to, and starts
//! a session. `POST /logout` (CSRF-checked) deletes the session.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::{AuthMode, AuthState, PendingLogin, Viewer, percent_encode};
use super::pages::{PagesState, page};

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: off to GitHub.
pub async fn login(State(state): State<PagesState>, Query(query): Query<LoginQuery>) -> Response {
    let auth = &state.auth;
    let next = query.next.as_deref().unwrap_or("/");
    let (AuthMode::GitHub, Some(client)) = (auth.mode(), auth.oauth()) else {
        return Redirect::to(super::auth::safe_next(next)).into_response();
    };
    let pending = PendingLogin::new(next);
    let redirect_uri = format!("{}/login/callback", auth.public_url());
    let location = format!(
        "{}/login/oauth/authorize?client_id={}&redirect_uri={}&state={}&code_challenge={}&code_challenge_method=S256",
        auth.web_url(),
        percent_encode(&client.client_id),
        percent_encode(&redirect_uri),
        percent_encode(&pending.state),
        percent_encode(&pending.challenge()),
    );
    (
        [(header::SET_COOKIE, auth.login_cookie(&pending))],
        Redirect::to(&location),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /login/callback`: GitHub sends the browser back here.
pub async fn callback(
    State(state): State<PagesState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let auth = &state.auth;
    let Some(client) = auth.oauth() else {
        return Redirect::to("/").into_response();
    };
    let clear = [(header::SET_COOKIE, auth.clear_login_cookie())];
    let Some(pending) = auth.pending_login(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            clear,
            refused("This sign-in expired or was started in another browser."),
        )
            .into_response();
    };
    if query.error.is_some() {
        return (
            StatusCode::FORBIDDEN,
            clear,
            refused("GitHub did not let you sign in (access denied)."),
        )
            .into_response();
    }
    let (Some(code), Some(given_state)) = (query.code, query.state) else {
        return (
            StatusCode::BAD_REQUEST,
            clear,
            refused("GitHub sent no code."),
        )
            .into_response();
    };
    if !pending.state_matches(&given_state) {
        tracing::warn!("sign-in refused: the state does not match this browser's");
        return (
            StatusCode::BAD_REQUEST,
            clear,
            refused("This sign-in does not belong to this browser."),
        )
            .into_response();
    }
    let redirect_uri = format!("{}/login/callback", auth.public_url());
    let token = match auth
        .github()
        .exchange_code(client, &code, &pending.verifier, &redirect_uri)
        .await
    {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in refused at the code exchange");
            return (
                StatusCode::FORBIDDEN,
                clear,
                refused("GitHub refused the sign-in."),
            )
                .into_response();
        }
    };
    let user = match auth.github().user(&token).await {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: GET /user failed");
            return (
                StatusCode::BAD_GATEWAY,
                clear,
                refused("GitHub did not say who you are."),
            )
                .into_response();
        }
    };
    match auth.start_session(&user, &token).await {
        Ok(session) => {
            tracing::info!(user = %user.login, "signed in");
            let mut response = Redirect::to(&pending.next).into_response();
            let headers = response.headers_mut();
            for cookie in [session, auth.clear_login_cookie()] {
                if let Ok(value) = cookie.parse() {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(e @ super::auth::SessionError::NoKey) => {
            tracing::error!(error = %e, "sign-in refused");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                clear,
                refused("This server cannot keep sessions yet: its operator has not set BG_AGENT_ENCRYPTION_KEY."),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store a session");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<PagesState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let auth: &AuthState = &state.auth;
    if !auth.check_form(&viewer, &headers, form.csrf.as_deref()) {
        return super::pages::forbidden();
    }
    match auth.end_session(&viewer).await {
        Ok(clear) => ([(header::SET_COOKIE, clear)], Redirect::to("/signed-out")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot end a session");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// `GET /signed-out`.
pub async fn signed_out() -> Markup {
    page(
        "Signed out",
        None,
        html! {
            h1 { "Signed out" }
            p { a href="/login" { "Sign in with GitHub" } " again." }
        },
    )
}

fn refused(why: &str) -> Markup {
    page(
        "Sign-in refused",
        None,
        html! {
            h1 { "Sign-in refused" }
            p { (why) }
            p { a href="/login" { "Try again" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sign_in_pages_read_as_expected() {
        let refused = refused("This sign-in does not belong to this browser.").into_string();
        let start = refused.find("<main>").unwrap();
        insta::assert_snapshot!(refused[start..].replace("><", ">\n<"), @r#"
        <main>
        <h1>Sign-in refused</h1>
        <p>This sign-in does not belong to this browser.</p>
        <p>
        <a href="/login">Try again</a>
        </p>
        </main>
        </body>
        </html>
        "#);
        let out = signed_out().await.into_string();
        let start = out.find("<main>").unwrap();
        insta::assert_snapshot!(out[start..].replace("><", ">\n<"), @r#"
        <main>
        <h1>Signed out</h1>
        <p>
        <a href="/login">Sign in with GitHub</a> again.</p>
        </main>
        </body>
        </html>
        "#);
    }
}
