//! The task state machine (bbs-reference §3.1) as pure functions: each takes the current task
//! and the request, and returns the next task or the upstream error. The actor persists what
//! these return; nothing here touches storage or time except through its arguments.

use bbs_models::task::State;
use bbs_models::Task;

use crate::clock::Nanos;
use crate::error::BbsError;

/// Upstream truncates reasons at this many bytes.
pub const MAX_REASON_BYTES: usize = 1024;
const TRUNCATED: &str = "(truncated)";

pub const CANCELLED_REASON: &str = "task was cancelled";

/// Upstream's truncation: a value of `max` bytes or more keeps its first `max - 11` bytes and
/// gains "(truncated)". Cut at a character boundary, since wire strings must stay UTF-8.
pub fn truncate(value: &str, max: usize) -> String {
    if value.len() < max {
        return value.to_owned();
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &value[..end])
}

pub fn state(task: &Task) -> State {
    State::try_from(task.state).unwrap_or(State::Invalid)
}

fn transition_error(from: State, to: State) -> BbsError {
    BbsError::InvalidStateTransition {
        from: from.as_str_name().to_owned(),
        to: to.as_str_name().to_owned(),
    }
}

/// The generic rule: Running only from Pending, Completed only from Running, Resolving only
/// from Completed.
pub fn check_transition(from: State, to: State) -> Result<(), BbsError> {
    let allowed = matches!(
        (from, to),
        (State::Pending, State::Running)
            | (State::Running, State::Completed)
            | (State::Completed, State::Resolving)
    );
    if allowed {
        Ok(())
    } else {
        Err(transition_error(from, to))
    }
}

/// A new task as DesireTask stores it.
pub fn desired(
    guid: String,
    domain: String,
    definition: bbs_models::TaskDefinition,
    now: Nanos,
) -> Task {
    Task {
        task_definition: Some(definition),
        task_guid: guid,
        domain,
        created_at: now,
        updated_at: now,
        first_completed_at: 0,
        state: State::Pending as i32,
        cell_id: String::new(),
        result: String::new(),
        failed: false,
        failure_reason: String::new(),
        rejection_count: 0,
        rejection_reason: String::new(),
    }
}

/// What StartTask decided.
#[derive(Debug, PartialEq)]
pub enum Start {
    /// Already running on this cell: nothing to write, `should_start` false.
    AlreadyRunning,
    Started(Box<Task>),
}

pub fn start(task: &Task, cell_id: &str, now: Nanos) -> Result<Start, BbsError> {
    let from = state(task);
    if from == State::Running && task.cell_id == cell_id {
        return Ok(Start::AlreadyRunning);
    }
    check_transition(from, State::Running)?;
    let mut next = task.clone();
    next.state = State::Running as i32;
    next.cell_id = cell_id.to_owned();
    next.updated_at = now;
    Ok(Start::Started(Box::new(next)))
}

/// Completes a task that never finished on its own (cancel, fail): from Pending or Running.
fn fail_unfinished(task: &Task, reason: String, now: Nanos) -> Result<Task, BbsError> {
    let from = state(task);
    if !matches!(from, State::Pending | State::Running) {
        return Err(transition_error(from, State::Completed));
    }
    let mut next = task.clone();
    next.state = State::Completed as i32;
    next.failed = true;
    next.failure_reason = reason;
    next.result = String::new();
    next.cell_id = String::new();
    next.first_completed_at = now;
    next.updated_at = now;
    Ok(next)
}

pub fn cancel(task: &Task, now: Nanos) -> Result<Task, BbsError> {
    fail_unfinished(task, CANCELLED_REASON.to_owned(), now)
}

pub fn fail(task: &Task, reason: &str, now: Nanos) -> Result<Task, BbsError> {
    fail_unfinished(task, truncate(reason, MAX_REASON_BYTES), now)
}

