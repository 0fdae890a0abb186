//! Templates through the API. Database templates belong to an installation; a request
//! names a repository (`repo=owner/name`) and works on the installation the App has
//! there. Reading needs read access to that repository; creating, replacing and deleting
//! need admin (a template serves every repository of the installation).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::tasks::split_repo;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};
use crate::web::auth::Viewer;
use bg_agent_core::task::{
    ParamKind, Parameter, Permission, Recipe, TaskState, Template, TemplateError, TemplateSource,
};
use bg_agent_github::RepoName;

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RepoQuery {
    /// `owner/name`: the installation is the App's installation on this repository.
    pub repo: String,
}

/// A parameter of a template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParameterBody {
    /// Lowercase letter, then a-z, 0-9 or `_`.
    pub name: String,
    /// `string` (default), `integer` or `boolean`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Default true.
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub default: Option<String>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A template's definition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Lowercase letter, then up to 63 of a-z, 0-9, `-` or `_`. In `PUT`, the path's.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Vec<ParameterBody>,
    /// Instructions with `{{name}}` placeholders.
    pub instructions: String,
    /// `agent` (default: a coding agent gets the instructions) or `npm_upgrade`.
    #[serde(default)]
    pub recipe: Option<String>,
    /// 60 to 3600.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// A template as a repository sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub description: String,
    pub parameters: Vec<ParameterBody>,
    pub instructions: String,
    pub recipe: String,
    pub timeout_secs: Option<u32>,
    /// `repository` (its `.github/bg-agent.yml`), `database` or `built_in`.
    pub source: String,
    /// For a database template: its installation, or none when shared by all.
    pub installation_id: Option<i64>,
    /// For a database template: tasks made from it in this installation, and the last.
    pub uses: Option<i64>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Saving a succeeded task as a template.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveAsTemplate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

fn source_name(source: TemplateSource) -> &'static str {
    match source {
        TemplateSource::BuiltIn => "built_in",
        TemplateSource::Database => "database",
        TemplateSource::Repository => "repository",
    }
}

fn kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::String => "string",
        ParamKind::Integer => "integer",
        ParamKind::Boolean => "boolean",
    }
}

fn view(template: &Template) -> TemplateView {
    TemplateView {
        name: template.name.clone(),
        description: template.description.clone(),
        parameters: template
            .parameters
            .iter()
            .map(|p| ParameterBody {
                name: p.name.clone(),
                kind: Some(kind_name(p.kind).to_owned()),
                required: Some(p.required),
                default: p.default.clone(),
                pattern: p.pattern.clone(),
                description: (!p.description.is_empty()).then(|| p.description.clone()),
            })
            .collect(),
        instructions: template.instructions.clone(),
        recipe: template.recipe.as_str().to_owned(),
        timeout_secs: template.timeout_secs,
        source: source_name(template.source).to_owned(),
        installation_id: None,
        uses: None,
        last_used_at: None,
        updated_at: None,
    }
}

/// The definition checked as a repository's would be; errors name the field.
fn definition(name: &str, body: TemplateBody) -> Result<Template, ApiError> {
    let recipe = match body.recipe.as_deref() {
        None => Recipe::Agent,
        Some(r) => r
            .parse::<Recipe>()
            .map_err(|_| ApiError::invalid("recipe", format!("{r:?} is not a recipe")))?,
    };
    let mut parameters = Vec::new();
    for (i, p) in body.parameters.into_iter().enumerate() {
        let kind = match p.kind.as_deref() {
            None | Some("string") => ParamKind::String,
            Some("integer") => ParamKind::Integer,
            Some("boolean") => ParamKind::Boolean,
            Some(other) => {
                return Err(ApiError::invalid(
                    &format!("parameters[{i}].type"),
                    format!("{other:?} is not string, integer or boolean"),
                ));
            }
        };
        parameters.push(Parameter {
            name: p.name,
            kind,
            required: p.required.unwrap_or(true),
            default: p.default,
            pattern: p.pattern,
            description: p.description.unwrap_or_default(),
        });
    }
    let template = Template {
        name: name.to_owned(),
        description: body.description.unwrap_or_default(),
        parameters,
        instructions: body.instructions,
        recipe,
        timeout_secs: body.timeout_secs,
        source: TemplateSource::Database,
    };
    template.validate().map_err(|e| {
        let field = match &e {
            TemplateError::BadName(_) | TemplateError::ReservedName(_) => "name",
            TemplateError::UnknownPlaceholder { .. } | TemplateError::EmptyInstructions { .. } => {
                "instructions"
            }
            TemplateError::BadTimeout { .. } => "timeout_secs",
            _ => "parameters",
        };
        ApiError::invalid(field, e.to_string())
    })?;
    Ok(template)
}

