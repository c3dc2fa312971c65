//! The store conformance suite against every backend. Output names each case per backend,
//! e.g. `conformance::postgres::tasks_crud`.

mod conformance {
    bbs_store::store_conformance_suite!(
        sqlite => Sqlite,
        mysql => Mysql,
        postgres => Postgres,
        etcd => Etcd,
    );
}