/// RejectTask: back to Pending with one more rejection, or, once the rejections before this
/// one reach `max_retries`, failed with the rejection reason. Upstream does this as a reject
/// then a fail; the end state is the same, written once.
pub fn reject(task: &Task, reason: &str, max_retries: u32, now: Nanos) -> Result<Task, BbsError> {
    let from = state(task);
    if !matches!(from, State::Pending | State::Running) {
        return Err(BbsError::InvalidRequest(format!(
            "Cannot reject a task in state {}",
            from.as_str_name()
        )));
    }
    let previous_rejections = task.rejection_count;
    let reason = truncate(reason, MAX_REASON_BYTES);
    let mut next = task.clone();
    next.rejection_count = previous_rejections.saturating_add(1);
    next.rejection_reason = reason.clone();
    next.updated_at = now;
    if i64::from(previous_rejections) >= i64::from(max_retries) {
        next.state = State::Completed as i32;
        next.failed = true;
        next.failure_reason = reason;
        next.result = String::new();
        next.cell_id = String::new();
        next.first_completed_at = now;
    } else {
        next.state = State::Pending as i32;
    }
    Ok(next)
}

pub fn complete(
    task: &Task,
    cell_id: &str,
    failed: bool,
    failure_reason: &str,
    result: &str,
    now: Nanos,
) -> Result<Task, BbsError> {
    let from = state(task);
    if from == State::Running && task.cell_id != cell_id {
        return Err(BbsError::RunningOnDifferentCell {
            actual: task.cell_id.clone(),
            requested: cell_id.to_owned(),
        });
    }
    check_transition(from, State::Completed)?;
    let mut next = task.clone();
    next.state = State::Completed as i32;
    next.failed = failed;
    next.failure_reason = truncate(failure_reason, MAX_REASON_BYTES);
    next.result = result.to_owned();
    next.cell_id = String::new();
    next.first_completed_at = now;
    next.updated_at = now;
    Ok(next)
}

pub fn resolving(task: &Task, now: Nanos) -> Result<Task, BbsError> {
    check_transition(state(task), State::Resolving)?;
    let mut next = task.clone();
    next.state = State::Resolving as i32;
    next.updated_at = now;
    Ok(next)
}

/// DeleteTask needs a Resolving task; upstream's error names Resolving as the target.
pub fn check_delete(task: &Task) -> Result<(), BbsError> {
    let from = state(task);
    if from == State::Resolving {
        Ok(())
    } else {
        Err(transition_error(from, State::Resolving))
    }
}

/// A Resolving task whose callback was not delivered goes back to Completed, keeping its
/// `updated_at`, so the next sweep hands it to the callback pool again.
pub fn demote_resolving(task: &Task) -> Option<Task> {
    if state(task) != State::Resolving {
        return None;
    }
    let mut next = task.clone();
    next.state = State::Completed as i32;
    Some(next)
}

/// What a periodic sweep owes a task, given how long callbacks may take (`kick`).
#[derive(Debug, PartialEq, Eq)]
pub enum SweepAction {
    Nothing,
    /// A Completed task with a callback, untouched for longer than `kick`: deliver it.
    Deliver,
    /// A Resolving task stuck for longer than `kick`: put it back to Completed, then deliver.
    DemoteAndDeliver,
}

/// At start-up (`startup`) every owed callback is due, since no delivery is in flight. A
/// Resolving task is demoted only once it has been resolving for longer than `kick`, start-up
/// or not, as upstream's convergence does: a client that resolved a task (one with no
/// callback) a moment before a restart must still be able to delete it.
pub fn sweep_action(task: &Task, now: Nanos, kick: Nanos, startup: bool) -> SweepAction {
    let stale = task.updated_at < now.saturating_sub(kick);
    match state(task) {
        State::Completed if (startup || stale) && wants_callback(task) => SweepAction::Deliver,
        State::Resolving if stale => SweepAction::DemoteAndDeliver,
        _ => SweepAction::Nothing,
    }
}

