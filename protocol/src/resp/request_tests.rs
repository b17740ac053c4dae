//! Unit tests of the request scanner (a child module, to see its private state).

use super::*;

type Scanned = (Frame, Vec<Vec<u8>>, Vec<u8>);

/// Scans every request of `input`, feeding it `chunk` bytes at a time like a socket would,
/// and checks on the way that the scanner never moves backwards.
fn scan_chunked(
    scanner: &mut RequestScanner,
    input: &[u8],
    chunk: usize,
) -> (Vec<Scanned>, Option<ProtocolError>) {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        let (pos, scanned) = (scanner.pos, scanner.scanned);
        match scanner.scan(&buf) {
            Ok(Some(frame)) => {
                let args = scanner.args(&buf).iter().map(<[u8]>::to_vec).collect();
                out.push((frame, args, scanner.inline_resp().to_vec()));
                buf.drain(..frame.len);
                scanner.reset();
            }
            Ok(None) => {
                assert!(
                    scanner.pos >= pos && scanner.scanned >= scanned,
                    "moved back"
                );
                if fed == input.len() {
                    return (out, None);
                }
                let n = chunk.min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

fn scan_one(input: &[u8]) -> Result<Option<Scanned>, ProtocolError> {
    let mut s = RequestScanner::default();
    Ok(s.scan(input)?.map(|frame| {
        let args = s.args(input).iter().map(<[u8]>::to_vec).collect();
        (frame, args, s.inline_resp().to_vec())
    }))
}

fn err(input: &[u8]) -> ProtocolError {
    scan_one(input).expect_err("expected a protocol error")
}

fn bytes(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

#[test]
fn one_multibulk() {
    let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
    let (frame, args, inline) = scan_one(req).unwrap().unwrap();
    assert_eq!(
        frame,
        Frame {
            len: req.len(),
            kind: FrameKind::Multibulk
        }
    );
    assert_eq!(args, bytes(&["SET", "k", "hello"]));
    assert!(inline.is_empty());
}

#[test]
fn binary_arguments_with_crlf_inside() {
    let req = b"*2\r\n$4\r\n\r\n\r\n\r\n$0\r\n\r\n";
    let (frame, args, _) = scan_one(req).unwrap().unwrap();
    assert_eq!(frame.len, req.len());
    assert_eq!(args, vec![b"\r\n\r\n".to_vec(), Vec::new()]);
}

#[test]
fn args_view() {
    let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
    let mut s = RequestScanner::default();
    assert!(s.args(req).is_empty(), "no frame yet");
    s.scan(req).unwrap().unwrap();
    let args = s.args(req);
    assert_eq!(args.len(), 2);
    assert!(!args.is_empty());
    assert_eq!(args.get(0), b"GET");
    assert_eq!(args.get(1), b"k");
    assert_eq!(args.iter().len(), 2);
    // Asking again returns the same frame until reset.
    assert_eq!(s.scan(req).unwrap().unwrap().len, req.len() - 4);
    s.reset();
    assert!(s.args(req).is_empty());
}

#[test]
fn pipeline_of_many_requests() {
    let mut input = Vec::new();
    for i in 0..1000 {
        let key = format!("key:{i}");
        input.extend_from_slice(
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
        );
        if i % 100 == 0 {
            input.extend_from_slice(b"*0\r\nPING\r\n\n");
        }
    }
    let mut s = RequestScanner::default();
    let (frames, error) = scan_chunked(&mut s, &input, input.len());
    assert_eq!(error, None);
    assert_eq!(frames.len(), 1000 + 10 * 3);
    assert_eq!(frames.iter().map(|f| f.0.len).sum::<usize>(), input.len());
    assert_eq!(frames[0].1, bytes(&["GET", "key:0"]));
    assert_eq!(frames[1].0.kind, FrameKind::Empty);
    assert_eq!(frames[2].1, bytes(&["PING"]));
    assert_eq!(frames[3].0.kind, FrameKind::Empty);
    assert_eq!(frames.last().unwrap().1, bytes(&["GET", "key:999"]));
}

#[test]
fn empty_frames() {
    for (input, len) in [
        (&b"*0\r\n"[..], 4),
        (b"*-1\r\n", 5),
        (b"*-7\r\nxx", 5),
        (b"\r\n", 2),
        (b"\n", 1),
        (b"  \t \r\n", 6),
    ] {
        let (frame, args, inline) = scan_one(input).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame {
                len,
                kind: FrameKind::Empty
            },
            "{input:?}"
        );
        assert!(args.is_empty() && inline.is_empty());
    }
}

#[test]
fn inline_commands() {
    let (frame, args, inline) = scan_one(b"SET k \"a b\\x00\"\r\nGET k\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(frame.kind, FrameKind::Inline);
    assert_eq!(frame.len, 17);
    assert_eq!(
        args,
        vec![b"SET".to_vec(), b"k".to_vec(), b"a b\0".to_vec()]
    );
    assert_eq!(inline, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na b\0\r\n");

    // `\n` alone ends the line, as in Redis.
    let (frame, args, _) = scan_one(b"PING\nPING\n").unwrap().unwrap();
    assert_eq!(frame.len, 5);
    assert_eq!(args, bytes(&["PING"]));

    let (_, args, _) = scan_one(b"  echo 'it\\'s'  \"\\n\" \n").unwrap().unwrap();
    assert_eq!(
        args,
        vec![b"echo".to_vec(), b"it's".to_vec(), b"\n".to_vec()]
    );

    // A CR not followed by LF is a blank inside the line.
    let (frame, args, _) = scan_one(b"GET\rk\r\r\n").unwrap().unwrap();
    assert_eq!(frame.len, 8);
    assert_eq!(args, bytes(&["GET", "k"]));

    // Without its newline, an inline command is incomplete.
    assert_eq!(scan_one(b"GET k").unwrap(), None);
}

#[test]
fn inline_unbalanced_quotes() {
    for input in [&b"SET k \"abc\r\n"[..], b"SET k 'a'b\n", b"SET k \"a\"b\n"] {
        assert_eq!(err(input), ProtocolError::UnbalancedQuotes);
    }
}

#[test]
fn error_texts_are_redis_texts() {
    let cases: [(ProtocolError, &str); 9] = [
        (
            ProtocolError::InlineTooBig,
            "ERR Protocol error: too big inline request",
        ),
        (
            ProtocolError::UnbalancedQuotes,
            "ERR Protocol error: unbalanced quotes in request",
        ),
        (
            ProtocolError::MultibulkCountTooBig,
            "ERR Protocol error: too big mbulk count string",
        ),
        (
            ProtocolError::InvalidMultibulkLength,
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            ProtocolError::BulkCountTooBig,
            "ERR Protocol error: too big bulk count string",
        ),
        (
            ProtocolError::ExpectedDollar(b'x'),
            "ERR Protocol error: expected '$', got 'x'",
        ),
        (
            ProtocolError::ExpectedDollar(b'\r'),
            "ERR Protocol error: expected '$', got ' '",
        ),
        (
            ProtocolError::InvalidBulkLength,
            "ERR Protocol error: invalid bulk length",
        ),
        (
            ProtocolError::InvalidReply("x"),
            "ERR Protocol error: invalid reply: x",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn malformed_multibulks() {
    use ProtocolError::*;
    for (input, expected) in [
        (&b"*abc\r\n"[..], InvalidMultibulkLength),
        (b"*\r\n", InvalidMultibulkLength),
        (b"*01\r\n", InvalidMultibulkLength),
        (b"*+1\r\n", InvalidMultibulkLength),
        (b"* 1\r\n", InvalidMultibulkLength),
        (b"*1x\r\n", InvalidMultibulkLength),
        (b"*1048577\r\n", InvalidMultibulkLength),
        (b"*99999999999999999999\r\n", InvalidMultibulkLength),
        (b"*1\r\nx\r\n", ExpectedDollar(b'x')),
        (b"*1\r\n\r\n", ExpectedDollar(b'\r')),
        (b"*2\r\n$1\r\na\r\n:1\r\n", ExpectedDollar(b':')),
        (b"*1\r\n$-1\r\n", InvalidBulkLength),
        (b"*1\r\n$\r\n", InvalidBulkLength),
        (b"*1\r\n$01\r\n", InvalidBulkLength),
        (b"*1\r\n$1 \r\n", InvalidBulkLength),
        (b"*1\r\n$536870913\r\n", InvalidBulkLength),
    ] {
        assert_eq!(err(input), expected, "{:?}", String::from_utf8_lossy(input));
    }
    // At the limits exactly: fine (the data has not arrived yet).
    assert_eq!(scan_one(b"*1048576\r\n").unwrap(), None);
    assert_eq!(scan_one(b"*1\r\n$536870912\r\n").unwrap(), None);
}

#[test]
fn framing_quirks_match_redis() {
    // Redis ends a header at its CR and skips the next byte whatever it is, and skips the two
    // bytes after a bulk's data unchecked. The backend frames the same bytes the same way.
    let req = b"*1\rX$4\r?PING!!";
    let (frame, args, _) = scan_one(req).unwrap().unwrap();
    assert_eq!(frame.len, req.len());
    assert_eq!(args, bytes(&["PING"]));
    // The byte after a header's CR must have arrived before the header is parsed.
    assert_eq!(scan_one(b"*1\r").unwrap(), None);
    assert_eq!(scan_one(b"*1\r\n$x\r").unwrap(), None);
    assert_eq!(err(b"*1\r\n$x\r\n"), ProtocolError::InvalidBulkLength);
}

#[test]
fn huge_announced_sizes_allocate_nothing() {
    let unlimited = ScanLimits {
        max_multibulk_len: usize::MAX,
        max_bulk_len: usize::MAX,
        max_inline_len: DEFAULT_MAX_INLINE_LEN,
    };
    // Refused under the default limits.
    let mut s = RequestScanner::default();
    assert_eq!(
        s.scan(b"*2000000000\r\n"),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    assert_eq!(s.spans.capacity(), 0);
    s.reset();
    assert_eq!(
        s.scan(b"*1\r\n$1073741824\r\n"),
        Err(ProtocolError::InvalidBulkLength)
    );
    assert!(s.spans.capacity() <= SPANS_RESERVE);

    // Accepted when allowed, but nothing is sized by the announced numbers.
    let mut s = RequestScanner::new(unlimited);
    let head = b"*2000000000\r\n$1073741824\r\nabc";
    assert_eq!(s.scan(head), Ok(None));
    assert!(s.spans.capacity() <= SPANS_RESERVE);
    assert!(s.scratch.capacity() == 0 && s.inline.capacity() == 0);
    assert_eq!(s.phase, Phase::BulkData { len: 1 << 30 });

    // A length that would overflow the buffer offsets just never completes.
    let mut s = RequestScanner::new(unlimited);
    let head = b"*1\r\n$9223372036854775807\r\nabc";
    assert_eq!(s.scan(head), Ok(None));
}

#[test]
fn line_length_limits() {
    let limits = ScanLimits {
        max_inline_len: 16,
        ..ScanLimits::default()
    };
    let scan = |input: &[u8]| RequestScanner::new(limits).scan(input);
    let line16 = b"GET aaaaaaaaaaaa";
    assert_eq!(line16.len(), 16);

    // Inline: 16 bytes before the newline are fine, 17 are not, newline or not.
    let mut ok = line16.to_vec();
    ok.push(b'\n');
    assert_eq!(scan(&ok).unwrap().unwrap().kind, FrameKind::Inline);
    assert_eq!(scan(line16), Ok(None));
    assert_eq!(scan(b"GET aaaaaaaaaaaaa"), Err(ProtocolError::InlineTooBig));
    assert_eq!(
        scan(b"GET aaaaaaaaaaaaa\n"),
        Err(ProtocolError::InlineTooBig)
    );
    // A CR before the newline counts in the line, as in Redis's buffer check.
    assert_eq!(
        scan(b"GET aaaaaaaaaaaa\r\n"),
        Err(ProtocolError::InlineTooBig)
    );

    // Header lines.
    assert_eq!(
        scan(b"*0000000000000000"),
        Err(ProtocolError::MultibulkCountTooBig)
    );
    assert_eq!(scan(b"*000000000000000"), Ok(None));
    assert_eq!(
        scan(b"*000000000000000\r\n"),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    assert_eq!(
        scan(b"*1\r\n$0000000000000000"),
        Err(ProtocolError::BulkCountTooBig)
    );
    assert_eq!(scan(b"*1\r\n$000000000000000"), Ok(None));

    // The default is Redis's 64 KiB.
    let mut s = RequestScanner::default();
    let long = vec![b'a'; DEFAULT_MAX_INLINE_LEN + 1];
    assert_eq!(s.scan(&long), Err(ProtocolError::InlineTooBig));
    assert_eq!(s.scratch.capacity(), 0, "refused before splitting");
}

#[test]
fn set_limits_applies_to_the_next_request() {
    let mut s = RequestScanner::default();
    let req = b"*1\r\n$5\r\nhello\r\n";
    assert!(s.scan(req).unwrap().is_some());
    s.reset();
    s.set_limits(ScanLimits {
        max_bulk_len: 4,
        ..ScanLimits::default()
    });
    assert_eq!(s.scan(req), Err(ProtocolError::InvalidBulkLength));
}

#[test]
fn byte_by_byte_equals_all_at_once_and_work_is_linear() {
    let mut input = Vec::new();
    for i in 0..50 {
        input.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$5\r\nkey{i:02}\r\n$20\r\n{:020}\r\n",
                i * 7
            )
            .as_bytes(),
        );
        input.extend_from_slice(b"set \"quoted \\x41\" 'single'\r\n*0\r\n\n");
    }
    let mut whole = RequestScanner::default();
    let expected = scan_chunked(&mut whole, &input, input.len());
    for chunk in [1, 2, 3, 7, 64] {
        let mut s = RequestScanner::default();
        let got = scan_chunked(&mut s, &input, chunk);
        assert_eq!(got, expected, "chunk {chunk}");
        // Every byte is searched at most once, plus one byte per call for a CR whose LF had
        // not arrived yet.
        let calls = input.len().div_ceil(chunk) + expected.0.len();
        assert!(
            s.examined <= input.len() + calls,
            "chunk {chunk}: examined {} of {}",
            s.examined,
            input.len()
        );
    }
    assert_eq!(expected.0.len(), 200);
}

#[test]
fn big_bulk_in_chunks_is_not_rescanned() {
    let value = vec![b'\r'; 1 << 20];
    let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n".to_vec();
    input.extend_from_slice(&value);
    input.extend_from_slice(b"\r\n");
    let mut s = RequestScanner::default();
    let (frames, error) = scan_chunked(&mut s, &input, 16 * 1024);
    assert_eq!(error, None);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1[2], value);
    // Only the header lines were searched, never the data.
    assert!(s.examined < 64, "examined {}", s.examined);
}

#[test]
fn errors_after_partial_input_are_the_same() {
    let input = b"*2\r\n$3\r\nGET\r\n%3\r\nabc\r\n";
    let mut whole = RequestScanner::default();
    let expected = scan_chunked(&mut whole, input, input.len());
    assert_eq!(expected.1, Some(ProtocolError::ExpectedDollar(b'%')));
    let mut s = RequestScanner::default();
    assert_eq!(scan_chunked(&mut s, input, 1), expected);
}

#[test]
fn never_panics_on_misuse() {
    let mut s = RequestScanner::default();
    assert_eq!(s.scan(b"*1\r\n$3\r\nGE"), Ok(None));
    // A shorter buffer than last time: still no panic.
    assert_eq!(s.scan(b""), Ok(None));
    assert_eq!(s.scan(b"*1"), Ok(None));
    s.reset();
    assert_eq!(s.scan(b""), Ok(None));
}

#[test]
fn spans_memory_is_given_back_after_a_huge_request() {
    let n = 2 * SPANS_KEEP;
    let mut input = format!("*{n}\r\n").into_bytes();
    for _ in 0..n {
        input.extend_from_slice(b"$1\r\nx\r\n");
    }
    let mut s = RequestScanner::default();
    assert_eq!(s.scan(&input).unwrap().unwrap().len, input.len());
    assert_eq!(s.args(&input).len(), n);
    s.reset();
    assert!(s.spans.capacity() <= SPANS_KEEP);
}

#[test]
fn nul_hides_the_line_end_like_redis_strchr() {
    let limits = ScanLimits {
        max_inline_len: 16,
        ..ScanLimits::default()
    };
    let scan = |input: &[u8]| RequestScanner::new(limits).scan(input);
    // Redis finds line ends with strchr, which stops at a NUL: it waits, then the line is too
    // long. Never an earlier error, never a command.
    assert_eq!(scan(b"ECHO a\0b\r\n"), Ok(None));
    let padded = |head: &[u8]| [head, &[b'x'; 17][..]].concat();
    assert_eq!(
        scan(&padded(b"ECHO a\0b\r\n")),
        Err(ProtocolError::InlineTooBig)
    );
    assert_eq!(scan(b"*1\0\r\n"), Ok(None));
    assert_eq!(
        scan(&padded(b"*1\0\r\n")),
        Err(ProtocolError::MultibulkCountTooBig)
    );
    assert_eq!(scan(b"*1\r\n$4\0\r\n"), Ok(None));
    assert_eq!(scan(b"*1\r\nx\0\r\n"), Ok(None));
    assert_eq!(
        scan(&padded(b"*1\r\n$4\0\r\n")),
        Err(ProtocolError::BulkCountTooBig)
    );
    assert_eq!(
        scan(&padded(b"*1\r\nx\0\r\n")),
        Err(ProtocolError::BulkCountTooBig)
    );
    // A NUL in a bulk's data is just data.
    let (_, args, _) = scan_one(b"*1\r\n$3\r\n\0\0\0\r\n").unwrap().unwrap();
    assert_eq!(args, vec![vec![0, 0, 0]]);
    // Chunked the same.
    let input = padded(b"*1\r\n$4\0\r\n");
    let mut s = RequestScanner::new(limits);
    let (frames, error) = scan_chunked(&mut s, &input, 1);
    assert!(frames.is_empty());
    assert_eq!(error, Some(ProtocolError::BulkCountTooBig));
}
