//! Property tests of the request and reply scanners, with `redis-protocol` as the oracle.
//!
//! Inputs are encoded by `redis-protocol`, concatenated into a pipeline, and fed to our
//! scanners in arbitrary chunks, as short reads would deliver them; our boundaries and
//! arguments must be exactly what `redis-protocol` decodes. Garbage must never panic either
//! scanner, and must give the same outcome whatever the chunking.

use std::collections::{HashMap, HashSet};

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use redis_protocol::resp2;
use redis_protocol::resp2::types::Resp2Frame;
use redis_protocol::resp3;
use redis_protocol::resp3::types::{OwnedFrame as Resp3, Resp3Frame, VerbatimStringFormat};
use redshard_protocol::resp::{FrameKind, ProtocolError, ReplyScanner, RequestScanner, ScanLimits};

/// One request as the scanner reported it: its length, kind, and arguments.
type Scanned = (usize, FrameKind, Vec<Vec<u8>>);

/// Feeds `input` to a request scanner in pieces of the given sizes (cycled), like short reads,
/// and collects every request until the input is exhausted or an error.
fn scan_requests(input: &[u8], chunks: &[usize]) -> (Vec<Scanned>, Option<ProtocolError>) {
    let mut scanner = RequestScanner::new(ScanLimits::default());
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    loop {
        match scanner.scan(&buf) {
            Ok(Some(frame)) => {
                let args = scanner.args(&buf).iter().map(<[u8]>::to_vec).collect();
                out.push((frame.len, frame.kind, args));
                buf.drain(..frame.len);
                scanner.reset();
            }
            Ok(None) if fed == input.len() => return (out, None),
            Ok(None) => {
                let n = (*sizes.next().unwrap_or(&1)).clamp(1, input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Same for replies: the length of every reply found.
fn scan_replies(input: &[u8], chunks: &[usize]) -> (Vec<usize>, Option<ProtocolError>) {
    let mut scanner = ReplyScanner::new(64);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    loop {
        match scanner.scan(&buf) {
            Ok(Some(len)) => {
                out.push(len);
                buf.drain(..len);
            }
            Ok(None) if fed == input.len() => return (out, None),
            Ok(None) => {
                let n = (*sizes.next().unwrap_or(&1)).clamp(1, input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

fn encode_resp2(frame: &resp2::types::OwnedFrame) -> Vec<u8> {
    let mut buf = vec![0; frame.encode_len(false)];
    let len = resp2::encode::encode(&mut buf, frame, false).expect("encode");
    buf.truncate(len);
    buf
}

fn encode_resp3(frame: &Resp3) -> Vec<u8> {
    let mut buf = vec![0; frame.encode_len(false)];
    let len = resp3::encode::complete::encode(&mut buf, frame, false).expect("encode");
    buf.truncate(len);
    buf
}

/// A binary argument, often with CR and LF inside.
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        vec(
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b'$'),
                Just(b'*'),
                any::<u8>()
            ],
            0..40
        ),
    ]
}

fn requests() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    vec(vec(arg(), 1..20), 1..12)
}

/// Split sizes: mostly tiny, sometimes large.
fn chunks() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1..8usize, 1..200usize, 1..5000usize], 1..16)
}

/// Leaf RESP3 frames (no aggregates).
fn leaf() -> impl Strategy<Value = Resp3> {
    let text = "[a-zA-Z0-9 _.:-]{0,30}";
    prop_oneof![
        vec(any::<u8>(), 0..100).prop_map(|data| Resp3::BlobString {
            data,
            attributes: None
        }),
        vec(any::<u8>(), 0..50).prop_map(|data| Resp3::BlobError {
            data,
            attributes: None
        }),
        text.prop_map(|s| Resp3::SimpleString {
            data: s.into_bytes(),
            attributes: None
        }),
        text.prop_map(|s| Resp3::SimpleError {
            data: format!("ERR {s}"),
            attributes: None
        }),
        any::<bool>().prop_map(|data| Resp3::Boolean {
            data,
            attributes: None
        }),
        Just(Resp3::Null),
        any::<i64>().prop_map(|data| Resp3::Number {
            data,
            attributes: None
        }),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(|data| Resp3::Double {
                data,
                attributes: None
            }),
        "-?[1-9][0-9]{0,60}".prop_map(|s| Resp3::BigNumber {
            data: s.into_bytes(),
            attributes: None
        }),
        (vec(any::<u8>(), 0..60), any::<bool>()).prop_map(|(data, md)| Resp3::VerbatimString {
            data,
            format: if md {
                VerbatimStringFormat::Markdown
            } else {
                VerbatimStringFormat::Text
            },
            attributes: None,
        }),
    ]
}

/// Attributes: a small map of simple keys to leaf values.
fn attributes() -> impl Strategy<Value = HashMap<Resp3, Resp3>> {
    hash_map(
        "[a-z]{1,8}".prop_map(|s| Resp3::SimpleString {
            data: s.into_bytes(),
            attributes: None,
        }),
        leaf(),
        0..3,
    )
}

/// Any RESP3 reply: nested arrays, maps, sets and pushes of leaves, some with attributes.
fn reply3() -> impl Strategy<Value = Resp3> {
    let key = prop_oneof![
        "[a-z]{0,8}".prop_map(|s| Resp3::BlobString {
            data: s.into_bytes(),
            attributes: None
        }),
        any::<i64>().prop_map(|data| Resp3::Number {
            data,
            attributes: None
        }),
    ];
    let tree = leaf().prop_recursive(4, 64, 6, move |inner| {
        let aggregate = prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|data| Resp3::Array {
                data,
                attributes: None
            }),
            vec(inner.clone(), 0..6).prop_map(|data| Resp3::Push {
                data,
                attributes: None
            }),
            hash_map(key.clone(), inner.clone(), 0..4).prop_map(|data| Resp3::Map {
                data,
                attributes: None
            }),
            vec(key.clone(), 0..5).prop_map(|data| Resp3::Set {
                data: data.into_iter().collect::<HashSet<_>>(),
                attributes: None,
            }),
        ];
        with_attributes(aggregate)
    });
    with_attributes(tree)
}

