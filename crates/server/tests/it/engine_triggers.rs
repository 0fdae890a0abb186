//! Triggers → tasks, end to end: the fake GitHub sends real signed webhooks to the real
//! server, whose `TaskIntake` checks permissions, resolves templates, creates tasks in the
//! real database and answers on the fake GitHub through the real client.

use std::sync::Arc;

use bg_agent::app::RunningServer;
use bg_agent::engine::tasks::{TaskIntake, TaskPolicy};
use bg_agent_core::task::Permission;
use bg_agent_core::task::TaskState;
use bg_agent_github::{GitHubApp, SystemClock};
use bg_agent_testkit::db::TestDb;
use bg_agent_testkit::fixtures::SECRET;
use bg_agent_testkit::recording::{test_config, wait_for_delivery};
use github_fake::{GitHubSim, Role, RunningSim, SimConfig, SimState, world};

const WIDGETS: &str = "acme/widgets";
const ISSUE: u64 = 17;

struct Harness {
    sim: RunningSim,
    db: TestDb,
    server: Option<RunningServer>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with_files(world::WIDGETS_FILES).await
    }

    async fn start_with_files(widgets_files: &[(&str, &[u8])]) -> Self {
        let sim = GitHubSim::start(SimConfig {
            webhook_secret: SECRET.into(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        sim.seed_world_with(widgets_files).await.unwrap();
        let db = TestDb::new().await;
        let github = GitHubApp::new(
            bg_agent_testkit::fixtures::github_config(&sim),
            Arc::new(SystemClock),
        )
        .unwrap();
        let intake = TaskIntake::new(
            db.store().clone(),
            github,
            TaskPolicy {
                required_permission: Permission::Write,
                default_timeout_secs: 3600,
            },
        );
        let mut config = test_config();
        config.app_id = Some(sim.app_id());
        config.app_slug = sim.app_slug();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server =
            RunningServer::start(&config, db.store().clone(), Arc::new(intake), listener).unwrap();
        sim.set_webhook_url(Some(format!("http://{}/webhook", server.addr)));
        Self {
            sim,
            db,
            server: Some(server),
        }
    }

    /// Comments as `user` on widgets#17 and returns the comment id once the server has
    /// finished with the delivery.
    async fn comment(&self, user: &str, body: &str) -> u64 {
        let triggered = self.sim.comment(WIDGETS, ISSUE, user, body).await.unwrap();
        assert_eq!(triggered.delivery.status_code, 202, "{triggered:?}");
        self.processed(&triggered.delivery.guid).await;
        triggered.id.unwrap()
    }

    async fn processed(&self, guid: &str) {
        let record = wait_for_delivery(self.db.store(), guid, |d| {
            d.state != bg_agent::store::DeliveryState::Pending
        })
        .await;
        assert_eq!(
            record.state,
            bg_agent::store::DeliveryState::Processed,
            "{record:?}"
        );
    }

    /// Bodies of the comments on widgets#17 written by the app.
    fn replies(&self) -> Vec<String> {
        let bot = self.sim.bot_login();
        self.sim.read(|s: &SimState| {
            s.comments_on(WIDGETS, ISSUE)
                .into_iter()
                .filter(|c| c.author == bot)
                .map(|c| c.body.clone())
                .collect()
        })
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
        self.sim.assert_no_violations();
    }
}

#[tokio::test]
async fn an_upgrade_command_by_a_writer_becomes_one_acknowledged_task() {
    let h = Harness::start().await;
    let comment = h
        .comment("octo-lead", "/bg-agent upgrade lodash 4.17.21")
        .await;

    let bot = h.sim.bot_login();
    let eyes = h.sim.read(|s| {
        s.reactions_on(comment)
            .iter()
            .filter(|r| r.user == bot && r.content == "eyes")
            .count()
    });
    assert_eq!(eyes, 1, "👀 on the command");
    let replies = h.replies();
    assert_eq!(replies.len(), 1, "one tracking comment: {replies:?}");
    assert!(
        replies[0].contains("— `upgrade lodash 4.17.21` — **queued**"),
        "{}",
        replies[0]
    );
    assert!(replies[0].contains("position 1"), "{}", replies[0]);

    let tasks = h.db.store().tasks_of(600001, 700001, 10).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let task = &tasks[0];
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(task.template.as_deref(), Some("upgrade"));
    assert!(task.instructions.contains("lodash to version 4.17.21"));
    assert!(task.tracking_comment_id.is_some());
    let events = h.db.store().task_events(task.id).await.unwrap();
    assert_eq!(events[0].action, "created");
    assert_eq!(events[0].actor, "octo-lead");
    assert!(
        events[0].delivery_guid.is_some(),
        "audited with its delivery"
    );
    assert_eq!(
        h.db.store()
            .template_usage(700001, "upgrade")
            .await
            .unwrap()
            .0,
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn a_reader_is_refused_with_a_comment_and_no_task() {
    let h = Harness::start().await;
    h.comment("drive-by", "/bg-agent upgrade lodash 4.17.21")
        .await;
    let replies = h.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("@drive-by only people with write access"),
        "{}",
        replies[0]
    );
    assert!(
        h.db.store()
            .tasks_of(600002, 700001, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let refusals = h.db.store().refusals(700001).await.unwrap();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].0, "drive-by");

    // A maintainer counts as a writer.
    h.sim
        .set_permission(WIDGETS, "drive-by", Some(Role::Maintain))
        .unwrap();
    // (the refusal above was cached for a minute; a new user shows the rule instead)
    h.sim.add_user("maintainer");
    h.sim
        .set_permission(WIDGETS, "maintainer", Some(Role::Maintain))
        .unwrap();
    h.comment("maintainer", "/bg-agent run tidy the README")
        .await;
    let replies = h.replies();
    assert!(
        replies[1].contains("— `tidy the README` — **queued**"),
        "{replies:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn help_bad_arguments_and_unknown_templates_get_helpful_replies() {
    let h = Harness::start().await;
    h.comment("octo-lead", "/bg-agent help").await;
    h.comment("octo-lead", "/bg-agent upgrade lodash latest")
        .await;
    h.comment("octo-lead", "/bg-agent upgarde lodash 4.17.21")
        .await;
    h.comment("octo-lead", "/bg-agent upgrade lodash \"4.17.21")
        .await;
    let replies = h.replies();
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(
        replies[0].contains("/bg-agent run <instructions>"),
        "{}",
        replies[0]
    );
    assert!(
        replies[1].contains("parameter version is \"latest\""),
        "{}",
        replies[1]
    );
    assert!(replies[1].contains("`<version>`"), "{}", replies[1]);
    assert!(
        replies[2].contains("no template `upgarde`"),
        "{}",
        replies[2]
    );
    assert!(
        replies[2].contains("Did you mean `upgrade`?"),
        "{}",
        replies[2]
    );
    assert!(
        replies[3].to_lowercase().contains("quote"),
        "{}",
        replies[3]
    );
    assert!(
        h.db.store()
            .tasks_of(600001, 700001, 10)
            .await
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_second_task_by_the_same_user_is_refused_naming_the_first() {
    let h = Harness::start().await;
    h.comment("octo-lead", "/bg-agent upgrade lodash 4.17.21")
        .await;
    h.comment("octo-lead", "/bg-agent run also do this").await;
    let first = h.db.store().tasks_of(600001, 700001, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    let replies = h.replies();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies[1].contains(&format!(
            "you already have an active task, #{}",
            first[0].id
        )),
        "{}",
        replies[1]
    );

    h.comment("octo-lead", "/bg-agent status").await;
    let replies = h.replies();
    assert!(
        replies[2].contains(&format!("| #{} | upgrade | queued |", first[0].id)),
        "{}",
        replies[2]
    );
    h.stop().await;
}

const REPO_CONFIG: &[u8] = br#"
validation:
  - npm test
templates:
  - name: bump-node
    parameters:
      - { name: major, type: integer, pattern: "1[89]|2[0-9]" }
    instructions: Move the project to Node {{major}}.
    timeout_secs: 900
"#;

#[tokio::test]
async fn a_repository_template_is_used_twice_with_different_values() {
    let mut files: Vec<(&str, &[u8])> = world::WIDGETS_FILES.to_vec();
    files.push((".github/bg-agent.yml", REPO_CONFIG));
    let h = Harness::start_with_files(&files).await;
    h.sim.add_user("second-dev");
    h.sim
        .set_permission(WIDGETS, "second-dev", Some(Role::Write))
        .unwrap();

    h.comment("octo-lead", "/bg-agent bump-node 20").await;
    h.comment("second-dev", "/bg-agent bump-node major=22")
        .await;
    h.comment("second-dev", "/bg-agent bump-node 30").await;

    let (uses, last_used) =
        h.db.store()
            .template_usage(700001, "bump-node")
            .await
            .unwrap();
    assert_eq!(uses, 2);
    assert!(last_used.is_some());
    let lead = &h.db.store().tasks_of(600001, 700001, 10).await.unwrap()[0];
    assert_eq!(lead.instructions, "Move the project to Node 20.");
    assert_eq!(lead.timeout_secs, 900);
    let replies = h.replies();
    assert!(
        replies[2].contains("parameter major is \"30\""),
        "{replies:?}"
    );
    // Second in line behind the first task of the same repository.
    assert!(replies[1].contains("position 2"), "{replies:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_label_on_an_issue_becomes_a_task_from_its_text() {
    let h = Harness::start().await;
    let triggered = h
        .sim
        .label_issue(WIDGETS, ISSUE, "octo-lead", "bg-agent")
        .await
        .unwrap();
    h.processed(&triggered.delivery.guid).await;
    let tasks = h.db.store().tasks_of(600001, 700001, 10).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let issue_title = h
        .sim
        .read(|s| s.issue(WIDGETS, ISSUE).map(|i| i.title.clone()))
        .unwrap();
    assert!(
        tasks[0].instructions.starts_with(&issue_title),
        "{}",
        tasks[0].instructions
    );
    assert_eq!(h.replies().len(), 1, "the tracking comment");
    h.stop().await;
}
