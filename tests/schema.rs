//! The live SQL schema is upstream's final schema (bbs-reference §7.2, checked against
//! upstream's migrations): every table, column, type, nullability, default and index, read
//! back from the database's own catalogue, because a Go BBS adopts the database as it is.
//! `cell_presences` is this BBS's one addition (cells registered over HTTP when there is no
//! locket); `locks` is upstream locket's table, column for column (locket db/queries.go), where
//! the BBS lock lives when no locket process is configured (docs/locket.md).

#[macro_use]
mod support;

use bbs_store::testing::TestStore;
use bbs_store::Backend;

/// Upstream's columns on MySQL/MariaDB: `table.column type nullable default`, in table then
/// column order (`-` for no default). Display widths of int types are dropped, since MySQL 8
/// no longer shows them.
const MYSQL_COLUMNS: &str = "
actual_lrps.process_guid varchar(255) NO -
actual_lrps.instance_index int NO -
actual_lrps.evacuating tinyint(1) NO 0
actual_lrps.domain varchar(255) NO -
actual_lrps.state varchar(255) NO -
actual_lrps.instance_guid varchar(255) NO ''
actual_lrps.cell_id varchar(255) NO ''
actual_lrps.placement_error varchar(1024) NO ''
actual_lrps.since bigint YES 0
actual_lrps.net_info longtext NO -
actual_lrps.modification_tag_epoch varchar(255) NO -
actual_lrps.modification_tag_index int YES -
actual_lrps.crash_count int NO 0
actual_lrps.crash_reason varchar(1024) NO ''
actual_lrps.expire_time bigint YES 0
actual_lrps.presence int NO 0
actual_lrps.internal_routes mediumtext YES -
actual_lrps.metric_tags mediumtext YES -
actual_lrps.routable tinyint(1) YES 0
actual_lrps.availability_zone varchar(255) NO ''
bbs_health_check.id int NO -
bbs_health_check.time bigint NO -
configurations.id varchar(255) NO -
configurations.value varchar(255) YES -
desired_lrps.process_guid varchar(255) NO -
desired_lrps.domain varchar(255) NO -
desired_lrps.log_guid varchar(255) NO -
desired_lrps.annotation longtext YES -
desired_lrps.instances int NO -
desired_lrps.memory_mb int NO -
desired_lrps.disk_mb int NO -
desired_lrps.rootfs varchar(1024) NO ''
desired_lrps.routes longtext NO -
desired_lrps.volume_placement longtext NO -
desired_lrps.modification_tag_epoch varchar(255) NO -
desired_lrps.modification_tag_index int YES -
desired_lrps.run_info longtext NO -
desired_lrps.placement_tags text YES -
desired_lrps.max_pids int YES 0
desired_lrps.metric_tags mediumtext YES -
desired_lrps.update_strategy int NO 0
domains.domain varchar(255) NO -
domains.expire_time bigint YES 0
locks.path varchar(255) NO -
locks.owner varchar(255) YES -
locks.value varchar(4096) YES -
locks.type varchar(255) YES ''
locks.modified_index bigint YES 0
locks.modified_id varchar(255) YES ''
locks.ttl bigint YES 0
tasks.guid varchar(255) NO -
tasks.domain varchar(255) NO -
tasks.updated_at bigint YES 0
tasks.created_at bigint YES 0
tasks.first_completed_at bigint YES 0
tasks.state int YES -
tasks.cell_id varchar(255) NO ''
tasks.result longtext YES -
tasks.failed tinyint(1) YES 0
tasks.failure_reason varchar(1024) NO ''
tasks.task_definition longtext NO -
tasks.rejection_count int NO 0
tasks.rejection_reason varchar(1024) NO ''
";

