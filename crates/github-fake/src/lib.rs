//! A stateful fake GitHub served over HTTP, strict like the real one: the tests' GitHub and
//! the `bg-agent dev github-sim` local simulator.
//!
//! Start one with [`GitHubSim::start`]; the returned [`RunningSim`] serves the
//! REST API at its root, or under [`SimConfig::api_path_prefix`] (point a
//! client's API URL at [`RunningSim::api_url`]), and real git repositories over
//! smart HTTP at `{base}/{owner}/{repo}.git`.
//!
//! What makes it strict:
//! - **Auth like GitHub's.** App endpoints need an RS256 App JWT within its
//!   10-minute window; everything else needs an installation token the sim
//!   minted, unexpired, scoped to repositories and permissions. Out-of-scope
//!   repositories are 404, missing permissions 403.
//! - **Schema-checked.** Request bodies are validated against GitHub's REST
//!   description (422 and a recorded violation), and so is every response and
//!   webhook the sim builds. A [`RunningSim`] with unexamined violations panics
//!   when dropped; see [`RunningSim::take_violations`].
//! - **git for real.** Each repository is a bare repository served by
//!   `git http-backend`; the REST API reads branches and files from it.
//!
//! It also serves a tiny npm registry at `{base}/npm/` ([`RunningSim::npm_registry_url`],
//! [`RunningSim::add_npm_package`]; `lodash` 4.17.20 and 4.17.21 from the start), so npm
//! commands in tests need no network.
//!
//! Tests read what happened from [`RunningSim::snapshot`] /
//! [`RunningSim::wait_for`], inject failures with [`RunningSim::inject_fault`],
//! and play users with [`RunningSim::comment`], [`RunningSim::label_issue`]...
//! which also deliver the matching webhooks, signed, to
//! [`SimConfig::webhook_url`].

mod actions;
mod auth;
mod control;
mod faults;
mod git;
mod hooks;
mod npm;
mod oauth;
pub mod openapi;
mod render;
mod rest;
mod server;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use actions::Triggered;
pub use auth::{DEV_APP_PRIVATE_KEY_PEM, DEV_APP_PUBLIC_KEY_PEM};
pub use faults::{Fault, FaultId, FaultKind};
pub use git::GitError;
pub use hooks::sign;
pub use rest::{
    MAX_ACTION_DESCRIPTION_CHARS, MAX_ACTION_IDENTIFIER_CHARS, MAX_ACTION_LABEL_CHARS,
    MAX_ANNOTATIONS_PER_REQUEST, MAX_CHECK_ACTIONS, MAX_CHECK_TEXT_CHARS, MAX_COMMENT_CHARS,
};
pub use state::{
    Access, AccountKind, AppRecord, CheckAction, CheckOutput, CheckRunRecord, CheckRunRevision,
    CommentRecord, Credential, DeliveryRecord, InFlight, InstallationRecord, IssueRecord,
    IssueState, LabelRecord, Permissions, PullRecord, ReactionRecord, RepoRecord, RequestRecord,
    RevokedToken, Role, SimState, TokenScope, UserRecord, ViolationKind, ViolationRecord,
};

use actions::RepoSpec;
use auth::AppKeys;
use server::Shared;

