-- Fixture of scripts/bench-api.sh: :tasks tasks and exactly :log_lines log lines in a
-- freshly migrated bg-agent database, generated in the database (a few seconds), the same
-- rows on every run (no random(): everything derives from the task id).
--
--   psql "$URL" -v tasks=100000 -v log_lines=1000000 -f scripts/bench/api-seed.sql
--
-- What the rows look like: 8 installations of 25 repositories each (`org-I/repo-R`), 500
-- creators, a template on half the tasks (5 names), creation spread newest-last over the
-- 28 days before now (inside the default 30-day retention, so the server's purge keeps
-- every log line; one task every 24 s at 100 000 tasks), a few minutes of run each, so
-- runs overlap and their log lines are stored interleaved as they would arrive; states
-- mostly finished (succeeded 72 %, failed 16 %, cancelled 6 %, timed out 6 %), every
-- 20th task a retry of the one before. All finished and already reported, so the server's
-- engine has nothing to launch or report while the bench runs. Three audit events per
-- task and a validation result on every other one.
\set ON_ERROR_STOP on
BEGIN;

INSERT INTO tasks (
    id, installation_id, repository_id, repository, issue_number, trigger, idempotency_key,
    creator_login, creator_id, template, template_source, params, recipe, instructions,
    summary, state, phase, progress, attempt, retry_of, timeout_secs, check_run_id, branch,
    commit_sha, pr_number, pr_url, changed, error, created_at, started_at, finished_at,
    updated_at, log_lines, version, reported_version, reported_state, reported_phase,
    reported_at, agent_provider, agent_rounds, agent_input_tokens, agent_output_tokens,
    agent_cost_microusd, base_branch, head_sha)
SELECT
    g,
    1000 + r % 8,
    200000 + r,
    format('org-%s/repo-%s', r % 8, r),
    CASE WHEN g % 3 = 0 THEN NULL ELSE 1 + g % 400 END,
    (ARRAY['comment', 'comment', 'comment', 'label', 'api', 'retry_button'])[1 + g % 6],
    'bench:' || g,
    'user-' || c,
    300000 + c,
    tpl,
    CASE WHEN tpl IS NULL THEN NULL ELSE 'database' END,
    CASE WHEN tpl IS NULL THEN '{}'::jsonb
         ELSE jsonb_build_object('package', 'pkg-' || g % 50, 'version', '1.' || g % 9 || '.0') END,
    CASE WHEN g % 4 = 0 THEN 'npm_upgrade' ELSE 'agent' END,
    (ARRAY['Upgrade lodash to the latest 4.x and fix what breaks',
           'Add unit tests for the date parsing helpers',
           'Fix the flaky integration test in the payments module',
           'Replace the deprecated request library with undici',
           'Bump typescript to 5.6 and fix the new type errors',
           'Document the public API of the config loader',
           'Remove unused feature flags older than a year',
           'Migrate the CI workflow from node 18 to node 22',
           'Fix the eslint warnings in src/components',
           'Speed up the slow snapshot tests'])[1 + (g * 7) % 10] || ' (ticket ' || g || ')',
    (ARRAY['upgrade lodash', 'add tests', 'fix flaky test', 'replace request',
           'bump typescript', 'document config', 'remove flags', 'node 22 in CI',
           'fix eslint warnings', 'faster snapshots'])[1 + (g * 7) % 10],
    st,
    'finished',
    100,
    CASE WHEN g % 20 = 0 AND g > 1 THEN 2 ELSE 1 END,
    CASE WHEN g % 20 = 0 AND g > 1 THEN g - 1 END,
    1800,
    5000000 + g,
    'bg-agent/task-' || g,
    CASE WHEN st = 'succeeded' THEN md5('commit' || g) END,
    CASE WHEN st = 'succeeded' THEN 100000 + g END,
    CASE WHEN st = 'succeeded'
         THEN format('https://github.com/org-%s/repo-%s/pull/%s', r % 8, r, 100000 + g) END,
    st = 'succeeded',
    CASE st WHEN 'failed' THEN 'validation failed: npm test exited with 1'
            WHEN 'timed_out' THEN 'the task ran longer than its 1800 s timeout'
            WHEN 'cancelled' THEN 'cancelled by user-' || c END,
    created,
    created + interval '4 seconds',
    created + interval '4 seconds' + (60 + g % 540) * interval '1 second',
    created + interval '4 seconds' + (60 + g % 540) * interval '1 second',
    0, 5, 5, st, 'finished',
    created + interval '5 seconds' + (60 + g % 540) * interval '1 second',
    CASE WHEN g % 4 = 0 THEN NULL
         ELSE (ARRAY['claude', 'codex', 'gemini', 'aider', 'cline'])[1 + g % 5] END,
    CASE WHEN g % 4 = 0 THEN 0 ELSE 1 + g % 3 END,
    CASE WHEN g % 4 = 0 THEN 0 ELSE 20000 + g % 90000 END,
    CASE WHEN g % 4 = 0 THEN 0 ELSE 2000 + g % 9000 END,
    CASE WHEN g % 4 = 0 THEN NULL ELSE 10000 + g % 400000 END,
    'main',
    md5('head' || g)