/// Upstream's columns on PostgreSQL, as information_schema reports them.
const POSTGRES_COLUMNS: &str = "
actual_lrps.process_guid varchar(255) NO -
actual_lrps.instance_index int4 NO -
actual_lrps.evacuating bool NO false
actual_lrps.domain varchar(255) NO -
actual_lrps.state varchar(255) NO -
actual_lrps.instance_guid varchar(255) NO ''::character varying
actual_lrps.cell_id varchar(255) NO ''::character varying
actual_lrps.placement_error varchar(1024) NO ''::character varying
actual_lrps.since int8 YES 0
actual_lrps.net_info text NO -
actual_lrps.modification_tag_epoch varchar(255) NO -
actual_lrps.modification_tag_index int4 YES -
actual_lrps.crash_count int4 NO 0
actual_lrps.crash_reason varchar(1024) NO ''::character varying
actual_lrps.expire_time int8 YES 0
actual_lrps.presence int4 NO 0
actual_lrps.internal_routes text YES -
actual_lrps.metric_tags text YES -
actual_lrps.routable bool YES false
actual_lrps.availability_zone varchar(255) NO ''::character varying
bbs_health_check.id int4 NO nextval('bbs_health_check_id_seq'::regclass)
bbs_health_check.time int8 NO -
configurations.id varchar(255) NO -
configurations.value varchar(255) YES -
desired_lrps.process_guid varchar(255) NO -
desired_lrps.domain varchar(255) NO -
desired_lrps.log_guid varchar(255) NO -
desired_lrps.annotation text YES -
desired_lrps.instances int4 NO -
desired_lrps.memory_mb int4 NO -
desired_lrps.disk_mb int4 NO -
desired_lrps.rootfs varchar(1024) NO -
desired_lrps.routes text NO -
desired_lrps.volume_placement text NO -
desired_lrps.modification_tag_epoch varchar(255) NO -
desired_lrps.modification_tag_index int4 YES -
desired_lrps.run_info text NO -
desired_lrps.placement_tags text YES -
desired_lrps.max_pids int4 YES 0
desired_lrps.metric_tags text YES -
desired_lrps.update_strategy int4 NO 0
domains.domain varchar(255) NO -
domains.expire_time int8 YES 0
locks.path varchar(255) NO -
locks.owner varchar(255) YES -
locks.value varchar(4096) YES -
locks.type varchar(255) YES ''::character varying
locks.modified_index int8 YES 0
locks.modified_id varchar(255) YES ''::character varying
locks.ttl int8 YES 0
tasks.guid varchar(255) NO -
tasks.domain varchar(255) NO -
tasks.updated_at int8 YES 0
tasks.created_at int8 YES 0
tasks.first_completed_at int8 YES 0
tasks.state int4 YES -
tasks.cell_id varchar(255) NO ''::character varying
tasks.result text YES -
tasks.failed bool YES false
tasks.failure_reason varchar(1024) NO ''::character varying
tasks.task_definition text NO -
tasks.rejection_count int4 NO 0
tasks.rejection_reason varchar(1024) NO ''::character varying
";

