-- Each log line's level: `output` (what a command printed; every line stored before this
-- migration) or the runner's own `info`, `warn` and `error` lines. The API and the MCP
-- tool `get_task_logs` filter by it.
ALTER TABLE task_logs
    ADD COLUMN level TEXT NOT NULL DEFAULT 'output'
        CHECK (level IN ('output', 'info', 'warn', 'error'));