/// The fixtures' world (tests/fixtures/webhooks/README.md).
pub mod world {
    pub const APP_ID: u64 = 310001;
    pub const APP_SLUG: &str = "bg-agent";
    pub const BOT_LOGIN: &str = "bg-agent[bot]";
    pub const BOT_ID: u64 = 410001;
    pub const ORG: &str = "acme";
    pub const ORG_ID: u64 = 5100001;
    pub const INSTALLATION_ID: u64 = 4200001;
    pub const WIDGETS: &str = "acme/widgets";
    pub const WIDGETS_ID: u64 = 700001;
    pub const GADGETS: &str = "acme/gadgets";
    pub const GADGETS_ID: u64 = 700002;
    pub const LEAD: &str = "octo-lead";
    pub const LEAD_ID: u64 = 600001;
    pub const DRIVE_BY: &str = "drive-by";
    pub const DRIVE_BY_ID: u64 = 600002;
    pub const ISSUE_NUMBER: u64 = 17;
    pub const ISSUE_ID: u64 = 3300017;
    pub const HOOK_ID: u64 = 520000001;
    /// `acme/widgets`' files when seeded without others.
    pub const WIDGETS_FILES: &[(&str, &[u8])] = &[
        ("README.md", b"# widgets\n\nThe Acme widget storefront.\n"),
        (
            "package.json",
            b"{\n  \"name\": \"widgets\",\n  \"version\": \"1.0.0\",\n  \"dependencies\": {\n    \"lodash\": \"4.17.20\"\n  }\n}\n",
        ),
        ("src/index.js", b"const _ = require('lodash');\nmodule.exports = (xs) => _.uniq(xs);\n"),
    ];
    pub const GADGETS_FILES: &[(&str, &[u8])] = &[("README.md", b"# gadgets\n")];
    /// Versions of `lodash` (tiny fakes) the sim's npm registry serves from the start.
    pub const NPM_LODASH_VERSIONS: &[&str] = &["4.17.20", "4.17.21"];
}

/// Why the simulator could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the App key pair is unusable: {0}")]
    Keys(String),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("unknown repository {0}")]
    UnknownRepository(String),
    #[error("unknown installation {0}")]
    UnknownInstallation(u64),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("unknown issue or pull request #{0}")]
    UnknownIssue(u64),
    #[error("unknown comment {0}")]
    UnknownComment(u64),
    #[error("unknown check run {0}")]
    UnknownCheckRun(u64),
    #[error("unknown webhook delivery {0}")]
    UnknownDelivery(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("the webhook payload the simulator built does not match GitHub's schema: {0}")]
    InvalidWebhook(String),
    #[error("the condition did not hold within {0:?}")]
    Timeout(Duration),
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where webhooks go; `None` records deliveries without sending them.
    pub webhook_url: Option<String>,
    /// Signs deliveries (`X-Hub-Signature-256`).
    pub webhook_secret: String,
    /// Lifetime of minted installation tokens (GitHub: 1 h). Zero makes them
    /// expire at once, so tests can force expiry without waiting.
    pub token_lifetime: Duration,
    /// Panic when a [`RunningSim`] is dropped with unexamined schema
    /// violations (tests); `false` only logs them (standalone use).
    pub panic_on_violations: bool,
    /// Serve the REST API under this path (`/api/v3`, like GitHub Enterprise
    /// Server) instead of at the root; git stays at the root. Empty: the root.
    /// URLs inside response bodies still point at the root.
    pub api_path_prefix: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook_url: None,
            webhook_secret: "github-sim-webhook-secret".into(),
            token_lifetime: Duration::from_secs(3600),
            panic_on_violations: true,
            api_path_prefix: String::new(),
        }
    }
}

/// A repository created in the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoHandle {
    pub id: u64,
    pub owner: String,
    pub name: String,
    /// `{base}/{owner}/{name}.git`, served over smart HTTP.
    pub clone_url: String,
    /// The bare repository on disk (owned by the simulator).
    pub git_dir: PathBuf,
}