/// Sometimes attaches attributes to the frames of `frames`.
fn with_attributes(frames: impl Strategy<Value = Resp3>) -> impl Strategy<Value = Resp3> {
    (frames, prop::option::weighted(0.2, attributes())).prop_map(|(mut frame, attrs)| {
        if let Some(attrs) = attrs {
            // Null cannot carry attributes; it then stays without.
            let _ = frame.add_attributes(attrs);
        }
        frame
    })
}

/// Any RESP2 reply, including the RESP2 null bulk string.
fn reply2() -> impl Strategy<Value = resp2::types::OwnedFrame> {
    use resp2::types::OwnedFrame as R2;
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..100).prop_map(R2::BulkString),
        "[a-zA-Z0-9 ]{0,20}".prop_map(|s| R2::SimpleString(s.into_bytes())),
        "[a-zA-Z0-9 ]{0,20}".prop_map(|s| R2::Error(format!("ERR {s}"))),
        any::<i64>().prop_map(R2::Integer),
        Just(R2::Null),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| vec(inner, 0..6).prop_map(R2::Array))
}

/// One encoded reply of either protocol version, and whether it is RESP3.
fn encoded_reply() -> impl Strategy<Value = (Vec<u8>, bool)> {
    prop_oneof![
        3 => reply3().prop_map(|f| (encode_resp3(&f), true)),
        2 => reply2().prop_map(|f| (encode_resp2(&f), false)),
        1 => Just((b"*-1\r\n".to_vec(), false)),
    ]
}

