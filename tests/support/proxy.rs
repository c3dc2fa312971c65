//! A TCP proxy between a server and its store that a test controls: it passes bytes, refuses
//! connections, goes silent, resets every connection, or lets a transaction's COMMIT through
//! and then cuts the connection before the answer comes back (a write whose outcome the server
//! cannot know).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Pass,
    /// The port is closed: connecting is refused, and open connections are reset.
    Refuse,
    /// Connections stay open but nothing is forwarded either way.
    Hang,
    /// Bytes flow until the server sends a COMMIT on a connection that has carried the given
    /// bytes (a record's key, so the lock's own refreshes are left alone): the COMMIT is
    /// forwarded, its answer dropped and the connection reset; the proxy then passes again.
    CutAfterCommitOf(&'static str),
}

pub struct StoreProxy {
    /// `host:port` to give the server in place of the store's.
    pub address: String,
    control: watch::Sender<(Mode, u64)>,
}

impl StoreProxy {
    /// Starts a proxy on a free loopback port in front of `target` (`host:port`).
    pub async fn start(target: &str) -> StoreProxy {
        let target: SocketAddr = tokio::net::lookup_host(target)
            .await
            .expect("store address")
            .next()
            .expect("a store address");
        let port = super::free_port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (control, watcher) = watch::channel((Mode::Pass, 0u64));
        let listener = TcpListener::bind(listen).await.expect("proxy bind");
        tokio::spawn(listen_loop(
            listener,
            listen,
            target,
            watcher,
            control.clone(),
        ));
        StoreProxy {
            address: listen.to_string(),
            control,
        }
    }

    /// A proxy in front of `store`'s first address, and the store's configuration with the
    /// proxy's address in its place, for a server under test.
    pub async fn in_front_of(
        store: &bbs_store::StoreConfig,
        backend: bbs_store::Backend,
    ) -> (StoreProxy, bbs_store::StoreConfig) {
        let mut url = url::Url::parse(
            store
                .connection_string
                .split(',')
                .next()
                .expect("a store address"),
        )
        .expect("a store URL");
        let target = format!(
            "{}:{}",
            url.host_str().expect("a store host"),
            url.port_or_known_default().expect("a store port")
        );
        let proxy = StoreProxy::start(&target).await;
        let port: u16 = proxy.address.rsplit(':').next().unwrap().parse().unwrap();
        url.set_port(Some(port)).unwrap();
        if backend == bbs_store::Backend::Mysql {
            // mysql_async moves a loopback connection to MariaDB's Unix socket, around the
            // proxy.
            url.query_pairs_mut().append_pair("prefer_socket", "false");
        }
        let mut through_proxy = store.clone();
        through_proxy.connection_string = url.to_string();
        (proxy, through_proxy)
    }

    pub fn set(&self, mode: Mode) {
        self.control.send_modify(|(m, generation)| {
            *m = mode;
            *generation += 1;
        });
    }
}

async fn listen_loop(
    mut listener: TcpListener,
    listen: SocketAddr,
    target: SocketAddr,
    mut watcher: watch::Receiver<(Mode, u64)>,
    control: watch::Sender<(Mode, u64)>,
) {
    loop {
        if watcher.borrow().0 == Mode::Refuse {
            drop(listener);
            while watcher.borrow_and_update().0 == Mode::Refuse {
                if watcher.changed().await.is_err() {
                    return;
                }
            }
            listener = loop {
                match TcpListener::bind(listen).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(pump(client, target, watcher.clone(), control.clone()));
            }
            changed = watcher.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Closes with a reset (RST), as a crashed store or a cut network does.
fn reset(stream: TcpStream) {
    // Linger 0 makes the close a reset; it never blocks, so tokio's warning does not apply.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn pump(
    mut client: TcpStream,
    target: SocketAddr,
    mut watcher: watch::Receiver<(Mode, u64)>,
    control: watch::Sender<(Mode, u64)>,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut armed = false;
    loop {
        let mode = watcher.borrow_and_update().0;
        if mode == Mode::Refuse {
            reset(server);
            return reset(client);
        }
        let forwarding = mode != Mode::Hang;
        // A mode change set before bytes arrived is seen before they are forwarded.
        tokio::select! {
            biased;
            changed = watcher.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            read = client.read(&mut up), if forwarding => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                let chunk = &up[..n];
                if server.write_all(chunk).await.is_err() {
                    break;
                }
                let Mode::CutAfterCommitOf(marker) = mode else { continue };
                armed |= contains(chunk, marker.as_bytes());
                if armed && contains(chunk, b"COMMIT") {
                    // Let the store act on it, then cut before the answer reaches the server.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    control.send_modify(|(m, generation)| {
                        *m = Mode::Pass;
                        *generation += 1;
                    });
                    reset(server);
                    return reset(client);
                }
            }
            read = server.read(&mut down), if forwarding => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                if client.write_all(&down[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    reset(server);
    reset(client);
}

fn contains(chunk: &[u8], needle: &[u8]) -> bool {
    chunk
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
