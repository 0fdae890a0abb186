//! Tasks, purely: their states and the transitions allowed between them, the phases a run
//! moves through, the limits policy, and templates (parameters, validation, rendering).
//! Nothing here knows about SQL, HTTP, GitHub or processes; the engine drives it.

pub mod permission;
pub mod record;
pub mod render;
pub mod reply;
pub mod repo_config;
pub mod template;
pub mod untrusted;

use std::fmt;
use std::str::FromStr;

pub use permission::{LabelTrust, Permission};
pub use record::{PrState, TaskId, TaskRecord};
pub use repo_config::{RepoConfig, RepoConfigError, ValidationCommand};
pub use template::{
    ParamError, ParamKind, Parameter, Recipe, Template, TemplateError, TemplateSource,
    builtin_templates,
};

/// The longest a task may run, whatever a template or the configuration asks for.
pub const MAX_TIMEOUT_SECS: u32 = 3600;

/// Where a task is in its life. `Queued`, `Starting` and `Running` are active: the
/// database allows at most one active task per user and per repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum TaskState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

/// A state change the life cycle does not allow; applying it would overwrite history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a task cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: TaskState,
    pub to: TaskState,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task state {0:?}")]
pub struct UnknownState(pub String);

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::TimedOut => "timed_out",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskState::Queued | TaskState::Starting | TaskState::Running
        )
    }

    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }

    /// Whether the life cycle allows `self → next`.
    ///
    /// `queued → starting → running → succeeded | failed | cancelled | timed_out`; a queued
    /// task may be cancelled before it starts, and a starting one may fail to launch, be
    /// cancelled or time out before the runner reports in.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Queued, Starting | Cancelled)
                | (Starting, Running | Failed | Cancelled | TimedOut)
                | (Running, Succeeded | Failed | Cancelled | TimedOut)
        )
    }

    pub fn transition(self, next: TaskState) -> Result<TaskState, IllegalTransition> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(IllegalTransition {
                from: self,
                to: next,
            })
        }
    }

    /// Whether a new attempt may be made of a task that ended this way.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What a running task is doing. Each phase starts at a fixed progress so the bar only
