//! `--idle-connections N`: N keep-alive connections held open beside the rep loop, as many
//! mostly quiet clients (a deployment's route emitters, CLIs, monitors) hold them. Each sends
//! one Ping to become a kept-alive connection, and another every 30 s so the server's
//! keep-alive (90 s) does not close it during a long run. The connections are plain HTTP/1.1
//! written by hand, one socket each, so their number is exact.

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

/// One Ping on a kept-alive connection, its answer read to the end.
async fn ping(conn: &mut dyn Connection, host: &str) -> std::io::Result<()> {
    let request = format!(
        "POST /v1/ping HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: 0\r\n\r\n"
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
/// whether it was a 200.
fn complete_answer(answer: &[u8]) -> Option<std::io::Result<()>> {
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if answer.len() < head_end + length {
        return None;
    }
    Some(if head.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ping answered {:?}",
            head.lines().next().unwrap_or_default()
        )))
    })
}

/// The open connections, pinged every 30 s until dropped.
pub struct IdleConnections {
    keeper: tokio::task::JoinHandle<()>,
    pub opened: usize,
}

impl Drop for IdleConnections {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Opens `count` connections, each pinged once; fails with the first connection's error.
pub async fn open(
    bbs_url: &str,
    tls: Option<&rustls::ClientConfig>,
    count: usize,
) -> Result<IdleConnections, String> {
    let target = Target::new(bbs_url, tls)?;
    let opened: Vec<std::io::Result<Box<dyn Connection>>> = stream::iter(0..count)
        .map(|_| {
            let target = target.clone();
            async move {
                let mut conn = target.connect().await?;
                ping(conn.as_mut(), &target.host).await?;
                Ok(conn)
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
    let keeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            for conn in connections.iter_mut() {
                // A connection the server closed stays closed: the run measures what is open.
                let _ = ping(conn.as_mut(), &target.host).await;
            }
        }
    });
    Ok(IdleConnections {
        keeper,
        opened: count,
    })
}

#[cfg(test)]
mod tests {
    use super::complete_answer;

    #[test]
    fn an_answer_is_complete_with_its_whole_body() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n\x08\x01";
        assert!(matches!(complete_answer(ok), Some(Ok(()))));
        assert!(complete_answer(&ok[..ok.len() - 1]).is_none());
        assert!(complete_answer(b"HTTP/1.1 200 OK\r\ncontent-len").is_none());
        let refused = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(complete_answer(refused), Some(Err(_))));
    }
}