/// The length `redis-protocol` decodes for the reply at the front of `bytes`.
fn oracle_len(bytes: &[u8], resp3: bool) -> usize {
    let decoded = if resp3 {
        resp3::decode::complete::decode(bytes).map(|d| d.map(|(_, len)| len))
    } else {
        resp2::decode::decode(bytes).map(|d| d.map(|(_, len)| len))
    };
    match decoded {
        Ok(Some(len)) => len,
        other => panic!(
            "oracle failed on {:?}: {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (1) Pipelines of arbitrary binary requests, chunked: the same requests come out, with
    /// the lengths and arguments `redis-protocol` finds.
    #[test]
    fn requests_match_redis_protocol(reqs in requests(), chunks in chunks()) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for args in &reqs {
            let frame = resp2::types::OwnedFrame::Array(
                args.iter().cloned().map(resp2::types::OwnedFrame::BulkString).collect(),
            );
            let bytes = encode_resp2(&frame);
            let (decoded, len) = resp2::decode::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(len, bytes.len());
            let resp2::types::OwnedFrame::Array(items) = decoded else {
                panic!("not an array");
            };
            let oracle: Vec<Vec<u8>> = items
                .into_iter()
                .map(|item| match item {
                    resp2::types::OwnedFrame::BulkString(b) => b,
                    other => panic!("{other:?}"),
                })
                .collect();
            expected.push((len, FrameKind::Multibulk, oracle));
            input.extend_from_slice(&bytes);
        }
        prop_assert_eq!(scan_requests(&input, &chunks), (expected, None));
    }

    /// (1b) The same arguments sent as inline commands, fully quoted with `\xHH` escapes: the
    /// scanner unquotes them and re-encodes exactly what `redis-protocol` encodes.
    #[test]
    fn inline_requests_round_trip(reqs in vec(vec(vec(any::<u8>(), 0..40), 1..10), 1..6),
                                  chunks in chunks()) {
        let mut input = Vec::new();
        for args in &reqs {
            for arg in args {
                input.push(b'"');
                for b in arg {
                    input.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                }
                input.extend_from_slice(b"\" ");
            }
            input.extend_from_slice(b"\r\n");
        }
        let mut scanner = RequestScanner::new(ScanLimits::default());
        let mut buf = input.as_slice();
        for args in &reqs {
            let frame = scanner.scan(buf).unwrap().unwrap();
            prop_assert_eq!(frame.kind, FrameKind::Inline);
            let got: Vec<&[u8]> = scanner.args(buf).iter().collect();
            let want: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(got, want);
            let oracle = encode_resp2(&resp2::types::OwnedFrame::Array(
                args.iter().cloned().map(resp2::types::OwnedFrame::BulkString).collect(),
            ));
            prop_assert_eq!(scanner.inline_resp(), oracle.as_slice());
            buf = &buf[frame.len..];
            scanner.reset();
        }
        prop_assert!(buf.is_empty());
        let (chunked, error) = scan_requests(&input, &chunks);
        prop_assert_eq!(error, None);
        prop_assert_eq!(chunked.len(), reqs.len());
    }

    /// (2) Pipelines of arbitrary RESP2/RESP3 replies, chunked: the boundaries are the lengths
    /// `redis-protocol` decodes.
    #[test]
    fn replies_match_redis_protocol(replies in vec(encoded_reply(), 1..12), chunks in chunks()) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (bytes, resp3) in &replies {
            let oracle = oracle_len(bytes, *resp3);
            prop_assert_eq!(oracle, bytes.len());
            expected.push(oracle);
            input.extend_from_slice(bytes);
        }
        prop_assert_eq!(scan_replies(&input, &chunks), (expected, None));
    }

    /// (3) Garbage never panics either scanner, and gives the same outcome however it is
    /// chunked.
    #[test]
    fn garbage_never_panics(garbage in vec(any::<u8>(), 0..600), chunks in chunks()) {
        prop_assert_eq!(scan_requests(&garbage, &chunks), scan_requests(&garbage, &[garbage.len()]));
        prop_assert_eq!(scan_replies(&garbage, &chunks), scan_replies(&garbage, &[garbage.len()]));
    }

    /// (3b) Valid streams with a few bytes corrupted: closer to what a desynchronized peer
    /// sends, and more likely to reach deep states.
    #[test]
    fn corrupted_streams_never_panic(
        reqs in requests(),
        replies in vec(encoded_reply(), 1..6),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        chunks in chunks(),
    ) {
        let mut input: Vec<u8> = Vec::new();
        for args in &reqs {
            input.extend(encode_resp2(&resp2::types::OwnedFrame::Array(
                args.iter().cloned().map(resp2::types::OwnedFrame::BulkString).collect(),
            )));
        }
        for (reply, _) in &replies {
            input.extend_from_slice(reply);
        }
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        prop_assert_eq!(scan_requests(&input, &chunks), scan_requests(&input, &[input.len()]));
        prop_assert_eq!(scan_replies(&input, &chunks), scan_replies(&input, &[input.len()]));
    }
}

