//! Every request body the API reads, with the check upstream's `Validate()` makes on it,
//! listed once. A route reads its body only through [`parse`], so a message type a route
//! uses must appear here; the fuzzer drives [`ALL`], the same list, and so reaches every
//! decoder and check a client can reach.

use bbs_models as m;
use prost::Message;

use super::validation::{self, Violations};
use crate::error::{BbsError, BbsResult};

/// A request message and upstream's check on it, made before any actor sees the request.
pub trait ValidRequest: Message + Default {
    fn validate(&self) -> BbsResult<()>;
}

/// Decodes and checks a request body. A body that is not the message is upstream's
/// InvalidRequest with its fixed text; a message that fails its check names the fields.
pub fn parse<M: ValidRequest>(body: &[u8]) -> BbsResult<M> {
    let request = M::decode(body)
        .map_err(|_| BbsError::InvalidRequest("the request received is invalid".into()))?;
    request.validate()?;
    Ok(request)
}

/// A parser that keeps only the outcome, for the list of every request type.
pub type Check = fn(&[u8]) -> BbsResult<()>;

macro_rules! requests {
    ($( $ty:ident => |$r:ident| $check:expr; )*) => {
        $(
            impl ValidRequest for m::$ty {
                fn validate(&self) -> BbsResult<()> {
                    #[allow(unused_variables)]
                    let $r = self;
                    $check
                }
            }
        )*

        /// Every request type the API reads, by name, with its parser.
        pub const ALL: &[(&str, Check)] = &[
            $( (stringify!($ty), |body| parse::<m::$ty>(body).map(drop)), )*
        ];
    };
}

fn key_and_instance(
    key: Option<&m::ActualLrpKey>,
    instance: Option<&m::ActualLrpInstanceKey>,
) -> Violations {
    let mut v = Violations::default();
    validation::actual_key(key, &mut v);
    validation::instance_key(instance, &mut v);
    v
}

fn net_info_with_address(net_info: Option<&m::ActualLrpNetInfo>, v: &mut Violations) {
    match net_info {
        None => v.field("actual_lrp_net_info"),
        Some(n) if n.address.is_empty() => v.field("address"),
        Some(_) => {}
    }
}

requests! {
    // Domains and cells.
    UpsertDomainRequest => |r| if r.domain.is_empty() {
        Err(BbsError::invalid_fields(["domain"]))
    } else {
        Ok(())
    };
    RegisterCellRequest => |r| {
        let mut v = Violations::default();
        match &r.cell_presence {
            None => v.field("cell_presence"),
            Some(p) if p.cell_id.is_empty() => v.field("cell_id"),
            Some(_) => {}
        }
        if r.ttl_seconds == 0 {
            v.field("ttl_seconds");
        }
        v.into_result()
    };
    EventsByCellId => |r| Ok(());

    // Desired LRPs.
    DesireLrpRequest => |r| validation::desire_lrp(r);
    UpdateDesiredLrpRequest => |r| validation::update_desired_lrp(r);
    RemoveDesiredLrpRequest => |r| validation::process_guid_present(&r.process_guid);
    DesiredLrpsRequest => |r| Ok(());
    DesiredLrpByProcessGuidRequest => |r| validation::process_guid_present(&r.process_guid);

    // Actual LRPs.
    ActualLrpsRequest => |r| Ok(());
    ActualLrpsByProcessGuidsRequest => |r| validation::actual_lrps_by_process_guids(r);
    ActualLrpGroupsRequest => |r| Ok(());
    ActualLrpGroupsByProcessGuidRequest => |r| validation::process_guid_present(&r.process_guid);
    ActualLrpGroupByProcessGuidAndIndexRequest =>
        |r| validation::guid_and_index(&r.process_guid, r.index);
    ClaimActualLrpRequest => |r| validation::claim_actual_lrp(r);
    StartActualLrpRequest => |r| validation::start_actual_lrp(r);
    CrashActualLrpRequest => |r| validation::crash_actual_lrp(r);
    FailActualLrpRequest => |r| validation::fail_actual_lrp(r);
    RemoveActualLrpRequest => |r| validation::guid_and_index(&r.process_guid, r.index);
    RetireActualLrpRequest => |r| validation::retire_actual_lrp(r);

    // Evacuation.
    RemoveEvacuatingActualLrpRequest => |r| key_and_instance(
        r.actual_lrp_key.as_ref(),
        r.actual_lrp_instance_key.as_ref(),
    )
    .into_result();
    EvacuateClaimedActualLrpRequest => |r| key_and_instance(
        r.actual_lrp_key.as_ref(),
        r.actual_lrp_instance_key.as_ref(),
    )
    .into_result();
    EvacuateCrashedActualLrpRequest => |r| {
        let mut v = key_and_instance(r.actual_lrp_key.as_ref(), r.actual_lrp_instance_key.as_ref());
        if r.error_message.is_empty() {
            v.field("error_message");
        }
        v.into_result()
    };
    EvacuateStoppedActualLrpRequest => |r| key_and_instance(
        r.actual_lrp_key.as_ref(),
        r.actual_lrp_instance_key.as_ref(),
    )
    .into_result();
    EvacuateRunningActualLrpRequest => |r| {
        let mut v = key_and_instance(r.actual_lrp_key.as_ref(), r.actual_lrp_instance_key.as_ref());
        net_info_with_address(r.actual_lrp_net_info.as_ref(), &mut v);
        v.into_result()
    };

    // Tasks.
    DesireTaskRequest => |r| validation::desire_task(r);
    StartTaskRequest => |r| validation::task_guid_and_cell(&r.task_guid, &r.cell_id);
    TaskGuidRequest => |r| validation::task_guid_present(&r.task_guid);
    FailTaskRequest => |r| validation::task_guid_and_reason(&r.task_guid, &r.failure_reason);
    RejectTaskRequest => |r| validation::task_guid_and_reason(&r.task_guid, &r.rejection_reason);
    CompleteTaskRequest => |r| validation::task_guid_and_cell(&r.task_guid, &r.cell_id);
    TasksRequest => |r| Ok(());
    TaskByGuidRequest => |r| validation::task_guid_present(&r.task_guid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_the_message_is_upstreams_invalid_request() {
        let error = parse::<m::TaskGuidRequest>(&[0xff]).unwrap_err();
        assert_eq!(
            error,
            BbsError::InvalidRequest("the request received is invalid".into())
        );
    }

    #[test]
    fn a_message_failing_its_check_names_the_fields() {
        let body = m::EvacuateRunningActualLrpRequest::default().encode_to_vec();
        let error = parse::<m::EvacuateRunningActualLrpRequest>(&body).unwrap_err();
        assert_eq!(
            error,
            BbsError::InvalidRequest(
                "Invalid field: actual_lrp_key, Invalid field: actual_lrp_instance_key, \
                 Invalid field: actual_lrp_net_info"
                    .into()
            )
        );
    }

    #[test]
    fn every_type_is_listed_once() {
        let mut names: Vec<&str> = ALL.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
