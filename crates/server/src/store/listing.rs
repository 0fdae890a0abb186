//! The task list of the status page and `GET /api/v1/tasks`: filters, cursor paging
//! (newest first: by creation time, then id; the cursor is the last task's id), the total
//! (counted up to a cap), and today's counts. One static query per need; an unset
//! filter is a NULL parameter, so each query's plan is prepared once.

use chrono::{DateTime, Utc};

use super::tasks::{TaskId, TaskRecord, task_query};
use super::{Store, StoreError};
use bg_agent_core::task::TaskState;

/// Most rows one page may ask for.
pub const MAX_PAGE: i64 = 100;

/// A page's `total` counts matches up to this many and then says "at least": an exact
/// count reads every match (5 ms for 70 000 tasks at 100 000), which at a few hundred
/// pages a second is more than the machine has.
pub const TOTAL_CAP: i64 = 1000;

/// The same for a search (`q`), which matches the text of each task it counts: 100
/// matches of a word in a tenth of the tasks cost 0.4 ms, 1,000 of them 4 ms.
pub const SEARCH_TOTAL_CAP: i64 = 100;

/// What the list is narrowed to. Every field is optional; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only these repositories (ids): the ones the viewer can read. `None`: all of them
    /// (no sign-in). An empty list matches nothing.
    pub readable: Option<Vec<i64>>,
    /// `owner/name`, compared without case.
    pub repository: Option<String>,
    pub states: Vec<TaskState>,
    /// The creator's login, compared without case.
    pub creator: Option<String>,
    pub template: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Words searched for in the summary, the instructions and the repository (substring,
    /// without case).
    pub q: Option<String>,
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    /// Pass as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<TaskId>,
    /// How many tasks match the filter in all pages, up to [`TOTAL_CAP`] (with search,
    /// [`SEARCH_TOTAL_CAP`]).
    pub total: i64,
    /// Whether `total` is the number of matches; `false`: at least `total` match.
    pub total_exact: bool,
}

/// Tasks by state: the ones running or queued now, the ones finished since a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub running: i64,
    pub queued: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// `%`, `_` and `\` taken literally in a LIKE pattern.
fn like_pattern(q: &str) -> String {
    let mut escaped = String::with_capacity(q.len() + 2);
    escaped.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

struct Params {
    readable: Option<Vec<i64>>,
    repository: Option<String>,
    states: Option<Vec<String>>,
    creator: Option<String>,
    template: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    q: Option<String>,
}

impl Params {
    fn of(filter: &TaskFilter) -> Self {
        let blank = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Self {
            readable: filter.readable.clone(),
            repository: blank(&filter.repository),
            states: (!filter.states.is_empty()).then(|| {
                filter
                    .states
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect()
            }),
            creator: blank(&filter.creator),
            template: blank(&filter.template),
            since: filter.since,
            until: filter.until,
            q: blank(&filter.q).map(|q| like_pattern(&q)),
        }
    }
}

/// One of the list's statements: `$head`, `$from` (up to `WHERE`), the filters all of them
/// share ($1 readable repositories, $2 repository, $3 states, $4 creator, $5 template),
/// then `$tail`; `$query` is `task_query` or `count_query`. Written once, each statement
/// stays one static, build-checked query.
macro_rules! filtered {
    ($query:ident, $head:tt, $from:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        $query!(
            $head,
            [" " + $from + r#"
                 ($1::bigint[] IS NULL OR repository_id = ANY($1))
             AND ($2::text IS NULL OR lower(repository) = lower($2))
             AND ($3::text[] IS NULL OR state = ANY($3))
             AND ($4::text IS NULL OR lower(creator_login) = lower($4))
             AND ($5::text IS NULL OR template = $5) "# + $tail]
            $(, $arg)*
        )
    };
}

/// `query_scalar!` with its statement's end in `[…]`, as `filtered!` passes it.
macro_rules! count_query {
    ($head:tt, [$($sql:tt)+] $(, $arg:expr)* $(,)?) => {
        sqlx::query_scalar!($head + $($sql)+ $(, $arg)*)
    };
}

/// A page of tasks matching `filter`, newest first, older than `cursor` if given; `limit`
/// is clamped to 1..=[`MAX_PAGE`].
pub async fn list_tasks(
    store: &Store,
    filter: &TaskFilter,
    cursor: Option<TaskId>,
    limit: i64,
) -> Result<TaskPage, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let p = Params::of(filter);
    // One more than asked: whether there is a next page. The cursor task's creation time
    // and id bound the page (tasks are never deleted, so it is there). A search reads
    // `task_search` (see migration 0019) in the list's order.
    let rows = match &p.q {
        None => {
            filtered!(
                task_query,
                "SELECT",
                "FROM tasks WHERE",
                r#"AND ($6::timestamptz IS NULL OR created_at >= $6)
               AND ($7::timestamptz IS NULL OR created_at < $7)
               AND ($8::bigint IS NULL OR (created_at, id) <
                    (SELECT c.created_at, c.id FROM tasks c WHERE c.id = $8))
             ORDER BY created_at DESC, id DESC LIMIT $9"#,
                p.readable.as_deref(),
                p.repository,
                p.states.as_deref(),
                p.creator,
                p.template,
                p.since,
                p.until,
                cursor.map(i64::from),
                limit + 1,
            )
            .fetch_all(&store.pool)
            .await?
        }
        Some(q) => {
            filtered!(
                task_query,
                "SELECT",
                "FROM task_search JOIN tasks ON id = task_id WHERE",
                r#"AND search_text LIKE lower($8)
               AND ($6::timestamptz IS NULL OR task_created_at >= $6)
               AND ($7::timestamptz IS NULL OR task_created_at < $7)
               AND ($9::bigint IS NULL OR (task_created_at, task_id) <
                    (SELECT c.created_at, c.id FROM tasks c WHERE c.id = $9))
             ORDER BY task_created_at DESC, task_id DESC LIMIT $10"#,
                p.readable.as_deref(),
                p.repository,
                p.states.as_deref(),
                p.creator,
                p.template,
                p.since,
                p.until,
                q,
                cursor.map(i64::from),
                limit + 1,
            )
            .fetch_all(&store.pool)
            .await?
        }
    };
    let mut tasks: Vec<TaskRecord> = rows.into_iter().map(TaskRecord::from).collect();
    let more = tasks.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    tasks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    // A first page that holds every match has counted them already.
    if cursor.is_none() && !more {
        return Ok(TaskPage {
            total: i64::try_from(tasks.len()).unwrap_or(i64::MAX),
            total_exact: true,
            tasks,
            next_cursor,
        });
    }
    // One past the cap: whether the count stopped there.
    let (counted, cap) = match &p.q {
        None => (
            filtered!(
                count_query,
                r#"SELECT count(*) AS "counted!" FROM (SELECT 1"#,
                "FROM tasks WHERE",
                r#"AND ($6::timestamptz IS NULL OR created_at >= $6)
                   AND ($7::timestamptz IS NULL OR created_at < $7)
                 LIMIT $8) matches"#,
                p.readable.as_deref(),
                p.repository,
                p.states.as_deref(),
                p.creator,
                p.template,
                p.since,
                p.until,
                TOTAL_CAP + 1,
            )
            .fetch_one(&store.pool)
            .await?,
            TOTAL_CAP,
        ),
        // LEFT: with no other filter the planner leaves `tasks` out (every task_search
        // row has its task), so a word's count reads one narrow table.
        Some(q) => (
            filtered!(
                count_query,
                r#"SELECT count(*) AS "counted!" FROM (SELECT 1"#,
                "FROM task_search LEFT JOIN tasks ON id = task_id WHERE",
                r#"AND search_text LIKE lower($8)
                   AND ($6::timestamptz IS NULL OR task_created_at >= $6)
                   AND ($7::timestamptz IS NULL OR task_created_at < $7)
                 LIMIT $9) matches"#,
                p.readable.as_deref(),
                p.repository,
                p.states.as_deref(),
                p.creator,
                p.template,
                p.since,
                p.until,
                q,
                SEARCH_TOTAL_CAP + 1,
            )
            .fetch_one(&store.pool)
            .await?,
            SEARCH_TOTAL_CAP,
        ),
    };
    Ok(TaskPage {
        tasks,
        next_cursor,
        total: counted.min(cap),
        total_exact: counted <= cap,
    })
}

