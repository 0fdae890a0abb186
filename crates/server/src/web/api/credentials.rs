//! Model-provider credentials through the API: an installation's (or one of its users')
//! Anthropic, OpenAI or Gemini key, set, listed, tested and deleted. The value is
//! write-only: no answer carries it, only its fingerprint and when it was last used.
//!
//! Who may: a person with admin permission on a repository of the installation (the
//! rule templates follow too; `web::auth`), else 403; an installation where they see no
//! repository is a 404. The work itself is `credentials::Manager`'s, which the command
//! line (`bg-agent credentials`) and the settings page (`web::settings`) share; these
//! functions add the permission check and the API's error shape, and the page calls
//! them too.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};
use crate::credentials::{
    CredentialError, ManageError, Manager, Provider, Scope, TestOutcome, Tested,
};
use crate::store::credentials::CredentialInfo;
use crate::web::auth::{AuthState, Viewer};
use bg_agent_core::task::Permission;

/// Whose credential: the installation's (every user without one of their own), or one
/// user's.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// A GitHub user id: that user's own credential, which wins over the installation's.
    /// Unset: the installation's.
    pub user: Option<i64>,
}

/// A credential to store.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCredential {
    /// The API key. Stored encrypted; never shown again (only its fingerprint).
    #[schema(value_type = String, format = Password)]
    pub value: SecretString,
}

/// A stored credential, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    pub installation_id: i64,
    /// `anthropic`, `openai` or `gemini`.
    pub provider: String,
    /// The user whose own credential it is; none: the installation's.
    pub user_id: Option<i64>,
    /// The first 8 hex digits of the value's SHA-256.
    pub fingerprint: String,
    /// Which encryption key sealed it.
    pub key_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When an agent was last given it; none: never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What the provider said to the one minimal request (listing models).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    pub provider: String,
    pub fingerprint: String,
    /// The API base the request went to.
    pub endpoint: String,
    /// `accepted`, `refused` (401 or 403) or `unexpected` (any other answer).
    pub outcome: String,
    /// The provider's HTTP status.
    pub status: Option<u16>,
    /// A sentence for people.
    pub message: String,
}

fn view(info: CredentialInfo) -> CredentialView {
    CredentialView {
        installation_id: info.installation_id,
        provider: info.provider,
        user_id: info.user_id,
        fingerprint: info.fingerprint,
        key_id: info.key_id,
        created_at: info.created_at,
        updated_at: info.updated_at,
        last_used_at: info.last_used_at,
    }
}

/// `anthropic`, `openai`, `gemini`, or an agent's name; else 400 naming `provider`.
pub fn provider(name: &str) -> Result<Provider, ApiError> {
    Provider::parse(name).ok_or_else(|| {
        ApiError::invalid(
            "provider",
            "expected `anthropic`, `openai` or `gemini` (or an agent using one: `claude_code`, `codex`, `aider`, `cline`)",
        )
    })
}

/// Goes on only if the viewer manages `installation`: 404 where they see none of its
/// repositories, 403 without admin on one of them.
pub async fn authorize(
    auth: &AuthState,
    viewer: &Viewer,
    installation: i64,
) -> Result<(), ApiError> {
    match viewer.installation_permission(auth, installation).await? {
        None => Err(ApiError::not_found("installation")),
        Some(Permission::Admin) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "managing an installation's credentials needs admin permission on one of its repositories",
        )),
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        let message = e.to_string();
        match e {
            ManageError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not found", message),
            ManageError::TooLong | ManageError::Credential(CredentialError::Empty) => {
                Self::invalid("value", message)
            }
            ManageError::Credential(CredentialError::NoKey) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no encryption key",
                message,
            ),
            ManageError::Credential(
                CredentialError::UnknownKey(_) | CredentialError::Decrypt(_),
            ) => {
                tracing::warn!(error = %message, "a stored credential does not open");
                Self::new(
                    StatusCode::CONFLICT,
                    "credential unreadable",
                    format!("{message}; set it again"),
                )
            }
            ManageError::Unreachable { base, error } => {
                tracing::warn!(%base, %error, "credential test: provider unreachable");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "provider unreachable",
                    format!("cannot reach {base}; try again later"),
                )
            }
            ManageError::Credential(e) => Self::internal(e),
            ManageError::Store(e) => Self::internal(e),
        }
    }
}