/// The installation on `repo`, once the viewer has at least `needed` there.
async fn installation(
    state: &ApiState,
    viewer: &Viewer,
    repo: &str,
    needed: Permission,
) -> Result<(i64, crate::webhook::trigger::RepoRef), ApiError> {
    let (owner, name) = split_repo(repo);
    if owner.is_empty() || name.is_empty() {
        return Err(ApiError::invalid("repo", "must be owner/name"));
    }
    let permission = viewer.permission(&state.auth, owner, name).await?;
    if permission < Permission::Read {
        return Err(ApiError::not_found("repository"));
    }
    if permission < needed {
        return Err(ApiError::forbidden(
            "changing an installation's templates needs admin permission on the repository named",
        ));
    }
    Ok(state.intake.installed_repository(owner, name).await?)
}

/// Every template usable in `repo`: the repository's own, its installation's and the
/// built-ins, by precedence, with usage for database ones.
pub async fn list(
    state: &ApiState,
    viewer: &Viewer,
    repo: &str,
) -> Result<Vec<TemplateView>, ApiError> {
    let (installation_id, repository) = installation(state, viewer, repo, Permission::Read).await?;
    let templates = state
        .intake
        .templates_in(
            installation_id,
            &RepoName::new(&repository.owner, &repository.name),
            repository.default_branch.as_deref(),
        )
        .await?
        .map_err(|message| ApiError::invalid(bg_agent_core::task::repo_config::PATH, message))?;
    let stored = state.store.installation_templates(installation_id).await?;
    Ok(templates
        .iter()
        .map(|t| {
            let mut v = view(t);
            if t.source == TemplateSource::Database
                && let Some(s) = stored.iter().find(|s| s.template.name == t.name)
            {
                v.installation_id = s.installation_id;
                v.uses = Some(s.uses);
                v.last_used_at = s.last_used_at;
                v.updated_at = Some(s.updated_at);
            }
            v
        })
        .collect())
}

async fn stored_view(
    state: &ApiState,
    installation_id: i64,
    name: &str,
) -> Result<TemplateView, ApiError> {
    let stored = state
        .store
        .installation_template(installation_id, name)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    let mut v = view(&stored.template);
    v.installation_id = stored.installation_id;
    v.uses = Some(stored.uses);
    v.last_used_at = stored.last_used_at;
    v.updated_at = Some(stored.updated_at);
    Ok(v)
}

/// Creates (`replace` false: 409 if it exists) or replaces an installation's template.
/// `Ok((true, _))` when it is new.
pub async fn save(
    state: &ApiState,
    viewer: &Viewer,
    repo: &str,
    name: &str,
    body: TemplateBody,
    replace: bool,
) -> Result<(bool, TemplateView), ApiError> {
    let (installation_id, _) = installation(state, viewer, repo, Permission::Admin).await?;
    let template = definition(name, body)?;
    if !replace
        && state
            .store
            .installation_templates(installation_id)
            .await?
            .iter()
            .any(|s| s.installation_id == Some(installation_id) && s.template.name == name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already exists",
            format!("this installation already has a template named {name}; PUT replaces it"),
        )
        .field("name"));
    }
    let created = state
        .store
        .save_template(Some(installation_id), &template)
        .await?;
    Ok((created, stored_view(state, installation_id, name).await?))
}

// ---- Handlers ----

/// Templates usable in a repository.
///
/// The repository's own (`.github/bg-agent.yml`), its installation's, and the built-ins,
/// by precedence; database templates with their usage.
#[utoipa::path(
    get,
    path = "/api/v1/templates",
    tag = "templates",
    params(RepoQuery),
    responses(
        (status = 200, description = "The templates", body = Vec<TemplateView>),
        (status = 400, description = "`repo` is wrong, or its configuration unusable", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 404, description = "No such repository, or the App is not installed there", body = super::ErrorBody),
    ),
)]
pub async fn list_templates(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiQuery(query): ApiQuery<RepoQuery>,
) -> Result<Json<Vec<TemplateView>>, ApiError> {
    Ok(Json(list(&state, &viewer, &query.repo).await?))
}

