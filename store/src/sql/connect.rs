//! Opening a pooled, migrated SQL store for each backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection,
};
use futures::FutureExt;

use super::{SqlStore, SqliteConn};
use crate::error::{StoreError, StoreResult};
use crate::store::{Backend, Store};

/// Per-connection settings for the embedded store: WAL lets readers run beside the writer,
/// and the busy timeout makes a writer wait for the lock instead of failing at once.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = OFF;";

async fn pool<C: PoolableConnection + 'static>(
    url: &str,
    config: ManagerConfig<C>,
    max_connections: u32,
) -> StoreResult<Pool<C>>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection,
    <AsyncDieselConnectionManager<C> as bb8::ManageConnection>::Error: std::error::Error + 'static,
{
    let manager = AsyncDieselConnectionManager::<C>::new_with_config(url, config);
    Pool::builder()
        .max_size(max_connections.max(1))
        .connection_timeout(Duration::from_secs(30))
        .build(manager)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Checks that the server answers now, so a bad connection string fails start-up at once
/// with the driver's own words rather than on the first request.
async fn probe<C: PoolableConnection + 'static>(pool: &Pool<C>) -> StoreResult<()>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection,
    <AsyncDieselConnectionManager<C> as bb8::ManageConnection>::Error: std::error::Error + 'static,
{
    // A dedicated connection fails at once with the driver's words, where the pool would
    // retry until its timeout and report only that it timed out.
    pool.dedicated_connection()
        .await
        .map(drop)
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Opens (creating if needed) the SQLite database file at `path`.
pub async fn connect_sqlite(
    path: &str,
    max_connections: u32,
    schema: crate::SchemaUse<'_>,
) -> StoreResult<Arc<dyn Store>> {
    if !matches!(schema, crate::SchemaUse::Migrate(_)) && !Path::new(path).exists() {
        return Err(StoreError::Unrecoverable(format!(
            "the SQLite database {path} does not exist"
        )));
    }
    if let Some(parent) = Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
    }
    let mut config = ManagerConfig::<SqliteConn>::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.batch_execute(SQLITE_PRAGMAS)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let pool = pool(path, config, max_connections).await?;
    probe(&pool).await?;
    let store = SqlStore {
        pool,
        backend: Backend::Sqlite,
    };
    store.migrate(schema).await?;
    Ok(Arc::new(store))
}

const SQL_TLS_KEYS: &str = "sql_ca_cert_file and sql_enable_identity_verification";

/// The store-side TLS error for a bad `sql_ca_cert_file`.
fn sql_tls_error(e: bbs_tls::TlsError) -> StoreError {
    StoreError::Unavailable(format!("sql_ca_cert_file: {e}"))
}

/// Parameters that `sql_ca_cert_file` decides instead (pgx-style strings may carry them, and
/// tokio-postgres knows only some of their values).
fn decided_by_tls(parameter: &str) -> bool {
    parameter.starts_with("sslmode=") || parameter.starts_with("sslrootcert=")
}

/// `connection_string` with `sslmode=require`, so the server cannot decline TLS; any
/// `sslmode` or `sslrootcert` in it is replaced (the other parameters are kept byte for
/// byte).
fn postgres_requiring_tls(connection_string: &str) -> String {
    if connection_string.starts_with("postgres://")
        || connection_string.starts_with("postgresql://")
    {
        let (base, query) = connection_string
            .split_once('?')
            .unwrap_or((connection_string, ""));
        let mut kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !decided_by_tls(p))
            .collect();
        kept.push("sslmode=require");
        format!("{base}?{}", kept.join("&"))
    } else {
        let mut kept: Vec<&str> = connection_string
            .split_whitespace()
            .filter(|p| !decided_by_tls(p))
            .collect();
        kept.push("sslmode=require");
        kept.join(" ")
    }
}

