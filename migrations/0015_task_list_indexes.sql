-- The task list's filters (`GET /api/v1/tasks`, the status page), each with the list's
-- order (newest first) so a page is read from the index in order, and its `total` counted
-- from the index alone. Without them every filtered page counted its total by reading the
-- whole table: 40–50 ms at 100 000 tasks (scripts/bench-api.sh, docs/benchmarks.md).
CREATE INDEX tasks_repository_lower_idx ON tasks (lower(repository), id DESC);
CREATE INDEX tasks_creator_lower_idx ON tasks (lower(creator_login), id DESC);
CREATE INDEX tasks_state_idx ON tasks (state, id DESC);
CREATE INDEX tasks_template_idx ON tasks (template, id DESC) WHERE template IS NOT NULL;

-- Search (`q`: a substring of the summary, the instructions or the repository, without
-- case) with trigrams: 200 ms a page without, at 100 000 tasks. pg_trgm ships with
-- PostgreSQL (contrib) and is a trusted extension, so the database's owner may create it;
-- where it is missing or not allowed, search stays correct and reads the table.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX tasks_search_idx ON tasks USING gin (
        summary gin_trgm_ops, instructions gin_trgm_ops, repository gin_trgm_ops);
EXCEPTION
    WHEN insufficient_privilege OR undefined_file OR undefined_object OR feature_not_supported THEN
        RAISE WARNING 'pg_trgm is unavailable (%): task search reads the whole table', SQLERRM;
END
$$;