/// One level of a deeply nested reply: the header(s) that open it, before the level below,
/// and what follows the level below to close it.
fn deep_level() -> impl Strategy<Value = (&'static [u8], &'static [u8])> {
    prop_oneof![
        Just((&b"*1\r\n"[..], &b""[..])),
        Just((&b"*2\r\n"[..], &b":1\r\n"[..])),
        Just((&b"*2\r\n$1\r\na\r\n"[..], &b""[..])),
        Just((&b"%1\r\n+k\r\n"[..], &b""[..])),
        Just((&b"~1\r\n"[..], &b""[..])),
        Just((&b">2\r\n+m\r\n"[..], &b""[..])),
        Just((&b"|1\r\n+a\r\n+b\r\n*1\r\n"[..], &b""[..])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (4) Replies nested thousands of levels deep in every shape, chunked: framed exactly (no
    /// recursion, no stack overflow), flagged too deep exactly when they pass the limit, and
    /// the reply after them framed normally.
    #[test]
    fn deep_replies_are_framed_and_flagged(
        levels in vec(deep_level(), 1000..30_000),
        limit in prop_oneof![Just(16_384usize), 500..40_000usize],
        chunks in chunks(),
    ) {
        let mut reply = Vec::new();
        let mut depth = 0;
        for (open, _) in &levels {
            reply.extend_from_slice(open);
            // An attribute opens a level of its own before the value's.
            depth += if open.starts_with(b"|") { 2 } else { 1 };
        }
        reply.extend_from_slice(b":0\r\n");
        for (_, close) in levels.iter().rev() {
            reply.extend_from_slice(close);
        }
        let mut input = reply.clone();
        input.extend_from_slice(b"+OK\r\n");
        let mut scanner = ReplyScanner::new(limit);
        let mut found = Vec::new();
        let mut buf = Vec::new();
        let mut sizes = chunks.iter().cycle();
        let mut fed = 0;
        while fed < input.len() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, input.len() - fed);
            buf.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            while let Some(len) = scanner.scan(&buf).expect("well formed") {
                found.push((len, scanner.too_deep()));
                buf.drain(..len);
            }
        }
        prop_assert_eq!(found, vec![(reply.len(), depth > limit), (5, false)]);
    }
}

/// The oracle really encodes attributes (as a `|` map before the value), nested ones too.
#[test]
fn attributes_are_encoded_and_scanned() {
    let attrs = |k: &str| {
        let mut m = HashMap::new();
        m.insert(
            Resp3::SimpleString {
                data: k.as_bytes().to_vec(),
                attributes: None,
            },
            Resp3::Number {
                data: 1,
                attributes: None,
            },
        );
        m
    };
    let frame = Resp3::Array {
        data: vec![Resp3::BlobString {
            data: b"v".to_vec(),
            attributes: Some(attrs("inner")),
        }],
        attributes: Some(attrs("outer")),
    };
    let bytes = encode_resp3(&frame);
    assert_eq!(
        bytes,
        b"|1\r\n+outer\r\n:1\r\n*1\r\n|1\r\n+inner\r\n:1\r\n$1\r\nv\r\n"
    );
    assert_eq!(oracle_len(&bytes, true), bytes.len());
    assert_eq!(scan_replies(&bytes, &[1]), (vec![bytes.len()], None));
}
