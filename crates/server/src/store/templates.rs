//! Templates kept in the database, per installation (`migrations/0013`): the JSON API
//! manages an installation's own; rows from before installations had templates
//! (`installation_id IS NULL`) serve every installation, below its own of the same name.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Store, StoreError};
use bg_agent_core::task::{Template, TemplateSource};

/// A stored template with where it belongs and how it has been used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTemplate {
    pub template: Template,
    /// `None`: shared by every installation (made before templates were per installation).
    pub installation_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Tasks made from it in the installation (first attempts), and the latest one's time.
    pub uses: i64,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A stored definition that no longer decodes or validates (written by an older
/// version) is skipped with a warning rather than hiding all the others.
fn decode(name: &str, definition: serde_json::Value) -> Option<Template> {
    let template = serde_json::from_value::<Template>(definition)
        .map_err(|e| e.to_string())
        .and_then(|t| t.validate().map(|()| t).map_err(|e| e.to_string()));
    match template {
        Ok(mut template) => {
            template.source = TemplateSource::Database;
            Some(template)
        }
        Err(error) => {
            tracing::warn!(template = %name, %error, "stored template is unusable");
            None
        }
    }
}

impl Store {
    /// The database's templates for an installation: its own, then the shared ones it
    /// does not shadow, by name.
    pub async fn database_templates(
        &self,
        installation_id: i64,
    ) -> Result<Vec<Template>, StoreError> {
        Ok(self
            .installation_templates(installation_id)
            .await?
            .into_iter()
            .map(|stored| stored.template)
            .collect())
    }

    /// The templates shared by every installation (stored before templates were per
    /// installation).
    pub async fn shared_templates(&self) -> Result<Vec<Template>, StoreError> {
        let rows = sqlx::query!(
            "SELECT name, definition FROM templates WHERE installation_id IS NULL ORDER BY name"
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| decode(&row.name, row.definition))
            .collect())
    }

    /// As [`Self::database_templates`], with ownership and usage.
    pub async fn installation_templates(
        &self,
        installation_id: i64,
    ) -> Result<Vec<StoredTemplate>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT DISTINCT ON (t.name) t.name, t.definition, t.installation_id,
                      t.created_at, t.updated_at,
                      u.uses AS "uses!", u.last_used_at
               FROM templates t
               CROSS JOIN LATERAL (
                   SELECT count(*) AS uses, max(created_at) AS last_used_at FROM tasks
                   WHERE installation_id = $1 AND template = t.name
                     AND template_source = 'database' AND retry_of IS NULL) u
               WHERE t.installation_id = $1 OR t.installation_id IS NULL
               ORDER BY t.name, t.installation_id NULLS LAST"#,
            installation_id,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(StoredTemplate {
                    template: decode(&row.name, row.definition)?,
                    installation_id: row.installation_id,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                    uses: row.uses,
                    last_used_at: row.last_used_at,
                })
            })
            .collect())
    }

    /// One template as the installation sees it (its own, else a shared one).
    pub async fn installation_template(
        &self,
        installation_id: i64,
        name: &str,
    ) -> Result<Option<StoredTemplate>, StoreError> {
        Ok(self
            .installation_templates(installation_id)
            .await?
            .into_iter()
            .find(|t| t.template.name == name))
    }

    /// Stores (or replaces) an installation's template (`None`: a shared one); it must
    /// already be valid. `true` if it is new.
    pub async fn save_template(
        &self,
        installation_id: Option<i64>,
        template: &Template,
    ) -> Result<bool, StoreError> {
        let created = sqlx::query_scalar!(
            r#"INSERT INTO templates (installation_id, name, definition) VALUES ($1, $2, $3)
               ON CONFLICT (installation_id, name)
               DO UPDATE SET definition = $3, updated_at = now()
               RETURNING (xmax = 0) AS "created!""#,
            installation_id,
            template.name,
            Json(template) as Json<&Template>,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(created)
    }

    /// Deletes an installation's own template; `false` if it had none of that name.
    pub async fn delete_template(
        &self,
        installation_id: i64,
        name: &str,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query!(
            "DELETE FROM templates WHERE installation_id = $1 AND name = $2",
            installation_id,
            name,
        )
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected() == 1)
    }
}