/// Upstream's indexes (the same names and columns on both): `table index columns unique`,
/// with the primary key named as each server names it.
fn indexes(primary: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut out: Vec<String> = [
        ("actual_lrps", "actual_lrps_cell_id_idx", "cell_id", false),
        ("actual_lrps", "actual_lrps_domain_idx", "domain", false),
        (
            "actual_lrps",
            "actual_lrps_expire_time_idx",
            "expire_time",
            false,
        ),
        ("actual_lrps", "actual_lrps_since_idx", "since", false),
        ("actual_lrps", "actual_lrps_state_idx", "state", false),
        ("desired_lrps", "desired_lrps_domain_idx", "domain", false),
        ("domains", "domains_expire_time_idx", "expire_time", false),
        ("tasks", "tasks_cell_id_idx", "cell_id", false),
        ("tasks", "tasks_created_at_idx", "created_at", false),
        ("tasks", "tasks_domain_idx", "domain", false),
        (
            "tasks",
            "tasks_first_completed_at_idx",
            "first_completed_at",
            false,
        ),
        ("tasks", "tasks_state_idx", "state", false),
        ("tasks", "tasks_updated_at_idx", "updated_at", false),
    ]
    .iter()
    .map(|(t, i, c, u)| format!("{t} {i} {c} {u}"))
    .collect();
    for (table, columns) in [
        ("actual_lrps", "process_guid,instance_index,presence"),
        ("bbs_health_check", "id"),
        ("configurations", "id"),
        ("desired_lrps", "process_guid"),
        ("domains", "domain"),
        ("locks", "path"),
        ("tasks", "guid"),
    ] {
        out.push(format!("{table} {} {columns} true", primary(table)));
    }
    out.sort();
    out
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// MariaDB quotes string defaults and reports "no default" of a nullable column as the
/// string NULL; MySQL shows neither. Both are read as upstream's DDL meant them.
fn mysql_default(raw: Option<String>) -> String {
    match raw.as_deref() {
        None | Some("NULL") => "-".into(),
        Some("") => "''".into(),
        Some(v) => v.to_owned(),
    }
}

fn mysql_type(raw: &str) -> String {
    for int in ["bigint", "int"] {
        if raw.starts_with(&format!("{int}(")) {
            return int.to_owned();
        }
    }
    raw.to_owned()
}

async fn live_columns(store: &TestStore) -> Vec<String> {
    let rows = match store.config.backend {
        Backend::Mysql => {
            store
                .text_rows(
                    "SELECT TABLE_NAME AS a, COLUMN_NAME AS b, COLUMN_TYPE AS c, \
                     IS_NULLABLE AS d, COLUMN_DEFAULT AS e FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'cell_presences' \
                     ORDER BY TABLE_NAME, ORDINAL_POSITION",
                )
                .await
        }
        _ => {
            store
                .text_rows(
                    "SELECT table_name::text AS a, column_name::text AS b, \
                     CASE WHEN character_maximum_length IS NULL THEN udt_name::text \
                     ELSE udt_name::text || '(' || character_maximum_length || ')' END AS c, \
                     is_nullable::text AS d, column_default::text AS e \
                     FROM information_schema.columns WHERE table_schema = current_schema() \
                     AND table_name <> 'cell_presences' ORDER BY table_name, ordinal_position",
                )
                .await
        }
    };
    rows.into_iter()
        .map(|[t, c, ty, null, default]| {
            let (t, c, ty, null) = (t.unwrap(), c.unwrap(), ty.unwrap(), null.unwrap());
            let default = match store.config.backend {
                Backend::Mysql => mysql_default(default),
                _ => default.unwrap_or_else(|| "-".into()),
            };
            let ty = if store.config.backend == Backend::Mysql {
                mysql_type(&ty)
            } else {
                ty
            };
            format!("{t}.{c} {ty} {null} {default}")
        })
        .collect()
}

async fn live_indexes(store: &TestStore) -> Vec<String> {
    let sql = match store.config.backend {
        Backend::Mysql => {
            "SELECT TABLE_NAME AS a, INDEX_NAME AS b, \
             CAST(GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) AS CHAR) AS c, \
             CAST(MAX(NON_UNIQUE) AS CHAR) AS d, NULL AS e FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'cell_presences' \
             GROUP BY TABLE_NAME, INDEX_NAME"
        }
        _ => {
            "SELECT t.relname::text AS a, i.relname::text AS b, \
             string_agg(a.attname::text, ',' ORDER BY k.n) AS c, \
             CASE WHEN ix.indisunique THEN '0' ELSE '1' END AS d, NULL::text AS e \
             FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid \
             JOIN pg_class i ON i.oid = ix.indexrelid \
             JOIN pg_namespace ns ON ns.oid = t.relnamespace \
             CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE ns.nspname = current_schema() AND t.relname <> 'cell_presences' \
             GROUP BY t.relname, i.relname, ix.indisunique"
        }
    };
    let mut out: Vec<String> = store
        .text_rows(sql)
        .await
        .into_iter()
        .map(|[t, i, c, non_unique, _]| {
            let unique = non_unique.as_deref() == Some("0");
            format!("{} {} {} {unique}", t.unwrap(), i.unwrap(), c.unwrap())
        })
        .collect();
    out.sort();
    out
}

fn expected(backend: Backend) -> (Vec<String>, Vec<String>) {
    match backend {
        Backend::Mysql => (lines(MYSQL_COLUMNS), indexes(&|_| "PRIMARY".into())),
        _ => (
            lines(POSTGRES_COLUMNS),
            indexes(&|table| format!("{table}_pkey")),
        ),
    }
}

async fn assert_upstream_schema(store: &TestStore) {
    let (columns, indexes) = expected(store.config.backend);
    assert_eq!(live_columns(store).await, columns);
    assert_eq!(live_indexes(store).await, indexes);
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
    assert_ne!(live_columns(&store).await, expected(backend).0);
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