/// Opens a PostgreSQL store from a URL or a key=value connection string; with
/// `sql_ca_cert_file`, over TLS only.
pub async fn connect_postgres(
    connection_string: &str,
    max_connections: u32,
    tls: &crate::StoreTls,
    schema: crate::SchemaUse<'_>,
) -> StoreResult<Arc<dyn Store>> {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    let mut connection_string = connection_string.to_owned();
    if let Some(ca) = &tls.sql_ca {
        let ca = bbs_tls::PemFile::new("sql_ca_cert_file", ca);
        let check = if tls.sql_verify_identity {
            bbs_tls::ServerCheck::Full(ca)
        } else {
            bbs_tls::ServerCheck::ChainOnly(ca)
        };
        let client = bbs_tls::client(check, None).map_err(sql_tls_error)?;
        connection_string = postgres_requiring_tls(&connection_string);
        config.custom_setup = Box::new(move |url| {
            let (url, connector) = (
                url.to_owned(),
                tokio_postgres_rustls::MakeRustlsConnect::new(client.clone()),
            );
            async move {
                let (client, connection) = tokio_postgres::connect(&url, connector)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            .boxed()
        });
    }
    let pool = pool(&connection_string, config, max_connections).await?;
    probe(&pool)
        .await
        .map_err(|e| e.naming_tls_keys(tls.sql_ca.is_some(), SQL_TLS_KEYS))?;
    let store = SqlStore {
        pool,
        backend: Backend::Postgres,
    };
    store.migrate(schema).await?;
    Ok(Arc::new(store))
}

/// Opens a MySQL/MariaDB store from a `mysql://` URL or a go-sql-driver DSN; with
/// `sql_ca_cert_file`, over TLS only.
pub async fn connect_mysql(
    connection_string: &str,
    max_connections: u32,
    tls: &crate::StoreTls,
    schema: crate::SchemaUse<'_>,
) -> StoreResult<Arc<dyn Store>> {
    let url = if connection_string.starts_with("mysql://") {
        connection_string.to_owned()
    } else {
        mysql_url_from_dsn(connection_string)?
    };
    let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
    if let Some(ca) = &tls.sql_ca {
        // Read now, so a bad file stops start-up naming the key.
        bbs_tls::PemFile::new("sql_ca_cert_file", ca)
            .roots()
            .map_err(sql_tls_error)?;
        let ssl = mysql_async::SslOpts::default()
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(!tls.sql_verify_identity);
        config.custom_setup = Box::new(move |url| {
            let (url, ssl) = (url.to_owned(), ssl.clone());
            async move {
                let opts = mysql_async::Opts::from_url(&url)
                    .map_err(|e| diesel::ConnectionError::InvalidConnectionUrl(e.to_string()))?;
                // As diesel-async's own establish sets them: its statement cache, and
                // matched (not changed) rows counted, as PostgreSQL counts them.
                let opts = mysql_async::OptsBuilder::from_opts(opts)
                    .ssl_opts(ssl)
                    .stmt_cache_size(0)
                    .client_found_rows(true);
                let conn = mysql_async::Conn::new(opts)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                AsyncMysqlConnection::try_from(conn).await
            }
            .boxed()
        });
    }
    let pool = pool(&url, config, max_connections).await?;
    probe(&pool)
        .await
        .map_err(|e| e.naming_tls_keys(tls.sql_ca.is_some(), SQL_TLS_KEYS))?;
    let store = SqlStore {
        pool,
        backend: Backend::Mysql,
    };
    store.migrate(schema).await?;
    Ok(Arc::new(store))
}

/// URL parameters mysql_async understands; go-sql-driver's own (parseTime, timeout, ...) are
/// dropped because they have no meaning here and mysql_async rejects unknown ones.
const MYSQL_URL_PARAMS: &[&str] = &[
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
    "socket",
    "compression",
    "tcp_keepalive",
    "tcp_nodelay",
    "prefer_socket",
];

/// Turns upstream's go-sql-driver DSN, `user:pass@tcp(host:port)/db?params`, into a
/// `mysql://` URL. `tls=true|skip-verify|preferred` become the matching mysql_async params.
pub fn mysql_url_from_dsn(dsn: &str) -> StoreResult<String> {
    let bad = |why: &str| {
        StoreError::Unavailable(format!(
            "database_connection_string is not a MySQL DSN ({why}); expected \
             user:password@tcp(host:port)/database or mysql://user:password@host:port/database"
        ))
    };
    let (credentials, rest) = match dsn.rfind('@') {
        Some(at) => (Some(&dsn[..at]), &dsn[at + 1..]),
        None => (None, dsn),
    };
    let (address_part, rest) = rest.split_once('/').ok_or_else(|| bad("no /database"))?;
    let address = if address_part.is_empty() {
        "127.0.0.1:3306".to_owned()
    } else if let Some(inner) = address_part
        .strip_prefix("tcp(")
        .and_then(|s| s.strip_suffix(')'))
    {
        inner.to_owned()
    } else if address_part.starts_with("unix(") {
        return Err(bad("unix sockets are not supported"));
    } else {
        return Err(bad("the address must be tcp(host:port)"));
    };
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let mut url = url::Url::parse(&format!("mysql://{address}/"))
        .map_err(|e| bad(&format!("bad address {address:?}: {e}")))?;
    if let Some(credentials) = credentials {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        url.set_username(user).map_err(|_| bad("bad user"))?;
        if !password.is_empty() {
            url.set_password(Some(password))
                .map_err(|_| bad("bad password"))?;
        }
    }
    url.set_path(database);
    let mut query = Vec::new();
    for pair in params.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("tls", "true") => query.push("require_ssl=true".to_owned()),
            ("tls", "skip-verify") => {
                query.push("require_ssl=true&verify_ca=false&verify_identity=false".to_owned())
            }
            _ if MYSQL_URL_PARAMS.contains(&key) => query.push(format!("{key}={value}")),
            _ => {}
        }
    }
    if !query.is_empty() {
        url.set_query(Some(&query.join("&")));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_tls_is_required_whatever_the_string_says() {
        for (given, want) in [
            (
                "postgres://u@h:5432/db",
                "postgres://u@h:5432/db?sslmode=require",
            ),
            (
                "postgres://u@h/db?options=-c%20x%3D1&sslmode=verify-full&sslrootcert=/ca.crt",
                "postgres://u@h/db?options=-c%20x%3D1&sslmode=require",
            ),
            (
                "postgres://u@h1:5432,h2:5432/db?sslmode=prefer",
                "postgres://u@h1:5432,h2:5432/db?sslmode=require",
            ),
            (
                "host=h dbname=db sslmode=verify-ca sslrootcert=/ca.crt",
                "host=h dbname=db sslmode=require",
            ),
        ] {
            assert_eq!(postgres_requiring_tls(given), want, "{given}");
        }
    }

    use super::*;

    #[test]
    fn converts_go_sql_driver_dsns() {
        assert_eq!(
            mysql_url_from_dsn("diego:s3cret@tcp(db.local:3306)/diego").unwrap(),
            "mysql://diego:s3cret@db.local:3306/diego"
        );
        assert_eq!(
            mysql_url_from_dsn("root@tcp(127.0.0.1:3306)/test?parseTime=true&tls=true").unwrap(),
            "mysql://root@127.0.0.1:3306/test?require_ssl=true"
        );
        assert_eq!(
            mysql_url_from_dsn("/bbs").unwrap(),
            "mysql://127.0.0.1:3306/bbs"
        );
        assert_eq!(
            mysql_url_from_dsn("u:p@ss@tcp(h:1)/d").unwrap(),
            "mysql://u:p%40ss@h:1/d"
        );
    }

    #[test]
    fn refuses_what_is_not_a_dsn() {
        assert!(mysql_url_from_dsn("just-a-name").is_err());
        assert!(mysql_url_from_dsn("u@unix(/tmp/sock)/d").is_err());
        assert!(mysql_url_from_dsn("u@h:3306/d").is_err());
    }
}
