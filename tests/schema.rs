//! The live SQL schema is upstream's final schema (bbs-reference §7.2): every table, column,
//! type, nullability, default and index, read back from the database's own catalogue, because
//! a Go BBS adopts the database as it is. Upstream's schema, as the catalogue reports it, is
//! in store/src/sql/upstream_schema.rs, where `bbs migrate --verify-only` uses it too.

#[macro_use]
mod support;

use bbs_store::testing::TestStore;
use bbs_store::Backend;

async fn differences(store: &TestStore) -> Vec<String> {
    store
        .store
        .upstream_schema_differences()
        .await
        .expect("reads the catalogue")
        .expect("MySQL and PostgreSQL have upstream's schema to compare with")
}

async fn assert_upstream_schema(store: &TestStore) {
    assert_eq!(differences(store).await, Vec::<String>::new());
}

async fn a_new_database_has_upstreams_schema(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    assert_upstream_schema(&store).await;
}

async fn a_database_from_an_earlier_version_is_brought_to_upstreams_schema(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    // The shape earlier versions of this BBS created.
    match backend {
        Backend::Mysql => {
            store
                .raw_sql("ALTER TABLE actual_lrps MODIFY evacuating BOOL DEFAULT false")
                .await
        }
        _ => {
            store
                .raw_sql(
                    "ALTER TABLE actual_lrps ALTER COLUMN evacuating DROP NOT NULL; \
                     ALTER TABLE desired_lrps ALTER COLUMN rootfs SET DEFAULT ''",
                )
                .await
        }
    }
    let expected: &[&str] = match backend {
        Backend::Mysql => &[
            "missing: actual_lrps.evacuating tinyint(1) NO 0",
            "unexpected: actual_lrps.evacuating tinyint(1) YES 0",
        ],
        _ => &[
            "missing: actual_lrps.evacuating bool NO false",
            "missing: desired_lrps.rootfs varchar(1024) NO -",
            "unexpected: actual_lrps.evacuating bool YES false",
            "unexpected: desired_lrps.rootfs varchar(1024) NO ''::character varying",
        ],
    };
    assert_eq!(differences(&store).await, expected);
    store.reopen().await.expect("reopens");
    assert_upstream_schema(&store).await;
    // And again: conforming twice changes nothing.
    store.reopen().await.expect("reopens");
    assert_upstream_schema(&store).await;
}

mod mysql {
    #[actix_web::test]
    async fn earlier_upstream_versions_are_brought_forward() {
        super::earlier_upstream_versions_are_brought_forward(bbs_store::Backend::Mysql).await
    }

    #[actix_web::test]
    async fn a_rewrite_without_keys_is_refused() {
        super::a_rewrite_without_keys_is_refused(bbs_store::Backend::Mysql).await
    }

    #[actix_web::test]
    async fn a_new_database_has_upstreams_schema() {
        super::a_new_database_has_upstreams_schema(bbs_store::Backend::Mysql).await
    }

    #[actix_web::test]
    async fn a_database_from_an_earlier_version_is_brought_to_upstreams_schema() {
        super::a_database_from_an_earlier_version_is_brought_to_upstreams_schema(
            bbs_store::Backend::Mysql,
        )
        .await
    }
}

mod postgres {
    #[actix_web::test]
    async fn earlier_upstream_versions_are_brought_forward() {
        super::earlier_upstream_versions_are_brought_forward(bbs_store::Backend::Postgres).await
    }

    #[actix_web::test]
    async fn a_rewrite_without_keys_is_refused() {
        super::a_rewrite_without_keys_is_refused(bbs_store::Backend::Postgres).await
    }

    #[actix_web::test]
    async fn a_new_database_has_upstreams_schema() {
        super::a_new_database_has_upstreams_schema(bbs_store::Backend::Postgres).await
    }

    #[actix_web::test]
    async fn a_database_from_an_earlier_version_is_brought_to_upstreams_schema() {
        super::a_database_from_an_earlier_version_is_brought_to_upstreams_schema(
            bbs_store::Backend::Postgres,
        )
        .await
    }
}

