//! A task's log as it grows, as Server-Sent Events: `event: log` per line (`id:` its
//! `seq`, so a reconnecting client resumes with `Last-Event-ID`), then `event: end`
//! (`data:` the task's state) once the task has ended and every line is out. Served by the
//! task page and the API alike; a stream ends when the server stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use crate::engine::Signal;
use crate::store::Store;
use crate::store::logs::LogFilter;
use crate::store::tasks::TaskId;

/// How often to look without a wake-up (a runner's report wakes the stream at once).
const POLL: Duration = Duration::from_secs(2);
/// Lines read per query.
const BATCH: i64 = 500;

/// The lines of task `id` after `after` (all when `None`), as they come.
pub fn events(
    store: Store,
    signal: &Signal,
    shutdown: CancellationToken,
    id: TaskId,
    after: Option<i64>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    struct Cursor {
        store: Store,
        wakeups: crate::engine::Wakeups,
        shutdown: CancellationToken,
        after: Option<i64>,
        pending: VecDeque<Event>,
        done: bool,
    }
    let cursor = Cursor {
        store,
        wakeups: signal.subscribe(),
        shutdown,
        after,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(cursor, move |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            if c.done || c.shutdown.is_cancelled() {
                return None;
            }
            // The state first: lines read after seeing it ended are all there are.
            let task = match c.store.task(id).await {
                Ok(Some(task)) => task,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(task = id.get(), error = %e, "live log: database unavailable");
                    c.wakeups.next(POLL, &c.shutdown).await;
                    continue;
                }
            };
            let lines = match c
                .store
                .log_lines(
                    id,
                    &LogFilter {
                        after: c.after,
                        ..LogFilter::default()
                    },
                    BATCH,
                )
                .await
            {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::warn!(task = id.get(), error = %e, "live log: database unavailable");
                    c.wakeups.next(POLL, &c.shutdown).await;
                    continue;
                }
            };
            let more = lines.len() as i64 == BATCH;
            for line in lines {
                c.after = Some(line.seq);
                // An event's data cannot carry a carriage return (nor a newline as text).
                let text = line.line.replace(['\r', '\n'], " ");
                c.pending.push_back(
                    Event::default()
                        .event("log")
                        .id(line.seq.to_string())
                        .data(text),
                );
            }
            if c.pending.is_empty() && task.state.is_terminal() {
                c.done = true;
                c.pending
                    .push_back(Event::default().event("end").data(task.state.as_str()));
                continue;
            }
            if c.pending.is_empty() && !more {
                c.wakeups.next(POLL, &c.shutdown).await;
            }
        }
    })
}
