//! An instance-event subscriber, as a route emitter holds one: it matches the state changes
//! the rep loops cause to their events and records the lag from request to event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use bbs_models as m;
use futures::StreamExt;
use prost::Message;

use crate::client::{routes, BbsClient};
use crate::recorder::Recorder;

/// Changes the rep loops expect to see, by instance guid: (state after, when it was sent).
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<(String, &'static str), Instant>>,
    pub expected: AtomicU64,
    pub received: AtomicU64,
}

impl Expectations {
    /// Called before the request goes out: its event may arrive before its answer.
    pub fn expect(&self, instance_guid: &str, state: &'static str) {
        self.expected.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert((instance_guid.to_owned(), state), Instant::now());
    }

    /// The request failed, so no event is owed.
    pub fn cancel(&self, instance_guid: &str, state: &'static str) {
        if self
            .lock()
            .remove(&(instance_guid.to_owned(), state))
            .is_some()
        {
            self.expected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn seen(&self, instance_guid: &str, state: &str, recorder: &Recorder) {
        let state: &'static str = match state {
            "RUNNING" => "RUNNING",
            "CLAIMED" => "CLAIMED",
            _ => return,
        };
        if let Some(sent) = self.lock().remove(&(instance_guid.to_owned(), state)) {
            recorder.record("event_lag", sent.elapsed());
            self.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn outstanding(&self) -> u64 {
        self.lock().len() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, &'static str), Instant>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens the stream and answers once it is subscribed; the reading goes on in a task.
pub async fn subscribe(
    client: &BbsClient,
    expectations: Arc<Expectations>,
    recorder: Arc<Recorder>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    // The API client's timeout covers whole bodies, so the stream gets a client of its own.
    let http = client.streaming_client().map_err(|e| e.to_string())?;
    let response = http
        .post(client.url(routes::INSTANCE_EVENTS))
        .header("Content-Type", "application/x-protobuf")
        .body(m::EventsByCellId::default().encode_to_vec())
        .send()
        .await
        .map_err(|e| format!("subscribing to instance events: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "subscribing to instance events: HTTP {}",
            response.status()
        ));
    }
    let mut body = response.bytes_stream();
    Ok(tokio::spawn(async move {
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                recorder.fail("the instance event stream broke".into());
                return;
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                handle_frame(&frame, &expectations, &recorder);
            }
        }
    }))
}

fn handle_frame(frame: &[u8], expectations: &Expectations, recorder: &Recorder) {
    let text = String::from_utf8_lossy(frame);
    let mut event = "";
    let mut data = "";
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event: ") {
            event = v;
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = v;
        }
    }
    if event != "actual_lrp_instance_changed" {
        return;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()
        .and_then(|bytes| m::ActualLrpInstanceChangedEvent::decode(bytes.as_slice()).ok());
    let Some(changed) = decoded else {
        recorder.fail("an undecodable actual_lrp_instance_changed event".into());
        return;
    };
    let guid = changed
        .actual_lrp_instance_key
        .as_ref()
        .map_or("", |k| k.instance_guid.as_str());
    let state = changed.after.as_ref().map_or("", |a| a.state.as_str());
    expectations.seen(guid, state, recorder);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(guid: &str, state: &str) -> Vec<u8> {
        let event = m::ActualLrpInstanceChangedEvent {
            actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
                instance_guid: guid.into(),
                cell_id: "cell-0".into(),
            }),
            after: Some(m::ActualLrpInfo {
                state: state.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let data = base64::engine::general_purpose::STANDARD.encode(event.encode_to_vec());
        format!("id: 1\nevent: actual_lrp_instance_changed\ndata: {data}\n\n").into_bytes()
    }

    #[test]
    fn an_expected_change_is_matched_once_and_its_lag_recorded() {
        let (expectations, recorder) = (Expectations::default(), Recorder::default());
        expectations.expect("g-i", "CLAIMED");
        // Another state of the same instance does not count.
        handle_frame(&frame("g-i", "RUNNING"), &expectations, &recorder);
        assert_eq!(expectations.outstanding(), 1);
        handle_frame(&frame("g-i", "CLAIMED"), &expectations, &recorder);
        handle_frame(&frame("g-i", "CLAIMED"), &expectations, &recorder);
        assert_eq!(expectations.received.load(Ordering::Relaxed), 1);
        assert_eq!(expectations.outstanding(), 0);
        let (ops, failures) = recorder.take();
        assert_eq!(ops["event_lag"].histogram.len(), 1);
        assert!(failures.is_empty());
    }

    #[test]
    fn a_cancelled_expectation_is_no_longer_owed() {
        let expectations = Expectations::default();
        expectations.expect("g-i", "RUNNING");
        expectations.cancel("g-i", "RUNNING");
        expectations.cancel("g-i", "RUNNING");
        assert_eq!(expectations.expected.load(Ordering::Relaxed), 0);
        assert_eq!(expectations.outstanding(), 0);
    }

    #[test]
    fn an_undecodable_event_fails_the_run_and_others_are_ignored() {
        let (expectations, recorder) = (Expectations::default(), Recorder::default());
        handle_frame(
            b"event: actual_lrp_instance_changed\ndata: !!!\n\n",
            &expectations,
            &recorder,
        );
        handle_frame(
            b"event: desired_lrp_created\ndata: xx\n\n",
            &expectations,
            &recorder,
        );
        let (_, failures) = recorder.take();
        assert_eq!(
            failures,
            ["an undecodable actual_lrp_instance_changed event"]
        );
    }
}
