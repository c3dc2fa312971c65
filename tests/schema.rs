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
