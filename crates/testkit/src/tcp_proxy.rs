//! A loopback TCP forwarder that a test can cut and restore: what the server on the
//! other side sees is what a database (or any peer) going down and coming back looks
//! like — open connections reset, new ones refused — without stopping a shared server.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// Where a proxy forwards to.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    /// A Unix socket file (an embedded PostgreSQL listens only there).
    Unix(PathBuf),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(target: &Target) -> std::io::Result<Box<dyn Stream>> {
    Ok(match target {
        Target::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
        Target::Unix(path) => Box::new(UnixStream::connect(path).await?),
    })
}

pub struct TcpProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards a fresh loopback port to `target`.
    pub async fn start(target: Target) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (up, _) = watch::channel(true);
        let state = up.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*state.borrow() {
                    // Down: the connection is closed at once, as a refused one would be.
                    drop(client);
                    continue;
                }
                let mut state = state.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = connect(&target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                    // Dropping both ends resets them: the peers see the outage.
                });
            }
        });
        Self { addr, up, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