impl RepoHandle {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// What [`RunningSim::seed_world`] created.
#[derive(Debug, Clone)]
pub struct SeededWorld {
    pub installation_id: u64,
    pub widgets: RepoHandle,
    pub gadgets: RepoHandle,
    /// `acme/widgets#17`.
    pub issue_number: u64,
}

/// Starts simulators.
pub struct GitHubSim;

impl GitHubSim {
    /// Starts a simulator with the App (`bg-agent`, id 310001, the development
    /// key pair), its owner `acme` and its bot user; nothing else. Add the rest
    /// with [`RunningSim::seed_world`] or the `add_*` methods.
    pub async fn start(config: SimConfig) -> Result<RunningSim, SimError> {
        let keys = AppKeys::development().map_err(|e| SimError::Keys(e.to_string()))?;
        let git = git::GitStore::new().await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| SimError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: config.listen,
            source,
        })?;
        let base_url = format!("http://{addr}");
        let app = AppRecord {
            id: world::APP_ID,
            slug: world::APP_SLUG.into(),
            name: "bg-agent".into(),
            client_id: "Iv23liB9Agent7Acme001".into(),
            description: "Runs background coding tasks when you comment /bg-agent on an issue."
                .into(),
            owner_login: world::ORG.into(),
            external_url: "https://bg-agent.acme.example".into(),
            permissions: Permissions::bg_agent(),
            events: ["check_run", "issue_comment", "issues", "pull_request"]
                .map(String::from)
                .to_vec(),
            hook_id: world::HOOK_ID,
            created_at: Utc::now(),
        };
        let mut state = SimState::new(app, config.token_lifetime);
        actions::insert_account(
            &mut state,
            world::ORG,
            AccountKind::Organization,
            Some(world::ORG_ID),
        );
        actions::insert_account(
            &mut state,
            world::BOT_LOGIN,
            AccountKind::Bot,
            Some(world::BOT_ID),
        );
        let api_prefix = config.api_path_prefix.trim_matches('/');
        let api_prefix = if api_prefix.is_empty() {
            String::new()
        } else {
            format!("/{api_prefix}")
        };
        let shared = Arc::new(Shared::new(
            base_url,
            api_prefix,
            state,
            git,
            keys,
            config.webhook_url.clone(),
            config.webhook_secret.clone().into_bytes(),
            config.panic_on_violations,
        ));
        for version in world::NPM_LODASH_VERSIONS {
            shared
                .npm
                .publish("lodash", version)
                .map_err(|e| SimError::Invalid(e.to_string()))?;
        }
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app =
            server::router(Arc::clone(&shared)).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "github-sim server failed");
            }
        });
        tracing::info!(%addr, "github-sim listening");
        Ok(RunningSim {
            shared,
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }
}