FROM generate_series(1, :tasks) AS g,
     LATERAL (SELECT (g * 7919) % 200 AS r,
                     1 + (g * 31) % 500 AS c,
                     now() - (:tasks - g) * (interval '28 days' / :tasks) - interval '1 hour'
                       AS created,
                     (ARRAY[NULL, NULL, 'npm-upgrade', NULL, 'lint-fix', NULL, 'add-tests', NULL,
                            'docs', 'bump-node'])[1 + (g * 13) % 10] AS tpl,
                     CASE WHEN g % 20 = 19 THEN 'failed'  -- the ones retried next
                          WHEN (g * 37) % 50 < 36 THEN 'succeeded'
                          WHEN (g * 37) % 50 < 43 THEN 'failed'
                          WHEN (g * 37) % 50 < 46 THEN 'cancelled'
                          ELSE 'timed_out' END AS st) AS v;

SELECT setval('tasks_id_seq', :tasks) AS seq \gset

-- Lines per task: the differences of floor(log_lines * g / tasks + jitter(g)) with a jitter
-- in [0, 10) that is 0 at both ends, so the counts sum to exactly :log_lines and vary
-- between tasks (0 to 2 x the mean at the default 10 a task).
CREATE FUNCTION pg_temp.bench_jitter(g bigint, tasks bigint, amp numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN g <= 0 OR g >= tasks THEN 0
                      ELSE amp * ((g * 2654435761) % 1000) / 1000 END $$;

CREATE TEMP TABLE bench_lines ON COMMIT DROP AS
SELECT g AS task_id,
       (floor(:log_lines::numeric * g / :tasks + pg_temp.bench_jitter(g, :tasks, amp))
        - floor(:log_lines::numeric * (g - 1) / :tasks
                + pg_temp.bench_jitter(g - 1, :tasks, amp)))::int AS n
FROM generate_series(1, :tasks) AS g,
     LATERAL (SELECT least(:log_lines::numeric / :tasks, 10) * 0.999 AS amp) a;

UPDATE tasks t SET log_lines = b.n, last_seq = b.n FROM bench_lines b WHERE t.id = b.task_id;

-- In arrival order (tasks overlap), not task by task: a task's lines end up spread over
-- pages as they would be in production.
INSERT INTO task_logs (task_id, seq, at, line)
SELECT t.id, s, t.started_at + s * ((t.finished_at - t.started_at) / greatest(b.n, 1)),
       CASE s % 6
         WHEN 0 THEN format('$ git clone --depth 1 https://github.com/%s.git work', t.repository)
         WHEN 1 THEN format('npm WARN deprecated pkg-%s@1.%s.0: use pkg-%s instead', s, t.id % 9, s + 1)
         WHEN 2 THEN format('[agent] editing src/module-%s.ts (%s lines changed)', s, t.id % 97)
         WHEN 3 THEN format('> jest --ci  PASS test/module-%s.test.ts (%s ms)', s, 100 + t.id % 900)
         WHEN 4 THEN format('added %s packages, and audited %s packages in %ss', s, 900 + s, 1 + t.id % 9)
         ELSE format('[validate] npm test exited with %s after %s ms', t.id % 2, 1000 + s * 37)
       END
FROM tasks t
JOIN bench_lines b ON b.task_id = t.id
CROSS JOIN LATERAL generate_series(0, b.n - 1) AS s
ORDER BY 3;

INSERT INTO task_events (task_id, at, actor, action, from_state, to_state)
SELECT t.id, e.at, e.actor, e.action, e.from_state, e.to_state
FROM tasks t
CROSS JOIN LATERAL (VALUES
    (t.created_at, t.creator_login, 'created', NULL, 'queued'),
    (t.started_at, 'bg-agent', 'started', 'queued', 'running'),
    (t.finished_at, 'bg-agent', 'finished', 'running', t.state)) AS e(at, actor, action, from_state, to_state)
ORDER BY e.at;

INSERT INTO task_validations (task_id, position, command, exit_code, duration_ms, output_tail)
SELECT id, 0, 'npm test', CASE WHEN state = 'failed' THEN 1 ELSE 0 END, 1000 + id % 30000,
       CASE WHEN state = 'failed' THEN 'FAIL test/module.test.ts' ELSE 'Tests: 42 passed' END
FROM tasks WHERE id % 2 = 0 AND state IN ('succeeded', 'failed');

COMMIT;

-- Planner statistics and the visibility map, as autovacuum would leave them.
VACUUM ANALYZE tasks;
VACUUM ANALYZE task_search;
VACUUM ANALYZE task_logs;
VACUUM ANALYZE task_events;
VACUUM ANALYZE task_validations;