/// Add a template to an installation.
#[utoipa::path(
    post,
    path = "/api/v1/templates",
    tag = "templates",
    params(RepoQuery),
    request_body = TemplateBody,
    responses(
        (status = 201, description = "The template", body = TemplateView),
        (status = 400, description = "The definition is wrong (`field` names where)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of the repository", body = super::ErrorBody),
        (status = 404, description = "No such repository, or the App is not installed there", body = super::ErrorBody),
        (status = 409, description = "The installation has a template of that name", body = super::ErrorBody),
    ),
)]
pub async fn create_template(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiQuery(query): ApiQuery<RepoQuery>,
    ApiJson(body): ApiJson<TemplateBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name", "a template needs a name"))?;
    let (_, view) = save(&state, &viewer, &query.repo, &name, body, false).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// One template usable in a repository.
#[utoipa::path(
    get,
    path = "/api/v1/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "The template's name"), RepoQuery),
    responses(
        (status = 200, description = "The template", body = TemplateView),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 404, description = "No such template, repository or installation", body = super::ErrorBody),
    ),
)]
pub async fn get_template(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<RepoQuery>,
) -> Result<Json<TemplateView>, ApiError> {
    list(&state, &viewer, &query.repo)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("template"))
}

/// Create or replace an installation's template.
#[utoipa::path(
    put,
    path = "/api/v1/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "The template's name"), RepoQuery),
    request_body = TemplateBody,
    responses(
        (status = 200, description = "Replaced", body = TemplateView),
        (status = 201, description = "Created", body = TemplateView),
        (status = 400, description = "The definition is wrong (`field` names where)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of the repository", body = super::ErrorBody),
        (status = 404, description = "No such repository, or the App is not installed there", body = super::ErrorBody),
    ),
)]
pub async fn put_template(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<RepoQuery>,
    ApiJson(body): ApiJson<TemplateBody>,
) -> Result<Response, ApiError> {
    if body.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::invalid("name", "differs from the path's name"));
    }
    let (created, view) = save(&state, &viewer, &query.repo, &name, body, true).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// Delete an installation's template.
#[utoipa::path(
    delete,
    path = "/api/v1/templates/{name}",
    tag = "templates",
    params(("name" = String, Path, description = "The template's name"), RepoQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of the repository", body = super::ErrorBody),
        (status = 404, description = "The installation has no template of that name", body = super::ErrorBody),
    ),
)]
pub async fn delete_template(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<RepoQuery>,
) -> Result<StatusCode, ApiError> {
    let (installation_id, _) =
        installation(&state, &viewer, &query.repo, Permission::Admin).await?;
    if state.store.delete_template(installation_id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template"))
    }
}

/// Save a succeeded task as a template.
///
/// Its instructions become a template of its repository's installation (no parameters;
/// edit it with `PUT` to add some).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/template",
    tag = "templates",
    params(("id" = i64, Path, description = "The task's number")),
    request_body = SaveAsTemplate,
    responses(
        (status = 201, description = "The template", body = TemplateView),
        (status = 400, description = "The task has not succeeded, or the name is wrong", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not an admin of the repository", body = super::ErrorBody),
        (status = 404, description = "No such task, or not one you can read", body = super::ErrorBody),
        (status = 409, description = "The installation has a template of that name", body = super::ErrorBody),
    ),
)]
pub async fn save_as_template(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SaveAsTemplate>,
) -> Result<Response, ApiError> {
    let task = super::tasks::get(&state, &viewer, id).await?;
    if task.task.state != TaskState::Succeeded.as_str() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not succeeded",
            format!(
                "task {id} is {}; only a succeeded task can become a template",
                task.task.state
            ),
        ));
    }
    let definition = TemplateBody {
        name: Some(body.name.clone()),
        description: Some(
            body.description
                .unwrap_or_else(|| task.task.summary.clone()),
        ),
        parameters: Vec::new(),
        instructions: task.instructions,
        recipe: Some(Recipe::Agent.as_str().to_owned()),
        timeout_secs: None,
    };
    let (_, view) = save(
        &state,
        &viewer,
        &task.task.repository,
        &body.name,
        definition,
        false,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