/// A running simulator; stops when dropped (and panics then if schema
/// violations were recorded and not taken, unless configured otherwise).
pub struct RunningSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// `http://127.0.0.1:PORT`: the API root (like `https://api.github.com`)
    /// and the git host (`{base}/{owner}/{repo}.git`).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Where the REST API is served: [`Self::base_url`] plus
    /// [`SimConfig::api_path_prefix`].
    pub fn api_url(&self) -> &str {
        &self.shared.api_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app_id(&self) -> u64 {
        self.shared.read(|s| s.app.id)
    }

    pub fn app_slug(&self) -> String {
        self.shared.read(|s| s.app.slug.clone())
    }

    /// `{slug}[bot]`, the author of everything installation tokens write.
    pub fn bot_login(&self) -> String {
        self.shared.read(|s| s.app.bot_login())
    }

    /// The App's private key (PEM), for the client under test.
    pub fn app_private_key_pem(&self) -> &str {
        self.shared.keys.private_pem()
    }

    /// A valid App JWT (iat 60 s ago, exp in 9 min), for tests that need one.
    pub fn app_jwt(&self) -> String {
        self.shared
            .keys
            .sign_app_jwt(self.app_id())
            .unwrap_or_else(|e| unreachable!("the development key signs: {e}"))
    }

    /// Mints an installation token without going through the API: all
    /// repositories and permissions of the installation unless narrowed.
    pub fn mint_token(
        &self,
        installation_id: u64,
        repository_ids: Option<&[u64]>,
        permissions: Option<Permissions>,
    ) -> Result<String, SimError> {
        mint_token(&self.shared, installation_id, repository_ids, permissions)
    }

    /// The sim's npm registry (`{base}/npm/`), for `npm_config_registry`.
    pub fn npm_registry_url(&self) -> String {
        format!("{}/npm/", self.shared.base_url)
    }

    /// Runs `npm install --package-lock-only` for `package_json` against this registry
    /// and returns the `package-lock.json` (its URLs name this sim's port, so a lockfile
    /// cannot be a checked-in fixture). Needs `npm` on `PATH`; no network.
    pub async fn npm_lockfile(&self, package_json: &str) -> Result<String, SimError> {
        let io = |e: std::io::Error| SimError::Invalid(format!("npm: {e}"));
        let dir = tempfile::tempdir().map_err(io)?;
        std::fs::write(dir.path().join("package.json"), package_json).map_err(io)?;
        let output = tokio::process::Command::new("npm")
            .args([
                "install",
                "--package-lock-only",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("npm_config_registry", self.npm_registry_url())
            .env("npm_config_cache", dir.path().join(".npm-cache"))
            .env("npm_config_update_notifier", "false")
            .output()
            .await
            .map_err(io)?;
        if !output.status.success() {
            return Err(SimError::Invalid(format!(
                "npm install --package-lock-only failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        std::fs::read_to_string(dir.path().join("package-lock.json")).map_err(io)
    }

    /// Publishes a tiny fake `name@version` (a `package.json` and an `index.js`) to the
    /// sim's npm registry.
    pub fn add_npm_package(&self, name: &str, version: &str) -> Result<(), SimError> {
        self.shared
            .npm
            .publish(name, version)
            .map_err(|e| SimError::Invalid(e.to_string()))
    }

    /// Lifetime of tokens minted from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.mutate(|s| s.token_lifetime = lifetime);
    }

    /// Makes every token minted so far expired.
    pub fn expire_all_tokens(&self) {
        let now = Utc::now();
        self.shared.mutate(|s| {
            for grant in s.tokens.values_mut() {
                grant.expires_at = now;
            }
        });
    }

    pub fn set_webhook_url(&self, url: Option<String>) {
        *self
            .shared
            .webhook_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = url;
    }

    // ---- Sign-in with GitHub ----

    /// The App's OAuth client id (what `/login/oauth/authorize` wants).
    pub fn oauth_client_id(&self) -> String {
        self.shared.read(|s| s.app.client_id.clone())
    }

    /// The App's OAuth client secret (public: the development App's).
    pub fn oauth_client_secret(&self) -> &'static str {
        oauth::DEV_OAUTH_CLIENT_SECRET
    }

    /// Who approves sign-ins from now on, as if signed in to GitHub in the browser;
    /// `None`: nobody (the authorize page refuses).
    pub fn approve_sign_in_as(&self, login: Option<&str>) {
        self.shared
            .mutate(|s| s.oauth.approver = login.map(str::to_owned));
    }

    /// A `ghu_` user token for `login`, as the code exchange would give.
    pub fn user_token(&self, login: &str) -> String {
        self.shared.mutate(|s| s.oauth.mint(login))
    }

    /// Every user token of `login` stops working.
    pub fn revoke_user_tokens(&self, login: &str) {
        self.shared.mutate(|s| s.oauth.revoke_user(login));
    }

    // ---- Seeding ----

    /// Adds a user account (or returns the existing one's id).
    pub fn add_user(&self, login: &str) -> u64 {
        actions::add_account(&self.shared, login, AccountKind::User, None)
    }

    /// Makes `login` a member of organization `org` (`author_association: MEMBER`).
    pub fn add_org_member(&self, org: &str, login: &str) -> Result<(), SimError> {
        actions::add_org_member(&self.shared, org, login)
    }

    /// Installs the App on `account_login`, with the App's permissions.
    pub fn add_installation(&self, account_login: &str) -> u64 {
        actions::add_installation(&self.shared, account_login, None)
    }

    /// Sets the permissions of an installation (tokens minted from now on), e.g. fewer
    /// than the App's, as when an owner has not yet accepted new permissions.
    pub fn set_installation_permissions(
        &self,
        installation_id: u64,
        permissions: Permissions,
    ) -> Result<(), SimError> {
        self.shared.mutate(|s| {
            let installation = s
                .installations
                .get_mut(&installation_id)
                .ok_or(SimError::UnknownInstallation(installation_id))?;
            installation.permissions = permissions;
            Ok(())
        })
    }

    /// Creates a private repository in an installation: a real bare git
    /// repository whose `main` has one commit holding `files`.
    pub async fn add_repository(
        &self,
        installation_id: u64,
        owner: &str,
        name: &str,
        files: &[(&str, &[u8])],
    ) -> Result<RepoHandle, SimError> {
        actions::add_repository(
            &self.shared,
            RepoSpec {
                installation_id: Some(installation_id),
                owner,
                name,
                id: None,
                description: None,
                files,
            },
        )
        .await
    }

    /// Gives `login` a role on `repo` (`owner/name`); `None` removes it.
    pub fn set_permission(
        &self,
        repo: &str,
        login: &str,
        role: Option<Role>,
    ) -> Result<(), SimError> {
        actions::set_permission(&self.shared, repo, login, role)
    }

    /// Opens an issue without sending a webhook; returns its number.
    pub fn create_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        author: &str,
    ) -> Result<u64, SimError> {
        actions::create_issue(&self.shared, repo, title, Some(body), author, None)
    }

    /// Defines a label on a repository (as `issues.labeled` will show it).
    pub fn add_label(
        &self,
        repo: &str,
        name: &str,
        color: &str,
        description: Option<&str>,
    ) -> Result<u64, SimError> {
        self.shared.mutate(|s| {
            let repo_id = s
                .repo(repo)
                .map(|r| r.id)
                .ok_or_else(|| SimError::UnknownRepository(repo.to_owned()))?;
            Ok(rest::ensure_label(s, repo_id, name, color, description))
        })
    }

    /// The fixtures' world, with `acme/widgets` holding [`world::WIDGETS_FILES`].
    pub async fn seed_world(&self) -> Result<SeededWorld, SimError> {
        self.seed_world_with(world::WIDGETS_FILES).await
    }

    /// The fixtures' world: installation 4200001 on `acme` with `acme/widgets`
    /// (700001, holding `widgets_files`) and `acme/gadgets` (700002);
    /// `octo-lead` (600001, org member, admin) and `drive-by` (600002, read);
    /// labels `bg-agent`, `bg-agent:upgrade`, `bug`; open issue `widgets#17`.
    pub async fn seed_world_with(
        &self,
        widgets_files: &[(&str, &[u8])],
    ) -> Result<SeededWorld, SimError> {
        use world::*;
        let shared = &self.shared;
        actions::add_account(shared, LEAD, AccountKind::User, Some(LEAD_ID));
        actions::add_account(shared, DRIVE_BY, AccountKind::User, Some(DRIVE_BY_ID));
        actions::add_org_member(shared, ORG, LEAD)?;
        let installation_id = actions::add_installation(shared, ORG, Some(INSTALLATION_ID));
        let repo = |name, id, description, files| RepoSpec {
            installation_id: Some(installation_id),
            owner: ORG,
            name,
            id: Some(id),
            description: Some(description),
            files,
        };
        let widgets = actions::add_repository(
            shared,
            repo(
                "widgets",
                WIDGETS_ID,
                "The Acme widget storefront",
                widgets_files,
            ),
        )
        .await?;
        let gadgets = actions::add_repository(
            shared,
            repo("gadgets", GADGETS_ID, "Acme gadgets", GADGETS_FILES),
        )
        .await?;
        for full_name in [WIDGETS, GADGETS] {
            self.set_permission(full_name, LEAD, Some(Role::Admin))?;
            self.set_permission(full_name, DRIVE_BY, Some(Role::Read))?;
        }
        for (id, name, color, description) in [
            (8100001, "bg-agent", "5319e7", "Hand this issue to bg-agent"),
            (
                8100002,
                "bg-agent:upgrade",
                "5319e7",
                "bg-agent: upgrade a dependency",
            ),
            (8100003, "bug", "d73a4a", "Something isn't working"),
        ] {
            shared.mutate(|s| {
                s.ids.label = s.ids.label.max(id);
                rest::ensure_label(s, widgets.id, name, color, Some(description));
            });
        }
        // Numbers and ids as in the fixtures: issue #17 (3300017), then PR #18 (3400018).
        shared.mutate(|s| {
            s.ids.issue = s.ids.issue.min(ISSUE_ID);
            s.ids.pull = s.ids.pull.min(3_400_018);
        });
        let issue_number = actions::create_issue(
            shared,
            WIDGETS,
            "Upgrade lodash",
            Some(
                "lodash 4.17.20 has a prototype pollution advisory (CVE-2021-23337).\n\nPlease bump it to 4.17.21 in `package.json` and refresh the lockfile.",
            ),
            LEAD,
            Some(ISSUE_NUMBER),
        )?;
        Ok(SeededWorld {
            installation_id,
            widgets,
            gadgets,
            issue_number,
        })
    }

    // ---- Users acting (each sends the matching webhook) ----

    /// `user` comments on issue or pull request `number`: `issue_comment.created`.
    pub async fn comment(
        &self,
        repo: &str,
        number: u64,
        user: &str,
        body: &str,
    ) -> Result<Triggered, SimError> {
        actions::comment(&self.shared, repo, number, user, body).await
    }

    /// Edits a comment: `issue_comment.edited` with the previous body.
    pub async fn edit_comment(&self, comment_id: u64, body: &str) -> Result<Triggered, SimError> {
        actions::edit_comment(&self.shared, comment_id, body).await
    }

    /// Someone deletes comment `comment_id` on github.com (no webhook is sent: the app
    /// subscribes to none for deletions). Later calls on it answer 404, as on GitHub.
    pub fn delete_comment(&self, comment_id: u64) -> bool {
        self.shared.mutate(|s| {
            let before = s.comments.len();
            s.comments.retain(|c| c.id != comment_id);
            s.comments.len() < before
        })
    }

    /// `user` opens an issue: `issues.opened`.
    pub async fn open_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        user: &str,
    ) -> Result<Triggered, SimError> {
        actions::open_issue(&self.shared, repo, title, Some(body), user).await
    }

    /// `user` adds `label` to issue `number`: `issues.labeled`.
    pub async fn label_issue(
        &self,
        repo: &str,
        number: u64,
        user: &str,
        label: &str,
    ) -> Result<Triggered, SimError> {
        actions::label_issue(&self.shared, repo, number, user, label).await
    }

    /// `user` clicks "Re-run": `check_run.rerequested`.
    pub async fn rerequest_check_run(
        &self,
        check_run_id: u64,
        user: &str,
    ) -> Result<Triggered, SimError> {
        actions::rerequest_check_run(&self.shared, check_run_id, user).await
    }

    /// `user` clicks the run's button `identifier`: `check_run.requested_action`.
    pub async fn request_check_run_action(
        &self,
        check_run_id: u64,
        user: &str,
        identifier: &str,
    ) -> Result<Triggered, SimError> {
        actions::request_check_run_action(&self.shared, check_run_id, user, identifier).await
    }

    /// `installation.created` for an installation, sent as `user`.
    pub async fn send_installation_created(
        &self,
        installation_id: u64,
        user: &str,
    ) -> Result<Triggered, SimError> {
        actions::installation_created(&self.shared, installation_id, user).await
    }

    /// The App webhook's `ping`.
    pub async fn ping(&self) -> Result<Triggered, SimError> {
        actions::ping(&self.shared).await
    }

    /// Sends recorded delivery `delivery_id` again (same GUID, `redelivery: true`).
    pub async fn redeliver(&self, delivery_id: u64) -> Result<DeliveryRecord, SimError> {
        hooks::redeliver(&self.shared, delivery_id).await
    }

    // ---- Faults ----

    /// Makes the next [`Fault::times`] requests matching the fault misbehave.
    pub fn inject_fault(&self, fault: Fault) -> FaultId {
        let id = FaultId(server::next_fault_id(&self.shared));
        self.shared
            .mutate(|s| s.faults.push(faults::FaultRule::new(id, fault)));
        id
    }

    /// How often a fault has fired so far.
    pub fn fault_fired(&self, id: FaultId) -> usize {
        self.shared.read(|s| {
            s.faults
                .iter()
                .find(|f| f.id == id)
                .map(|f| f.fired)
                .unwrap_or(0)
        })
    }

    /// Lets the requests held by a [`FaultKind::Hold`] fault go on (and any it
    /// holds later).
    pub fn release(&self, id: FaultId) {
        self.shared.mutate(|s| {
            for rule in s.faults.iter_mut().filter(|f| f.id == id) {
                rule.released = true;
            }
        });
    }

    pub fn clear_faults(&self) {
        self.shared.mutate(|s| s.faults.clear());
    }

    // ---- Assertions ----

    /// A copy of the whole state.
    pub fn snapshot(&self) -> SimState {
        self.shared.read(SimState::clone)
    }

    /// Runs `f` on the current state (no copy).
    pub fn read<R>(&self, f: impl FnOnce(&SimState) -> R) -> R {
        self.shared.read(f)
    }

    /// Waits until `condition` holds, re-checking on every state change (no
    /// polling); [`SimError::Timeout`] after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&SimState) -> bool,
    ) -> Result<(), SimError> {
        let mut changes = self.shared.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Marked seen before checking, so a change after the check wakes us.
            changes.borrow_and_update();
            if self.shared.read(&mut condition) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `self.shared`, so it cannot be gone; stop anyway.
                Ok(Err(_)) | Err(_) => return Err(SimError::Timeout(timeout)),
            }
        }
    }

    /// Schema violations recorded so far (requests, responses, webhooks).
    pub fn violations(&self) -> Vec<ViolationRecord> {
        self.shared.read(|s| s.violations.clone())
    }

    /// Returns and forgets the recorded violations (so dropping does not panic).
    pub fn take_violations(&self) -> Vec<ViolationRecord> {
        self.shared.mutate(|s| std::mem::take(&mut s.violations))
    }

    /// Panics, listing them, if any violation was recorded.
    pub fn assert_no_violations(&self) {
        let violations = self.take_violations();
        if !violations.is_empty() {
            panic!("{}", describe_violations(&violations));
        }
    }

    /// Stops serving (also done on drop) and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn describe_violations(violations: &[ViolationRecord]) -> String {
    let mut text = format!(
        "github-sim recorded {} schema violation(s):",
        violations.len()
    );
    for violation in violations {
        text.push_str(&format!("\n- {violation}"));
    }
    text
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if !self.shared.panic_on_violations || std::thread::panicking() {
            return;
        }
        let violations = self.shared.read(|s| s.violations.clone());
        if !violations.is_empty() {
            panic!(
                "{}\n(call take_violations() in tests that expect them)",
                describe_violations(&violations)
            );
        }
    }
}