/// Running and queued tasks now, succeeded and failed (timed out included) ones finished
/// since `since` (the page passes the start of today, UTC), among `readable` repositories.
pub async fn task_counts(
    store: &Store,
    readable: Option<&[i64]>,
    since: DateTime<Utc>,
) -> Result<TaskCounts, StoreError> {
    let row = sqlx::query!(
        r#"SELECT
             count(*) FILTER (WHERE state IN ('starting', 'running')) AS "running!",
             count(*) FILTER (WHERE state = 'queued') AS "queued!",
             count(*) FILTER (WHERE state = 'succeeded' AND finished_at >= $2) AS "succeeded!",
             count(*) FILTER (WHERE state IN ('failed', 'timed_out') AND finished_at >= $2)
               AS "failed!"
           FROM tasks
           WHERE ($1::bigint[] IS NULL OR repository_id = ANY($1))
             AND (state IN ('queued', 'starting', 'running') OR finished_at >= $2)"#,
        readable,
        since,
    )
    .fetch_one(&store.pool)
    .await?;
    Ok(TaskCounts {
        running: row.running,
        queued: row.queued,
        succeeded: row.succeeded,
        failed: row.failed,
    })
}

/// A template's use among some repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateStats {
    pub name: String,
    pub uses: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Tasks of the template that succeeded, and that finished at all.
    pub succeeded: i64,
    pub finished: i64,
}

/// The number of task `id`'s last log line, if it has any.
pub async fn last_log_seq(store: &Store, id: TaskId) -> Result<Option<i32>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT max(seq) FROM task_logs WHERE task_id = $1",
        id as TaskId,
    )
    .fetch_one(&store.pool)
    .await?)
}

/// Use and success of every template among `readable` repositories (all with `None`).
pub async fn template_stats(
    store: &Store,
    readable: Option<&[i64]>,
) -> Result<Vec<TemplateStats>, StoreError> {
    Ok(sqlx::query_as!(
        TemplateStats,
        r#"SELECT u.name AS "name!", u.uses AS "uses!", u.last_used_at,
                  coalesce(t.succeeded, 0) AS "succeeded!", coalesce(t.finished, 0) AS "finished!"
           FROM (SELECT name, sum(uses)::bigint AS uses, max(last_used_at) AS last_used_at
                 FROM template_usage
                 WHERE $1::bigint[] IS NULL OR repository_id = ANY($1)
                 GROUP BY name) u
           LEFT JOIN (SELECT template,
                             count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                             count(*) FILTER (WHERE finished_at IS NOT NULL) AS finished
                      FROM tasks
                      WHERE template IS NOT NULL
                        AND ($1::bigint[] IS NULL OR repository_id = ANY($1))
                      GROUP BY template) t ON t.template = u.name
           ORDER BY u.name"#,
        readable,
    )
    .fetch_all(&store.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(like_pattern(""), "%%");
    }
}
