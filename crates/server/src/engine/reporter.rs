//! The reporter: brings GitHub up to each task's stored state — the check run on the
//! default branch's head, the tracking comment, and on success the pull request with its
//! own check run. It works only from the database, so after a GitHub outage or a restart
//! it simply catches up; a failed report is retried with backoff, never dropped. Each step
//! of a report stands alone: one GitHub refuses for good is recorded in `report_errors`
//! (shown on the task page) and not tried again, and never holds the others back.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::background::Background;
use crate::store::tasks::{AuditActor, TaskRecord};
use crate::store::{Store, StoreError};
use bg_agent_core::backoff::Backoff;
use bg_agent_core::protocol::ValidationResult;
use bg_agent_core::task::TaskState;
use bg_agent_core::task::render::{self, CHECK_RUN_NAME, RenderContext};
use bg_agent_github::{
    CheckRunAction, CheckRunConclusion, CheckRunOutput, CheckRunStatus, CheckRunUpdate, GitHubApp,
    GitHubError, InstallationClient, NewCheckRun, NewPullRequest, PullRequestUpdate, RepoName,
};

use super::Signal;

/// The label put on every pull request the app opens.
pub const PR_LABEL: &str = "bg-agent";
/// How many tasks are reported at once.
const IN_FLIGHT: usize = 16;
/// How long reports under way may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A claimed task is left alone by other reporters this long; the reporter renews it
/// every third of it while the report goes on, so it outlasts any report, and a report
/// cut short by a crash is taken up again soon.
const LEASE: Duration = Duration::from_secs(15);
const LOG_TAIL: i64 = 40;

#[derive(Debug, Clone)]
pub struct ReporterSettings {
    pub public_url: String,
    /// Progress-only updates of one task go out at most this often.
    pub throttle: Duration,
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    /// Some steps failed in a way worth another try; the rest are done or recorded.
    #[error("{0}")]
    Steps(String),
}

impl ReportError {
    /// GitHub refused for good (404, 410, 422...): retrying the same step cannot help.
    fn is_permanent(&self) -> bool {
        match self {
            Self::GitHub(e) => !e.is_transient(),
            Self::Invalid(_) => true,
            Self::Store(_) | Self::Steps(_) => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Self::GitHub(e) => e.status(),
            _ => None,
        }
    }
}

/// The parts of a report, each done on its own: one GitHub refuses for good is recorded
/// and left alone, and never keeps the others (the check run above all) from going out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    PullRequest,
    Labels,
    ValidationCheck,
    CheckRun,
    TrackingComment,
}

impl Step {
    /// As stored in `report_errors.step`.
    fn name(self) -> &'static str {
        match self {
            Self::PullRequest => "pull_request",
            Self::Labels => "labels",
            Self::ValidationCheck => "validation_check",
            Self::CheckRun => "check_run",
            Self::TrackingComment => "tracking_comment",
        }
    }
}

pub struct Reporter {
    store: Store,
    github: GitHubApp,
    settings: ReporterSettings,
    signal: Signal,
}

/// 2 s, 4 s, 8 s … up to 5 minutes between tries at a report GitHub refused. No jitter:
/// the reports of one outage are retried 16 at a time anyway.
const RETRY: Backoff = Backoff::new(Duration::from_secs(2), 2, Duration::from_secs(300));

fn backoff(failures: u32) -> Duration {
    RETRY.delay(failures, rand::random())
}

fn conclusion(name: &str) -> Option<CheckRunConclusion> {
    Some(match name {
        "success" => CheckRunConclusion::Success,
        "failure" => CheckRunConclusion::Failure,
        "cancelled" => CheckRunConclusion::Cancelled,
        "timed_out" => CheckRunConclusion::TimedOut,
        "neutral" => CheckRunConclusion::Neutral,
        _ => return None,
    })
}

fn id_u64(id: i64, what: &str) -> Result<u64, ReportError> {
    u64::try_from(id).map_err(|_| ReportError::Invalid(format!("bad {what} {id}")))
}

