-- Database templates belong to one installation (the JSON API manages them per
-- installation): one tenant's templates are not another's. Rows from before have no
-- installation and stay usable by every installation, below each installation's own
-- templates of the same name.
ALTER TABLE templates ADD COLUMN installation_id BIGINT;
ALTER TABLE templates DROP CONSTRAINT templates_pkey;
CREATE UNIQUE INDEX templates_installation_name ON templates (installation_id, name) NULLS NOT DISTINCT;
-- Template usage per installation is counted from `tasks`.
CREATE INDEX tasks_installation_template_idx ON tasks (installation_id, template, id DESC)
    WHERE template IS NOT NULL;
