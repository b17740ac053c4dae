//! Unit tests of the reply scanner and the reply helpers.

use super::*;

/// Splits `input` into replies, feeding it `chunk` bytes at a time; checks on the way that the
/// scanner never moves backwards within a reply.
fn replies(
    scanner: &mut ReplyScanner,
    input: &[u8],
    chunk: usize,
) -> (Vec<usize>, Option<ProtocolError>) {
    let mut lens = Vec::new();
    let mut buf = Vec::new();
    let mut fed = 0;
    loop {
        let (pos, scanned) = (scanner.pos, scanner.scanned);
        match scanner.scan(&buf) {
            Ok(Some(len)) => {
                lens.push(len);
                buf.drain(..len);
            }
            Ok(None) => {
                assert!(
                    scanner.pos >= pos && scanner.scanned >= scanned,
                    "moved back"
                );
                if fed == input.len() {
                    return (lens, None);
                }
                let n = chunk.min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (lens, Some(e)),
        }
    }
}

fn one(input: &[u8]) -> Result<Option<usize>, ProtocolError> {
    ReplyScanner::new(32).scan(input)
}

const SAMPLES: &[&[u8]] = &[
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":-42\r\n",
    b"$5\r\nhe\r\no\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n:1\r\n$1\r\na\r\n*2\r\n+x\r\n_\r\n",
    b"_\r\n",
    b"#t\r\n",
    b",3.14\r\n",
    b",-inf\r\n",
    b"(3492890328409238509324850943850943825024385\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"%2\r\n+first\r\n:1\r\n+second\r\n%0\r\n",
    b"~2\r\n+a\r\n+b\r\n",
    b">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n",
    b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039123\r\n:9543892\r\n",
    b"*2\r\n|1\r\n+ttl\r\n:3\r\n:1\r\n|0\r\n+x\r\n",
    b"|1\r\n+a\r\n|1\r\n+b\r\n:2\r\n:3\r\n$1\r\nz\r\n",
];

#[test]
fn every_kind_of_reply() {
    for sample in SAMPLES {
        assert_eq!(
            one(sample),
            Ok(Some(sample.len())),
            "{:?}",
            String::from_utf8_lossy(sample)
        );
        // One byte short: incomplete.
        assert_eq!(one(&sample[..sample.len() - 1]), Ok(None));
    }
}

#[test]
fn pipeline_byte_by_byte_equals_whole_and_work_is_linear() {
    let input: Vec<u8> = SAMPLES.iter().flat_map(|s| s.iter().copied()).collect();
    let expected: Vec<usize> = SAMPLES.iter().map(|s| s.len()).collect();
    for chunk in [1, 2, 5, 13, input.len()] {
        let mut s = ReplyScanner::new(8);
        assert_eq!(replies(&mut s, &input, chunk), (expected.clone(), None));
        let calls = input.len().div_ceil(chunk) + expected.len();
        assert!(s.examined <= input.len() + calls, "examined {}", s.examined);
    }
}

#[test]
fn big_blob_in_chunks_is_not_rescanned() {
    let mut input = b"*2\r\n$1048576\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'\r', 1 << 20));
    input.extend_from_slice(b"\r\n:1\r\n");
    let mut s = ReplyScanner::new(8);
    assert_eq!(
        replies(&mut s, &input, 16 * 1024),
        (vec![input.len()], None)
    );
    assert!(s.examined < 64, "examined {}", s.examined);
}

#[test]
fn depth_limit_flags_the_reply_and_keeps_the_stream_in_step() {
    let nested = b"*1\r\n*1\r\n*1\r\n:1\r\n";
    let mut s = ReplyScanner::new(3);
    assert_eq!(s.scan(nested), Ok(Some(nested.len())));
    assert!(!s.too_deep());
    let mut s = ReplyScanner::new(2);
    assert_eq!(s.scan(nested), Ok(Some(nested.len())));
    assert!(s.too_deep());
    // The next reply is framed and judged on its own.
    assert_eq!(s.scan(b"*1\r\n:1\r\n"), Ok(Some(8)));
    assert!(!s.too_deep());
    // An attribute is a level too.
    let mut s = ReplyScanner::new(1);
    assert_eq!(s.scan(b"*1\r\n|0\r\n:1\r\n"), Ok(Some(12)));
    assert!(s.too_deep());
    // Empty aggregates open nothing.
    let mut s = ReplyScanner::new(0);
    assert_eq!(s.scan(b"*0\r\n"), Ok(Some(4)));
    assert!(!s.too_deep());
}

/// The recursive Lua table Redis 7 returns at its deepest (`reached lua stack limit` below
/// 7,995 arrays), and far deeper, in one read and in short reads: framed exactly, without
/// recursion, the deep reply flagged only past the limit, and the stack freed afterwards.
#[test]
fn very_deep_replies_are_framed_in_any_reads() {
    for depth in [7_995, 100_000] {
        let mut reply = b"*1\r\n".repeat(depth);
        reply.extend_from_slice(b"-ERR reached lua stack limit\r\n");
        let mut input = reply.clone();
        input.extend_from_slice(b"+PONG\r\n");
        for (max_depth, deep) in [(16_384, depth > 16_384), (1_000, true)] {
            for chunk in [1, 7, 4096, input.len()] {
                let mut s = ReplyScanner::new(max_depth);
                let mut buf = Vec::new();
                let mut lens = Vec::new();
                let mut flags = Vec::new();
                for piece in input.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    while let Some(len) = s.scan(&buf).expect("well formed") {
                        lens.push(len);
                        flags.push(s.too_deep());
                        buf.drain(..len);
                    }
                }
                assert_eq!(lens, vec![reply.len(), 7], "depth {depth} chunk {chunk}");
                assert_eq!(flags, vec![deep, false], "depth {depth} limit {max_depth}");
                assert!(s.stack.capacity() <= RETAINED_DEPTH);
            }
        }
        assert_eq!(element_len(&input), Some(reply.len()));
    }
}

