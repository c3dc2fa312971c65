//! The BBS's other bulk readers, each once per trial beside the rep loops: nsync's fetch of
//! every scheduling info, a global route emitter's fetch of every actual LRP and scheduling
//! info, and the cell list.

use std::time::Instant;

use bbs_models as m;

use crate::client::{routes, BbsClient};
use crate::recorder::Recorder;
use crate::workload::World;

pub async fn poll_once(client: &BbsClient, world: World, recorder: &Recorder) {
    tokio::join!(
        nsync(client, world, recorder),
        route_emitter(client, world, recorder),
        cells(client, world, recorder),
    );
}

async fn scheduling_infos(
    client: &BbsClient,
    op: &'static str,
    recorder: &Recorder,
) -> Option<usize> {
    recorder
        .time(
            op,
            client.call::<_, m::DesiredLrpSchedulingInfosResponse>(
                routes::SCHEDULING_INFOS,
                &m::DesiredLrpsRequest::default(),
            ),
        )
        .await
        .ok()
        .map(|a| a.desired_lrp_scheduling_infos.len())
}

fn check(recorder: &Recorder, what: &str, got: Option<usize>, want: usize) {
    if let Some(got) = got {
        if got != want {
            recorder.fail(format!("{what}: {got} records, expected {want}"));
        }
    }
}

async fn nsync(client: &BbsClient, world: World, recorder: &Recorder) {
    let got = scheduling_infos(client, "nsync_fetch_scheduling_infos", recorder).await;
    check(recorder, "nsync scheduling infos", got, world.lrps);
}

async fn route_emitter(client: &BbsClient, world: World, recorder: &Recorder) {
    let started = Instant::now();
    let actuals = recorder
        .time(
            "route_emitter_fetch_actual_lrps",
            client.call::<_, m::ActualLrpsResponse>(
                routes::ACTUAL_LRPS,
                &m::ActualLrpsRequest::default(),
            ),
        )
        .await
        .ok()
        .map(|a| a.actual_lrps.len());
    let infos = scheduling_infos(client, "route_emitter_fetch_scheduling_infos", recorder).await;
    if actuals.is_some() && infos.is_some() {
        recorder.record("route_emitter_fetch_all", started.elapsed());
    }
    check(recorder, "route emitter actual LRPs", actuals, world.lrps);
    check(
        recorder,
        "route emitter scheduling infos",
        infos,
        world.lrps,
    );
}

async fn cells(client: &BbsClient, world: World, recorder: &Recorder) {
    let got = recorder
        .time(
            "cells_fetch",
            client.call::<_, m::CellsResponse>(routes::CELLS, &()),
        )
        .await
        .ok()
        .map(|a| a.cells.len());
    check(recorder, "cells", got, world.cells);
}
