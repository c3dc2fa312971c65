//! The desired LRPs' reads outside the DesiredLRPActor's mailbox: nsync's and the route
//! emitters' bulk reads copy pointers under the read lock and sort after releasing it, so a
//! push storm queued in the mailbox does not delay them.

use std::sync::Arc;

use bbs_models as m;
use bbs_store::DesiredLrpFilter;

use crate::rules::desired_lrps::DesiredEntry;
use crate::shared_map::SharedMap;

/// Every desired LRP by process guid. An entry is a few shared pointers (scheduling info,
/// packed run info, metric tags), so copying one is cheap.
pub type DesiredTable = SharedMap<DesiredEntry>;

fn matches(entry: &DesiredEntry, filter: &DesiredLrpFilter) -> bool {
    filter.domain.as_ref().is_none_or(|d| d == entry.domain())
        && filter
            .process_guids
            .as_ref()
            .is_none_or(|guids| guids.iter().any(|g| g == entry.process_guid()))
}

fn guid_of(info: &m::DesiredLrpSchedulingInfo) -> &str {
    info.desired_lrp_key
        .as_ref()
        .map_or("", |k| k.process_guid.as_str())
}

impl SharedMap<DesiredEntry> {
    /// The entries matching `filter`, by process guid; `app_guids` match as process guid
    /// prefixes, OR-ed (empty: all).
    pub fn list(&self, filter: &DesiredLrpFilter, app_guids: &[String]) -> Vec<DesiredEntry> {
        let mut out: Vec<DesiredEntry> = self
            .read()
            .values()
            .filter(|e| matches(e, filter))
            .filter(|e| {
                app_guids.is_empty()
                    || app_guids
                        .iter()
                        .any(|a| e.process_guid().starts_with(a.as_str()))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.process_guid().cmp(b.process_guid()));
        out
    }

    /// The scheduling infos matching `filter`, by process guid (shared, not copied).
    pub fn scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Vec<Arc<m::DesiredLrpSchedulingInfo>> {
        let mut out: Vec<Arc<m::DesiredLrpSchedulingInfo>> = self
            .read()
            .values()
            .filter(|e| matches(e, filter))
            .map(|e| Arc::clone(&e.scheduling))
            .collect();
        out.sort_by(|a, b| guid_of(a).cmp(guid_of(b)));
        out
    }
}
