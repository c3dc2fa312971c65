//! The desired LRPs' reads outside the DesiredLRPActor's mailbox: nsync's and the route
//! emitters' bulk reads copy pointers under the read lock and sort after releasing it, so a
//! push storm queued in the mailbox does not delay them.

use std::collections::HashMap;
use std::sync::Arc;

use bbs_models as m;
use bbs_store::DesiredLrpFilter;

use crate::rules::desired_lrps::DesiredEntry;
use crate::shared_map::SharedMap;

/// Every desired LRP by process guid. An entry is a few shared pointers (scheduling info,
/// packed run info, metric tags), so copying one is cheap.
pub type DesiredTable = SharedMap<DesiredEntry>;

/// The entries `filter` selects, found through the map where it names process guids (so a
/// read of a few LRPs does not scan them all under the lock). A guid named twice is found
/// twice; callers sort and drop repeats.
fn selected<'m>(
    entries: &'m HashMap<String, DesiredEntry>,
    filter: &'m DesiredLrpFilter,
) -> Box<dyn Iterator<Item = &'m DesiredEntry> + 'm> {
    let in_domain = move |e: &&DesiredEntry| filter.domain.as_ref().is_none_or(|d| d == e.domain());
    match &filter.process_guids {
        Some(guids) => Box::new(
            guids
                .iter()
                .filter_map(|g| entries.get(g))
                .filter(in_domain),
        ),
        None => Box::new(entries.values().filter(in_domain)),
    }
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
        let mut out: Vec<DesiredEntry> = selected(&self.read(), filter)
            .filter(|e| {
                app_guids.is_empty()
                    || app_guids
                        .iter()
                        .any(|a| e.process_guid().starts_with(a.as_str()))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.process_guid().cmp(b.process_guid()));
        out.dedup_by(|a, b| a.process_guid() == b.process_guid());
        out
    }

    /// The scheduling infos matching `filter`, by process guid (shared, not copied).
    pub fn scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> Vec<Arc<m::DesiredLrpSchedulingInfo>> {
        let mut out: Vec<Arc<m::DesiredLrpSchedulingInfo>> = selected(&self.read(), filter)
            .map(|e| Arc::clone(&e.scheduling))
            .collect();
        out.sort_by(|a, b| guid_of(a).cmp(guid_of(b)));
        out.dedup_by(|a, b| guid_of(a) == guid_of(b));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::desired_lrps::split;

    fn table(lrps: &[(&str, &str)]) -> DesiredTable {
        let entries = lrps
            .iter()
            .map(|(guid, domain)| {
                let lrp = m::DesiredLrp {
                    process_guid: guid.to_string(),
                    domain: domain.to_string(),
                    instances: 1,
                    ..Default::default()
                };
                (guid.to_string(), split(&lrp, "epoch".into(), 0))
            })
            .collect();
        DesiredTable::new(entries)
    }

    fn guids(filter: &DesiredLrpFilter, app_guids: &[String], table: &DesiredTable) -> Vec<String> {
        let listed: Vec<String> = table
            .list(filter, app_guids)
            .iter()
            .map(|e| e.process_guid().to_owned())
            .collect();
        let infos: Vec<String> = table
            .scheduling_infos(filter)
            .iter()
            .map(|i| guid_of(i).to_owned())
            .collect();
        if app_guids.is_empty() {
            assert_eq!(listed, infos, "list and scheduling infos select alike");
        }
        listed
    }

    #[test]
    fn filters_select_by_guid_and_domain_each_lrp_once_in_guid_order() {
        let t = table(&[("c", "cf"), ("a", "cf"), ("b", "other"), ("a-2", "cf")]);
        let all = DesiredLrpFilter::default();
        assert_eq!(guids(&all, &[], &t), ["a", "a-2", "b", "c"]);
        let cf = DesiredLrpFilter {
            domain: Some("cf".into()),
            ..Default::default()
        };
        assert_eq!(guids(&cf, &[], &t), ["a", "a-2", "c"]);
        // Named twice, listed once; an unknown guid is left out.
        let named = DesiredLrpFilter {
            process_guids: Some(vec!["c".into(), "b".into(), "c".into(), "zz".into()]),
            ..Default::default()
        };
        assert_eq!(guids(&named, &[], &t), ["b", "c"]);
        let named_in_cf = DesiredLrpFilter {
            domain: Some("cf".into()),
            ..named.clone()
        };
        assert_eq!(guids(&named_in_cf, &[], &t), ["c"]);
        // App guids match as prefixes.
        assert_eq!(guids(&all, &["a".into()], &t), ["a", "a-2"]);
        let none = DesiredLrpFilter {
            process_guids: Some(vec![]),
            ..Default::default()
        };
        assert!(guids(&none, &[], &t).is_empty());
    }
}
