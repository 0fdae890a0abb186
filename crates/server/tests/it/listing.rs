//! The task list's SQL (`store::listing`), shared by the status page and the JSON API:
//! the viewer's repositories, filters, search taken literally, cursor paging with a
//! total, and today's counts.

use bg_agent::store::listing::{SEARCH_TOTAL_CAP, TOTAL_CAP, TaskFilter, list_tasks, task_counts};
use bg_agent::store::tasks::{AuditActor, CreatedTask, TaskRecord};
use bg_agent_core::task::TaskState;
use bg_agent_testkit::db::TestDb;
use bg_agent_testkit::fixtures::agent_task;
use chrono::{TimeDelta, Utc};
use sqlx::Connection;

const BY: AuditActor<'static> = AuditActor {
    name: "test",
    delivery_guid: None,
};

async fn create(db: &TestDb, key: &str, creator: i64, repository: i64, text: &str) -> TaskRecord {
    let mut new = agent_task(key, creator, repository);
    new.summary = text.to_owned();
    new.instructions = text.to_owned();
    match db.store().create_task(&new).await.unwrap() {
        CreatedTask::Created(task) => task,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_list_keeps_to_readable_repositories_filters_and_pages() {
    let db = TestDb::new().await;
    let store = db.store();
    // Five tasks in repositories 1 and 2 by five people; two are cancelled.
    let mut tasks = Vec::new();
    for i in 0..5_i64 {
        let text = if i == 3 {
            "fix 100% of the_bugs"
        } else {
            "upgrade lodash"
        };
        tasks.push(create(&db, &format!("k{i}"), 10 + i, 1 + i % 2, text).await);
    }
    for task in &tasks[..2] {
        store.request_cancel(task.id, BY).await.unwrap();
    }
    let ids = |page: &[TaskRecord]| page.iter().map(|t| t.id.get()).collect::<Vec<_>>();
    let all: Vec<i64> = tasks.iter().rev().map(|t| t.id.get()).collect();

    // Everything, newest first, in pages of two.
    let first = list_tasks(store, &TaskFilter::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(ids(&first.tasks), all[..2]);
    assert_eq!(first.total, 5);
    let second = list_tasks(store, &TaskFilter::default(), first.next_cursor, 2)
        .await
        .unwrap();
    assert_eq!(ids(&second.tasks), all[2..4]);
    let third = list_tasks(store, &TaskFilter::default(), second.next_cursor, 2)
        .await
        .unwrap();
    assert_eq!(ids(&third.tasks), all[4..]);
    assert_eq!(third.next_cursor, None);

    // Only repository 2 readable (tasks 1 and 3); nothing readable at all.
    let readable = TaskFilter {
        readable: Some(vec![2]),
        ..TaskFilter::default()
    };
    let page = list_tasks(store, &readable, None, 50).await.unwrap();
    assert_eq!(ids(&page.tasks), [tasks[3].id.get(), tasks[1].id.get()]);
    assert_eq!(page.total, 2);
    let none = TaskFilter {
        readable: Some(vec![]),
        ..TaskFilter::default()
    };
    assert_eq!(list_tasks(store, &none, None, 50).await.unwrap().total, 0);

    // State, creator (any case), repository name, search (literal % and _), dates.
    let filter =
        |f: TaskFilter| async move { ids(&list_tasks(store, &f, None, 50).await.unwrap().tasks) };
    let cancelled = TaskFilter {
        states: vec![TaskState::Cancelled],
        ..TaskFilter::default()
    };
    assert_eq!(
        filter(cancelled).await,
        [tasks[1].id.get(), tasks[0].id.get()]
    );
    let creator = TaskFilter {
        creator: Some("USER-12".into()),
        ..TaskFilter::default()
    };
    assert_eq!(filter(creator).await, [tasks[2].id.get()]);
    let repository = TaskFilter {
        repository: Some("acme/REPO-2".into()),
        ..TaskFilter::default()
    };
    assert_eq!(filter(repository).await.len(), 2);
    let percent = TaskFilter {
        q: Some("100% of the_".into()),
        ..TaskFilter::default()
    };
    assert_eq!(filter(percent).await, [tasks[3].id.get()]);
    let wildcard = TaskFilter {
        q: Some("1_0".into()),
        ..TaskFilter::default()
    };
    assert!(filter(wildcard).await.is_empty());
    let future = TaskFilter {
        since: Some(Utc::now() + TimeDelta::hours(1)),
        ..TaskFilter::default()
    };
    assert!(filter(future).await.is_empty());
    let past = TaskFilter {
        until: Some(Utc::now() - TimeDelta::hours(1)),
        ..TaskFilter::default()
    };
    assert!(filter(past).await.is_empty());

    // Today: three queued; the cancelled ones count as neither succeeded nor failed.
    let today = Utc::now() - TimeDelta::hours(1);
    let counts = task_counts(store, None, today).await.unwrap();
    assert_eq!(
        (
            counts.queued,
            counts.running,
            counts.succeeded,
            counts.failed
        ),
        (3, 0, 0, 0)
    );
    let counts = task_counts(store, Some(&[2]), today).await.unwrap();
    assert_eq!(counts.queued, 1);
}

#[tokio::test]
async fn the_list_is_newest_first_by_creation_and_its_total_stops_at_the_cap() {
    let db = TestDb::new().await;
    let store = db.store();
    let a = create(&db, "a", 1, 1, "first").await;
    let b = create(&db, "b", 2, 1, "second").await;
    let c = create(&db, "c", 3, 1, "third").await;
    // Task b was created before a (ids and creation times need not agree: ids are taken
    // when a row is inserted, creation times when its transaction began).
    let mut conn = sqlx::PgConnection::connect_with(&db.connect_options())
        .await
        .unwrap();
    let hours_ago = |h: i64| Utc::now() - TimeDelta::hours(h);
    for (task, created) in [(&a, hours_ago(2)), (&b, hours_ago(3))] {
        sqlx::query("UPDATE tasks SET created_at = $1 WHERE id = $2")
            .bind(created)
            .bind(task.id.get())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list_tasks(store, &TaskFilter::default(), cursor, 1)
            .await
            .unwrap();
        assert_eq!((page.total, page.total_exact), (3, true));
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, [c.id, a.id, b.id]);
    let window = TaskFilter {
        since: Some(hours_ago(3) + TimeDelta::minutes(30)),
        until: Some(hours_ago(1)),
        ..TaskFilter::default()
    };
    let page = list_tasks(store, &window, None, 50).await.unwrap();
    assert_eq!(page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [a.id]);

    // Past the cap the total says "at least" (sooner with search); search is without case.
    for i in 0..TOTAL_CAP {
        let text = if i < SEARCH_TOTAL_CAP {
            "Bump Lodash"
        } else {
            "Bump React"
        };
        create(&db, &format!("n{i}"), 100 + i, 100 + i, text).await;
    }
    let total = |f: TaskFilter| async move {
        let page = list_tasks(store, &f, None, 10).await.unwrap();
        (page.total, page.total_exact)
    };
    assert_eq!(total(TaskFilter::default()).await, (TOTAL_CAP, false));
    let search = |q: &str| TaskFilter {
        q: Some(q.into()),
        ..TaskFilter::default()
    };
    assert_eq!(total(search("bUMP lOdAsH")).await, (SEARCH_TOTAL_CAP, true));
    assert_eq!(total(search("bump")).await, (SEARCH_TOTAL_CAP, false));
    let found = list_tasks(store, &search("THIRD"), None, 10).await.unwrap();
    assert_eq!(found.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [c.id]);
    assert_eq!((found.total, found.total_exact), (1, true));
}
