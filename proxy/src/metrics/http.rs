//! The HTTP endpoint on `metrics_listen`: a small HTTP/1.1 server for four routes.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /metrics` | 200, the Prometheus text format (`text/plain; version=0.0.4`) |
//! | `GET /livez` (also `/healthz`) | 200 `ok`: the process serves |
//! | `GET /readyz` | 200 `ready`, or 503 `not ready` and one line per reason |
//! | `POST /-/reload` | 200 `reloaded` and what changed, or 400 and why not |
//!
//! Any other path is 404, another method on a known path 405 (`HEAD` is accepted wherever
//! `GET` is). One request per connection (`Connection: close`), which is what Prometheus and
//! health checkers do anyway. Everything is bounded: the request head (8 KiB), a request
//! body (8 KiB, read and ignored), the time to send the request (5 s) and to take the answer
//! (10 s), and the connections served at once (64; more are closed at once). Malformed
//! requests get a 4xx and a closed connection; nothing a client sends can panic the server.
//!
//! The server knows nothing of the proxy: it calls the [`Endpoints`] it is given.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use redshard_dataplane::shutdown::Shutdown;

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest request body accepted (and ignored).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Time a client has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// After refusing a request that was not read whole, how much more input is read (and
/// dropped) before closing, and how long to wait for each piece.
const LINGER_BYTES: usize = 64 * 1024;
/// See [`LINGER_BYTES`].
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Renders the `/metrics` page.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
/// Decides readiness: `Err` with one line per reason the proxy cannot serve.
pub type ReadyFn = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;
/// Reloads the configuration: `Ok` with a report starting with `reloaded`, or `Err` with why
/// not.
pub type ReloadFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the routes call.
#[derive(Clone)]
pub struct Endpoints {
    /// `GET /metrics`.
    pub metrics: MetricsFn,
    /// `GET /readyz`.
    pub ready: ReadyFn,
    /// `POST /-/reload`.
    pub reload: ReloadFn,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoints")
    }
}

/// Serves `endpoints` on `listener` until `shutdown` fires; requests being answered then
/// finish on their own (within the timeouts).
pub async fn run(listener: TcpListener, endpoints: Endpoints, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(5);
                stream
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            serve(stream, &endpoints).await;
            drop(permit);
        });
    }
}

/// Answers one request on `stream`.
async fn serve(mut stream: TcpStream, endpoints: &Endpoints) {
    let (response, unread) =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(request)) => (route(&request, endpoints), false),
            Ok(Err(Some(response))) => (response, true),
            // The client went away or sent nothing in time: nobody to answer.
            Ok(Err(None)) | Err(_) => return,
        };
    let bytes = response.to_bytes();
    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
        if unread {
            // Closing with unread input would reset the connection and could destroy the
            // answer before the client reads it: take (a bounded amount of) what it still
            // sends, until it closes.
            let mut sink = [0u8; 4096];
            let mut left = LINGER_BYTES;
            while left > 0 {
                match tokio::time::timeout(LINGER_TIME, stream.read(&mut sink)).await {
                    Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                    _ => break,
                }
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// The parts of a request the routes look at.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// `GET`, `POST`, ...
    method: String,
    /// The path, without the query string.
    path: String,
}

/// One answer.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    /// Status code.
    status: u16,
    /// `Content-Type`.
    content_type: &'static str,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
    /// The body.
    body: String,
    /// Whether to leave the body out (HEAD), keeping its length.
    head: bool,
}

/// `text/plain`, for everything but metrics.
const PLAIN: &str = "text/plain; charset=utf-8";
/// The Prometheus text format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: PLAIN,
            allow: None,
            body: body.into(),
            head: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str("Allow: ");
            head.push_str(allow);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The route for `request`.
fn route(request: &Request, endpoints: &Endpoints) -> Response {
    let get = matches!(request.method.as_str(), "GET" | "HEAD");
    let mut response = match (request.path.as_str(), get, request.method.as_str()) {
        ("/metrics", true, _) => Response {
            content_type: PROMETHEUS,
            ..Response::text(200, (endpoints.metrics)())
        },
        ("/livez" | "/healthz", true, _) => Response::text(200, "ok\n"),
        ("/readyz", true, _) => match (endpoints.ready)() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(reasons) => {
                let mut body = String::from("not ready\n");
                for reason in reasons {
                    body.push_str(&reason);
                    body.push('\n');
                }
                Response::text(503, body)
            }
        },
        ("/-/reload", _, "POST") => match (endpoints.reload)() {
            Ok(report) => Response::text(200, report),
            Err(error) => Response::text(400, format!("{error}\n")),
        },
        ("/metrics" | "/livez" | "/healthz" | "/readyz", false, _) => Response {
            allow: Some("GET, HEAD"),
            ..Response::text(405, "method not allowed\n")
        },
        ("/-/reload", _, _) => Response {
            allow: Some("POST"),
            ..Response::text(405, "method not allowed\n")
        },
        _ => Response::text(404, "not found\n"),
    };
    response.head = request.method == "HEAD";
    response
}

/// Reads one request head (and any small body). `Err(Some(response))` for a request to
/// refuse, `Err(None)` when the client went away.
async fn read_request(stream: &mut TcpStream) -> Result<Request, Option<Response>> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(Some(Response::text(431, "request head too large\n")));
        }
        let mut chunk = [0u8; 1024];
        let want = chunk.len().min(MAX_HEAD_BYTES + 4 - buf.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = buf.get(..head_end).unwrap_or_default();
    let (request, body_len) = parse_head(head).map_err(Some)?;
    // Read the body (ignored) so closing the socket does not reset the connection before
    // the client has read the answer.
    let mut have = buf.len().saturating_sub(head_end);
    while have < body_len {
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => have += n,
        }
    }
    Ok(request)
}

/// Where the head ends (after its blank line), if it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Parses a request head into the request and the length of its body.
fn parse_head(head: &[u8]) -> Result<(Request, usize), Response> {
    let bad = |why: &str| Response::text(400, format!("bad request: {why}\n"));
    let text = std::str::from_utf8(head).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not METHOD PATH VERSION"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("invalid method"));
    }
    if !version.starts_with("HTTP/") {
        return Err(bad("invalid version"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Response::text(505, "only HTTP/1.0 and HTTP/1.1\n"));
    }
    if !target.starts_with('/') {
        return Err(bad("the target must be a path"));
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let mut body_len = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("a header without ':'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().map_err(|_| bad("invalid Content-Length"))?;
            if body_len > MAX_BODY_BYTES {
                return Err(Response::text(413, "request body too large\n"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::text(501, "Transfer-Encoding is not supported\n"));
        }
    }
    Ok((
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
        },
        body_len,
    ))
}

#[cfg(test)]
mod tests;
