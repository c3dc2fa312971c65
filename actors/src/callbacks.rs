//! Task completion callbacks (bbs-reference §3.2): a bounded pool of workers claims each
//! finished task (Completed -> Resolving), POSTs it as JSON to its completion_callback_url,
//! and deletes it once the receiver has answered with anything but 503/504. Transport errors,
//! 503 and 504 are retried (upstream retries only timeouts among transport errors: retrying
//! the others is our addition); a task still undelivered after the attempts stays Resolving,
//! as upstream leaves it, until task convergence returns it to Completed and it is delivered
//! again, so a callback is never lost, only repeated.

use std::sync::Arc;

use serde::Serialize;
use slog::{debug, warn, Logger};
use tokio::sync::{mpsc, Semaphore};

use bbs_models::Task;

use crate::mailbox::Mailbox;
use crate::tasks::{DeleteTask, ResolvingTask, TaskActor};

/// Attempts per delivery; after them the task stays Resolving until convergence returns it.
pub const ATTEMPTS: usize = 3;

/// The body upstream POSTs to a completion callback URL.
#[derive(Debug, Serialize, PartialEq)]
pub struct TaskCallbackBody {
    pub task_guid: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub annotation: String,
    pub created_at: i64,
}

impl TaskCallbackBody {
    pub fn for_task(task: &Task) -> Self {
        TaskCallbackBody {
            task_guid: task.task_guid.clone(),
            failed: task.failed,
            failure_reason: task.failure_reason.clone(),
            result: task.result.clone(),
            annotation: task
                .task_definition
                .as_ref()
                .map(|d| d.annotation.clone())
                .unwrap_or_default(),
            created_at: task.created_at,
        }
    }
}

/// The sending side: task guids waiting for a worker.
#[derive(Clone)]
pub struct CallbackQueue {
    sender: mpsc::Sender<String>,
}

/// The receiving side, until workers are started.
pub struct CallbackReceiver(mpsc::Receiver<String>);

impl CallbackQueue {
    pub fn new(capacity: usize) -> (CallbackQueue, CallbackReceiver) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (CallbackQueue { sender }, CallbackReceiver(receiver))
    }

    /// Queues a task for delivery without waiting. When the queue is full the task stays
    /// Completed and is delivered on a later pass.
    pub fn submit(&self, task_guid: String, log: &Logger) {
        if let Err(e) = self.sender.try_send(task_guid) {
            metrics::counter!("bbs_task_callbacks_deferred_total").increment(1);
            warn!(log, "task-callback-deferred"; "error" => %e);
        }
    }
}

/// Starts the dispatcher: at most `workers` deliveries run at once.
pub fn start_workers(
    receiver: CallbackReceiver,
    workers: usize,
    tasks: Mailbox<TaskActor>,
    http: reqwest::Client,
    log: Logger,
) {
    let permits = Arc::new(Semaphore::new(workers.max(1)));
    let mut receiver = receiver.0;
    actix::spawn(async move {
        while let Some(guid) = receiver.recv().await {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let (tasks, http, log) = (tasks.clone(), http.clone(), log.clone());
            actix::spawn(async move {
                deliver(&guid, &tasks, &http, &log).await;
                drop(permit);
            });
        }
    });
}

enum Outcome {
    /// The receiver answered: the task is done with.
    Answered(u16),
    /// Worth another try: a transport error, 503 or 504.
    Retry(String),
}

async fn post(http: &reqwest::Client, url: &str, body: &TaskCallbackBody) -> Outcome {
    match http.post(url).json(body).send().await {
        Ok(response) => match response.status().as_u16() {
            503 | 504 => Outcome::Retry(format!("status {}", response.status().as_u16())),
            status => Outcome::Answered(status),
        },
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

async fn deliver(guid: &str, tasks: &Mailbox<TaskActor>, http: &reqwest::Client, log: &Logger) {
    metrics::counter!("bbs_task_callbacks_started_total").increment(1);
    let task = match tasks
        .call(ResolvingTask {
            guid: guid.to_owned(),
        })
        .await
    {
        Ok(Ok(task)) => task,
        // Someone else resolved it, or it is gone: nothing to deliver.
        Ok(Err(e)) | Err(e) => {
            debug!(log, "task-callback-skipped"; "task_guid" => guid, "reason" => %e);
            return;
        }
    };
    let url = task
        .task_definition
        .as_ref()
        .map(|d| d.completion_callback_url.clone())
        .unwrap_or_default();
    let body = TaskCallbackBody::for_task(&task);
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        match post(http, &url, &body).await {
            Outcome::Answered(status) => {
                metrics::counter!("bbs_task_callbacks_delivered_total").increment(1);
                debug!(log, "task-callback-delivered"; "task_guid" => guid, "status" => status, "attempt" => attempt);
                if let Ok(Err(e)) | Err(e) = tasks
                    .call(DeleteTask {
                        guid: guid.to_owned(),
                    })
                    .await
                {
                    warn!(log, "task-callback-delete-failed"; "task_guid" => guid, "error" => %e);
                }
                return;
            }
            Outcome::Retry(error) => last_error = error,
        }
    }
    metrics::counter!("bbs_task_callbacks_failed_total").increment(1);
    // Upstream leaves the task Resolving; task convergence puts it back to Completed once it
    // has been Resolving for kick_task_duration, and the callback is tried again then.
    warn!(log, "task-callback-failed"; "task_guid" => guid, "url" => &url, "error" => &last_error, "attempts" => ATTEMPTS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbs_models::TaskDefinition;

    #[test]
    fn the_body_is_upstreams_json() {
        let task = Task {
            task_guid: "t1".into(),
            failed: true,
            failure_reason: "boom".into(),
            result: "".into(),
            created_at: 123,
            task_definition: Some(TaskDefinition::default()),
            ..Default::default()
        };
        let json = serde_json::to_value(TaskCallbackBody::for_task(&task)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "task_guid": "t1", "failed": true, "failure_reason": "boom",
                "result": "", "created_at": 123
            })
        );
        let mut annotated = task.clone();
        annotated.task_definition = Some(TaskDefinition {
            annotation: "note".into(),
            ..Default::default()
        });
        let json = serde_json::to_value(TaskCallbackBody::for_task(&annotated)).unwrap();
        assert_eq!(json["annotation"], "note");
    }
}
