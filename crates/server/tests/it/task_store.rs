//! Tasks in the real database: idempotent creation, the one-active-task-per-user rule,
//! checked transitions with an audit trail, and dispatch under the repository,
//! installation and global limits — including two "replicas" dispatching at once.

use std::collections::{BTreeMap, HashMap};

use bg_agent::store::Store;
use bg_agent::store::tasks::{
    AuditActor, Caps, CreatedTask, NewTask, TaskId, TaskTrigger, TransitionError,
};
use bg_agent_core::task::{Recipe, TaskState, TemplateSource};
use bg_agent_testkit::db::TestDb;

const ENGINE: AuditActor<'static> = AuditActor {
    name: "bg-agent",
    delivery_guid: None,
};
const CAPS: Caps = Caps {
    per_installation: 10,
    global: 100,
    check_run_wait: std::time::Duration::ZERO,
};

fn new_task(key: &str, creator_id: i64, repository_id: i64) -> NewTask {
    NewTask {
        installation_id: 4200001,
        repository_id,
        repository: format!("acme/repo-{repository_id}"),
        issue_number: Some(17),
        comment_id: Some(1),
        delivery_guid: Some(format!("delivery-{key}")),
        trigger: TaskTrigger::Comment,
        idempotency_key: key.to_owned(),
        creator_login: format!("user-{creator_id}"),
        creator_id,
        template: Some(("upgrade".into(), TemplateSource::BuiltIn)),
        params: BTreeMap::from([
            ("package".into(), "lodash".into()),
            ("version".into(), "4.17.21".into()),
        ]),
        recipe: Recipe::NpmUpgrade,
        instructions: "Upgrade lodash".into(),
        summary: "upgrade lodash 4.17.21".into(),
        timeout_secs: 3600,
        retry_of: None,
        base_branch: None,
        clone_url: None,
    }
}

async fn create(store: &Store, task: NewTask) -> TaskId {
    match store.create_task(&task).await.unwrap() {
        CreatedTask::Created(t) => t.id,
        other => panic!("expected a new task, got {other:?}"),
    }
}

#[tokio::test]
async fn a_trigger_creates_one_task_and_a_user_one_active_task() {
    let db = TestDb::new().await;
    let store = db.store();
    let first = create(store, new_task("comment:1", 600001, 700001)).await;

    let again = store
        .create_task(&new_task("comment:1", 600001, 700001))
        .await
        .unwrap();
    assert!(matches!(again, CreatedTask::Duplicate(t) if t.id == first));

    let busy = store
        .create_task(&new_task("comment:2", 600001, 700002))
        .await
        .unwrap();
    assert_eq!(busy, CreatedTask::CreatorBusy { active_task: first });

    // Once it ends, the same user may start another.
    store
        .transition_task(first, TaskState::Queued, TaskState::Cancelled, ENGINE, None)
        .await
        .unwrap();
    create(store, new_task("comment:2", 600001, 700002)).await;
    assert_eq!(store.template_usage(700001, "upgrade").await.unwrap().0, 1);
    assert_eq!(store.template_usage(700002, "upgrade").await.unwrap().0, 1);
}

