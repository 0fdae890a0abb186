//! GitHub calls made on a person's behalf, with their user-to-server token: who they are,
//! what they may do in a repository, which installations and repositories they can see;
//! and the OAuth code exchange of sign-in. Short timeouts and no retries: a person is
//! waiting, and a failure shows as a page saying GitHub did not answer.

use std::time::Duration;

use bg_agent_core::task::Permission;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::OAuthClient;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Pages of installations and repositories read at most (100 each).
const MAX_PAGES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum UserApiError {
    /// GitHub refused the token (revoked, expired): the person must sign in again.
    #[error("GitHub refused the user's token")]
    Unauthorized,
    #[error("GitHub did not answer as expected ({endpoint}): {message}")]
    GitHub {
        endpoint: &'static str,
        message: String,
    },
    /// The sign-in code exchange was refused (GitHub's `error` code, e.g. `bad_verification_code`).
    #[error("GitHub refused the sign-in: {0}")]
    OAuth(String),
}

/// Who a token belongs to (`GET /user`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GitHubUser {
    pub login: String,
    pub id: i64,
}

#[derive(Debug, Clone)]
pub struct UserApi {
    http: reqwest::Client,
    api_url: String,
    web_url: String,
}

#[derive(Deserialize)]
struct RepoPermissions {
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    maintain: bool,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    triage: bool,
    #[serde(default)]
    pull: bool,
}

#[derive(Deserialize)]
struct RepoWire {
    permissions: Option<RepoPermissions>,
}

impl RepoPermissions {
    fn level(permissions: Option<&Self>) -> Permission {
        match permissions {
            Some(p) if p.admin => Permission::Admin,
            Some(p) if p.maintain || p.push => Permission::Write,
            Some(p) if p.triage || p.pull => Permission::Read,
            _ => Permission::None,
        }
    }
}

#[derive(Deserialize)]
struct AccountWire {
    login: String,
}

#[derive(Deserialize)]
struct InstallationWire {
    id: i64,
    account: Option<AccountWire>,
}

#[derive(Deserialize)]
struct InstallationsWire {
    installations: Vec<InstallationWire>,
}

#[derive(Deserialize)]
struct RepositoryWire {
    id: i64,
    permissions: Option<RepoPermissions>,
}

#[derive(Deserialize)]
struct RepositoriesWire {
    repositories: Vec<RepositoryWire>,
}

/// An installation of the App that a user can see (a repository of it is theirs to see).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInstallation {
    pub id: i64,
    /// The account it is installed on (`None` when GitHub does not say).
    pub account: Option<String>,
}

/// `POST /login/oauth/access_token`'s JSON answer: a token, or an error (with 200).
#[derive(Deserialize)]
struct AccessTokenWire {
    access_token: Option<SecretString>,
    error: Option<String>,
}