/// moves forward however the runner reports within a phase.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum Phase {
    Queued,
    Starting,
    Cloning,
    Applying,
    Validating,
    Pushing,
    Finished,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Queued,
        Phase::Starting,
        Phase::Cloning,
        Phase::Applying,
        Phase::Validating,
        Phase::Pushing,
        Phase::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Starting => "starting",
            Phase::Cloning => "cloning",
            Phase::Applying => "applying",
            Phase::Validating => "validating",
            Phase::Pushing => "pushing",
            Phase::Finished => "finished",
        }
    }

    /// Progress (0–100) at which this phase begins.
    pub fn base_progress(self) -> u8 {
        match self {
            Phase::Queued => 0,
            Phase::Starting => 5,
            Phase::Cloning => 10,
            Phase::Applying => 30,
            Phase::Validating => 70,
            Phase::Pushing => 90,
            Phase::Finished => 100,
        }
    }

    /// Progress at which the next phase begins: a report inside this phase stays below it.
    fn ceiling(self) -> u8 {
        match self {
            Phase::Finished => 100,
            _ => Phase::ALL
                .iter()
                .find(|p| **p > self)
                .map_or(100, |next| next.base_progress().saturating_sub(1)),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// The phase and progress after a runner's report: never backwards, clamped to the
/// reported phase's band so a runner cannot claim 100 % while still cloning.
pub fn advance(current: (Phase, u8), reported: (Phase, Option<u8>)) -> (Phase, u8) {
    let (phase, progress) = current;
    let (new_phase, new_progress) = reported;
    if new_phase < phase {
        return current;
    }
    let wanted = new_progress
        .unwrap_or(0)
        .clamp(new_phase.base_progress(), new_phase.ceiling());
    (new_phase, wanted.max(progress))
}

/// How a task ended, as a check run reports it.
pub fn check_run_conclusion(state: TaskState, changed: bool) -> Option<&'static str> {
    match state {
        TaskState::Succeeded if changed => Some("success"),
        TaskState::Succeeded => Some("neutral"),
        TaskState::Failed => Some("failure"),
        TaskState::Cancelled => Some("cancelled"),
        TaskState::TimedOut => Some("timed_out"),
        TaskState::Queued | TaskState::Starting | TaskState::Running => None,
    }
}

/// The timeout a task gets: the template's if it sets one, else the configured default,
/// and never more than [`MAX_TIMEOUT_SECS`] (nor less than a minute).
pub fn effective_timeout_secs(template: Option<u32>, configured_default: u32) -> u32 {
    template
        .unwrap_or(configured_default)
        .clamp(60, MAX_TIMEOUT_SECS)
}

/// A one-line summary of free-text instructions: their first non-empty line, cut to 60
/// characters.
pub fn free_text_summary(instructions: &str) -> String {
    const MAX: usize = 60;
    let line = instructions
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("run");
    if line.chars().count() > MAX {
        let cut: String = line.chars().take(MAX - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        line.to_owned()
    }
}

/// The branch a task pushes: `bg-agent/<task-id>-<slug>`, where the slug is made of the
/// summary's ASCII letters and digits so it is always a valid ref name.
pub fn branch_name(task_id: TaskId, summary: &str) -> String {
    const MAX_SLUG: usize = 40;
    let mut slug = String::new();
    for c in summary.chars() {
        if slug.len() >= MAX_SLUG {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("bg-agent/{task_id}")
    } else {
        format!("bg-agent/{task_id}-{slug}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_is_allowed_and_nothing_leaves_a_terminal_state() {
        use TaskState::*;
        assert_eq!(Queued.transition(Starting), Ok(Starting));
        assert_eq!(Starting.transition(Running), Ok(Running));
        assert_eq!(Running.transition(Succeeded), Ok(Succeeded));
        for terminal in [Succeeded, Failed, Cancelled, TimedOut] {
            for next in TaskState::ALL {
                assert_eq!(
                    terminal.transition(next),
                    Err(IllegalTransition {
                        from: terminal,
                        to: next
                    })
                );
            }
        }
    }

    #[test]
    fn illegal_transitions_are_errors() {
        use TaskState::*;
        assert!(Queued.transition(Running).is_err(), "must start first");
        assert!(Queued.transition(Succeeded).is_err());
        assert!(Running.transition(Queued).is_err());
        assert!(Running.transition(Starting).is_err());
        assert!(Queued.transition(Queued).is_err(), "no silent overwrite");
        let error = Queued.transition(Succeeded).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a task cannot go from queued to succeeded"
        );
    }

    #[test]
    fn every_active_state_can_end_cancelled() {
        for state in TaskState::ALL.into_iter().filter(|s| s.is_active()) {
            assert!(state.can_become(TaskState::Cancelled), "{state}");
        }
    }

    #[test]
    fn states_and_phases_round_trip_through_text() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>(), Ok(state));
        }
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
        assert!("done".parse::<TaskState>().is_err());
    }

    #[test]
    fn progress_only_moves_forward_within_phase_bands() {
        let start = (Phase::Starting, 5);
        assert_eq!(advance(start, (Phase::Cloning, None)), (Phase::Cloning, 10));
        assert_eq!(
            advance(start, (Phase::Cloning, Some(99))),
            (Phase::Cloning, 29)
        );
        let applying = advance(start, (Phase::Applying, Some(50)));
        assert_eq!(applying, (Phase::Applying, 50));
        assert_eq!(advance(applying, (Phase::Applying, Some(40))), applying);
        assert_eq!(advance(applying, (Phase::Cloning, Some(20))), applying);
        assert_eq!(
            advance(applying, (Phase::Finished, None)),
            (Phase::Finished, 100)
        );
    }

    #[test]
    fn conclusions_follow_the_outcome() {
        assert_eq!(
            check_run_conclusion(TaskState::Succeeded, true),
            Some("success")
        );
        assert_eq!(
            check_run_conclusion(TaskState::Succeeded, false),
            Some("neutral")
        );
        assert_eq!(
            check_run_conclusion(TaskState::TimedOut, false),
            Some("timed_out")
        );
        assert_eq!(check_run_conclusion(TaskState::Running, false), None);
    }

    #[test]
    fn timeouts_are_capped_at_an_hour() {
        assert_eq!(effective_timeout_secs(None, 3600), 3600);
        assert_eq!(effective_timeout_secs(Some(600), 3600), 600);
        assert_eq!(effective_timeout_secs(Some(7200), 3600), 3600);
        assert_eq!(effective_timeout_secs(None, 99_999), 3600);
        assert_eq!(effective_timeout_secs(Some(0), 3600), 60);
    }

    #[test]
    fn branch_names_are_safe_refs() {
        assert_eq!(
            branch_name(TaskId::new(42), "upgrade lodash 4.17.21"),
            "bg-agent/42-upgrade-lodash-4-17-21"
        );
        assert_eq!(branch_name(TaskId::new(7), "  ../~^:?*[ "), "bg-agent/7");
        assert_eq!(
            branch_name(TaskId::new(7), "Ünïcode ok"),
            "bg-agent/7-n-code-ok"
        );
        let long = branch_name(TaskId::new(1), &"a".repeat(200));
        assert!(long.len() <= "bg-agent/1-".len() + 40);
    }
}
