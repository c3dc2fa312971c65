//! Upstream's final SQL schema as the database's own catalogue reports it (bbs-reference §7.2,
//! checked against upstream's migrations), and the live schema read the same way: a Go BBS
//! adopts a database as it is, so handing one back needs every table, column, type,
//! nullability, default and index to be upstream's. `cell_presences`, this BBS's one addition,
//! is left out (a Go BBS never reads it); `locks` is upstream locket's table, column for
//! column, where the BBS lock lives when no locket process is configured.

use crate::store::Backend;

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

/// Upstream's columns and indexes for MySQL or PostgreSQL.
pub(crate) fn expected(backend: Backend) -> (Vec<String>, Vec<String>) {
    match backend {
        Backend::Mysql => (lines(MYSQL_COLUMNS), indexes(&|_| "PRIMARY".into())),
        _ => (
            lines(POSTGRES_COLUMNS),
            indexes(&|table| format!("{table}_pkey")),
        ),
    }
}

/// The catalogue queries for a backend's live schema, five text columns each; `None` where
/// upstream has no SQL schema (SQLite, etcd).
pub(crate) fn catalogue_queries(backend: Backend) -> Option<(&'static str, &'static str)> {
    match backend {
        Backend::Mysql => Some((MYSQL_COLUMNS_SQL, MYSQL_INDEXES_SQL)),
        Backend::Postgres => Some((POSTGRES_COLUMNS_SQL, POSTGRES_INDEXES_SQL)),
        _ => None,
    }
}

const MYSQL_COLUMNS_SQL: &str = "SELECT TABLE_NAME AS a, COLUMN_NAME AS b, COLUMN_TYPE AS c, \
     IS_NULLABLE AS d, COLUMN_DEFAULT AS e FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'cell_presences' \
     ORDER BY TABLE_NAME, ORDINAL_POSITION";
const POSTGRES_COLUMNS_SQL: &str = "SELECT table_name::text AS a, column_name::text AS b, \
     CASE WHEN character_maximum_length IS NULL THEN udt_name::text \
     ELSE udt_name::text || '(' || character_maximum_length || ')' END AS c, \
     is_nullable::text AS d, column_default::text AS e \
     FROM information_schema.columns WHERE table_schema = current_schema() \
     AND table_name <> 'cell_presences' ORDER BY table_name, ordinal_position";
const MYSQL_INDEXES_SQL: &str = "SELECT TABLE_NAME AS a, INDEX_NAME AS b, \
     CAST(GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) AS CHAR) AS c, \
     CAST(MAX(NON_UNIQUE) AS CHAR) AS d, NULL AS e FROM information_schema.STATISTICS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'cell_presences' \
     GROUP BY TABLE_NAME, INDEX_NAME";
const POSTGRES_INDEXES_SQL: &str = "SELECT t.relname::text AS a, i.relname::text AS b, \
     string_agg(a.attname::text, ',' ORDER BY k.n) AS c, \
     CASE WHEN ix.indisunique THEN '0' ELSE '1' END AS d, NULL::text AS e \
     FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid \
     JOIN pg_class i ON i.oid = ix.indexrelid \
     JOIN pg_namespace ns ON ns.oid = t.relnamespace \
     CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n) \
     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
     WHERE ns.nspname = current_schema() AND t.relname <> 'cell_presences' \
     GROUP BY t.relname, i.relname, ix.indisunique";

/// A catalogue row: table, column or index name, type or columns, nullable or non-unique,
/// default.
#[derive(diesel::QueryableByName)]
pub(crate) struct CatalogueRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    a: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    b: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    c: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    d: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    e: Option<String>,
}

/// The live columns in [`MYSQL_COLUMNS`]' form.
pub(crate) fn live_columns(backend: Backend, rows: Vec<CatalogueRow>) -> Vec<String> {
    rows.into_iter()
        .map(|r| {
            let (default, ty) = match backend {
                Backend::Mysql => (mysql_default(r.e), mysql_type(&r.c)),
                _ => (r.e.unwrap_or_else(|| "-".into()), r.c),
            };
            format!("{}.{} {ty} {} {default}", r.a, r.b, r.d)
        })
        .collect()
}

/// The live indexes in [`indexes`]' form.
pub(crate) fn live_indexes(rows: Vec<CatalogueRow>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|r| format!("{} {} {} {}", r.a, r.b, r.c, r.d == "0"))
        .collect();
    out.sort();
    out
}

/// Every way the live schema departs from upstream's: `missing: ...` for what upstream has
/// and the database lacks (or has otherwise), `unexpected: ...` for the reverse.
pub(crate) fn differences(
    backend: Backend,
    live_columns: &[String],
    live_indexes: &[String],
) -> Vec<String> {
    let (columns, indexes) = expected(backend);
    let mut out = Vec::new();
    for (expected, live) in [(&columns, live_columns), (&indexes, live_indexes)] {
        for line in expected.iter().filter(|l| !live.contains(l)) {
            out.push(format!("missing: {line}"));
        }
        for line in live.iter().filter(|l| !expected.contains(l)) {
            out.push(format!("unexpected: {line}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_schema_has_no_differences_from_itself() {
        for backend in [Backend::Mysql, Backend::Postgres] {
            let (columns, indexes) = expected(backend);
            assert!(differences(backend, &columns, &indexes).is_empty());
            let mut changed = columns.clone();
            changed[0] = changed[0].replace("varchar(255)", "varchar(200)");
            let found = differences(backend, &changed, &indexes);
            assert_eq!(found.len(), 2, "{found:?}");
            assert!(found[0].starts_with("missing: actual_lrps.process_guid varchar(255)"));
            assert!(found[1].starts_with("unexpected: actual_lrps.process_guid varchar(200)"));
        }
    }
}
