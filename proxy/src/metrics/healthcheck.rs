//! The client side of `redshard healthcheck`: one blocking `GET` of a readiness URL, for
//! container health checks (no runtime, no TLS: the endpoint is plain HTTP on loopback).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The URL `redshard healthcheck` asks by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9121/readyz";

/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The URL is not `http://host[:port][/path]`.
    #[error("{0:?} is not an http://host:port/path URL")]
    Url(String),
    /// No connection, no answer in time, or not HTTP.
    #[error("{url}: {message}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An answer other than 200.
    #[error("{url}: HTTP {status}: {body}")]
    NotReady {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// The body (the reasons, for `/readyz`).
        body: String,
    },
}

/// Sends `GET url` and returns the body when the status is 200, all within `timeout`.
///
/// # Errors
/// A malformed URL, no answer within `timeout`, or a status other than 200.
pub fn healthcheck(url: &str, timeout: Duration) -> Result<String, HealthcheckError> {
    let (host, path) = split_url(url).ok_or_else(|| HealthcheckError::Url(url.to_owned()))?;
    let unreachable = |message: String| HealthcheckError::Unreachable {
        url: url.to_owned(),
        message,
    };
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = format!("{host} has no address");
    let mut stream = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let io = |e: std::io::Error| unreachable(e.to_string());
    stream.set_read_timeout(Some(left)).map_err(io)?;
    stream.set_write_timeout(Some(left)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| unreachable("the answer is not HTTP".into()))?;
    if status == 200 {
        Ok(body.to_owned())
    } else {
        Err(HealthcheckError::NotReady {
            url: url.to_owned(),
            status,
            body: body.trim_end().to_owned(),
        })
    }
}

/// `http://host:port/path` into `host:port` (port 80 when absent) and `/path` (`/` when
/// absent).
fn split_url(url: &str) -> Option<(String, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || path.contains(char::is_whitespace) {
        return None;
    }
    // A port is present when the part after the last ':' is all digits and not inside an
    // IPv6 literal's brackets.
    let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    });
    let host = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split() {
        assert_eq!(
            split_url("http://127.0.0.1:9121/readyz"),
            Some(("127.0.0.1:9121".to_owned(), "/readyz"))
        );
        assert_eq!(
            split_url("http://localhost"),
            Some(("localhost:80".to_owned(), "/"))
        );
        assert_eq!(
            split_url("http://[::1]:9121/livez"),
            Some(("[::1]:9121".to_owned(), "/livez"))
        );
        assert_eq!(split_url("https://a/readyz"), None);
        assert_eq!(split_url("http:///readyz"), None);
        assert_eq!(split_url("http://a/b c"), None);
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/readyz");
        let err = healthcheck(&url, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HealthcheckError::Unreachable { .. }), "{err}");
        assert!(matches!(
            healthcheck("ftp://x", Duration::from_secs(1)),
            Err(HealthcheckError::Url(_))
        ));
    }
}
