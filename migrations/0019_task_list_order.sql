-- The task list (`GET /api/v1/tasks`, the status page) is ordered by creation time, newest
-- first (ties by id), so a page of a time range (`since`/`until`) is read from an index in
-- order. Ordered by id, such a page walked the primary key back from the newest task and
-- filtered on `created_at`: the planner expects a range's tasks to be spread evenly, but
-- they are all in one place, so a day three weeks back read 68 000 rows for 51 (40 ms at
-- 100 000 tasks; scripts/bench-api.sh, docs/benchmarks.md). Each filter's index now ends
-- in the list's order, and a range narrows the same index.
DROP INDEX IF EXISTS tasks_repository_lower_idx;
DROP INDEX IF EXISTS tasks_creator_lower_idx;
DROP INDEX IF EXISTS tasks_state_idx;
DROP INDEX IF EXISTS tasks_template_idx;
DROP INDEX IF EXISTS tasks_created_at_idx;
CREATE INDEX tasks_list_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_list_repository_idx ON tasks (lower(repository), created_at DESC, id DESC);
-- A repository's failed (or running...) tasks: read as the repository's index and the
-- state's one ANDed together, a page cost 3 ms; this one finds them at once.
CREATE INDEX tasks_list_repository_state_idx
    ON tasks (lower(repository), state, created_at DESC, id DESC);
CREATE INDEX tasks_list_creator_idx ON tasks (lower(creator_login), created_at DESC, id DESC);
CREATE INDEX tasks_list_state_idx ON tasks (state, created_at DESC, id DESC);
CREATE INDEX tasks_list_template_idx ON tasks (template, created_at DESC, id DESC)
    WHERE template IS NOT NULL;

-- Search (`q`: a substring of the summary, the instructions or the repository, without
-- case) reads a narrow table of its own, one lower-cased text a task, kept by a trigger:
-- matching a task's row in `tasks` cost 2 µs (most of it taking apart its 60 columns to
-- reach the text), so counting a common word's matches was slower than the page itself.
-- Read in the list's order, it is 0.3 µs a task; rare words (one task's ticket number) are
-- found by trigrams.
CREATE TABLE task_search (
    task_id         BIGINT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    task_created_at TIMESTAMPTZ NOT NULL,
    search_text     TEXT NOT NULL
);
CREATE INDEX task_search_list_idx ON task_search (task_created_at DESC, task_id DESC);

CREATE FUNCTION task_search_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_search (task_id, task_created_at, search_text)
    VALUES (NEW.id, NEW.created_at,
            lower(NEW.summary || E'\n' || NEW.instructions || E'\n' || NEW.repository))
    ON CONFLICT (task_id) DO UPDATE
        SET task_created_at = EXCLUDED.task_created_at, search_text = EXCLUDED.search_text;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_search_sync
    AFTER INSERT OR UPDATE OF summary, instructions, repository, created_at ON tasks
    FOR EACH ROW EXECUTE FUNCTION task_search_sync();
INSERT INTO task_search (task_id, task_created_at, search_text)
SELECT id, created_at, lower(summary || E'\n' || instructions || E'\n' || repository)
FROM tasks;

DROP INDEX IF EXISTS tasks_search_idx;
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX task_search_trgm_idx ON task_search USING gin (search_text gin_trgm_ops);
EXCEPTION
    WHEN insufficient_privilege OR undefined_file OR undefined_object OR feature_not_supported THEN
        RAISE WARNING 'pg_trgm is unavailable (%): a rare word''s search reads every task', SQLERRM;
END
$$;
