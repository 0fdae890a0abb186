//! Who is asking (interim, until sign-in lands): every request is the local viewer with
//! admin permission, as the `auth = none` mode will be.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use bg_agent_core::task::Permission;

#[derive(Debug, Clone, Default)]
pub struct AuthState {}

impl AuthState {
    pub fn none() -> Self {
        Self {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("GitHub did not answer: {0}")]
    GitHub(String),
}

/// The person behind a request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub login: String,
    pub user_id: i64,
}

impl Viewer {
    pub async fn permission(
        &self,
        _auth: &AuthState,
        _owner: &str,
        _repo: &str,
    ) -> Result<Permission, AuthError> {
        Ok(Permission::Admin)
    }

    pub async fn can_read(
        &self,
        auth: &AuthState,
        owner: &str,
        repo: &str,
    ) -> Result<bool, AuthError> {
        Ok(self.permission(auth, owner, repo).await? >= Permission::Read)
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    AuthState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Viewer {
            login: "local".to_owned(),
            user_id: 0,
        })
    }
}