struct Rendered {
    status: CheckRunStatus,
    conclusion: Option<CheckRunConclusion>,
    output: CheckRunOutput,
    actions: Vec<CheckRunAction>,
}

impl Reporter {
    pub fn new(
        store: Store,
        github: GitHubApp,
        settings: ReporterSettings,
        signal: Signal,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            github,
            settings,
            signal,
        })
    }

    /// Works until shutdown. Reports run side by side and each is claimed as soon as a
    /// place is free, so a new task's check run never waits behind a slow report (a pull
    /// request being opened, say); the client caps requests per installation.
    /// A report that panics is logged by `background`; its task stays claimed only until
    /// the lease runs out, then it is reported again.
    pub async fn run(self: Arc<Self>, background: Background) {
        let mut wakeups = self.signal.subscribe();
        // Reports are the loop's own: it needs each one's end (a free place), and any still
        // under way when it stops are aborted with the set.
        let mut reports = tokio::task::JoinSet::new();
        // Throttled tasks become due without a wake-up: look again soon.
        let poll = self.settings.poll.min(self.settings.throttle);
        while !background.is_stopping() {
            let free = IN_FLIGHT.saturating_sub(reports.len());
            if free > 0 {
                let limit = i64::try_from(free).unwrap_or(1);
                match self
                    .store
                    .claim_unreported(limit, self.settings.throttle, LEASE)
                    .await
                {
                    Ok(tasks) => {
                        for task in tasks {
                            let span = tracing::info_span!("task", task = task.id.get());
                            let this = Arc::clone(&self);
                            let report = async move { this.report_one(&task).await };
                            reports.spawn(background.guarded("report", report).instrument(span));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reporter cannot claim tasks; trying again")
                    }
                }
            }
            // A finished report frees a place: look again then too.
            tokio::select! {
                () = wakeups.next(poll, background.token()) => {}
                Some(_) = reports.join_next(), if !reports.is_empty() => {}
            }
        }
        // Reports under way get a moment to finish; any cut short is retried by the next
        // reporter once its lease runs out.
        let drain = async { while reports.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("reports still under way at shutdown; they will be retried");
        }
    }

    /// Brings GitHub up to one claimed task and records how that went.
    async fn report_one(&self, task: &TaskRecord) {
        // The lease is renewed while the report goes on, so however slow GitHub is (each
        // request bounded, several per report), no other reporter takes the task meanwhile
        // and makes a second check run or pull request.
        let report = self.report(task);
        tokio::pin!(report);
        let outcome = loop {
            tokio::select! {
                outcome = &mut report => break outcome,
                () = tokio::time::sleep(LEASE / 3) => {
                    if let Err(e) = self.store.renew_report_lease(task.id, LEASE).await {
                        tracing::warn!(task = task.id.get(), error = %e, "cannot renew the report's lease");
                    }
                }
            }
        };
        let recorded = match outcome {
            Ok(()) => self.store.mark_reported(task).await,
            Err(e) => {
                tracing::warn!(task = task.id.get(), error = %e, "cannot report to GitHub yet; will retry");
                self.store
                    .report_failed(task.id, &e.to_string(), backoff)
                    .await
            }
        };
        if let Err(e) = recorded {
            // The lease keeps others away meanwhile; the report is made again after it.
            tracing::warn!(task = task.id.get(), error = %e, "cannot record the report");
        }
        if task.state == TaskState::Queued {
            // The supervisor picks queued tasks with SKIP LOCKED, so it passed this one
            // over while the report held its row: have it look again.
            self.signal.wake();
        }
    }

    async fn report(&self, task: &TaskRecord) -> Result<(), ReportError> {
        let (owner, name) = task
            .repository
            .split_once('/')
            .ok_or_else(|| ReportError::Invalid(format!("bad repository {}", task.repository)))?;
        let repo = RepoName::new(owner, name);
        let client = self
            .github
            .installation(id_u64(task.installation_id, "installation")?);
        let details = self.store.task_details(task, LOG_TAIL).await?;
        let page_url = render::page_url(&self.settings.public_url, task.id);
        let mut cx = details.context(&page_url);
        let mut task = task.clone();
        let refused: Vec<String> = self
            .store
            .report_errors(task.id)
            .await?
            .into_iter()
            .map(|e| e.step)
            .collect();
        let open = |step: Step| !refused.iter().any(|name| name == step.name());
        let mut retry = Vec::new();
        if task.state == TaskState::Succeeded && task.changed == Some(true) && task.branch.is_some()
        {
            cx.pr_refused = !open(Step::PullRequest);
            if !cx.pr_refused && task.pr_number.is_none() {
                let done = self.pull_request(&client, &repo, &mut task, &cx).await;
                cx.pr_refused = self
                    .settle(&task, Step::PullRequest, done, &mut retry)
                    .await;
            }
            if task.pr_number.is_some() {
                if open(Step::Labels) {
                    let done = self.labels(&client, &repo, &task, &cx).await;
                    self.settle(&task, Step::Labels, done, &mut retry).await;
                }
                if open(Step::ValidationCheck) && task.pr_check_run_id.is_none() {
                    let done = self.validation_check(&client, &repo, &mut task, &cx).await;
                    self.settle(&task, Step::ValidationCheck, done, &mut retry)
                        .await;
                }
            }
        }
        if open(Step::CheckRun) {
            let done = self.check_run(&client, &repo, &task, &cx).await;
            self.settle(&task, Step::CheckRun, done, &mut retry).await;
        }
        if let Some(comment_id) = task.tracking_comment_id
            && open(Step::TrackingComment)
        {
            let done = async {
                client
                    .update_issue_comment(
                        &repo,
                        id_u64(comment_id, "comment")?,
                        &render::tracking_comment(&task, &cx),
                    )
                    .await?;
                Ok(())
            }
            .await;
            self.settle(&task, Step::TrackingComment, done, &mut retry)
                .await;
        }
        if retry.is_empty() {
            Ok(())
        } else {
            Err(ReportError::Steps(retry.join("; ")))
        }
    }

    /// Sorts a step's outcome: a permanent refusal is recorded (and the step not tried
    /// again), anything else that failed is kept in `retry`. `true`: refused for good.
    async fn settle(
        &self,
        task: &TaskRecord,
        step: Step,
        done: Result<(), ReportError>,
        retry: &mut Vec<String>,
    ) -> bool {
        let Err(e) = done else { return false };
        if !e.is_permanent() {
            retry.push(format!("{}: {e}", step.name()));
            return false;
        }
        tracing::warn!(
            task = task.id.get(),
            step = step.name(),
            error = %e,
            "GitHub refused this part of the report for good; it is recorded and not tried again"
        );
        crate::metrics::report_permanent_error(step.name());
        if let Err(store) = self
            .store
            .record_report_error(task.id, step.name(), e.status(), &e.to_string())
            .await
        {
            retry.push(format!("{}: {e} (not recorded: {store})", step.name()));
        }
        true
    }

    fn render(task: &TaskRecord, cx: &RenderContext<'_>) -> Rendered {
        let (status, conclusion_name) = render::check_run_status(task);
        let (title, summary, text) = render::check_run_output(task, cx);
        let mut output = CheckRunOutput::new(title, summary);
        if !text.is_empty() {
            output.text = Some(text);
        }
        Rendered {
            status: match status {
                "queued" => CheckRunStatus::Queued,
                "in_progress" => CheckRunStatus::InProgress,
                _ => CheckRunStatus::Completed,
            },
            conclusion: conclusion_name.and_then(conclusion),
            output,
            actions: render::check_run_actions(task)
                .into_iter()
                .map(|(label, description, identifier)| {
                    CheckRunAction::new(label, description, identifier)
                })
                .collect(),
        }
    }

    /// Creates the task's check run on the default branch's head, or updates it. One
    /// made before but not stored (a crash between GitHub's answer and our write) is
    /// found by its `external_id` and adopted, never made twice.
    async fn check_run(
        &self,
        client: &InstallationClient,
        repo: &RepoName,
        task: &TaskRecord,
        cx: &RenderContext<'_>,
    ) -> Result<(), ReportError> {
        let rendered = Self::render(task, cx);
        let completed_at = task
            .finished_at
            .filter(|_| rendered.status == CheckRunStatus::Completed);
        let update = |rendered: Rendered| CheckRunUpdate {
            status: Some(rendered.status),
            started_at: task.started_at,
            conclusion: rendered.conclusion,
            completed_at,
            output: Some(rendered.output),
            actions: Some(rendered.actions),
            ..CheckRunUpdate::default()
        };
        if let Some(id) = task.check_run_id {
            client
                .update_check_run(repo, id_u64(id, "check run")?, update(rendered))
                .await?;
            return Ok(());
        }
        let branch = match &task.base_branch {
            Some(branch) => branch.clone(),
            None => client.repository(repo).await?.default_branch,
        };
        // The commit is stored before the run is made: known, an earlier attempt may have
        // made the run (and crashed before storing it), so look for it there, even if the
        // branch has moved since; unknown, no attempt got that far.
        let (head_sha, tried_before) = match &task.head_sha {
            Some(sha) => (sha.clone(), true),
            None => {
                let sha = client.branch_head_sha(repo, &branch).await?;
                self.store.set_head(task.id, &branch, &sha).await?;
                (sha, false)
            }
        };
        let external_id = task.id.to_string();
        let existing = if tried_before {
            client
                .own_check_runs(repo, &head_sha, CHECK_RUN_NAME)
                .await?
                .into_iter()
                .find(|run| run.external_id.as_deref() == Some(external_id.as_str()))
        } else {
            None
        };
        let id = match existing {
            Some(run) => {
                tracing::info!(
                    task = task.id.get(),
                    check_run = run.id,
                    "adopting the check run made before"
                );
                client
                    .update_check_run(repo, run.id, update(rendered))
                    .await?;
                run.id
            }
            None => {
                let mut run = NewCheckRun::new(CHECK_RUN_NAME, head_sha.clone());
                run.details_url = Some(cx.page_url.to_owned());
                run.external_id = Some(external_id);
                run.status = Some(rendered.status);
                run.started_at = task.started_at;
                run.conclusion = rendered.conclusion;
                run.completed_at = completed_at;
                run.output = Some(rendered.output);
                run.actions = rendered.actions;
                client.create_check_run(repo, run).await?.id
            }
        };
        let id = i64::try_from(id)
            .map_err(|_| ReportError::Invalid("check run id out of range".into()))?;
        self.store
            .set_check_run(task.id, id, &branch, &head_sha)
            .await?;
        // The supervisor starts a task once GitHub shows it queued.
        self.signal.wake();
        Ok(())
    }

    /// Opens the pull request, or adopts the one already open for the branch (made
    /// before a crash, or by an earlier attempt) and brings it up to date.
    async fn pull_request(
        &self,
        client: &InstallationClient,
        repo: &RepoName,
        task: &mut TaskRecord,
        cx: &RenderContext<'_>,
    ) -> Result<(), ReportError> {
        let Some(branch) = task.branch.clone() else {
            return Ok(());
        };
        let actor = AuditActor {
            name: "bg-agent",
            delivery_guid: None,
        };
        // Nothing checked the change (the repository declares no validation): a draft,
        // labelled and saying so, never a pull request that looks validated.
        let unvalidated = cx.validations.is_empty();
        let title = render::pull_request_title(task);
        let mut body = render::pull_request_body(task, cx);
        if unvalidated {
            body = format!("{}\n{body}", render::unvalidated_note());
        }
        let pull = match client.find_open_pull_request(repo, &branch).await? {
            Some(existing) => {
                client
                    .update_pull_request(
                        repo,
                        existing.number,
                        &PullRequestUpdate {
                            title: Some(title),
                            body: Some(body),
                        },
                    )
                    .await?
            }
            None => {
                let base = match &task.base_branch {
                    Some(base) => base.clone(),
                    None => client.repository(repo).await?.default_branch,
                };
                client
                    .create_pull_request(
                        repo,
                        &NewPullRequest {
                            title,
                            head: branch.clone(),
                            base,
                            body: Some(body),
                            draft: unvalidated.then_some(true),
                            maintainer_can_modify: None,
                        },
                    )
                    .await?
            }
        };
        let number = i32::try_from(pull.number)
            .map_err(|_| ReportError::Invalid("pull request number out of range".into()))?;
        self.store
            .set_pull_request(task.id, number, &pull.html_url, actor)
            .await?;
        tracing::info!(
            task = task.id.get(),
            pr = pull.number,
            "pull request opened"
        );
        task.pr_number = Some(number);
        task.pr_url = Some(pull.html_url);
        self.signal.wake();
        Ok(())
    }

    /// Labels the pull request (adding a label it has is a no-op on GitHub).
    async fn labels(
        &self,
        client: &InstallationClient,
        repo: &RepoName,
        task: &TaskRecord,
        cx: &RenderContext<'_>,
    ) -> Result<(), ReportError> {
        let Some(number) = task.pr_number else {
            return Ok(());
        };
        let mut labels = vec![PR_LABEL.to_owned()];
        if cx.validations.is_empty() {
            labels.push(render::UNVALIDATED_LABEL.to_owned());
        }
        client
            .add_labels(repo, id_u64(i64::from(number), "pull request")?, &labels)
            .await?;
        Ok(())
    }

    /// Puts the validation results on the pull request's head commit, adopting the run
    /// made before a crash if there is one.
    async fn validation_check(
        &self,
        client: &InstallationClient,
        repo: &RepoName,
        task: &mut TaskRecord,
        cx: &RenderContext<'_>,
    ) -> Result<(), ReportError> {
        let Some(commit) = task.commit_sha.clone() else {
            return Ok(());
        };
        let external_id = task.id.to_string();
        let existing = client
            .own_check_runs(repo, &commit, render::VALIDATION_CHECK_NAME)
            .await?
            .into_iter()
            .find(|run| run.external_id.as_deref() == Some(external_id.as_str()));
        let id = match existing {
            Some(run) => run.id,
            None => {
                let unvalidated = cx.validations.is_empty();
                let mut run = NewCheckRun::new(render::VALIDATION_CHECK_NAME, commit);
                run.details_url = Some(cx.page_url.to_owned());
                run.external_id = Some(external_id);
                run.status = Some(CheckRunStatus::Completed);
                run.conclusion = Some(if unvalidated {
                    CheckRunConclusion::Neutral
                } else if validation_passed(cx.validations) {
                    CheckRunConclusion::Success
                } else {
                    CheckRunConclusion::Failure
                });
                run.completed_at = task.finished_at;
                let (title, summary) = render::validation_check_output(cx.validations);
                run.output = Some(CheckRunOutput::new(title, summary));
                client.create_check_run(repo, run).await?.id
            }
        };
        let id = i64::try_from(id)
            .map_err(|_| ReportError::Invalid("check run id out of range".into()))?;
        self.store.set_pr_check_run(task.id, id).await?;
        task.pr_check_run_id = Some(id);
        Ok(())
    }
}

fn validation_passed(validations: &[ValidationResult]) -> bool {
    validations.iter().all(ValidationResult::passed)
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn report_retries_double_from_two_seconds_up_to_five_minutes() {
        let secs = [1, 2, 3, 8, 9, 50, u32::MAX].map(|n| backoff(n).as_secs());
        assert_eq!(secs, [2, 4, 8, 256, 300, 300, 300]);
    }
}
