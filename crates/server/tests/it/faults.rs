//! Faults lose nothing and leave nothing stuck: outages, crashes, storms. Each scenario
//! asserts the figures exactly (tasks, requests to GitHub) once things have settled.

use std::time::Duration;

use bg_agent::engine::redelivery::RedeliverySettings;
use bg_agent_testkit::harness::{ISSUE, REPO, Scenario, WAIT};
use github_fake::Role;

const RUNNER: &str = env!("CARGO_BIN_EXE_bg-agent");

/// GitHub does not redeliver by itself. Commands sent while the database is down are
/// answered 503; once it is back, the engine's sweep finds them in the App's delivery
/// list, asks GitHub to send each again, and every command becomes one task.
#[tokio::test]
async fn commands_refused_in_a_database_outage_are_asked_again_and_become_tasks() {
    let h = Scenario::engine(RUNNER)
        .database_behind_proxy()
        .redelivery(RedeliverySettings {
            every: Duration::from_millis(300),
            pause: Duration::ZERO,
            ..RedeliverySettings::default()
        })
        .start()
        .await;
    let people = ["ana", "ben", "cyd"];
    for person in people {
        h.add_user(person, Role::Write);
    }

    h.database_down();
    for person in people {
        let made = h
            .sim
            .comment(REPO, ISSUE, person, "/bg-agent upgrade lodash 4.17.21")
            .await
            .unwrap();
        assert_eq!(made.delivery.status_code, 503, "{made:?}");
    }
    assert!(h.tasks().await.is_empty());
    h.database_up();

    let deadline = tokio::time::Instant::now() + WAIT;
    while h.tasks().await.len() < people.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commands never became tasks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more sweeps find nothing missing: nothing is asked for twice.
    let (guids, attempts) = h.store().redelivery_counts().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.store().redelivery_counts().await.unwrap(),
        (guids, attempts)
    );
    assert_eq!((guids, attempts), (3, 3));
    let mut creators: Vec<String> = h
        .tasks()
        .await
        .into_iter()
        .map(|t| t.creator_login)
        .collect();
    creators.sort();
    assert_eq!(creators, people);
    h.finish().await;
}
