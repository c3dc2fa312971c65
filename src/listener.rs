//! The API's front door below HTTP: a TCP listener, TLS with a required client certificate
//! when configured (upstream serves nothing else), then actix's HTTP/1.1 service. Built from
//! actix's parts rather than `HttpServer` so that the connection can be adapted
//! (`KeepAliveHeader`) between TLS and HTTP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Request};
use actix_server::{Server, ServerHandle};
use actix_service::{fn_service, map_config, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the API listens.
pub struct ListenSettings {
    pub address: String,
    pub keep_alive: Duration,
    pub client_request_timeout: Duration,
    pub backlog: u32,
    /// With it, HTTPS only, with client certificates required.
    pub tls: Option<Arc<bbs_tls::rustls::ServerConfig>>,
}

/// Binds the API's listener and serves `app` on it (signals are the caller's to handle).
pub fn serve<F, S, B>(settings: ListenSettings, app: F) -> io::Result<(Server, ServerHandle)>
where
    F: Fn() -> actix_web::App<S> + Send + Clone + 'static,
    S: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let ListenSettings {
        address,
        keep_alive,
        client_request_timeout,
        backlog,
        tls,
    } = settings;
    let builder = Server::build()
        .backlog(backlog)
        .disable_signals()
        .shutdown_timeout(1);
    let server = match tls {
        None => builder.bind("api", &address, move || {
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((KeepAliveHeader::new(io), peer))
            })
            .and_then(http(app(), keep_alive, client_request_timeout))
        })?,
        Some(config) => builder.bind("api-tls", &address, move || {
            let mut acceptor = actix_tls::accept::rustls_0_23::Acceptor::new((*config).clone());
            // actix's 3 s default is short for a loaded server with a full backlog.
            acceptor.set_handshake_timeout(TLS_HANDSHAKE_TIMEOUT);
            acceptor
                // A failed handshake ends that connection only; there is nothing to answer.
                .map_err(|e| DispatchError::Io(io::Error::other(format!("{e:?}"))))
                .and_then(fn_service(
                    |io: actix_tls::accept::rustls_0_23::TlsStream<TcpStream>| async move {
                        let peer = io.get_ref().0.peer_addr().ok();
                        Ok::<_, DispatchError>((KeepAliveHeader::new(io), peer))
                    },
                ))
                .and_then(http(app(), keep_alive, client_request_timeout))
        })?,
    }
    .run();
    let handle = server.handle();
    Ok((server, handle))
}

/// actix's HTTP/1.1 service for `app` over any connection type `T`.
fn http<T, S, B>(
    app: actix_web::App<S>,
    keep_alive: Duration,
    client_request_timeout: Duration,
) -> impl actix_service::ServiceFactory<
    (T, Option<std::net::SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let app = actix_service::IntoServiceFactory::<_, Request>::into_factory(app)
        .map_err(|e: actix_web::Error| e.error_response());
    HttpService::build()
        .keep_alive(keep_alive)
        .client_request_timeout(client_request_timeout)
        // actix-web's HttpServer default: a closing connection lingers a moment, so a
        // client still sending a refused body reads the answer rather than a reset.
        .client_disconnect_timeout(Duration::from_secs(1))
        .h1(map_config(app, |_| AppConfig::default()))
}

/// Adds `connection: keep-alive` to the head of every event-stream response, as upstream
/// sends it: actix-http writes the Connection header itself and, on HTTP/1.1, never writes
/// `keep-alive` (it is the protocol's default), so no handler can add it.
///
/// The head of a streamed response is written on its own, before any event, so it is
/// recognised only when a write starts with a whole `200` head whose content type is
/// `text/event-stream`; every other write passes through untouched.
pub struct KeepAliveHeader<T> {
    io: T,
    /// A rewritten head not yet handed to `io`.
    pending: Vec<u8>,
    written: usize,
}

impl<T> KeepAliveHeader<T> {
    pub fn new(io: T) -> Self {
        KeepAliveHeader {
            io,
            pending: Vec::new(),
            written: 0,
        }
    }
}

const STATUS_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";
const EVENT_STREAM: &[u8] = b"\r\ncontent-type: text/event-stream";
const HEADER: &[u8] = b"connection: keep-alive\r\n";

/// The head with the header added, when `buf` starts with an event-stream response's head.
fn with_keep_alive(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(STATUS_LINE) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..end + 2];
    let is_event_stream = head
        .windows(EVENT_STREAM.len())
        .any(|w| w.eq_ignore_ascii_case(EVENT_STREAM));
    let has_connection = head
        .windows(b"\r\nconnection:".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\nconnection:"));
    if !is_event_stream || has_connection {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len() + HEADER.len());
    out.extend_from_slice(STATUS_LINE);
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&buf[STATUS_LINE.len()..]);
    Some(out)
}

impl<T: AsyncWrite + Unpin> KeepAliveHeader<T> {
    /// Hands the pending head to `io`; ready once all of it is written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for KeepAliveHeader<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for KeepAliveHeader<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match with_keep_alive(buf) {
            Some(rewritten) => {
                this.pending = rewritten;
                this.written = 0;
                // Accepted whole; what `io` does not take now goes out on the next write,
                // flush or shutdown.
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stream_head_gets_the_header_after_the_status_line() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
        let out = with_keep_alive(head).unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn other_writes_pass_untouched() {
        for write in [
            &b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\r\nbody"[..],
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/event-stream\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream",
            b"1c;\r\nid: 1\r\nevent: x\r\n",
            b"",
        ] {
            assert_eq!(
                with_keep_alive(write),
                None,
                "{:?}",
                String::from_utf8_lossy(write)
            );
        }
    }

    #[actix_rt::test]
    async fn a_head_accepted_whole_is_written_out_in_full() {
        let (client, server) = tokio::io::duplex(8);
        let mut adapted = KeepAliveHeader::new(server);
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                .await
                .unwrap();
            got
        });
        use tokio::io::AsyncWriteExt;
        adapted.write_all(head).await.unwrap();
        adapted.write_all(b"5;\r\nhello\r\n").await.unwrap();
        adapted.shutdown().await.unwrap();
        drop(adapted);
        let got = reader.await.unwrap();
        assert_eq!(
            got,
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-type: text/event-stream\r\n\r\n5;\r\nhello\r\n"
        );
    }
}