/// The stack grows with the depth only: one entry per open aggregate, never more than the
/// reply's headers can announce, however the nesting is shaped (maps, attributes, sets).
#[test]
fn stack_memory_is_bounded_by_the_reply_bytes() {
    let level = b"%1\r\n+k\r\n|1\r\n+a\r\n+b\r\n~1\r\n";
    let input = level.repeat(20_000);
    let mut s = ReplyScanner::new(16_384);
    assert_eq!(s.scan(&input), Ok(None));
    assert_eq!(s.stack.len(), 3 * 20_000);
    assert!(s.stack.len() * 4 <= input.len());
}

#[test]
fn absurd_sizes_are_refused_without_allocating() {
    let mut s = ReplyScanner::new(8);
    assert!(s.scan(b"$99999999999\r\n").is_err());
    assert!(s.scan(b"*9999999999999\r\n").is_err());
    assert!(s.scan(b"%4294967296\r\n").is_err());
    assert_eq!(s.stack.capacity(), 0);
    // Large but plausible: accepted, nothing sized by it.
    assert_eq!(s.scan(b"*4000000000\r\n$4000000000\r\nab"), Ok(None));
    assert!(s.stack.capacity() <= 4);
}

#[test]
fn malformed_replies() {
    for (input, what) in [
        (&b"\r\n"[..], "unknown type byte"),
        (b"?x\r\n", "unknown type byte"),
        (b"+OK\rX", "CR not followed by LF"),
        (b":12a\r\n", "malformed integer"),
        (b":\r\n", "malformed integer"),
        (b"_x\r\n", "malformed null"),
        (b"#x\r\n", "malformed boolean"),
        (b"$3\r\nabcde", "blob not followed by CRLF"),
        (b"$-2\r\n", "blob length out of range"),
        (b"!-1\r\n", "blob length out of range"),
        (b"$x\r\n", "malformed blob length"),
        (b"$?\r\n", "streamed string"),
        (b"*?\r\n", "streamed aggregate"),
        (b"~-1\r\n", "aggregate length out of range"),
        (b"*-2\r\n", "aggregate length out of range"),
        (b"*01\r\n", "malformed aggregate length"),
        (b"*1\r\n+a\r\r", "CR not followed by LF"),
    ] {
        assert_eq!(
            one(input),
            Err(ProtocolError::InvalidReply(what)),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn never_panics_on_misuse() {
    let mut s = ReplyScanner::new(8);
    assert_eq!(s.scan(b"*2\r\n$5\r\nab"), Ok(None));
    assert_eq!(s.scan(b""), Ok(None));
    assert_eq!(s.scan(b"*2"), Ok(None));
}

#[test]
fn helpers() {
    assert!(is_error(b"-ERR x\r\n"));
    assert!(is_error(b"!3\r\nERR\r\n"));
    assert!(is_error(b"|1\r\n+a\r\n+b\r\n-ERR x\r\n"));
    assert!(!is_error(b"+OK\r\n"));
    assert!(!is_error(b""));

    assert_eq!(integer(b":123\r\n"), Some(123));
    assert_eq!(integer(b":-5\r\n"), Some(-5));
    assert_eq!(integer(b"|0\r\n:7\r\n"), Some(7));
    assert_eq!(integer(b"+123\r\n"), None);
    assert_eq!(integer(b":12"), None);

    assert!(is_ok(b"+OK\r\n"));
    assert!(is_ok(b"|1\r\n+a\r\n:1\r\n+OK\r\n"));
    assert!(!is_ok(b"+OK\r\n+OK\r\n"));
    assert!(!is_ok(b"+OKAY\r\n"));
    assert!(!is_ok(b"$2\r\nOK\r\n"));

    let reply = b"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n|0\r\n:2\r\n";
    let ranges = aggregate_elements(reply).unwrap();
    let elements: Vec<&[u8]> = ranges.into_iter().map(|r| &reply[r]).collect();
    assert_eq!(
        elements,
        vec![&b"$1\r\na\r\n"[..], b"$-1\r\n", b"*2\r\n:1\r\n|0\r\n:2\r\n"]
    );
    assert_eq!(aggregate_elements(b"~1\r\n+a\r\n").unwrap(), vec![4..8]);
    assert_eq!(aggregate_elements(b">0\r\n").unwrap(), vec![]);
    assert_eq!(
        aggregate_elements(b"|1\r\n+a\r\n+b\r\n*1\r\n:1\r\n").unwrap(),
        vec![16..20]
    );
    assert_eq!(aggregate_elements(b"*-1\r\n"), None);
    assert_eq!(aggregate_elements(b"%1\r\n+a\r\n+b\r\n"), None);
    assert_eq!(aggregate_elements(b"+OK\r\n"), None);
    assert_eq!(aggregate_elements(b"*2\r\n:1\r\n"), None, "truncated");
    // A lying count does not size the allocation.
    assert_eq!(aggregate_elements(b"*2000000000\r\n:1\r\n"), None);
}
