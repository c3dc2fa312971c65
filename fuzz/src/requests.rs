//! Every request body the API and locket read. The first byte picks the message type; the
//! rest is the body, parsed exactly as the route parses it. A request that passes its check
//! is then taken as far as the pure code goes without actors: turned into the record the
//! store would keep, read back, and served in every version the routes serve.

use bbs_actors::codec::Codec;
use bbs_actors::lrp_records::{desired_from_record, desired_to_record};
use bbs_actors::rules::desired_lrps::{self, DesiredEntry};
use bbs_actors::rules::requests::{parse, ALL};
use bbs_actors::rules::{downgrade, tasks as task_rules};
use bbs_actors::tasks;
use bbs_actors::BbsError;
use bbs_locket::models::{FetchAllRequest, FetchRequest, LockRequest, ReleaseRequest};
use bbs_locket::rules as locket;
use bbs_models as m;
use prost::Message;

use crate::records::codecs;

/// Locket's four requests, after the API's.
const LOCKET: [&str; 4] = [
    "LockRequest",
    "FetchRequest",
    "ReleaseRequest",
    "FetchAllRequest",
];

/// The first byte that picks the request type `name` (an API type as `ALL` names it, or one
/// of locket's), for the seeds.
pub(crate) fn choice_of(name: &str) -> usize {
    ALL.iter()
        .map(|(n, _)| *n)
        .chain(LOCKET)
        .position(|n| n == name)
        .expect("a request type the fuzzer knows")
}

pub fn requests(data: &[u8]) {
    let Some((choice, body)) = super::pick(data, ALL.len() + LOCKET.len()) else {
        return;
    };
    let Some((name, check)) = ALL.get(choice) else {
        return locket_request(LOCKET[choice - ALL.len()], body);
    };
    // The three that become records parse through `parse` themselves and go further.
    match *name {
        "DesireLrpRequest" => desire_lrp(body),
        "UpdateDesiredLrpRequest" => update_lrp(body),
        "DesireTaskRequest" => desire_task(body),
        _ => {
            let _ = check(body);
        }
    }
}

/// A desired LRP that passed DesireLRP's check, stored and read back under every codec,
/// then served as each route version serves it.
fn desire_lrp(body: &[u8]) {
    let Ok(request) = parse::<m::DesireLrpRequest>(body) else {
        return;
    };
    let lrp = request.desired_lrp.unwrap_or_default();
    let entry = desired_lrps::split(&lrp, "epoch".into(), 1);
    for codec in codecs() {
        stored_and_read_back(codec, &entry);
    }
    served(&entry);
}

fn stored_and_read_back(codec: &Codec, entry: &DesiredEntry) {
    // Routes that are not JSON pass upstream's check but not its store, which answers
    // ErrBadRequest and stores nothing; so does this server.
    let record = match desired_to_record(codec, entry) {
        Ok(record) => record,
        Err(BbsError::InvalidRequest(message)) => {
            assert_eq!(message, "the request received is invalid");
            return;
        }
        Err(other) => panic!("a checked desired LRP fails to store with {other:?}"),
    };
    let read = desired_from_record(codec, &record).expect("a stored desired LRP reads back");
    assert_eq!(
        desired_lrps::rebuild(&read),
        desired_lrps::rebuild(entry),
        "a desired LRP read back differs from the one stored"
    );
}

fn served(entry: &DesiredEntry) {
    let lrp = desired_lrps::rebuild(entry);
    let _ = desired_lrps::routing_info(entry).encode_to_vec();
    let v2 = desired_lrps::to_v2(desired_lrps::populate_metrics_guid(lrp));
    let _ = downgrade::desired_v2_to_v0(v2).encode_to_vec();
    let _ = desired_lrps::internal_routes(entry.scheduling.routes.as_ref());
}

/// An update that passed UpdateDesiredLRP's check, applied to a stored desired LRP.
fn update_lrp(body: &[u8]) {
    let Ok(request) = parse::<m::UpdateDesiredLrpRequest>(body) else {
        return;
    };
    let base = desired_lrps::split(&crate::seeds::desired_lrp(), "epoch".into(), 1);
    let updated = desired_lrps::update(&base, &request.update.unwrap_or_default());
    for codec in codecs() {
        stored_and_read_back(codec, &updated.after);
    }
    served(&updated.after);
}

/// A task that passed DesireTask's check, stored and read back, then served as v2.
fn desire_task(body: &[u8]) {
    let Ok(request) = parse::<m::DesireTaskRequest>(body) else {
        return;
    };
    let task = task_rules::desired(
        request.task_guid,
        request.domain,
        request.task_definition.unwrap_or_default(),
        1,
    );
    for codec in codecs() {
        let read = tasks::from_record(codec, tasks::to_record(codec, &task))
            .expect("a stored task reads back");
        assert_eq!(read, task, "a task read back differs from the one stored");
    }
    let _ = downgrade::task_to_v2(task).encode_to_vec();
}

/// Locket's requests, checked as its service checks them before touching the table.
fn locket_request(name: &str, body: &[u8]) {
    match name {
        "LockRequest" => {
            if let Ok(request) = LockRequest::decode(body) {
                if let Ok(resource) =
                    locket::validate_lock(request.resource.as_ref(), request.ttl_in_seconds)
                {
                    let _ = locket::lock(None, resource, request.ttl_in_seconds, || "id".into());
                }
            }
        }
        "FetchRequest" => {
            let _ = FetchRequest::decode(body);
        }
        "ReleaseRequest" => {
            if let Ok(request) = ReleaseRequest::decode(body) {
                let _ = locket::release(None, &request.resource.unwrap_or_default().owner);
            }
        }
        _ => {
            if let Ok(request) = FetchAllRequest::decode(body) {
                let _ = locket::validate_type_code(request.type_code);
            }
        }
    }
}