impl UserApi {
    pub fn new(api_url: &str, web_url: &str) -> Result<Self, UserApiError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent("bg-agent")
            // A redirect is followed only for a renamed repository; never to another host.
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| UserApiError::GitHub {
                endpoint: "client",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            web_url: web_url.trim_end_matches('/').to_owned(),
        })
    }

    fn get(&self, path: &str, token: &SecretString) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(token.expose_secret())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    }

    /// `GET /user`.
    pub async fn user(&self, token: &SecretString) -> Result<GitHubUser, UserApiError> {
        let response = send(self.get("/user", token), "GET /user").await?;
        match response.status() {
            StatusCode::OK => decode(response, "GET /user").await,
            StatusCode::UNAUTHORIZED => Err(UserApiError::Unauthorized),
            status => Err(unexpected("GET /user", status)),
        }
    }

    /// `GET /repos/{owner}/{repo}` with the user's token: 404 (or 403) is no access at all;
    /// otherwise its `permissions` are the user's.
    pub async fn permission(
        &self,
        token: &SecretString,
        owner: &str,
        repo: &str,
    ) -> Result<Permission, UserApiError> {
        const ENDPOINT: &str = "GET /repos/{owner}/{repo}";
        let path = format!("/repos/{}/{}", segment(owner), segment(repo));
        let response = send(self.get(&path, token), ENDPOINT).await?;
        match response.status() {
            StatusCode::OK => {
                let repo: RepoWire = decode(response, ENDPOINT).await?;
                Ok(RepoPermissions::level(repo.permissions.as_ref()))
            }
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(Permission::None),
            StatusCode::UNAUTHORIZED => Err(UserApiError::Unauthorized),
            status => Err(unexpected(ENDPOINT, status)),
        }
    }

    /// The installations of the App the user can see: `GET /user/installations`.
    pub async fn installations(
        &self,
        token: &SecretString,
    ) -> Result<Vec<UserInstallation>, UserApiError> {
        const INSTALLATIONS: &str = "GET /user/installations";
        let mut installations = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/user/installations?per_page=100&page={page}");
            let response = send(self.get(&path, token), INSTALLATIONS).await?;
            let wire: InstallationsWire = match response.status() {
                StatusCode::OK => decode(response, INSTALLATIONS).await?,
                StatusCode::UNAUTHORIZED => return Err(UserApiError::Unauthorized),
                status => return Err(unexpected(INSTALLATIONS, status)),
            };
            let last = wire.installations.len() < 100;
            installations.extend(wire.installations.into_iter().map(|i| UserInstallation {
                id: i.id,
                account: i.account.map(|a| a.login),
            }));
            if last {
                break;
            }
        }
        Ok(installations)
    }

    /// The repositories of `installation` the user can see, with their permission on
    /// each: `GET /user/installations/{id}/repositories`. `None`: they can see none of
    /// them (GitHub answers 404), or it is not installed.
    async fn installation_repositories(
        &self,
        token: &SecretString,
        installation: i64,
    ) -> Result<Option<Vec<(i64, Permission)>>, UserApiError> {
        const REPOSITORIES: &str = "GET /user/installations/{installation_id}/repositories";
        let mut repositories = Vec::new();
        for page in 1..=MAX_PAGES {
            let path =
                format!("/user/installations/{installation}/repositories?per_page=100&page={page}");
            let response = send(self.get(&path, token), REPOSITORIES).await?;
            let wire: RepositoriesWire = match response.status() {
                StatusCode::OK => decode(response, REPOSITORIES).await?,
                StatusCode::UNAUTHORIZED => return Err(UserApiError::Unauthorized),
                StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => return Ok(None),
                status => return Err(unexpected(REPOSITORIES, status)),
            };
            let last = wire.repositories.len() < 100;
            repositories.extend(
                wire.repositories
                    .into_iter()
                    .map(|r| (r.id, RepoPermissions::level(r.permissions.as_ref()))),
            );
            if last {
                break;
            }
        }
        Ok(Some(repositories))
    }

    /// The user's highest permission on any repository of `installation` they can see;
    /// `None`: they can see none.
    pub async fn installation_permission(
        &self,
        token: &SecretString,
        installation: i64,
    ) -> Result<Option<Permission>, UserApiError> {
        Ok(self
            .installation_repositories(token, installation)
            .await?
            .map(|repos| {
                repos
                    .into_iter()
                    .map(|(_, p)| p)
                    .max()
                    .unwrap_or(Permission::None)
            }))
    }

    /// The ids of every repository the user can reach through the App: `GET
    /// /user/installations`, then `GET /user/installations/{id}/repositories` for each.
    pub async fn repository_ids(&self, token: &SecretString) -> Result<Vec<i64>, UserApiError> {
        let mut ids = Vec::new();
        for installation in self.installations(token).await? {
            // `None`: uninstalled between the two calls.
            if let Some(repos) = self
                .installation_repositories(token, installation.id)
                .await?
            {
                ids.extend(repos.into_iter().map(|(id, _)| id));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// `POST {web}/login/oauth/access_token`: the sign-in code (with its PKCE verifier)
    /// for the user's token.
    pub async fn exchange_code(
        &self,
        client: &OAuthClient,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<SecretString, UserApiError> {
        const ENDPOINT: &str = "POST /login/oauth/access_token";
        let form = [
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose_secret()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let request = self
            .http
            .post(format!("{}/login/oauth/access_token", self.web_url))
            .header("accept", "application/json")
            .form(&form);
        let response = send(request, ENDPOINT).await?;
        if response.status() != StatusCode::OK {
            return Err(unexpected(ENDPOINT, response.status()));
        }
        let wire: AccessTokenWire = decode(response, ENDPOINT).await?;
        match (wire.access_token, wire.error) {
            (Some(token), None) => Ok(token),
            (_, Some(error)) => Err(UserApiError::OAuth(error)),
            (None, None) => Err(UserApiError::GitHub {
                endpoint: ENDPOINT,
                message: "no access_token in the answer".into(),
            }),
        }
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    endpoint: &'static str,
) -> Result<reqwest::Response, UserApiError> {
    request.send().await.map_err(|e| UserApiError::GitHub {
        endpoint,
        // Without the URL: it may carry a code.
        message: e.without_url().to_string(),
    })
}

async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    endpoint: &'static str,
) -> Result<T, UserApiError> {
    let bytes = response.bytes().await.map_err(|e| UserApiError::GitHub {
        endpoint,
        message: e.without_url().to_string(),
    })?;
    // serde's message may quote the body (a token); only say where it broke.
    serde_json::from_slice(&bytes).map_err(|e| UserApiError::GitHub {
        endpoint,
        message: format!("the answer is not as documented (line {})", e.line()),
    })
}

fn unexpected(endpoint: &'static str, status: StatusCode) -> UserApiError {
    UserApiError::GitHub {
        endpoint,
        message: format!("HTTP {status}"),
    }
}

/// One path segment, percent-encoded (owner and repository names are plain, but a task's
/// stored name is data).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