pub(crate) fn mint_token(
    shared: &Shared,
    installation_id: u64,
    repository_ids: Option<&[u64]>,
    permissions: Option<Permissions>,
) -> Result<String, SimError> {
    let token = auth::new_installation_token();
    shared.mutate(|s| {
        let installation = s
            .installations
            .get(&installation_id)
            .ok_or(SimError::UnknownInstallation(installation_id))?;
        if let Some(ids) = repository_ids
            && let Some(id) = ids
                .iter()
                .find(|id| !installation.repository_ids.contains(id))
        {
            return Err(SimError::Invalid(format!(
                "repository {id} is not in installation {installation_id}"
            )));
        }
        let permissions = permissions.unwrap_or_else(|| installation.permissions.clone());
        if !permissions.is_subset_of(&installation.permissions) {
            return Err(SimError::Invalid(
                "the permissions requested are not granted to this installation".into(),
            ));
        }
        let lifetime = chrono::Duration::from_std(s.token_lifetime)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        s.tokens.insert(
            token.clone(),
            state::TokenGrant {
                token: token.clone(),
                installation_id,
                repository_ids: repository_ids.map(|ids| ids.iter().copied().collect()),
                permissions,
                expires_at: Utc::now() + lifetime,
            },
        );
        Ok(token)
    })
}