#[tokio::test]
async fn transitions_are_checked_compared_and_audited() {
    let db = TestDb::new().await;
    let store = db.store();
    let id = create(store, new_task("comment:1", 600001, 700001)).await;

    let illegal = store
        .transition_task(id, TaskState::Queued, TaskState::Succeeded, ENGINE, None)
        .await;
    assert!(matches!(illegal, Err(TransitionError::Illegal(_))));

    let started = store
        .dispatch_next(CAPS, uuid::Uuid::nil(), ENGINE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((started.id, started.state), (id, TaskState::Starting));
    let stale = store
        .transition_task(id, TaskState::Queued, TaskState::Cancelled, ENGINE, None)
        .await;
    assert!(matches!(
        stale,
        Err(TransitionError::Stale {
            actual: Some(TaskState::Starting),
            ..
        })
    ));

    store
        .transition_task(id, TaskState::Starting, TaskState::Running, ENGINE, None)
        .await
        .unwrap();
    let failed = store
        .transition_task(
            id,
            TaskState::Running,
            TaskState::Failed,
            ENGINE,
            Some("`npm test` exited with 1"),
        )
        .await
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.error.as_deref(), Some("`npm test` exited with 1"));

    let events = store.task_events(id).await.unwrap();
    let trail: Vec<(String, Option<String>, Option<String>)> = events
        .into_iter()
        .map(|e| (e.action, e.from_state, e.to_state))
        .collect();
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        trail,
        [
            ("created".into(), None, s("queued")),
            ("transition".into(), s("queued"), s("starting")),
            ("transition".into(), s("starting"), s("running")),
            ("transition".into(), s("running"), s("failed")),
        ]
    );

    // A retry is a new task linked to the first.
    let mut retry = new_task("retry:1", 600001, 700001);
    retry.trigger = TaskTrigger::RetryButton;
    retry.retry_of = Some((id, failed.attempt));
    let retried = match store.create_task(&retry).await.unwrap() {
        CreatedTask::Created(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!((retried.attempt, retried.retry_of), (2, Some(id)));
    assert_eq!(
        store.task(id).await.unwrap().unwrap().state,
        TaskState::Failed
    );
}

#[tokio::test]
async fn one_task_runs_per_repository_and_the_rest_wait_in_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let first = create(store, new_task("a", 1, 700001)).await;
    let second = create(store, new_task("b", 2, 700001)).await;
    let third = create(store, new_task("c", 3, 700001)).await;
    assert_eq!(store.queue_position(second).await.unwrap(), Some(2));

    assert_eq!(
        store
            .dispatch_next(CAPS, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap()
            .unwrap()
            .id,
        first
    );
    assert_eq!(
        store
            .dispatch_next(CAPS, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.queue_position(second).await.unwrap(), Some(1));
    assert_eq!(store.queue_position(third).await.unwrap(), Some(2));
    assert_eq!(store.queue_position(first).await.unwrap(), None);

    store
        .transition_task(
            first,
            TaskState::Starting,
            TaskState::TimedOut,
            ENGINE,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .dispatch_next(CAPS, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap()
            .unwrap()
            .id,
        second
    );
}

#[tokio::test]
async fn installation_and_global_caps_hold() {
    let db = TestDb::new().await;
    let store = db.store();
    for i in 0..4 {
        create(store, new_task(&format!("k{i}"), i, 700_000 + i)).await;
    }
    let caps = Caps {
        per_installation: 2,
        global: 3,
        check_run_wait: std::time::Duration::ZERO,
    };
    assert!(
        store
            .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap(),
        None,
        "installation cap"
    );

    let mut other = new_task("other-installation", 99, 800_001);
    other.installation_id = 4200002;
    create(store, other).await;
    assert!(
        store
            .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap()
            .is_some()
    );
    let mut third = new_task("third-installation", 98, 900_001);
    third.installation_id = 4200003;
    create(store, third).await;
    assert_eq!(
        store
            .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap(),
        None,
        "global cap"
    );
}

/// One installation with a deep queue at its cap cannot keep another installation's
/// tasks waiting, and installations with free slots take turns: each one's oldest task
/// goes before any installation's second.
#[tokio::test]
async fn a_busy_installation_does_not_starve_the_others() {
    let db = TestDb::new().await;
    let store = db.store();
    let caps = Caps {
        per_installation: 1,
        global: 100,
        check_run_wait: std::time::Duration::ZERO,
    };
    // The busy installation: one running, then far more queued than a dispatch pass
    // looks at, each in its own repository (so only the installation cap holds them).
    for i in 0..60 {
        create(store, new_task(&format!("busy-{i}"), i, 700_000 + i)).await;
    }
    assert!(
        store
            .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
            .await
            .unwrap()
            .is_some()
    );
    let mut quiet = new_task("quiet", 500, 800_001);
    quiet.installation_id = 4200002;
    let quiet = create(store, quiet).await;
    let started = store
        .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
        .await
        .unwrap();
    assert_eq!(
        started.map(|t| t.id),
        Some(quiet),
        "the quiet installation waited"
    );

    // Turns: two more installations, each with two queued tasks, older than a third
    // installation's one; with room for all, the order is by turn, then age.
    let db = TestDb::new().await;
    let store = db.store();
    let caps = Caps {
        per_installation: 10,
        global: 100,
        check_run_wait: std::time::Duration::ZERO,
    };
    let mut ids = Vec::new();
    for (key, installation, repository) in [
        ("a1", 4200001, 1),
        ("a2", 4200001, 2),
        ("b1", 4200002, 3),
        ("b2", 4200002, 4),
        ("c1", 4200003, 5),
    ] {
        let mut task = new_task(key, repository, 900_000 + repository);
        task.installation_id = installation;
        ids.push((create(store, task).await, key));
    }
    let mut order = Vec::new();
    while let Some(task) = store
        .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
        .await
        .unwrap()
    {
        order.push(ids.iter().find(|(id, _)| *id == task.id).unwrap().1);
    }
    assert_eq!(order, ["a1", "b1", "c1", "a2", "b2"]);
}

/// Two replicas (two connection pools on one database) dispatch and finish tasks as fast
/// as they can; the database must never let the limits be exceeded.
#[tokio::test]
async fn two_replicas_dispatching_at_once_never_break_the_limits() {
    let db = TestDb::new().await;
    let replica_a = db.store().clone();
    let replica_b = Store::connect(db.connect_options(), 4).await.unwrap();
    let caps = Caps {
        per_installation: 3,
        global: 5,
        check_run_wait: std::time::Duration::ZERO,
    };
    // 40 tasks by 40 users over 8 repositories in 2 installations.
    for i in 0..40i64 {
        let mut task = new_task(&format!("t{i}"), i, 700_000 + i % 8);
        task.installation_id = 4200000 + i % 2;
        create(&replica_a, task).await;
    }

    let run = |store: Store| async move {
        let mut started = Vec::new();
        let mut idle = 0;
        while idle < 50 {
            match store
                .dispatch_next(caps, uuid::Uuid::nil(), ENGINE)
                .await
                .unwrap()
            {
                Some(task) => {
                    idle = 0;
                    let running = store
                        .transition_task(
                            task.id,
                            TaskState::Starting,
                            TaskState::Running,
                            ENGINE,
                            None,
                        )
                        .await
                        .unwrap();
                    started.push(running.id);
                    check_limits(&store, caps).await;
                    store
                        .transition_task(
                            task.id,
                            TaskState::Running,
                            TaskState::Succeeded,
                            ENGINE,
                            None,
                        )
                        .await
                        .unwrap();
                }
                None => {
                    idle += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        started
    };
    let (a, b) = tokio::join!(run(replica_a.clone()), run(replica_b.clone()));
    let mut all: Vec<TaskId> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "no task was started twice");
    assert_eq!(all.len(), 40, "every task ran");
    replica_b.close().await;
}

async fn check_limits(store: &Store, caps: Caps) {
    let active = store.running_tasks().await.unwrap();
    let mut per_installation: HashMap<i64, u32> = HashMap::new();
    let mut per_repository: HashMap<i64, u32> = HashMap::new();
    for (installation, repository) in &active {
        *per_installation.entry(*installation).or_default() += 1;
        *per_repository.entry(*repository).or_default() += 1;
    }
    assert!(active.len() as u32 <= caps.global, "global cap: {active:?}");
    assert!(
        per_installation
            .values()
            .all(|n| *n <= caps.per_installation),
        "{per_installation:?}"
    );
    assert!(
        per_repository.values().all(|n| *n <= 1),
        "{per_repository:?}"
    );
}
