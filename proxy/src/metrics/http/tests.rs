use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use redshard_dataplane::shutdown;

fn parse(head: &str) -> Result<(Request, usize), u16> {
    parse_head(head.as_bytes()).map_err(|r| r.status)
}

#[test]
fn request_heads_are_parsed_strictly() {
    let (request, body) = parse("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/metrics");
    assert_eq!(body, 0);
    let (request, body) = parse("POST /-/reload HTTP/1.0\ncontent-length: 12\n\n").unwrap();
    assert_eq!((request.path.as_str(), body), ("/-/reload", 12));
    for (head, status) in [
        ("GET /metrics\r\n\r\n", 400),
        ("GET  /metrics HTTP/1.1\r\n\r\n", 400),
        ("get /metrics HTTP/1.1\r\n\r\n", 400),
        ("GET metrics HTTP/1.1\r\n\r\n", 400),
        ("GET http://x/metrics HTTP/1.1\r\n\r\n", 400),
        ("GET /metrics FTP/1.1\r\n\r\n", 400),
        ("GET /metrics HTTP/2.0\r\n\r\n", 505),
        ("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
        ("POST /-/reload HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (
            "POST /-/reload HTTP/1.1\r\nContent-Length: 9000\r\n\r\n",
            413,
        ),
        (
            "POST /-/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
        ),
        ("", 400),
    ] {
        assert_eq!(parse(head).map(|_| ()), Err(status), "{head:?}");
    }
    assert_eq!(
        parse_head(b"GET /\xff HTTP/1.1\r\n\r\n")
            .map_err(|r| r.status)
            .map(|_| ()),
        Err(400)
    );
}

/// Stub endpoints: metrics `m 1`, readiness from `ready`, reload fails on `fail`.
fn stub(ready: Arc<AtomicBool>) -> Endpoints {
    Endpoints {
        metrics: Arc::new(|| "m 1\n".to_owned()),
        ready: Arc::new(move || {
            if ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(vec!["shard \"s1\": master down".to_owned()])
            }
        }),
        reload: Arc::new(|| Err("bad.toml: line 2: limits.max_clients: must be at least 1".into())),
    }
}

/// Sends `request` and reads the whole answer.
async fn send(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn routes_answer_with_status_type_and_length() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let (trigger, watch) = shutdown::channel();
    let server = tokio::spawn(run(listener, stub(Arc::clone(&ready)), watch));

    let answer = send(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: 4\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nm 1\n"
    );
    let answer = send(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        answer
            .ends_with("Content-Length: 4\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"),
        "{answer}"
    );
    for path in ["/livez", "/healthz"] {
        let answer = send(addr, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"));
    }
    assert!(send(addr, b"GET /readyz HTTP/1.1\r\n\r\n")
        .await
        .ends_with("\r\n\r\nready\n"));
    ready.store(false, Ordering::SeqCst);
    let answer = send(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\nnot ready\nshard \"s1\": master down\n"),
        "{answer}"
    );

    let answer = send(
        addr,
        b"POST /-/reload HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("limits.max_clients: must be at least 1\n"),
        "{answer}"
    );

    let answer = send(addr, b"GET /-/reload HTTP/1.1\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nAllow: POST\r\n"), "{answer}");
    let answer = send(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        answer.contains("405") && answer.contains("\r\nAllow: GET, HEAD\r\n"),
        "{answer}"
    );
    let answer = send(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the server stops on shutdown")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn garbage_and_oversized_heads_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_trigger, watch) = shutdown::channel();
    tokio::spawn(run(listener, stub(Arc::new(AtomicBool::new(true))), watch));

    let answer = send(addr, b"\x00\x01\x02 garbage\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 3 * MAX_HEAD_BYTES));
    let answer = send(addr, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // A client that connects and leaves costs nothing; the server keeps serving.
    drop(TcpStream::connect(addr).await.unwrap());
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"GET /livez HT").await.unwrap();
    drop(partial);
    assert!(send(addr, b"GET /livez HTTP/1.1\r\n\r\n")
        .await
        .ends_with("ok\n"));
}
