//! The small text parsers: an SSE subscriber's `Last-Event-ID` and the MySQL DSN.

/// `Last-Event-ID`: whatever the header holds, an id or none, and an id reads back as itself.
pub fn event_id(data: &[u8]) {
    if let Some(id) = bbs::http::parse_event_id(data) {
        assert_eq!(
            bbs::http::parse_event_id(id.to_string().as_bytes()),
            Some(id)
        );
    }
}

/// `database_connection_string` for MySQL: a go-sql-driver DSN or a URL. What it accepts must
/// be a URL mysql_async can parse, since the server hands it straight on.
pub fn mysql_dsn(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = bbs_store::mysql_url_from_dsn(text) {
        assert!(url.starts_with("mysql://"), "{text:?} became {url:?}");
    }
}
