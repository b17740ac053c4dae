//! Opening one lane connection: TCP connect, `TCP_NODELAY`, the TLS handshake with
//! `[backend] tls`, and the AUTH handshake.

use std::io;

use bytes::BytesMut;
use redshard_config::NodeAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::LaneError;
use super::stream::BackendStream;
use super::LaneConfig;
use redshard_protocol::resp::{encode, reply, Protocol, ReplyScanner};

/// Connects to `addr` (with TLS when configured) and authenticates, all within
/// `config.connect_timeout`.
///
/// # Errors
/// Connection refused or timed out, or the node rejected the credentials.
pub(super) async fn connect(
    addr: &NodeAddr,
    protocol: Protocol,
    config: &LaneConfig,
) -> Result<BackendStream, LaneError> {
    timed(config, connect_inner(addr, protocol, config, false)).await
}

/// [`connect`] for a connection that carries client requests, of any database (a lane, or a
/// ready connection a private lane takes): it also checks that the node has every database
/// a client may `SELECT`. Subscriptions and the proxy's watch connections never switch
/// databases, so they skip that round trip.
///
/// # Errors
/// As [`connect`]'s, or the node lacks databases.
pub(super) async fn connect_lane(
    addr: &NodeAddr,
    protocol: Protocol,
    config: &LaneConfig,
) -> Result<BackendStream, LaneError> {
    timed(config, connect_inner(addr, protocol, config, true)).await
}

/// `opening` within `config.connect_timeout`.
async fn timed(
    config: &LaneConfig,
    opening: impl std::future::Future<Output = Result<BackendStream, LaneError>>,
) -> Result<BackendStream, LaneError> {
    match tokio::time::timeout(config.connect_timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(LaneError::ConnectTimeout(config.connect_timeout)),
    }
}

async fn connect_inner(
    addr: &NodeAddr,
    protocol: Protocol,
    config: &LaneConfig,
    for_lanes: bool,
) -> Result<BackendStream, LaneError> {
    let mut stream = BackendStream::connect(addr, config.tls.as_deref())
        .await
        .map_err(LaneError::Connect)?;
    authenticate(&mut stream, protocol, config).await?;
    if let Some(acl) = &config.acl {
        // Create (or reset) the proxy's users, then carry client traffic as one of them.
        for setup in acl.setup() {
            let answer = exchange(&mut stream, setup, config).await?;
            if !reply::is_ok(&answer) {
                return Err(refused_or(error_text(&answer), LaneError::Acl));
            }
        }
        let auth = acl.auth(super::acl::BackendUser::Client);
        let answer = exchange(&mut stream, auth, config).await?;
        if !reply::is_ok(&answer) {
            return Err(refused_or(error_text(&answer), LaneError::Acl));
        }
    }
    if for_lanes && config.databases > 1 {
        check_databases(&mut stream, config).await?;
    }
    Ok(stream)
}

/// Checks that the node has every database a client may `SELECT` (`[backend] databases`):
/// a lane switches databases with a `SELECT` pipelined before the request, and one the node
/// refused would leave that request running in the previous database. `SELECT` of the last
/// one, then back to 0, in one write.
async fn check_databases(stream: &mut BackendStream, config: &LaneConfig) -> Result<(), LaneError> {
    let last = (config.databases - 1).to_string();
    let mut request = BytesMut::new();
    encode::request(&mut request, &[b"SELECT", last.as_bytes()]);
    encode::request(&mut request, &[b"SELECT", b"0"]);
    stream
        .write_all(&request)
        .await
        .map_err(LaneError::Connect)?;
    // Both replies, which may come in one read.
    let answers = read_replies(stream, config.max_reply_depth, 2).await?;
    for answer in answers {
        if !reply::is_ok(&answer) {
            let why = error_text(&answer);
            return Err(if why.starts_with(MAX_CLIENTS_REACHED) {
                LaneError::Refused(why)
            } else {
                LaneError::Databases {
                    databases: config.databases,
                    why,
                }
            });
        }
    }
    Ok(())
}

/// Sends one request and reads its reply (during the handshake only).
async fn exchange(
    stream: &mut BackendStream,
    request: &[u8],
    config: &LaneConfig,
) -> Result<BytesMut, LaneError> {
    stream
        .write_all(request)
        .await
        .map_err(LaneError::Connect)?;
    read_one_reply(stream, config.max_reply_depth).await
}

/// What Redis answers to anything on a connection it accepted over `maxclients`, before it
/// closes it.
const MAX_CLIENTS_REACHED: &str = "ERR max number of clients reached";

