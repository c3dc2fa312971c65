//! Upstream's route table (bbs-reference §1.4): every path, method and message pair, once.

use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, Handler, HttpResponse, Resource, Responder};

use super::{cells, evacuation, events, handlers, lrps, tasks};

/// One row of the route table.
#[derive(Clone, Copy, Debug)]
pub struct RouteInfo {
    /// Upstream's rata route name.
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
}

/// A resource answering `method` (GET also answers HEAD), and 405 with `Allow` otherwise.
fn resource<F, Args>(path: &'static str, method: Method, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let allow: &'static str = if method == Method::GET {
        "GET, HEAD"
    } else {
        "POST"
    };
    let mut resource = web::resource(path).route(web::method(method.clone()).to(handler.clone()));
    if method == Method::GET {
        resource = resource.route(web::head().to(handler));
    }
    resource.default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, allow))
            .content_type("text/plain; charset=utf-8")
            .body("Method Not Allowed\n")
    }))
}

macro_rules! route_table {
    ($( $name:literal $method:ident $path:literal => $handler:expr; )*) => {
        /// Every route the server answers.
        pub const ROUTES: &[RouteInfo] = &[
            $( RouteInfo { name: $name, method: stringify!($method), path: $path }, )*
        ];

        pub fn configure(cfg: &mut web::ServiceConfig) {
            $( cfg.service(resource($path, Method::$method, $handler)); )*
        }
    };
}

route_table! {
    "Ping" POST "/v1/ping" => handlers::ping;
    "Domains" POST "/v1/domains/list" => handlers::domains;
    "UpsertDomain" POST "/v1/domains/upsert" => handlers::upsert_domain;

    "ActualLRPs" POST "/v1/actual_lrps/list" => lrps::list_actual;
    "ActualLRPsByProcessGuids" POST "/v1/actual_lrps/list_by_process_guids" => lrps::list_actual_by_process_guids;
    "ActualLRPGroups" POST "/v1/actual_lrp_groups/list" => lrps::groups;
    "ActualLRPGroupsByProcessGuid" POST "/v1/actual_lrp_groups/list_by_process_guid" => lrps::groups_by_process_guid;
    "ActualLRPGroupsByProcessGuidAndIndex" POST "/v1/actual_lrp_groups/get_by_process_guid_and_index" => lrps::group_by_process_guid_and_index;
    "ClaimActualLRP" POST "/v1/actual_lrps/claim" => lrps::claim;
    "StartActualLRP" POST "/v1/actual_lrps/start.r1" => lrps::start;
    "StartActualLRP_r0" POST "/v1/actual_lrps/start" => lrps::start_r0;
    "CrashActualLRP" POST "/v1/actual_lrps/crash" => lrps::crash;
    "FailActualLRP" POST "/v1/actual_lrps/fail" => lrps::fail;
    "RemoveActualLRP" POST "/v1/actual_lrps/remove" => lrps::remove_actual;
    "RetireActualLRP" POST "/v1/actual_lrps/retire" => lrps::retire;
    "RemoveEvacuatingActualLRP" POST "/v1/actual_lrps/remove_evacuating" => evacuation::remove_evacuating;
    "EvacuateClaimedActualLRP" POST "/v1/actual_lrps/evacuate_claimed" => evacuation::claimed;
    "EvacuateCrashedActualLRP" POST "/v1/actual_lrps/evacuate_crashed" => evacuation::crashed;
    "EvacuateStoppedActualLRP" POST "/v1/actual_lrps/evacuate_stopped" => evacuation::stopped;
    "EvacuateRunningActualLRP" POST "/v1/actual_lrps/evacuate_running.r1" => evacuation::running;
    "EvacuateRunningActualLRP_r0" POST "/v1/actual_lrps/evacuate_running" => evacuation::running_r0;

    "DesiredLRPSchedulingInfos" POST "/v1/desired_lrp_scheduling_infos/list" => lrps::scheduling_infos;
    "DesiredLRPSchedulingInfoByProcessGuid" POST "/v1/desired_lrp_scheduling_infos/get_by_process_guid" => lrps::scheduling_info;
    "DesiredLRPRoutingInfos" POST "/v1/desired_lrp_routing_infos/list" => lrps::routing_infos;
    "DesiredLRPs" POST "/v1/desired_lrps/list.r3" => lrps::list;
    "DesiredLRPByProcessGuid" POST "/v1/desired_lrps/get_by_process_guid.r3" => lrps::get;
    "DesiredLRPs_r2" POST "/v1/desired_lrps/list.r2" => lrps::list_r2;
    "DesiredLRPByProcessGuid_r2" POST "/v1/desired_lrps/get_by_process_guid.r2" => lrps::get_r2;
    "DesireDesiredLRP" POST "/v1/desired_lrp/desire.r2" => lrps::desire;
    "UpdateDesireLRP" POST "/v1/desired_lrp/update" => lrps::update;
    "RemoveDesiredLRP" POST "/v1/desired_lrp/remove" => lrps::remove;

    "Tasks" POST "/v1/tasks/list.r3" => tasks::list;
    "TaskByGuid" POST "/v1/tasks/get_by_task_guid.r3" => tasks::get;
    "Tasks_r2" POST "/v1/tasks/list.r2" => tasks::list_r2;
    "TaskByGuid_r2" POST "/v1/tasks/get_by_task_guid.r2" => tasks::get_r2;
    "DesireTask" POST "/v1/tasks/desire.r2" => tasks::desire;
    "StartTask" POST "/v1/tasks/start" => tasks::start;
    "CancelTask" POST "/v1/tasks/cancel" => tasks::cancel;
    "FailTask" POST "/v1/tasks/fail" => tasks::fail;
    "RejectTask" POST "/v1/tasks/reject" => tasks::reject;
    "CompleteTask" POST "/v1/tasks/complete" => tasks::complete;
    "ResolvingTask" POST "/v1/tasks/resolving" => tasks::resolving;
    "DeleteTask" POST "/v1/tasks/delete" => tasks::delete;

    "EventStream" GET "/v1/events.r1" => events::lrp_groups;
    "TaskEventStream" POST "/v1/events/tasks.r1" => events::tasks;
    "LRPInstanceEventStream" POST "/v1/events/lrp_instances.r1" => events::lrp_instances;
    "EventStream_r0" GET "/v1/events" => events::lrp_groups_r0;
    "TaskEventStream_r0" POST "/v1/events/tasks" => events::tasks_r0;
    "LrpInstanceEventStream_r0" POST "/v1/events/lrp_instances" => events::lrp_instances_r0;

    "Cells" POST "/v1/cells/list.r1" => cells::list;
    // Not upstream: reps register here until this BBS speaks locket (docs/cells.md).
    "RegisterCell" POST "/v1/cells/register" => cells::register;
}