/// A database the Go BBS left at an earlier upstream version is brought to upstream's final
/// schema exactly by replaying upstream's remaining migrations, from the oldest version on.
async fn earlier_upstream_versions_are_brought_forward(backend: Backend) {
    if !bbs_store::testing::enabled(backend) {
        return;
    }
    for version in [
        1_461_790_966,
        1_474_908_092,
        1_528_928_964,
        1_698_182_853,
        1_764_949_919,
    ] {
        let old = bbs_store::testing::UpstreamDatabase::at(backend, version).await;
        let store = old.open(None).await.expect("brought forward");
        assert_upstream_schema(&store).await;
        assert_eq!(
            store
                .store
                .configuration(bbs_store::configuration_ids::VERSION)
                .await
                .unwrap()
                .as_deref(),
            Some(format!(r#"{{"CurrentVersion":{}}}"#, bbs_store::SCHEMA_VERSION).as_str()),
            "from {version}"
        );
    }
}

/// Records that need upstream's rewriting migrations stop start-up without the keys, naming
/// the migration; nothing after it runs.
async fn a_rewrite_without_keys_is_refused(backend: Backend) {
    if !bbs_store::testing::enabled(backend) {
        return;
    }
    let old = bbs_store::testing::UpstreamDatabase::at(backend, 1_698_182_853).await;
    old.raw_sql(
        "INSERT INTO desired_lrps (process_guid, domain, log_guid, instances, memory_mb, \
         disk_mb, rootfs, routes, volume_placement, modification_tag_epoch, run_info) \
         VALUES ('web', 'd', 'l', 1, 0, 0, 'r', '02x', '02x', 'e', '02x')",
    )
    .await;
    let error = old.open(None).await.err().expect("refused");
    assert_eq!(
        error.to_string(),
        "unrecoverable store error: upstream migration 1722634733_split_metric_tags rewrites \
         records and needs the encryption keys"
    );
}

/// SQLite and this BBS's etcd layout were never upstream stores at an earlier version: an
/// older recorded version is refused, not "migrated".
async fn an_older_version_outside_upstreams_sql_is_refused(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    store
        .store
        .set_configuration(
            bbs_store::configuration_ids::VERSION,
            r#"{"CurrentVersion":1461790966}"#,
        )
        .await
        .unwrap();
    let error = store.reopen().await.err().expect("refused");
    let expected = match backend {
        Backend::Etcd => {
            "unrecoverable store error: Existing DB version (1461790966) predates \
                          this bbs's schema (1772581987), and upstream never wrote this etcd \
                          layout at an earlier version"
        }
        _ => {
            "unrecoverable store error: Existing DB version (1461790966) predates this bbs's \
              schema (1772581987), and upstream never wrote a sqlite database"
        }
    };
    assert_eq!(error.to_string(), expected);
}

mod sqlite {
    #[actix_web::test]
    async fn an_older_version_outside_upstreams_sql_is_refused() {
        super::an_older_version_outside_upstreams_sql_is_refused(bbs_store::Backend::Sqlite).await
    }
}

mod etcd {
    #[actix_web::test]
    async fn an_older_version_outside_upstreams_sql_is_refused() {
        super::an_older_version_outside_upstreams_sql_is_refused(bbs_store::Backend::Etcd).await
    }
}

/// A migration interrupted after its DDL committed (MySQL commits each DDL statement) but
/// before its version was written runs again at the next start: its ADD COLUMN finds the
/// column there and goes on, as upstream's does.
async fn an_interrupted_upgrade_runs_again(backend: Backend) {
    if !bbs_store::testing::enabled(backend) {
        return;
    }
    let old = bbs_store::testing::UpstreamDatabase::at(backend, 1_481_761_088).await;
    old.raw_sql("ALTER TABLE tasks ADD COLUMN rejection_count INTEGER NOT NULL DEFAULT 0")
        .await;
    let store = old.open(None).await.expect("brought forward");
    assert_upstream_schema(&store).await;
}

mod interrupted {
    #[actix_web::test]
    async fn mysql() {
        super::an_interrupted_upgrade_runs_again(bbs_store::Backend::Mysql).await
    }

    #[actix_web::test]
    async fn postgres() {
        super::an_interrupted_upgrade_runs_again(bbs_store::Backend::Postgres).await
    }
}
