//! `--idle-connections N`: N keep-alive connections held open beside the rep loop, as many
//! mostly quiet clients (a deployment's route emitters, CLIs, monitors) hold them. Each sends
//! one Ping to become a kept-alive connection, and another every 30 s so the server's
//! keep-alive (120 s) does not close it during a long run. The connections are plain HTTP/1.1
//! written by hand, one socket each, so their number is exact; one that fails or does not
//! answer a ping within the run's timeout is dropped, and the report says how many were still
//! open at the end.

use std::sync::Arc;
use std::time::Duration;

use bbs_tls::rustls;
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often each idle connection pings, well inside the server's keep-alive.
const REFRESH: Duration = Duration::from_secs(30);
/// Connections opened at once.
const OPENING: usize = 256;

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Where and how to connect: the first `--bbs-url` address, with the run's TLS if any.
#[derive(Clone)]
struct Target {
    address: String,
    host: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Target {
    fn new(bbs_url: &str, tls: Option<&rustls::ClientConfig>) -> Result<Target, String> {
        let first = bbs_url.split(',').next().unwrap_or_default().trim();
        let url = reqwest::Url::parse(first).map_err(|e| format!("--bbs-url {first:?}: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("--bbs-url {first:?} names no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("--bbs-url {first:?} names no port"))?;
        let tls = match (url.scheme(), tls) {
            ("https", Some(config)) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("--bbs-url host {host:?}: {e}"))?;
                Some((
                    tokio_rustls::TlsConnector::from(Arc::new(config.clone())),
                    name,
                ))
            }
            ("https", None) => return Err("an https --bbs-url needs --ca, --cert and --key".into()),
            _ => None,
        };
        Ok(Target {
            address: format!("{host}:{port}"),
            host,
            tls,
        })
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Connection>> {
        let tcp = TcpStream::connect(&self.address).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            None => Box::new(tcp),
        })
    }
}

/// One Ping on a kept-alive connection, its answer read to the end, within `timeout`:
/// answers its status. Any complete answer leaves the connection usable (a server past its
/// bound answers 503 and keeps the connection).
async fn ping(conn: &mut dyn Connection, host: &str, timeout: Duration) -> std::io::Result<u16> {
    tokio::time::timeout(timeout, ping_once(conn, host))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn ping_once(conn: &mut dyn Connection, host: &str) -> std::io::Result<u16> {
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: 0\r\n\r\n",
        crate::client::routes::PING
    );
    conn.write_all(request.as_bytes()).await?;
    conn.flush().await?;
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        let read = conn.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.extend_from_slice(&chunk[..read]);
        if let Some(complete) = complete_answer(&answer) {
            return complete;
        }
    }
}

/// Whether `answer` holds a whole HTTP response (head and Content-Length body), and if so
/// its status. An answer without a Content-Length (chunked, or closing) is an
/// error: its end cannot be found, so the connection cannot be reused.
fn complete_answer(answer: &[u8]) -> Option<std::io::Result<u16>> {
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let length: Option<usize> = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    });
    let Some(length) = length else {
        return Some(Err(std::io::Error::other(
            "an answer without a Content-Length",
        )));
    };
    if answer.len() < head_end + length {
        return None;
    }
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok());
    Some(status.ok_or_else(|| {
        std::io::Error::other(format!(
            "not an HTTP/1.1 answer: {:?}",
            head.lines().next().unwrap_or_default()
        ))
    }))
}

/// The connection back if it answered a ping, whatever the status; `turns` keeps the pings few at a time.
async fn keep(
    mut conn: Box<dyn Connection>,
    host: Arc<str>,
    turns: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
) -> Option<Box<dyn Connection>> {
    let _turn = turns.acquire().await.ok()?;
    ping(conn.as_mut(), &host, timeout).await.ok().map(|_| conn)
}

/// The open connections, pinged every 30 s until dropped.
pub struct IdleConnections {
    keeper: tokio::task::JoinHandle<()>,
    pub opened: usize,
    /// How many answered their last ping.
    alive: Arc<std::sync::atomic::AtomicUsize>,
}

impl IdleConnections {
    /// Connections that answered their last ping.
    pub fn still_open(&self) -> usize {
        self.alive.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for IdleConnections {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Opens `count` connections, each pinged once; fails with the first connection's error.
/// Connecting, the TLS handshake and each ping are bounded by `timeout`.
pub async fn open(
    bbs_url: &str,
    tls: Option<&rustls::ClientConfig>,
    count: usize,
    timeout: Duration,
) -> Result<IdleConnections, String> {
    let target = Target::new(bbs_url, tls)?;
    let opened: Vec<std::io::Result<Box<dyn Connection>>> = stream::iter(0..count)
        .map(|_| {
            let target = target.clone();
            async move {
                let mut conn = tokio::time::timeout(timeout, target.connect())
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?;
                match ping(conn.as_mut(), &target.host, timeout).await? {
                    200 => Ok(conn),
                    status => Err(std::io::Error::other(format!("Ping answered {status}"))),
                }
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let mut connections = Vec::with_capacity(count);
    for conn in opened {
        connections.push(conn.map_err(|e| {
            format!(
                "opening {count} idle connections to {}: {e}",
                target.address
            )
        })?);
    }
    let alive = Arc::new(std::sync::atomic::AtomicUsize::new(count));
    let keeping = Arc::clone(&alive);
    let host: Arc<str> = target.host.as_str().into();
    let turns = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let keeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            // Pinged together, so one slow connection delays no other; one that fails is
            // dropped (a connection that lost its place in the protocol cannot be reused).
            let mut pinging = tokio::task::JoinSet::new();
            for conn in connections.drain(..) {
                pinging.spawn(keep(conn, Arc::clone(&host), Arc::clone(&turns), timeout));
            }
            while let Some(answered) = pinging.join_next().await {
                if let Ok(Some(conn)) = answered {
                    connections.push(conn);
                }
            }
            keeping.store(connections.len(), std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(IdleConnections {
        keeper,
        opened: count,
        alive,
    })
}

#[cfg(test)]
mod tests {
    use super::complete_answer;

    #[test]
    fn an_answer_is_complete_with_its_whole_body() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n\x08\x01";
        assert!(matches!(complete_answer(ok), Some(Ok(200))));
        assert!(complete_answer(&ok[..ok.len() - 1]).is_none());
        assert!(complete_answer(b"HTTP/1.1 200 OK\r\ncontent-len").is_none());
        let refused = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(complete_answer(refused), Some(Ok(503))));
        assert!(matches!(
            complete_answer(b"SSH-2.0\r\ncontent-length: 0\r\n\r\n"),
            Some(Err(_))
        ));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n";
        assert!(matches!(complete_answer(chunked), Some(Err(_))));
    }
}