/// Whether a finished task has a callback to deliver.
pub fn wants_callback(task: &Task) -> bool {
    task.task_definition
        .as_ref()
        .is_some_and(|d| !d.completion_callback_url.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Nanos = 1_000;
    const T1: Nanos = 2_000;

    fn task_in(state: State, cell: &str) -> Task {
        let mut task = desired("t1".into(), "d".into(), Default::default(), T0);
        task.state = state as i32;
        task.cell_id = cell.into();
        task
    }

    fn transition(from: &str, to: &str) -> BbsError {
        BbsError::InvalidStateTransition {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn the_generic_transition_table() {
        use State::*;
        let all = [Invalid, Pending, Running, Completed, Resolving];
        for from in all {
            for to in all {
                let allowed = matches!(
                    (from, to),
                    (Pending, Running) | (Running, Completed) | (Completed, Resolving)
                );
                assert_eq!(
                    check_transition(from, to).is_ok(),
                    allowed,
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert_eq!(
            check_transition(Pending, Completed)
                .unwrap_err()
                .to_string(),
            "Cannot transition from Pending to Completed"
        );
    }

    #[test]
    fn desire_makes_a_pending_task() {
        let task = desired("g".into(), "d".into(), Default::default(), T0);
        assert_eq!(state(&task), State::Pending);
        assert_eq!(
            (task.created_at, task.updated_at, task.first_completed_at),
            (T0, T0, 0)
        );
    }

    #[test]
    fn start_pending_runs_it_on_the_cell() {
        let Start::Started(next) = start(&task_in(State::Pending, ""), "cell-1", T1).unwrap()
        else {
            panic!("should start")
        };
        assert_eq!(state(&next), State::Running);
        assert_eq!(next.cell_id, "cell-1");
        assert_eq!(next.updated_at, T1);
    }

    #[test]
    fn start_is_idempotent_on_the_same_cell_only() {
        let running = task_in(State::Running, "cell-1");
        assert_eq!(
            start(&running, "cell-1", T1).unwrap(),
            Start::AlreadyRunning
        );
        assert_eq!(
            start(&running, "cell-2", T1).unwrap_err(),
            transition("Running", "Running")
        );
    }

    #[test]
    fn start_refuses_finished_tasks() {
        for (s, name) in [
            (State::Completed, "Completed"),
            (State::Resolving, "Resolving"),
        ] {
            assert_eq!(
                start(&task_in(s, ""), "c", T1).unwrap_err(),
                transition(name, "Running")
            );
        }
    }

    #[test]
    fn cancel_completes_pending_and_running_tasks_as_failed() {
        for s in [State::Pending, State::Running] {
            let next = cancel(&task_in(s, "cell-1"), T1).unwrap();
            assert_eq!(state(&next), State::Completed);
            assert!(next.failed);
            assert_eq!(next.failure_reason, "task was cancelled");
            assert_eq!(next.cell_id, "");
            assert_eq!((next.first_completed_at, next.updated_at), (T1, T1));
        }
    }

    #[test]
    fn cancel_refuses_finished_tasks() {
        assert_eq!(
            cancel(&task_in(State::Completed, ""), T1).unwrap_err(),
            transition("Completed", "Completed")
        );
        assert_eq!(
            cancel(&task_in(State::Resolving, ""), T1).unwrap_err(),
            transition("Resolving", "Completed")
        );
    }

    #[test]
    fn fail_records_the_reason() {
        let next = fail(&task_in(State::Running, "c"), "boom", T1).unwrap();
        assert_eq!((next.failed, next.failure_reason.as_str()), (true, "boom"));
        assert!(fail(&task_in(State::Resolving, ""), "x", T1).is_err());
    }

    #[test]
    fn reject_returns_to_pending_until_retries_run_out() {
        let mut task = task_in(State::Running, "cell-1");
        for n in 1..=3 {
            task = reject(&task, "no room", 3, T1).unwrap();
            assert_eq!(state(&task), State::Pending, "rejection {n}");
            assert_eq!(task.rejection_count, n);
            assert_eq!(
                task.cell_id, "cell-1",
                "reject leaves cell_id as upstream does"
            );
        }
        let failed = reject(&task, "still no room", 3, T1).unwrap();
        assert_eq!(state(&failed), State::Completed);
        assert!(failed.failed);
        assert_eq!(failed.failure_reason, "still no room");
        assert_eq!(failed.rejection_count, 4);
    }

    #[test]
    fn reject_with_no_retries_fails_at_once() {
        let failed = reject(&task_in(State::Pending, ""), "nope", 0, T1).unwrap();
        assert_eq!(state(&failed), State::Completed);
    }

    #[test]
    fn reject_refuses_finished_tasks_as_invalid_request() {
        assert!(matches!(
            reject(&task_in(State::Completed, ""), "x", 3, T1),
            Err(BbsError::InvalidRequest(_))
        ));
    }

    #[test]
    fn complete_needs_running_on_the_same_cell() {
        let running = task_in(State::Running, "cell-1");
        let next = complete(&running, "cell-1", false, "", "42", T1).unwrap();
        assert_eq!(state(&next), State::Completed);
        assert_eq!((next.result.as_str(), next.cell_id.as_str()), ("42", ""));
        assert_eq!(next.first_completed_at, T1);
        assert_eq!(
            complete(&running, "cell-2", false, "", "", T1).unwrap_err(),
            BbsError::RunningOnDifferentCell {
                actual: "cell-1".into(),
                requested: "cell-2".into()
            }
        );
        assert_eq!(
            complete(&task_in(State::Pending, ""), "c", false, "", "", T1).unwrap_err(),
            transition("Pending", "Completed")
        );
    }

    #[test]
    fn resolving_needs_completed() {
        assert_eq!(
            state(&resolving(&task_in(State::Completed, ""), T1).unwrap()),
            State::Resolving
        );
        assert_eq!(
            resolving(&task_in(State::Running, "c"), T1).unwrap_err(),
            transition("Running", "Resolving")
        );
    }

    #[test]
    fn delete_needs_resolving() {
        assert!(check_delete(&task_in(State::Resolving, "")).is_ok());
        assert_eq!(
            check_delete(&task_in(State::Completed, "")).unwrap_err(),
            transition("Completed", "Resolving")
        );
    }

    #[test]
    fn sweeps_deliver_stale_callbacks_and_demote_stuck_resolving_tasks() {
        let mut done = task_in(State::Completed, "");
        done.task_definition = Some(bbs_models::TaskDefinition {
            completion_callback_url: "http://cb".into(),
            ..Default::default()
        });
        done.updated_at = T0;
        assert_eq!(sweep_action(&done, T0 + 5, 10, false), SweepAction::Nothing);
        assert_eq!(
            sweep_action(&done, T0 + 11, 10, false),
            SweepAction::Deliver
        );
        assert_eq!(sweep_action(&done, T0, 10, true), SweepAction::Deliver);
        let no_callback = task_in(State::Completed, "");
        assert_eq!(
            sweep_action(&no_callback, T1 * 10, 10, true),
            SweepAction::Nothing
        );
        let mut stuck = done.clone();
        stuck.state = State::Resolving as i32;
        assert_eq!(
            sweep_action(&stuck, T0 + 11, 10, false),
            SweepAction::DemoteAndDeliver
        );
        // Found by tests/crash.rs: a task resolved just before a restart stays Resolving.
        assert_eq!(sweep_action(&stuck, T0 + 5, 10, true), SweepAction::Nothing);
        assert_eq!(
            sweep_action(&stuck, T0 + 11, 10, true),
            SweepAction::DemoteAndDeliver
        );
        let demoted = demote_resolving(&stuck).unwrap();
        assert_eq!(
            (state(&demoted), demoted.updated_at),
            (State::Completed, T0)
        );
        assert_eq!(demote_resolving(&done), None);
        assert_eq!(
            sweep_action(&task_in(State::Running, "c"), T1 * 100, 1, true),
            SweepAction::Nothing
        );
    }

    #[test]
    fn truncation_matches_upstream() {
        assert_eq!(truncate("short", 1024), "short");
        let exact = "x".repeat(1024);
        let cut = truncate(&exact, 1024);
        assert_eq!(cut.len(), 1024);
        assert!(cut.ends_with("(truncated)"));
        assert_eq!(truncate(&"x".repeat(1023), 1024).len(), 1023);
        // Never splits a character.
        let wide = "é".repeat(600);
        assert!(truncate(&wide, 1024).ends_with("(truncated)"));
    }
}
