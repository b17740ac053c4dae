//! The accept loops: plaintext clients on `listen`, TLS clients on `tls_listen`.
//!
//! Like Redis, a client over `max_clients` is accepted, told
//! `-ERR max number of clients reached` and closed. `max_clients` is read from the live
//! configuration at each accept, so a reload applies to the next client (clients already
//! connected stay, as with Redis's `CONFIG SET maxclients`); it counts the clients of both
//! listeners, TLS handshakes in progress included. Accept errors (for example running out of
//! file descriptors) back off instead of spinning. Each connection runs in its own task, without
//! a tracing span (entering one at every poll costs every request); the events of a
//! connection name its client (`client = <peer address>`).
//!
//! On the TLS listener the task first completes the TLS handshake, within
//! `[limits] tls_handshake_timeout_ms`, with the certificates in effect at that moment (a reload changes
//! them for the next handshake). A handshake that fails (plaintext sent to the TLS port, an
//! untrusted or missing client certificate) closes the connection, is logged at debug level
//! and counted in `tls_handshake_errors_total`: the client never reaches a session. A client
//! whose first byte does not start a TLS handshake record (plaintext RESP, an HTTP request)
//! is closed without any byte sent, as Redis's TLS port does (OpenSSL sends no alert to a
//! peer that does not speak TLS); rustls would answer it with a TLS alert record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::client_error::ClientError;
use redshard_dataplane::session::park::{self, Place};
use redshard_dataplane::session::{Exit, Session};
use redshard_dataplane::shutdown::Shutdown;
use redshard_dataplane::state::ProxyState;
use redshard_dataplane::tls::ServerTls;

/// First wait after a failed accept (out of file descriptors, ...); it doubles up to a second.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// The next connection on `listener`, or `None` once `shutdown` fires. A failed accept is
/// logged (`what` names the port) and retried after `backoff`, which doubles up to one
/// second and starts over after a success.
pub(crate) async fn accept(
    listener: &TcpListener,
    backoff: &mut Duration,
    shutdown: &mut Shutdown,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(pair) => {
                *backoff = ACCEPT_BACKOFF_MIN;
                return Some(pair);
            }
            Err(e) => {
                error!(error = %e, retry_ms = backoff.as_millis() as u64, "{what}accept failed");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The first byte of every TLS client: the content type of a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// Completes the TLS handshake of `socket` with `acceptor`, after checking (without reading
/// it) that its first byte starts a handshake record: a client that does not speak TLS is
/// refused before rustls would send it an alert, so it is closed without any byte, as
/// Redis does.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let n = socket.peek(&mut first).await?;
    if n == 0 || first[0] != TLS_HANDSHAKE_RECORD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the client does not speak TLS (plaintext on the TLS port?); closed without a reply",
        ));
    }
    acceptor.accept(socket).await
}

/// What a client over `max_clients` is told before it is closed.
const REFUSAL: ClientError = ClientError::MaxClients;

/// Accepts plaintext clients on `listener` until `shutdown` fires, then waits for every
/// session to finish its in-flight replies (the caller bounds that wait with the grace
/// period).
pub async fn run(listener: TcpListener, state: Arc<ProxyState>, shutdown: Shutdown) {
    accept_loop(listener, state, shutdown, None).await;
}

/// As [`run`], for TLS clients: each connection completes a handshake with `tls` first.
pub async fn run_tls(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: Shutdown,
    tls: Arc<ServerTls>,
) {
    accept_loop(listener, state, shutdown, Some(tls)).await;
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ProxyState>,
    mut shutdown: Shutdown,
    tls: Option<Arc<ServerTls>>,
) {
    // Each session holds a clone of `done_tx`; `done_rx` completes when the last one is gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    while let Some((mut socket, peer)) = accept(&listener, &mut backoff, &mut shutdown, "").await {
        let max_clients = state.live.now().limits.max_clients;
        let Some(permit) = state.clients.admit(max_clients) else {
            state.clients.refused();
            match &tls {
                None => {
                    tokio::spawn(async move {
                        let _ = socket.write_all(&REFUSAL.to_reply()).await;
                    });
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let timeout = state.live.now().limits.tls_handshake_timeout;
                    tokio::spawn(async move {
                        let refuse = async {
                            let mut stream = handshake(acceptor, socket).await?;
                            stream.write_all(&REFUSAL.to_reply()).await?;
                            stream.shutdown().await
                        };
                        let _ = tokio::time::timeout(timeout, refuse).await;
                    });
                }
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        let done = done_tx.clone();
        // Two task types, so a plaintext session's task does not carry a TLS stream's size.
        match &tls {
            None => {
                // Made here, outside the task's future: moved into an async fn, a session
                // would take its room twice in every connection's future (once as the
                // argument, once inside the running future). The task can park it.
                if let Ok(session) = Session::new(socket.into(), state, shutdown) {
                    park::spawn_session(session, Place { permit, done });
                }
            }
            Some(tls) => {
                let tls = Arc::clone(tls);
                // No tracing span (see `park::session_task`): the events name the client.
                tokio::spawn(async move {
                    serve_tls(socket, peer, &tls, state, shutdown).await;
                    drop(permit);
                    drop(done);
                });
            }
        }
    }
    drop(listener);
    drop(done_tx);
    info!("stopped accepting; waiting for sessions to finish");
    let _ = done_rx.recv().await;
}

/// Completes a TLS client's handshake, then serves it. A failed or slow handshake, or a
/// shutdown meanwhile, closes the connection.
async fn serve_tls(
    socket: TcpStream,
    peer: SocketAddr,
    tls: &ServerTls,
    state: Arc<ProxyState>,
    mut shutdown: Shutdown,
) {
    let timeout = state.live.now().limits.tls_handshake_timeout;
    let handshake = tokio::time::timeout(timeout, handshake(tls.acceptor(), socket));
    let stream = tokio::select! {
        () = shutdown.wait() => return,
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                redshard_metrics::tls_handshake_error();
                debug!(client = %peer, error = %e, "TLS handshake failed; closing the connection");
                return;
            }
            Err(_) => {
                redshard_metrics::tls_handshake_error();
                debug!(client = %peer, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out; closing the connection");
                return;
            }
        },
    };
    if let Ok(mut session) = Session::new(stream, state, shutdown) {
        let exit = session.run().await;
        debug_assert_eq!(exit, Exit::Closed, "TLS sessions never park");
    }
}