/// The error for a handshake step the node refused with `text`: the connection itself
/// refused (the node is full), else what `otherwise` says of the step.
fn refused_or(text: String, otherwise: fn(String) -> LaneError) -> LaneError {
    if text.starts_with(MAX_CLIENTS_REACHED) {
        LaneError::Refused(text)
    } else {
        otherwise(text)
    }
}

/// An error reply as one line of text, without its `-`.
fn error_text(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .trim_end()
        .trim_start_matches('-')
        .to_owned()
}

/// The protocol switch and the `AUTH` with the configured backend credentials.
async fn authenticate(
    stream: &mut BackendStream,
    protocol: Protocol,
    config: &LaneConfig,
) -> Result<(), LaneError> {
    if protocol == Protocol::Resp3 {
        // HELLO 3 authenticates too; its AUTH form always names a user.
        let mut request = BytesMut::new();
        match &config.password {
            Some(password) => {
                let user = config.username.as_deref().unwrap_or("default");
                encode::request(
                    &mut request,
                    &[
                        b"HELLO",
                        b"3",
                        b"AUTH",
                        user.as_bytes(),
                        password.as_bytes(),
                    ],
                );
            }
            None => encode::request(&mut request, &[b"HELLO", b"3"]),
        }
        stream
            .write_all(&request)
            .await
            .map_err(LaneError::Connect)?;
        let answer = read_one_reply(stream, config.max_reply_depth).await?;
        if reply::is_error(&answer) {
            let text = String::from_utf8_lossy(&answer)
                .trim_end()
                .trim_start_matches('-')
                .to_owned();
            return Err(
                if text.starts_with("WRONGPASS") || text.starts_with("NOAUTH") {
                    LaneError::Auth(text)
                } else {
                    refused_or(text, LaneError::NoResp3)
                },
            );
        }
        return Ok(());
    }
    if let Some(password) = &config.password {
        let mut request = BytesMut::new();
        match &config.username {
            Some(user) => encode::request(
                &mut request,
                &[b"AUTH", user.as_bytes(), password.as_bytes()],
            ),
            None => encode::request(&mut request, &[b"AUTH", password.as_bytes()]),
        }
        stream
            .write_all(&request)
            .await
            .map_err(LaneError::Connect)?;
        let answer = read_one_reply(stream, config.max_reply_depth).await?;
        if !reply::is_ok(&answer) {
            return Err(refused_or(error_text(&answer), LaneError::Auth));
        }
    }
    Ok(())
}

/// The node's `run_id` (`INFO server`), asked on a fresh connection before it serves; `None`
/// when the node refuses INFO to the proxy's backend user (an ACL without `+info`) or its
/// answer has no `run_id` (a Redis-compatible server): then its restarts are not watched.
///
/// # Errors
/// The exchange failed.
pub(super) async fn run_id(
    stream: &mut BackendStream,
    config: &LaneConfig,
) -> Result<Option<String>, LaneError> {
    let mut request = BytesMut::new();
    encode::request(&mut request, &[b"INFO", b"server"]);
    let exchange = async {
        stream
            .write_all(&request)
            .await
            .map_err(LaneError::Connect)?;
        read_one_reply(stream, config.max_reply_depth).await
    };
    let answer = tokio::time::timeout(config.connect_timeout, exchange)
        .await
        .map_err(|_| LaneError::ConnectTimeout(config.connect_timeout))??;
    if reply::is_error(&answer) {
        return Ok(None);
    }
    // A bulk string in RESP2, a verbatim one in RESP3: the line is found the same way.
    let text = String::from_utf8_lossy(&answer);
    let run_id = text
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned());
    Ok(run_id)
}

/// Reads exactly one reply (used only during the handshake, before pipelining starts).
pub(super) async fn read_one_reply(
    stream: &mut BackendStream,
    max_depth: usize,
) -> Result<BytesMut, LaneError> {
    let mut replies = read_replies(stream, max_depth, 1).await?;
    replies
        .pop()
        .ok_or_else(|| LaneError::Connect(io::ErrorKind::UnexpectedEof.into()))
}

/// Reads exactly `n` replies (during the handshake: nothing else is in flight, so nothing
/// read past them is lost).
async fn read_replies(
    stream: &mut BackendStream,
    max_depth: usize,
    n: usize,
) -> Result<Vec<BytesMut>, LaneError> {
    let mut buf = BytesMut::with_capacity(256);
    let mut scanner = ReplyScanner::new(max_depth);
    let mut replies = Vec::with_capacity(n);
    while replies.len() < n {
        match scanner.scan(&buf).map_err(LaneError::Protocol)? {
            Some(len) => replies.push(buf.split_to(len)),
            None => {
                if stream
                    .read_buf(&mut buf)
                    .await
                    .map_err(LaneError::Connect)?
                    == 0
                {
                    return Err(LaneError::Connect(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
    Ok(replies)
}
