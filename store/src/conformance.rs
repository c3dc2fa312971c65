//! The store conformance suite: the behaviour every backend must show, written once and run
//! against each backend by [`store_conformance_suite!`]. Modelled on TiKV's
//! `engine_traits_tests`.

use std::sync::Arc;

use crate::testing::TestStore;
use crate::*;

fn task(guid: &str, domain: &str, cell: &str) -> TaskRecord {
    TaskRecord {
        guid: guid.into(),
        domain: domain.into(),
        created_at: 1_700_000_000_000_000_000,
        updated_at: 1_700_000_000_000_000_001,
        first_completed_at: 0,
        state: 1,
        cell_id: cell.into(),
        result: String::new(),
        failed: false,
        failure_reason: String::new(),
        task_definition: format!("02definition-of-{guid}"),
        rejection_count: 0,
        rejection_reason: String::new(),
    }
}

fn desired(guid: &str, domain: &str) -> DesiredLrpRecord {
    DesiredLrpRecord {
        scheduling: DesiredLrpSchedulingRecord {
            process_guid: guid.into(),
            domain: domain.into(),
            log_guid: format!("log-{guid}"),
            annotation: "an annotation".into(),
            instances: 2,
            memory_mb: 256,
            disk_mb: 1024,
            rootfs: "preloaded:cflinuxfs4".into(),
            routes: "02routes".into(),
            volume_placement: "02placement".into(),
            modification_tag_epoch: "epoch-1".into(),
            modification_tag_index: 0,
            placement_tags: Some(r#"["a","b"]"#.into()),
            max_pids: 1024,
            metric_tags: Some("02tags".into()),
            update_strategy: 0,
        },
        run_info: format!("02run-info-of-{guid}"),
    }
}

fn actual(guid: &str, index: i32, presence: Presence, cell: &str) -> ActualLrpRecord {
    ActualLrpRecord {
        process_guid: guid.into(),
        index,
        presence,
        domain: "cf-apps".into(),
        state: "RUNNING".into(),
        instance_guid: format!("instance-{guid}-{index}"),
        cell_id: cell.into(),
        placement_error: String::new(),
        since: 1_700_000_000_000_000_000,
        net_info: "02netinfo".into(),
        modification_tag_epoch: "epoch-a".into(),
        modification_tag_index: 0,
        crash_count: 0,
        crash_reason: String::new(),
        internal_routes: Some("02routes".into()),
        metric_tags: Some("02tags".into()),
        routable: true,
        availability_zone: "z1".into(),
    }
}

fn key(guid: &str, index: i32, presence: Presence) -> ActualLrpKey {
    ActualLrpKey {
        process_guid: guid.into(),
        index,
        presence,
    }
}

pub async fn records_the_schema_version(t: &TestStore) {
    let version = t
        .store
        .configuration(configuration_ids::VERSION)
        .await
        .unwrap();
    assert_eq!(
        version.as_deref(),
        Some(format!(r#"{{"CurrentVersion":{SCHEMA_VERSION}}}"#).as_str())
    );
}

pub async fn configurations_round_trip(t: &TestStore) {
    let s = &t.store;
    assert_eq!(s.configuration("encryption_key_label").await.unwrap(), None);
    s.set_configuration("encryption_key_label", "key-a")
        .await
        .unwrap();
    s.set_configuration("encryption_key_label", "key-b")
        .await
        .unwrap();
    s.set_configuration("encryption_key_label", "key-b")
        .await
        .unwrap();
    assert_eq!(
        s.configuration("encryption_key_label")
            .await
            .unwrap()
            .as_deref(),
        Some("key-b")
    );
}

pub async fn empty_store_lists_nothing(t: &TestStore) {
    let s = &t.store;
    assert!(s.domains().await.unwrap().is_empty());
    assert!(s.tasks(&TaskFilter::default()).await.unwrap().is_empty());
    assert!(s
        .desired_lrps(&DesiredLrpFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .desired_lrp_scheduling_infos(&DesiredLrpFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .actual_lrps(&ActualLrpFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.task("missing").await.unwrap(), None);
    assert_eq!(s.desired_lrp("missing").await.unwrap(), None);
    assert_eq!(
        s.actual_lrp(&key("missing", 0, Presence::Ordinary))
            .await
            .unwrap(),
        None
    );
}

pub async fn domains_upsert_list_delete(t: &TestStore) {
    let s = &t.store;
    let cf = DomainRecord {
        domain: "cf-apps".into(),
        expire_time: i64::MAX,
    };
    s.upsert_domain(&cf).await.unwrap();
    // Re-upserting an identical row must not fall into upstream's MySQL duplicate-key quirk.
    s.upsert_domain(&cf).await.unwrap();
    s.upsert_domain(&DomainRecord {
        domain: "cf-tasks".into(),
        expire_time: 5,
    })
    .await
    .unwrap();
    s.upsert_domain(&DomainRecord {
        domain: "cf-tasks".into(),
        expire_time: 7,
    })
    .await
    .unwrap();
    let mut domains = s.domains().await.unwrap();
    domains.sort_by(|a, b| a.domain.cmp(&b.domain));
    assert_eq!(
        domains,
        vec![
            cf.clone(),
            DomainRecord {
                domain: "cf-tasks".into(),
                expire_time: 7
            }
        ]
    );
    s.delete_domain("cf-tasks").await.unwrap();
    assert_eq!(s.delete_domain("cf-tasks").await, Err(StoreError::NotFound));
    assert_eq!(s.domains().await.unwrap(), vec![cf]);
}

pub async fn tasks_crud(t: &TestStore) {
    let s = &t.store;
    let mut one = task("task-1", "d1", "");
    s.insert_task(&one).await.unwrap();
    assert_eq!(s.insert_task(&one).await, Err(StoreError::Exists));
    assert_eq!(s.task("task-1").await.unwrap(), Some(one.clone()));

    one.state = 2;
    one.cell_id = "cell-1".into();
    one.result = "done".into();
    one.failed = true;
    one.failure_reason = "it broke".into();
    one.rejection_count = 2;
    one.rejection_reason = "no room".into();
    one.first_completed_at = 42;
    s.update_task(&one).await.unwrap();
    assert_eq!(s.task("task-1").await.unwrap(), Some(one.clone()));

    let ghost = task("ghost", "d1", "");
    assert_eq!(s.update_task(&ghost).await, Err(StoreError::NotFound));
    assert_eq!(s.delete_task("ghost").await, Err(StoreError::NotFound));

    s.delete_task("task-1").await.unwrap();
    assert_eq!(s.task("task-1").await.unwrap(), None);
    assert_eq!(s.delete_task("task-1").await, Err(StoreError::NotFound));
}

pub async fn tasks_filter_by_domain_and_cell(t: &TestStore) {
    let s = &t.store;
    s.insert_task(&task("a", "d1", "cell-1")).await.unwrap();
    s.insert_task(&task("b", "d1", "cell-2")).await.unwrap();
    s.insert_task(&task("c", "d2", "cell-1")).await.unwrap();
    let guids = |tasks: Vec<TaskRecord>| {
        let mut g: Vec<String> = tasks.into_iter().map(|t| t.guid).collect();
        g.sort();
        g
    };
    let all = s.tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(guids(all), vec!["a", "b", "c"]);
    let d1 = TaskFilter {
        domain: Some("d1".into()),
        cell_id: None,
    };
    assert_eq!(guids(s.tasks(&d1).await.unwrap()), vec!["a", "b"]);
    let cell1 = TaskFilter {
        domain: None,
        cell_id: Some("cell-1".into()),
    };
    assert_eq!(guids(s.tasks(&cell1).await.unwrap()), vec!["a", "c"]);
    let both = TaskFilter {
        domain: Some("d2".into()),
        cell_id: Some("cell-1".into()),
    };
    assert_eq!(guids(s.tasks(&both).await.unwrap()), vec!["c"]);
    let none = TaskFilter {
        domain: Some("d3".into()),
        cell_id: None,
    };
    assert!(s.tasks(&none).await.unwrap().is_empty());
}

/// Many writers increment one counter through `modify_*`; every increment must survive.
const WRITERS: i32 = 24;

pub async fn tasks_concurrent_modify_loses_no_update(t: &TestStore) {
    t.store.insert_task(&task("hot", "d1", "")).await.unwrap();
    let writers = (0..WRITERS).map(|_| {
        let store = Arc::clone(&t.store);
        tokio::spawn(async move {
            store
                .modify_task("hot", &|mut task| {
                    task.rejection_count += 1;
                    Ok(task)
                })
                .await
        })
    });
    for result in futures::future::join_all(writers).await {
        result.unwrap().unwrap();
    }
    let hot = t.store.task("hot").await.unwrap().unwrap();
    assert_eq!(hot.rejection_count, WRITERS);
}

pub async fn modify_of_a_missing_record_is_not_found(t: &TestStore) {
    let s = &t.store;
    assert_eq!(s.modify_task("ghost", &Ok).await, Err(StoreError::NotFound));
    assert_eq!(
        s.modify_desired_lrp("ghost", &Ok).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.modify_actual_lrp(&key("ghost", 0, Presence::Ordinary), &Ok)
            .await,
        Err(StoreError::NotFound)
    );
}

pub async fn a_rejected_modification_changes_nothing(t: &TestStore) {
    let s = &t.store;
    let original = task("t", "d1", "");
    s.insert_task(&original).await.unwrap();
    let refused = s
        .modify_task("t", &|mut task| {
            task.state = 3;
            Err(StoreError::Rejected(
                "Cannot transition from Pending to Completed".into(),
            ))
        })
        .await;
    assert_eq!(
        refused,
        Err(StoreError::Rejected(
            "Cannot transition from Pending to Completed".into()
        ))
    );
    assert_eq!(s.task("t").await.unwrap(), Some(original));
    // A mutation may not move a record to another key.
    let moved = s
        .modify_task("t", &|mut task| {
            task.guid = "other".into();
            Ok(task)
        })
        .await;
    assert!(matches!(moved, Err(StoreError::Rejected(_))));
    assert_eq!(s.task("other").await.unwrap(), None);
}

pub async fn desired_lrps_crud(t: &TestStore) {
    let s = &t.store;
    let mut lrp = desired("web", "cf-apps");
    s.insert_desired_lrp(&lrp).await.unwrap();
    assert_eq!(s.insert_desired_lrp(&lrp).await, Err(StoreError::Exists));
    assert_eq!(s.desired_lrp("web").await.unwrap(), Some(lrp.clone()));
    let scheduling = s
        .desired_lrp_scheduling_infos(&DesiredLrpFilter::default())
        .await
        .unwrap();
    assert_eq!(scheduling, vec![lrp.scheduling.clone()]);

    lrp.scheduling.instances = 5;
    lrp.scheduling.modification_tag_index = 1;
    lrp.scheduling.annotation = String::new();
    lrp.scheduling.placement_tags = None;
    lrp.scheduling.metric_tags = None;
    lrp.scheduling.update_strategy = 1;
    lrp.run_info = "02new-run-info".into();
    s.update_desired_lrp(&lrp).await.unwrap();
    assert_eq!(s.desired_lrp("web").await.unwrap(), Some(lrp.clone()));
    assert_eq!(
        s.update_desired_lrp(&desired("ghost", "d")).await,
        Err(StoreError::NotFound)
    );

    s.delete_desired_lrp("web").await.unwrap();
    assert_eq!(s.desired_lrp("web").await.unwrap(), None);
    assert!(s
        .desired_lrps(&DesiredLrpFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.delete_desired_lrp("web").await, Err(StoreError::NotFound));
}

pub async fn desired_lrps_filter_by_domain_and_guids(t: &TestStore) {
    let s = &t.store;
    for (guid, domain) in [("a", "d1"), ("b", "d1"), ("c", "d2")] {
        s.insert_desired_lrp(&desired(guid, domain)).await.unwrap();
    }
    let guids = |lrps: Vec<DesiredLrpRecord>| {
        let mut g: Vec<String> = lrps
            .into_iter()
            .map(|l| l.scheduling.process_guid)
            .collect();
        g.sort();
        g
    };
    let filter = |domain: Option<&str>, guids: Option<Vec<&str>>| DesiredLrpFilter {
        domain: domain.map(Into::into),
        process_guids: guids.map(|g| g.into_iter().map(Into::into).collect()),
    };
    assert_eq!(
        guids(s.desired_lrps(&filter(None, None)).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        guids(s.desired_lrps(&filter(Some("d1"), None)).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        guids(
            s.desired_lrps(&filter(None, Some(vec!["c", "a", "zz"])))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        guids(
            s.desired_lrps(&filter(Some("d1"), Some(vec!["c", "a"])))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert!(s
        .desired_lrps(&filter(None, Some(vec![])))
        .await
        .unwrap()
        .is_empty());
    let infos = s
        .desired_lrp_scheduling_infos(&filter(Some("d2"), None))
        .await
        .unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].process_guid, "c");
}

pub async fn desired_lrps_concurrent_modify_loses_no_update(t: &TestStore) {
    t.store
        .insert_desired_lrp(&desired("hot", "d"))
        .await
        .unwrap();
    let writers = (0..WRITERS).map(|_| {
        let store = Arc::clone(&t.store);
        tokio::spawn(async move {
            store
                .modify_desired_lrp("hot", &|mut lrp| {
                    lrp.scheduling.modification_tag_index += 1;
                    lrp.run_info.push('x');
                    Ok(lrp)
                })
                .await
        })
    });
    for result in futures::future::join_all(writers).await {
        result.unwrap().unwrap();
    }
    let hot = t.store.desired_lrp("hot").await.unwrap().unwrap();
    assert_eq!(hot.scheduling.modification_tag_index, WRITERS);
    assert!(hot.run_info.ends_with(&"x".repeat(WRITERS as usize)));
}

pub async fn actual_lrps_crud_with_every_presence(t: &TestStore) {
    let s = &t.store;
    let ordinary = actual("web", 0, Presence::Ordinary, "cell-1");
    let evacuating = actual("web", 0, Presence::Evacuating, "cell-2");
    let suspect = actual("web", 0, Presence::Suspect, "cell-3");
    for lrp in [&ordinary, &evacuating, &suspect] {
        s.insert_actual_lrp(lrp).await.unwrap();
    }
    assert_eq!(
        s.insert_actual_lrp(&ordinary).await,
        Err(StoreError::Exists)
    );
    assert_eq!(
        s.actual_lrp(&key("web", 0, Presence::Evacuating))
            .await
            .unwrap(),
        Some(evacuating.clone())
    );
    let all = s
        .actual_lrps(&ActualLrpFilter {
            process_guids: Some(vec!["web".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);

    let mut changed = ordinary.clone();
    changed.state = "CRASHED".into();
    changed.crash_count = 3;
    changed.crash_reason = "oom".into();
    changed.instance_guid = String::new();
    changed.cell_id = String::new();
    changed.internal_routes = None;
    changed.metric_tags = None;
    changed.routable = false;
    changed.modification_tag_index = 7;
    s.update_actual_lrp(&changed).await.unwrap();
    assert_eq!(s.actual_lrp(&ordinary.key()).await.unwrap(), Some(changed));
    assert_eq!(
        s.update_actual_lrp(&actual("ghost", 0, Presence::Ordinary, "c"))
            .await,
        Err(StoreError::NotFound)
    );

    s.delete_actual_lrp(&suspect.key()).await.unwrap();
    assert_eq!(
        s.delete_actual_lrp(&suspect.key()).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(s.actual_lrp(&suspect.key()).await.unwrap(), None);
    assert!(s.actual_lrp(&ordinary.key()).await.unwrap().is_some());
}

pub async fn actual_lrps_filter(t: &TestStore) {
    let s = &t.store;
    let mut rows = vec![
        actual("a", 0, Presence::Ordinary, "cell-1"),
        actual("a", 1, Presence::Ordinary, "cell-2"),
        actual("a", 1, Presence::Evacuating, "cell-1"),
        actual("b", 0, Presence::Ordinary, "cell-1"),
        actual("ab", 0, Presence::Ordinary, "cell-3"),
    ];
    rows[3].domain = "other".into();
    for row in &rows {
        s.insert_actual_lrp(row).await.unwrap();
    }
    let keys = |lrps: Vec<ActualLrpRecord>| {
        let mut k: Vec<(String, i32, i32)> = lrps
            .into_iter()
            .map(|l| (l.process_guid, l.index, l.presence.as_i32()))
            .collect();
        k.sort();
        k
    };
    let k = |g: &str, i: i32, p: i32| (g.to_owned(), i, p);
    let by_cell = ActualLrpFilter {
        cell_id: Some("cell-1".into()),
        ..Default::default()
    };
    assert_eq!(
        keys(s.actual_lrps(&by_cell).await.unwrap()),
        [k("a", 0, 0), k("a", 1, 1), k("b", 0, 0)]
    );
    let by_domain = ActualLrpFilter {
        domain: Some("other".into()),
        ..Default::default()
    };
    assert_eq!(
        keys(s.actual_lrps(&by_domain).await.unwrap()),
        [k("b", 0, 0)]
    );
    // A process guid that is a prefix of another must not match it.
    let by_guid = ActualLrpFilter {
        process_guids: Some(vec!["a".into()]),
        ..Default::default()
    };
    assert_eq!(
        keys(s.actual_lrps(&by_guid).await.unwrap()),
        [k("a", 0, 0), k("a", 1, 0), k("a", 1, 1)]
    );
    let by_guid_and_index = ActualLrpFilter {
        process_guids: Some(vec!["a".into(), "ab".into()]),
        index: Some(0),
        ..Default::default()
    };
    assert_eq!(
        keys(s.actual_lrps(&by_guid_and_index).await.unwrap()),
        [k("a", 0, 0), k("ab", 0, 0)]
    );
    let nothing = ActualLrpFilter {
        process_guids: Some(vec![]),
        ..Default::default()
    };
    assert!(s.actual_lrps(&nothing).await.unwrap().is_empty());
}

pub async fn actual_lrps_concurrent_modify_loses_no_update(t: &TestStore) {
    let hot = actual("hot", 0, Presence::Ordinary, "cell-1");
    t.store.insert_actual_lrp(&hot).await.unwrap();
    let writers = (0..WRITERS).map(|_| {
        let store = Arc::clone(&t.store);
        let key = hot.key();
        tokio::spawn(async move {
            store
                .modify_actual_lrp(&key, &|mut lrp| {
                    lrp.modification_tag_index += 1;
                    lrp.crash_count += 1;
                    Ok(lrp)
                })
                .await
        })
    });
    for result in futures::future::join_all(writers).await {
        result.unwrap().unwrap();
    }
    let after = t.store.actual_lrp(&hot.key()).await.unwrap().unwrap();
    assert_eq!(after.modification_tag_index, WRITERS);
    assert_eq!(after.crash_count, WRITERS);
}

pub async fn actual_lrp_batches_are_all_or_nothing(t: &TestStore) {
    let s = &t.store;
    let ordinary = actual("web", 0, Presence::Ordinary, "cell-1");
    let evacuating = actual("web", 0, Presence::Evacuating, "cell-2");
    s.insert_actual_lrp(&evacuating).await.unwrap();
    // Start the ordinary and clear the evacuating copy together.
    s.write_actual_lrps(&[
        ActualLrpWrite::Insert(ordinary.clone()),
        ActualLrpWrite::Delete(evacuating.key()),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.actual_lrp(&ordinary.key()).await.unwrap(),
        Some(ordinary.clone())
    );
    assert_eq!(s.actual_lrp(&evacuating.key()).await.unwrap(), None);

    // A failing write leaves the earlier ones undone.
    let mut changed = ordinary.clone();
    changed.state = "CRASHED".into();
    let suspect = actual("web", 0, Presence::Suspect, "cell-3");
    assert_eq!(
        s.write_actual_lrps(&[
            ActualLrpWrite::Update(changed.clone()),
            ActualLrpWrite::Insert(suspect.clone()),
            ActualLrpWrite::Delete(evacuating.key()),
        ])
        .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.actual_lrp(&ordinary.key()).await.unwrap(),
        Some(ordinary.clone())
    );
    assert_eq!(s.actual_lrp(&suspect.key()).await.unwrap(), None);
    assert_eq!(
        s.write_actual_lrps(&[
            ActualLrpWrite::Insert(suspect.clone()),
            ActualLrpWrite::Insert(ordinary.clone()),
        ])
        .await,
        Err(StoreError::Exists)
    );
    assert_eq!(s.actual_lrp(&suspect.key()).await.unwrap(), None);
    s.write_actual_lrps(&[]).await.unwrap();
}

/// The group commit: writes of every kind land together, or none of them does.
pub async fn record_batches_commit_every_kind_together(t: &TestStore) {
    let s = &t.store;
    let old_task = task("task-old", "d", "cell-1");
    let old_lrp = desired("lrp-old", "d");
    s.insert_task(&old_task).await.unwrap();
    s.insert_desired_lrp(&old_lrp).await.unwrap();
    let new_task = task("task-new", "d", "cell-2");
    let new_lrp = desired("lrp-new", "d");
    let instance = actual("lrp-new", 0, Presence::Ordinary, "cell-2");
    let mut changed_lrp = old_lrp.clone();
    changed_lrp.scheduling.instances = 5;
    changed_lrp.run_info = "02changed-run-info".into();
    s.write_records(&[
        RecordWrite::Task(Write::Insert(new_task.clone())),
        RecordWrite::Task(Write::Delete(old_task.guid.clone())),
        RecordWrite::Desired(Write::Insert(new_lrp.clone())),
        RecordWrite::Desired(Write::Update(changed_lrp.clone())),
        RecordWrite::Actual(Write::Insert(instance.clone())),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.task(&new_task.guid).await.unwrap(),
        Some(new_task.clone())
    );
    assert_eq!(s.task(&old_task.guid).await.unwrap(), None);
    assert_eq!(
        s.desired_lrp(&new_lrp.scheduling.process_guid)
            .await
            .unwrap(),
        Some(new_lrp.clone())
    );
    assert_eq!(
        s.desired_lrp(&old_lrp.scheduling.process_guid)
            .await
            .unwrap(),
        Some(changed_lrp.clone())
    );
    assert_eq!(
        s.actual_lrp(&instance.key()).await.unwrap(),
        Some(instance.clone())
    );

    let mut updated_task = new_task.clone();
    updated_task.state = 2;
    // A duplicate insert anywhere undoes the whole batch and names the failure.
    assert_eq!(
        s.write_records(&[
            RecordWrite::Task(Write::Update(updated_task.clone())),
            RecordWrite::Desired(Write::Delete(old_lrp.scheduling.process_guid.clone())),
            RecordWrite::Desired(Write::Insert(new_lrp.clone())),
        ])
        .await,
        Err(StoreError::Exists)
    );
    // A missing record likewise.
    assert_eq!(
        s.write_records(&[
            RecordWrite::Task(Write::Update(updated_task.clone())),
            RecordWrite::Actual(Write::Delete(instance.key())),
            RecordWrite::Task(Write::Delete("no-such-task".into())),
        ])
        .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.write_records(&[RecordWrite::Desired(Write::Update(desired(
            "no-such-lrp",
            "d"
        )))])
        .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(s.task(&new_task.guid).await.unwrap(), Some(new_task));
    assert_eq!(
        s.desired_lrp(&old_lrp.scheduling.process_guid)
            .await
            .unwrap(),
        Some(changed_lrp)
    );
    assert_eq!(s.actual_lrp(&instance.key()).await.unwrap(), Some(instance));
    s.write_records(&[]).await.unwrap();
}

/// More records than one etcd page (1,000 keys) or a small SQL batch: every one is listed.
pub async fn large_lists_are_complete(t: &TestStore) {
    let s = &t.store;
    const COUNT: usize = 2_345;
    let writes: Vec<ActualLrpWrite> = (0..COUNT)
        .map(|i| {
            ActualLrpWrite::Insert(actual(
                &format!("lrp-{i:05}"),
                0,
                Presence::Ordinary,
                "cell-1",
            ))
        })
        .collect();
    for chunk in writes.chunks(100) {
        s.write_actual_lrps(chunk).await.unwrap();
    }
    let all = s.actual_lrps(&ActualLrpFilter::default()).await.unwrap();
    assert_eq!(all.len(), COUNT);
    let mut guids: Vec<&str> = all.iter().map(|l| l.process_guid.as_str()).collect();
    guids.dedup();
    assert_eq!(guids.len(), COUNT, "no record listed twice");
}

pub async fn cells_upsert_list_delete(t: &TestStore) {
    let s = &t.store;
    let cell = |id: &str, expire_time: i64| CellRecord {
        cell_id: id.into(),
        presence: format!(r#"{{"cell_id":"{id}"}}"#),
        expire_time,
    };
    s.upsert_cell(&cell("cell-1", 10)).await.unwrap();
    s.upsert_cell(&cell("cell-1", 20)).await.unwrap();
    s.upsert_cell(&cell("cell-1", 20)).await.unwrap();
    s.upsert_cell(&cell("cell-2", 30)).await.unwrap();
    let mut cells = s.cells().await.unwrap();
    cells.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
    assert_eq!(cells, vec![cell("cell-1", 20), cell("cell-2", 30)]);
    s.delete_cell("cell-1").await.unwrap();
    assert_eq!(s.delete_cell("cell-1").await, Err(StoreError::NotFound));
    assert_eq!(s.cells().await.unwrap(), vec![cell("cell-2", 30)]);
}

/// The versions a standby compares: one per record, equal to what the record's own
/// `version()` says, and different after each kind of write.
pub async fn record_versions_follow_every_write(t: &TestStore) {
    let s = &t.store;
    assert_eq!(
        s.record_versions().await.unwrap(),
        RecordVersions::default()
    );
    let mut one_task = task("t1", "d", "cell-1");
    one_task.updated_at = 7;
    s.insert_task(&one_task).await.unwrap();
    let lrp = desired("web", "d");
    s.insert_desired_lrp(&lrp).await.unwrap();
    let mut row = actual("web", 0, Presence::Ordinary, "cell-1");
    row.since = 11;
    s.insert_actual_lrp(&row).await.unwrap();
    s.insert_actual_lrp(&actual("web", 0, Presence::Suspect, "cell-2"))
        .await
        .unwrap();
    let mut versions = s.record_versions().await.unwrap();
    versions
        .actual_lrps
        .sort_by_key(|(k, _)| k.presence.as_i32());
    assert_eq!(versions.tasks, vec![("t1".to_owned(), one_task.version())]);
    assert_eq!(
        versions.desired_lrps,
        vec![("web".to_owned(), lrp.scheduling.version())]
    );
    assert_eq!(versions.actual_lrps.len(), 2);
    assert_eq!(versions.actual_lrps[0], (row.key(), row.version()));

    one_task.updated_at = 8;
    s.update_task(&one_task).await.unwrap();
    let mut changed = lrp.clone();
    changed.scheduling.modification_tag_index += 1;
    s.update_desired_lrp(&changed).await.unwrap();
    row.modification_tag_index += 1;
    row.state = "RUNNING".into();
    s.update_actual_lrp(&row).await.unwrap();
    let after = s.record_versions().await.unwrap();
    assert_eq!(after.tasks[0].1.updated_at, 8);
    assert_eq!(after.desired_lrps[0].1, changed.scheduling.version());
    assert!(after.actual_lrps.contains(&(row.key(), row.version())));
}

fn lock_row(key: &str, owner: &str, lock_type: &str, index: i64) -> LockRecord {
    LockRecord {
        key: key.into(),
        owner: owner.into(),
        value: format!("value of {key}"),
        lock_type: lock_type.into(),
        modified_index: index,
        modified_id: format!("id-{key}"),
        ttl: 15,
    }
}

/// Locket's rows: absent reads as `None`; the mutation inserts, updates and deletes; a list
/// filters by type; an unchanged row is no write.
pub async fn locks_insert_update_delete_and_list(t: &TestStore) {
    let s = &t.store;
    assert_eq!(s.lock("bbs").await.unwrap(), None);
    assert_eq!(s.locks(None).await.unwrap(), vec![]);
    let bbs = lock_row("bbs", "node-a", "lock", 1);
    let written = s
        .modify_lock("bbs", &|current| {
            assert_eq!(current, None);
            Ok(Some(lock_row("bbs", "node-a", "lock", 1)))
        })
        .await
        .unwrap();
    assert_eq!(written, Some(bbs.clone()));
    s.modify_lock("cell-1", &|_| {
        Ok(Some(lock_row("cell-1", "rep-1", "presence", 1)))
    })
    .await
    .unwrap();
    let refreshed = s
        .modify_lock("bbs", &|current| {
            let mut row = current.expect("the row is there");
            row.modified_index += 1;
            Ok(Some(row))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refreshed.modified_index, 2);
    assert_eq!(s.lock("bbs").await.unwrap(), Some(refreshed.clone()));
    assert_eq!(
        s.modify_lock("bbs", &|current| Ok(current)).await.unwrap(),
        Some(refreshed.clone())
    );
    assert_eq!(
        s.locks(Some("presence")).await.unwrap(),
        vec![lock_row("cell-1", "rep-1", "presence", 1)]
    );
    assert_eq!(
        s.locks(Some("lock")).await.unwrap(),
        vec![refreshed.clone()]
    );
    assert_eq!(s.locks(None).await.unwrap().len(), 2);
    let refused = s
        .modify_lock("bbs", &|_| {
            Err(StoreError::Rejected("lock-collision".into()))
        })
        .await;
    assert_eq!(refused, Err(StoreError::Rejected("lock-collision".into())));
    assert_eq!(s.lock("bbs").await.unwrap(), Some(refreshed));
    assert_eq!(s.modify_lock("bbs", &|_| Ok(None)).await.unwrap(), None);
    assert_eq!(s.lock("bbs").await.unwrap(), None);
    let renamed = s
        .modify_lock("cell-1", &|_| {
            Ok(Some(lock_row("cell-2", "rep-1", "presence", 1)))
        })
        .await;
    assert!(
        matches!(renamed, Err(StoreError::Rejected(_))),
        "{renamed:?}"
    );
}

/// Two writers racing on one lock row: each read-modify-write sees the other's, so no
/// increment is lost and exactly one first writer creates the row.
pub async fn locks_concurrent_modify_loses_no_update(t: &TestStore) {
    let s = &t.store;
    let bump = || {
        let store = Arc::clone(s);
        tokio::spawn(async move {
            for _ in 0..10 {
                store
                    .modify_lock("bbs", &|current| {
                        let mut row = current.unwrap_or_else(|| lock_row("bbs", "n", "lock", 0));
                        row.modified_index += 1;
                        Ok(Some(row))
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let (a, b) = (bump(), bump());
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(s.lock("bbs").await.unwrap().unwrap().modified_index, 20);
}

/// A 1 MiB run info (upstream allows 1 MiB of volume-mounted files alone) and task definition.
pub async fn large_records_round_trip(t: &TestStore) {
    let s = &t.store;
    let big: String = (0..(1024 * 1024))
        .map(|i| (b'A' + (i % 26) as u8) as char)
        .collect();
    let mut lrp = desired("big", "d");
    lrp.run_info = format!("02{big}");
    s.insert_desired_lrp(&lrp).await.unwrap();
    assert_eq!(
        s.desired_lrp("big").await.unwrap().unwrap().run_info,
        lrp.run_info
    );
    let mut t1 = task("big", "d", "");
    t1.task_definition = format!("02{big}");
    t1.result = big.clone();
    s.insert_task(&t1).await.unwrap();
    assert_eq!(s.task("big").await.unwrap(), Some(t1));
}

pub async fn unicode_round_trips(t: &TestStore) {
    let s = &t.store;
    let domain = DomainRecord {
        domain: "dömäin-日本-🚀".into(),
        expire_time: 1,
    };
    s.upsert_domain(&domain).await.unwrap();
    assert_eq!(s.domains().await.unwrap(), vec![domain]);
    let mut t1 = task("unicode", "dömäin", "céll-✓");
    t1.failure_reason = "ошибка: 失败 💥".into();
    t1.result = "résultat ✓".into();
    s.insert_task(&t1).await.unwrap();
    assert_eq!(s.task("unicode").await.unwrap(), Some(t1));
    let mut lrp = desired("unicode", "dömäin");
    lrp.scheduling.annotation = "注釈 – 🎉".into();
    s.insert_desired_lrp(&lrp).await.unwrap();
    assert_eq!(s.desired_lrp("unicode").await.unwrap(), Some(lrp));
}

/// A value longer than its column is refused, not truncated (etcd has no column limits).
pub async fn oversized_columns_are_refused(t: &TestStore) {
    if t.store.backend() == Backend::Etcd || t.store.backend() == Backend::Sqlite {
        // Neither enforces VARCHAR lengths; the API validates sizes before the store.
        return;
    }
    let mut t1 = task("long", "d", "");
    t1.domain = "d".repeat(300);
    assert!(matches!(
        t.store.insert_task(&t1).await,
        Err(StoreError::ValueTooLong(_))
    ));
    assert_eq!(t.store.task("long").await.unwrap(), None);
}

pub async fn data_survives_reopening(t: &TestStore) {
    t.store
        .upsert_domain(&DomainRecord {
            domain: "kept".into(),
            expire_time: i64::MAX,
        })
        .await
        .unwrap();
    t.store.insert_task(&task("kept", "d", "")).await.unwrap();
    let reopened = t.reopen().await.unwrap();
    assert_eq!(reopened.domains().await.unwrap().len(), 1);
    assert!(reopened.task("kept").await.unwrap().is_some());
    assert_eq!(
        reopened
            .configuration(configuration_ids::VERSION)
            .await
            .unwrap(),
        t.store
            .configuration(configuration_ids::VERSION)
            .await
            .unwrap()
    );
}

pub async fn a_newer_schema_version_is_refused(t: &TestStore) {
    t.store
        .set_configuration(
            configuration_ids::VERSION,
            &format!(r#"{{"CurrentVersion":{}}}"#, SCHEMA_VERSION + 1),
        )
        .await
        .unwrap();
    match t.reopen().await {
        Err(StoreError::Unrecoverable(message)) => assert!(message.contains("exceeds")),
        Err(other) => panic!("expected Unrecoverable, got {other:?}"),
        Ok(_) => panic!("a newer schema version must stop start-up"),
    }
}

/// Expands to one test per conformance case, in a module per backend, e.g.
/// `conformance::sqlite::tasks_crud`. Each test opens a fresh store.
#[macro_export]
macro_rules! store_conformance_suite {
    ($($backend:ident => $variant:ident),* $(,)?) => {
        $(
            mod $backend {
                $crate::store_conformance_suite!(@cases $variant;
                    records_the_schema_version,
                    configurations_round_trip,
                    empty_store_lists_nothing,
                    domains_upsert_list_delete,
                    tasks_crud,
                    tasks_filter_by_domain_and_cell,
                    tasks_concurrent_modify_loses_no_update,
                    modify_of_a_missing_record_is_not_found,
                    a_rejected_modification_changes_nothing,
                    desired_lrps_crud,
                    desired_lrps_filter_by_domain_and_guids,
                    desired_lrps_concurrent_modify_loses_no_update,
                    actual_lrps_crud_with_every_presence,
                    actual_lrps_filter,
                    actual_lrps_concurrent_modify_loses_no_update,
                    actual_lrp_batches_are_all_or_nothing,
                    record_batches_commit_every_kind_together,
                    large_lists_are_complete,
                    cells_upsert_list_delete,
                    record_versions_follow_every_write,
                    locks_insert_update_delete_and_list,
                    locks_concurrent_modify_loses_no_update,
                    large_records_round_trip,
                    unicode_round_trips,
                    oversized_columns_are_refused,
                    data_survives_reopening,
                    a_newer_schema_version_is_refused,
                );
            }
        )*
    };
    (@cases $variant:ident; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$crate::testing::enabled($crate::Backend::$variant) {
                    return;
                }
                let store = $crate::testing::TestStore::new($crate::Backend::$variant).await;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}