fn scope(installation: i64, user: Option<i64>, provider: Provider) -> Scope {
    Scope {
        installation_id: installation,
        user_id: user,
        provider,
    }
}

/// An installation's credentials (its users' own included), without values.
pub async fn list(
    auth: &AuthState,
    manager: &Manager,
    viewer: &Viewer,
    installation: i64,
) -> Result<Vec<CredentialView>, ApiError> {
    authorize(auth, viewer, installation).await?;
    Ok(manager
        .list(Some(installation))
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// One credential, without its value.
pub async fn get(
    auth: &AuthState,
    manager: &Manager,
    viewer: &Viewer,
    installation: i64,
    provider_name: &str,
    user: Option<i64>,
) -> Result<CredentialView, ApiError> {
    let provider = provider(provider_name)?;
    authorize(auth, viewer, installation).await?;
    Ok(view(
        manager.info(&scope(installation, user, provider)).await?,
    ))
}

/// Stores a credential, replacing the scope's; `true` when none was there.
pub async fn set(
    auth: &AuthState,
    manager: &Manager,
    viewer: &Viewer,
    installation: i64,
    provider_name: &str,
    user: Option<i64>,
    value: &SecretString,
) -> Result<(bool, CredentialView), ApiError> {
    let provider = provider(provider_name)?;
    authorize(auth, viewer, installation).await?;
    let scope = scope(installation, user, provider);
    let stored = manager.set(&scope, value).await?;
    tracing::info!(
        installation,
        user,
        %provider,
        fingerprint = %stored.fingerprint,
        by = %viewer.login,
        "credential set"
    );
    Ok((!stored.replaced, view(manager.info(&scope).await?)))
}

/// The one minimal provider request, with the stored credential.
pub async fn test(
    auth: &AuthState,
    manager: &Manager,
    viewer: &Viewer,
    installation: i64,
    provider_name: &str,
    user: Option<i64>,
) -> Result<TestResult, ApiError> {
    let provider = provider(provider_name)?;
    authorize(auth, viewer, installation).await?;
    let tested = manager.test(&scope(installation, user, provider)).await?;
    Ok(test_result(provider, tested))
}

fn test_result(provider: Provider, tested: Tested) -> TestResult {
    let what = format!(
        "the {provider} credential (fingerprint {}) at {}",
        tested.fingerprint, tested.base
    );
    let (outcome, status, message) = match tested.outcome {
        TestOutcome::Accepted => ("accepted", None, format!("{what} was accepted")),
        TestOutcome::Refused(status) => (
            "refused",
            Some(status),
            format!("{what} was refused ({status}); set a valid one"),
        ),
        TestOutcome::Unexpected(status) => (
            "unexpected",
            Some(status),
            format!("unexpected answer {status} to {what}; try again later"),
        ),
    };
    TestResult {
        provider: provider.as_str().to_owned(),
        fingerprint: tested.fingerprint,
        endpoint: tested.base,
        outcome: outcome.to_owned(),
        status,
        message,
    }
}

/// Deletes a credential.
pub async fn delete(
    auth: &AuthState,
    manager: &Manager,
    viewer: &Viewer,
    installation: i64,
    provider_name: &str,
    user: Option<i64>,
) -> Result<(), ApiError> {
    let provider = provider(provider_name)?;
    authorize(auth, viewer, installation).await?;
    manager.delete(&scope(installation, user, provider)).await?;
    tracing::info!(installation, user, %provider, by = %viewer.login, "credential deleted");
    Ok(())
}

// ---- Handlers ----

/// An installation's credentials.
///
/// The installation's and its users' own, each with its fingerprint, never its value.
#[utoipa::path(
    get,
    path = "/api/v1/installations/{id}/credentials",
    tag = "credentials",
    params(("id" = i64, Path, description = "The App installation's id")),
    responses(
        (status = 200, description = "The credentials", body = Vec<CredentialView>),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of any of its repositories", body = super::ErrorBody),
        (status = 404, description = "No such installation, or none of its repositories is yours to see", body = super::ErrorBody),
    ),
)]
pub async fn list_credentials(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<CredentialView>>, ApiError> {
    Ok(Json(
        list(&state.auth, &state.credentials, &viewer, id).await?,
    ))
}

/// One credential: its fingerprint and when it was made and last used.
#[utoipa::path(
    get,
    path = "/api/v1/installations/{id}/credentials/{provider}",
    tag = "credentials",
    params(
        ("id" = i64, Path, description = "The App installation's id"),
        ("provider" = String, Path, description = "`anthropic`, `openai` or `gemini` (or an agent using one)"),
        UserQuery,
    ),
    responses(
        (status = 200, description = "The credential, without its value", body = CredentialView),
        (status = 400, description = "Unknown provider (`field`: `provider`)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of any of its repositories", body = super::ErrorBody),
        (status = 404, description = "No such credential or installation", body = super::ErrorBody),
    ),
)]
pub async fn get_credential(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath((id, provider)): ApiPath<(i64, String)>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<Json<CredentialView>, ApiError> {
    Ok(Json(
        get(
            &state.auth,
            &state.credentials,
            &viewer,
            id,
            &provider,
            query.user,
        )
        .await?,
    ))
}

/// Set a credential (write-only).
///
/// Stored encrypted, replacing the one of the same scope; the answer shows its
/// fingerprint, never the value.
#[utoipa::path(
    put,
    path = "/api/v1/installations/{id}/credentials/{provider}",
    tag = "credentials",
    params(
        ("id" = i64, Path, description = "The App installation's id"),
        ("provider" = String, Path, description = "`anthropic`, `openai` or `gemini` (or an agent using one)"),
        UserQuery,
    ),
    request_body = SetCredential,
    responses(
        (status = 200, description = "Replaced", body = CredentialView),
        (status = 201, description = "Stored", body = CredentialView),
        (status = 400, description = "Unknown provider, or an empty or oversized value (`field` names which)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of any of its repositories", body = super::ErrorBody),
        (status = 404, description = "No such installation", body = super::ErrorBody),
        (status = 503, description = "The server has no encryption key (BG_AGENT_ENCRYPTION_KEY)", body = super::ErrorBody),
    ),
)]
pub async fn put_credential(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath((id, provider)): ApiPath<(i64, String)>,
    ApiQuery(query): ApiQuery<UserQuery>,
    ApiJson(body): ApiJson<SetCredential>,
) -> Result<Response, ApiError> {
    let (created, view) = set(
        &state.auth,
        &state.credentials,
        &viewer,
        id,
        &provider,
        query.user,
        &body.value,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// Delete a credential.
#[utoipa::path(
    delete,
    path = "/api/v1/installations/{id}/credentials/{provider}",
    tag = "credentials",
    params(
        ("id" = i64, Path, description = "The App installation's id"),
        ("provider" = String, Path, description = "`anthropic`, `openai` or `gemini` (or an agent using one)"),
        UserQuery,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Unknown provider (`field`: `provider`)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of any of its repositories", body = super::ErrorBody),
        (status = 404, description = "No such credential or installation", body = super::ErrorBody),
    ),
)]
pub async fn delete_credential(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath((id, provider)): ApiPath<(i64, String)>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<StatusCode, ApiError> {
    delete(
        &state.auth,
        &state.credentials,
        &viewer,
        id,
        &provider,
        query.user,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Test a credential with one minimal request to its provider (listing models).
///
/// A refusal by the provider is an answer too (200, `outcome: refused`); an unreachable
/// provider is a 502.
#[utoipa::path(
    post,
    path = "/api/v1/installations/{id}/credentials/{provider}/test",
    tag = "credentials",
    params(
        ("id" = i64, Path, description = "The App installation's id"),
        ("provider" = String, Path, description = "`anthropic`, `openai` or `gemini` (or an agent using one)"),
        UserQuery,
    ),
    responses(
        (status = 200, description = "What the provider said", body = TestResult),
        (status = 400, description = "Unknown provider (`field`: `provider`)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of any of its repositories", body = super::ErrorBody),
        (status = 404, description = "No such credential or installation", body = super::ErrorBody),
        (status = 502, description = "The provider could not be reached", body = super::ErrorBody),
        (status = 503, description = "The server has no encryption key (BG_AGENT_ENCRYPTION_KEY)", body = super::ErrorBody),
    ),
)]
pub async fn test_credential(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath((id, provider)): ApiPath<(i64, String)>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<Json<TestResult>, ApiError> {
    Ok(Json(
        test(
            &state.auth,
            &state.credentials,
            &viewer,
            id,
            &provider,
            query.user,
        )
        .await?,
    ))
}
