//! The invariants the fuzz targets check, shared with the corpus replay test.
//!
//! The fuzz targets (`fuzz/fuzz_targets/*.rs`) call these functions through the `redshard_fuzz`
//! library; `protocol/tests/fuzz_corpus.rs` compiles this same file with `#[path]` and replays
//! every seed through it in the normal `cargo test` run. So this file may use only what both
//! see: `redshard_protocol` and its dependencies `smallvec` and `redis-protocol`.
//!
//! Every check panics when an invariant is broken; "no panic" alone is not the bar.
//!
//! # Input layout
//!
//! [`request_scanner`] and [`reply_scanner`] read byte 0 as a control byte `c`:
//! - `c & 0x07` is how many chunk-size bytes follow it; each one feeds `byte + 1` bytes to the
//!   scanner, cycled, like short socket reads (0: only the two fixed schedules below);
//! - `c & 0x08` selects tight limits derived from `c >> 4`, to reach the "too big" paths and
//!   replies nested too deep with short inputs;
//! - the rest of the input is the byte stream.
//!
//! Seeds can stay readable: `0` is "no chunk sizes, default limits", `8` is "tight limits".
//! Every stream is scanned three ways: in one piece, one byte at a time, and in the chunks the
//! input chose; all three must give the same result.
//!
//! [`command_keys`] reads byte 0 as a separator and splits the rest at it into a request's
//! arguments (` GET key` is `["GET", "key"]`).

use redis_protocol::resp2::decode::decode as resp2_decode;
use redis_protocol::resp2::types::OwnedFrame as Resp2;
use redis_protocol::resp3::decode::complete::decode as resp3_decode;
use redshard_protocol::command::{self, CommandErrorKind, CommandSpec};
use redshard_protocol::resp::{
    reply, Frame, FrameKind, ProtocolError, ReplyScanner, RequestScanner, ScanLimits,
};
use smallvec::SmallVec;

/// The reply nesting allowed with default limits (the proxy's default `max_reply_depth` is of
/// this order).
const DEFAULT_REPLY_DEPTH: usize = 64;

/// The control byte, the chunk sizes and the stream of one scanner input.
#[derive(Debug)]
struct Input<'a> {
    /// `Some(h)` for tight limits derived from `h` (0 to 15).
    tight: Option<usize>,
    /// Sizes of the successive reads, cycled; empty when the input chose none.
    chunks: Vec<usize>,
    /// The bytes the peer sends.
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Self {
        let Some((&control, rest)) = data.split_first() else {
            return Self {
                tight: None,
                chunks: Vec::new(),
                stream: &[],
            };
        };
        let n = usize::from(control & 0x07).min(rest.len());
        let (sizes, stream) = rest.split_at(n);
        Self {
            tight: (control & 0x08 != 0).then_some(usize::from(control >> 4)),
            chunks: sizes.iter().map(|&b| usize::from(b) + 1).collect(),
            stream,
        }
    }

    /// The feeding schedules to compare: whole, byte by byte, and the input's own if any.
    fn schedules(&self) -> Vec<&[usize]> {
        let mut schedules: Vec<&[usize]> = vec![&[], &[1]];
        if !self.chunks.is_empty() {
            schedules.push(&self.chunks);
        }
        schedules
    }
}

/// How a scan of a whole stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// The stream ran out; this many bytes were left in the buffer, waiting for more.
    NeedMore(usize),
    /// The scanner refused the stream.
    Failed(ProtocolError),
}

/// Feeds `stream` to `scan_one` through a buffer, in reads of the sizes `chunks` (cycled; empty
/// means everything at once), like a connection's read loop. `scan_one` scans the buffer and
/// returns how many bytes to drop from its front (`Some`), or `None` when it needs more.
fn feed(
    stream: &[u8],
    chunks: &[usize],
    mut scan_one: impl FnMut(&[u8]) -> Result<Option<usize>, ProtocolError>,
) -> End {
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    loop {
        match scan_one(&buf) {
            Ok(Some(len)) => {
                assert!(
                    (1..=buf.len()).contains(&len),
                    "a frame of {len} bytes in a buffer of {}",
                    buf.len()
                );
                buf.drain(..len);
            }
            Ok(None) if fed == stream.len() => return End::NeedMore(buf.len()),
            Ok(None) => {
                let n = sizes
                    .next()
                    .map_or(stream.len() - fed, |&n| n.clamp(1, stream.len() - fed));
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            Err(e) => return End::Failed(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request scanner
// ---------------------------------------------------------------------------------------------

/// One request as the scanner reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Request {
    frame: Frame,
    args: Vec<Vec<u8>>,
    inline_resp: Vec<u8>,
}

/// The fuzz target `request_scanner`: a client's byte stream through [`RequestScanner`].
///
/// Checks, for every schedule of reads: each frame is 1 to `buf.len()` bytes; scanning again
/// before `reset` returns the same frame; a multibulk frame's arguments are exactly what its
/// headers announce, lie inside the frame and respect the limits; an inline frame is one line
/// without NUL within the line limit, and its re-encoding is framed back by a fresh scanner
/// (and decoded by `redis-protocol`) into the same arguments; after an error, scanning the
/// same buffer again gives the same error. Then: every schedule gives the same requests and
/// the same ending, and wherever `redis-protocol` decodes a multibulk the scanner framed, both
/// agree on its length and arguments.
///
/// # Panics
/// When an invariant is broken.
pub fn request_scanner(data: &[u8]) {
    let input = Input::parse(data);
    let limits = match input.tight {
        Some(h) => ScanLimits {
            max_multibulk_len: h,
            max_bulk_len: 8 * h,
            max_inline_len: 4 * h,
        },
        None => ScanLimits::default(),
    };
    let mut whole: Option<(Vec<Request>, End)> = None;
    for chunks in input.schedules() {
        let oracle = chunks.is_empty();
        let run = scan_requests(input.stream, chunks, limits, oracle);
        match &whole {
            None => whole = Some(run),
            Some(first) => assert_eq!(
                &run, first,
                "reads of {chunks:?} bytes and one read disagree"
            ),
        }
    }
}

/// Scans a whole stream of requests, checking each frame; `oracle` adds the comparison with
/// `redis-protocol`.
fn scan_requests(
    stream: &[u8],
    chunks: &[usize],
    limits: ScanLimits,
    oracle: bool,
) -> (Vec<Request>, End) {
    let mut scanner = RequestScanner::new(limits);
    let mut requests = Vec::new();
    let end = feed(stream, chunks, |buf| match scanner.scan(buf) {
        Ok(Some(frame)) => {
            let request = check_request(&mut scanner, buf, frame, limits, oracle);
            requests.push(request);
            scanner.reset();
            Ok(Some(frame.len))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            assert_eq!(
                scanner.scan(buf),
                Err(e.clone()),
                "scanning the same bytes again after an error"
            );
            Err(e)
        }
    });
    (requests, end)
}

/// The invariants of one request frame at the front of `buf`.
fn check_request(
    scanner: &mut RequestScanner,
    buf: &[u8],
    frame: Frame,
    limits: ScanLimits,
    oracle: bool,
) -> Request {
    assert!(
        (1..=buf.len()).contains(&frame.len),
        "{frame:?} in a buffer of {} bytes",
        buf.len()
    );
    assert_eq!(
        scanner.scan(buf),
        Ok(Some(frame)),
        "scan again before reset"
    );
    let bytes = &buf[..frame.len];
    let args: Vec<&[u8]> = scanner.args(buf).iter().collect();
    let inline_resp = scanner.inline_resp().to_vec();
    match frame.kind {
        FrameKind::Multibulk => {
            assert!(inline_resp.is_empty(), "inline_resp of a multibulk");
            check_multibulk(bytes, &args, limits);
            if oracle {
                compare_multibulk_with_resp2(bytes, &args);
            }
        }
        FrameKind::Inline => check_inline(bytes, &args, &inline_resp, limits),
        FrameKind::Empty => {
            assert!(args.is_empty(), "arguments of an empty frame: {args:?}");
            assert!(inline_resp.is_empty(), "inline_resp of an empty frame");
            if bytes[0] == b'*' {
                // `*0\r\n` is the shortest.
                assert!(frame.len >= 4, "empty multibulk {bytes:?}");
            } else {
                let line = line_of(bytes);
                assert!(
                    line.iter().all(|&b| is_c_space(b)),
                    "a non-blank line framed as empty: {line:?}"
                );
            }
        }
    }
    Request {
        frame,
        args: args.iter().map(|a| a.to_vec()).collect(),
        inline_resp,
    }
}

/// Re-frames a multibulk independently from its headers: `*<n>\r?` then `n` times
/// `$<len>\r?<len bytes>??`, a header ending at its first CR with one unchecked byte after it,
/// each header without NUL and within the line limit.
fn check_multibulk(bytes: &[u8], args: &[&[u8]], limits: ScanLimits) {
    assert!(!args.is_empty(), "a multibulk frame without arguments");
    assert!(args.len() <= limits.max_multibulk_len, "too many arguments");
    let (count, mut pos) = header(bytes, 0, b'*', limits);
    assert_eq!(count, args.len(), "count header vs arguments");
    for arg in args {
        let (len, data) = header(bytes, pos, b'$', limits);
        assert_eq!(len, arg.len(), "bulk header vs argument");
        assert!(len <= limits.max_bulk_len, "bulk above the limit");
        assert!(data + len + 2 <= bytes.len(), "argument past the frame");
        assert_eq!(arg, &&bytes[data..data + len], "argument bytes");
        // The argument must be a view of the caller's buffer at that very place.
        assert_eq!(
            arg.as_ptr(),
            bytes[data..].as_ptr(),
            "argument not at its place in the buffer"
        );
        pos = data + len + 2;
    }
    assert_eq!(
        pos,
        bytes.len(),
        "the frame must end after its last argument"
    );
}

/// The header `<kind><decimal>\r?` at `pos`: its non-negative number and where it ends.
fn header(bytes: &[u8], pos: usize, kind: u8, limits: ScanLimits) -> (usize, usize) {
    assert_eq!(bytes.get(pos), Some(&kind), "header kind at {pos}");
    let cr = pos
        + bytes[pos..]
            .iter()
            .position(|&b| b == b'\r')
            .expect("a header line without CR");
    let digits = &bytes[pos + 1..cr];
    assert!(
        cr - pos <= limits.max_inline_len,
        "header over the line limit"
    );
    let n = strict_decimal(digits).expect("header number not in Redis's strict form");
    (n, cr + 2)
}

/// A non-negative decimal in Redis's `string2ll` form: `0`, or no leading zero, at most 20
/// bytes, within `i64`.
fn strict_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 20 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = text.parse().ok()?;
    usize::try_from(n).ok()
}

/// `redis-protocol` as the oracle: where it decodes an array of bulk strings at the front of
/// a frame the scanner accepted, it must find the same length and the same arguments.
/// (Where it refuses, nothing is concluded: Redis, and so the scanner, accepts bytes it does
/// not, such as any byte after a header's CR.)
fn compare_multibulk_with_resp2(bytes: &[u8], args: &[&[u8]]) {
    let Ok(Some((Resp2::Array(items), len))) = resp2_decode(bytes) else {
        return;
    };
    let Some(oracle): Option<Vec<&[u8]>> = items
        .iter()
        .map(|item| match item {
            Resp2::BulkString(b) => Some(b.as_slice()),
            _ => None,
        })
        .collect()
    else {
        return;
    };
    assert_eq!(len, bytes.len(), "redis-protocol frames a different length");
    assert_eq!(oracle, args, "redis-protocol decodes different arguments");
}

/// An inline frame: one line, and a re-encoding that frames back into the same arguments.
fn check_inline(bytes: &[u8], args: &[&[u8]], inline_resp: &[u8], limits: ScanLimits) {
    assert_ne!(bytes[0], b'*', "an inline frame starting with '*'");
    let line = line_of(bytes);
    assert!(
        line.len() <= limits.max_inline_len,
        "inline line of {} bytes over the limit",
        line.len()
    );
    assert!(!bytes.contains(&0), "NUL in an inline line");
    assert!(!args.is_empty(), "an inline frame without arguments");
    // What the proxy forwards: a fresh scanner must frame it whole, into the same arguments.
    let mut rescan = RequestScanner::new(ScanLimits::default());
    let frame = rescan.scan(inline_resp);
    assert_eq!(
        frame,
        Ok(Some(Frame {
            len: inline_resp.len(),
            kind: FrameKind::Multibulk
        })),
        "re-encoded inline command"
    );
    let reframed: Vec<&[u8]> = rescan.args(inline_resp).iter().collect();
    assert_eq!(reframed, args, "re-encoded inline command's arguments");
    let Ok(Some((Resp2::Array(items), len))) = resp2_decode(inline_resp) else {
        panic!("redis-protocol cannot decode the re-encoded inline command");
    };
    assert_eq!(len, inline_resp.len());
    let oracle: Vec<&[u8]> = items
        .iter()
        .map(|item| match item {
            Resp2::BulkString(b) => b.as_slice(),
            other => panic!("re-encoded inline command holds {other:?}"),
        })
        .collect();
    assert_eq!(
        oracle, args,
        "redis-protocol decodes the re-encoding differently"
    );
}

/// An inline frame's line without its `\n` (the `\r` before it, if any, kept: it counts
/// towards the line limit).
fn line_of(bytes: &[u8]) -> &[u8] {
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "an inline frame must end in \\n"
    );
    &bytes[..bytes.len() - 1]
}

/// C's `isspace`, which `sdssplitargs` skips between arguments.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

// ---------------------------------------------------------------------------------------------
// Reply scanner
// ---------------------------------------------------------------------------------------------

/// The fuzz target `reply_scanner`: a backend's byte stream through [`ReplyScanner`].
///
/// Checks: every schedule of reads finds the same reply boundaries, the same replies too deep
/// and the same ending, each boundary within the buffer; after an error, scanning the same buffer again gives the same
/// error; the replies found, concatenated and scanned again, give the same boundaries and
/// nothing left over; where `redis-protocol` decodes a reply the scanner delimited, it finds
/// the same length; and the helpers (`is_ok`, `is_error`, `integer`, `aggregate_elements`)
/// agree with the bytes of each reply.
///
/// # Panics
/// When an invariant is broken.
pub fn reply_scanner(data: &[u8]) {
    let input = Input::parse(data);
    let max_depth = input.tight.unwrap_or(DEFAULT_REPLY_DEPTH);
    let mut whole: Option<(Vec<(usize, bool)>, End)> = None;
    for chunks in input.schedules() {
        let run = scan_replies(input.stream, chunks, max_depth);
        match &whole {
            None => whole = Some(run),
            Some(first) => assert_eq!(
                &run, first,
                "reads of {chunks:?} bytes and one read disagree"
            ),
        }
    }
    let Some((found, _)) = whole else {
        unreachable!("there is always the one-read schedule");
    };
    let lens: Vec<usize> = found.iter().map(|&(len, _)| len).collect();
    let total: usize = lens.iter().sum();
    let replies = &input.stream[..total];
    assert_eq!(
        scan_replies(replies, &[], max_depth),
        (found, End::NeedMore(0)),
        "the replies found, scanned again"
    );
    let mut at = 0;
    for len in lens {
        let reply = &replies[at..at + len];
        check_reply(reply);
        at += len;
    }
}

/// Scans a whole stream of replies: the length of each, and whether it was too deep.
fn scan_replies(stream: &[u8], chunks: &[usize], max_depth: usize) -> (Vec<(usize, bool)>, End) {
    let mut scanner = ReplyScanner::new(max_depth);
    let mut lens = Vec::new();
    let end = feed(stream, chunks, |buf| match scanner.scan(buf) {
        Ok(Some(len)) => {
            lens.push((len, scanner.too_deep()));
            Ok(Some(len))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            assert_eq!(
                scanner.scan(buf),
                Err(e.clone()),
                "scanning the same bytes again after an error"
            );
            Err(e)
        }
    });
    (lens, end)
}

/// The oracle and the helpers on one complete reply.
fn check_reply(reply: &[u8]) {
    // The oracle decodes recursively: only replies of a depth its stack surely holds.
    let mut depth = ReplyScanner::new(DEFAULT_REPLY_DEPTH);
    let shallow = depth.scan(reply) == Ok(Some(reply.len())) && !depth.too_deep();
    if let (true, Ok(Some((_, len)))) = (shallow, resp3_decode(reply)) {
        assert_eq!(len, reply.len(), "redis-protocol frames a different length");
    }
    let ok = reply::is_ok(reply);
    let error = reply::is_error(reply);
    assert!(!(ok && error), "both OK and an error");
    if ok {
        assert!(reply.ends_with(b"+OK\r\n"), "is_ok on {reply:?}");
    }
    if let Some(n) = reply::integer(reply) {
        assert!(
            reply.ends_with(format!(":{n}\r\n").as_bytes()),
            "integer {n} from {reply:?}"
        );
        assert!(!ok && !error, "an integer that is OK or an error");
    }
    if let Some(elements) = reply::aggregate_elements(reply) {
        assert!(!ok && !error, "an aggregate that is OK or an error");
        let mut end = None;
        for range in &elements {
            if let Some(end) = end {
                assert_eq!(range.start, end, "elements not back to back");
            }
            let element = &reply[range.clone()];
            assert_eq!(
                ReplyScanner::new(usize::MAX).scan(element),
                Ok(Some(element.len())),
                "an element is not one whole reply"
            );
            end = Some(range.end);
        }
        if let Some(end) = end {
            assert_eq!(end, reply.len(), "the last element must end the reply");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command table: resolve and key_indices
// ---------------------------------------------------------------------------------------------

/// The longest error text [`command::resolve`] may produce: Redis echoes at most 128 bytes of
/// the name and about 128 of the arguments.
const MAX_ERROR_LEN: usize = 512;

/// The fuzz target `command_keys`: an arbitrary argument list through
/// [`command::resolve`] and [`CommandSpec::key_indices`].
///
/// Checks: a resolved spec passes its arity check and is the command named by `args[0]` (or
/// one of its subcommands); an error is one line (no CR, no LF), short, and of a kind that
/// matches; the name's case changes nothing; key indices are never the command name and
/// never past the arguments, also when key extraction runs on the base command of a request
/// that failed its arity check; `key_indices` clears its output and is deterministic.
///
/// # Panics
/// When an invariant is broken.
pub fn command_keys(data: &[u8]) {
    let args: Vec<&[u8]> = match data.split_first() {
        None => Vec::new(),
        Some((&separator, rest)) => rest.split(|&b| b == separator).collect(),
    };
    let resolved = command::resolve(&args[..]);
    match &resolved {
        Ok(spec) => {
            assert!(
                spec.arity_ok(args.len()),
                "{} resolved with bad arity",
                spec.name
            );
            let base = command::lookup(args[0]).expect("resolved without a base command");
            assert!(
                std::ptr::eq(*spec, base) || spec.name.starts_with(&format!("{}|", base.name)),
                "{} resolved for {}",
                spec.name,
                base.name
            );
            check_keys(spec, &args, true);
        }
        Err(e) => {
            check_error_text(e.as_bytes());
            match e.kind() {
                CommandErrorKind::UnknownCommand => {
                    assert!(args.is_empty() || command::lookup(args[0]).is_none());
                }
                CommandErrorKind::UnknownSubcommand | CommandErrorKind::WrongArity => {}
                CommandErrorKind::BadKeyArguments => panic!("resolve gave {e:?}"),
            }
        }
    }
    // The same request with the name (and subcommand) in another case resolves the same.
    let names = match args.first().and_then(|name| command::lookup(name)) {
        Some(base) if base.has_subcommands() => 2,
        _ => 1,
    };
    let flipped: Vec<Vec<u8>> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i < names {
                a.iter().map(flip_case).collect()
            } else {
                a.to_vec()
            }
        })
        .collect();
    let flipped_resolved = command::resolve(&flipped);
    match (&resolved, &flipped_resolved) {
        (Ok(a), Ok(b)) => assert!(std::ptr::eq(*a, *b), "{} vs {}", a.name, b.name),
        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "error kind after a case change"),
        (a, b) => panic!("case change: {a:?} vs {b:?}"),
    }
    if let (Ok(spec), false) = (&resolved, args.is_empty()) {
        let mut keys = SmallVec::new();
        let mut flipped_keys = SmallVec::new();
        let a = spec.key_indices(&args[..], &mut keys).map_err(|e| e.kind());
        let b = spec
            .key_indices(&flipped, &mut flipped_keys)
            .map_err(|e| e.kind());
        assert_eq!(a, b, "key_indices after a case change of the name");
        assert_eq!(keys, flipped_keys, "keys after a case change of the name");
    }
    // Key extraction must not panic on requests it should never see either (the module
    // promises it never panics on a short one): the base spec, whatever the arity.
    if let Some(base) = args.first().and_then(|name| command::lookup(name)) {
        check_keys(base, &args, false);
    }
}

/// `key_indices` on `args`: clears its output, is deterministic, and gives indices within the
/// arguments (never 0, the name). `resolved`: `spec` is what `resolve` returned for `args`.
fn check_keys(spec: &CommandSpec, args: &[&[u8]], resolved: bool) {
    let mut keys: SmallVec<[usize; 8]> = SmallVec::new();
    keys.extend([usize::MAX, 7, 0]);
    let first = spec.key_indices(args, &mut keys);
    match &first {
        Ok(()) => {
            for &i in &keys {
                assert!(
                    (1..args.len()).contains(&i),
                    "{}: key index {i} of {} arguments (resolved: {resolved})",
                    spec.name,
                    args.len()
                );
            }
        }
        Err(e) => {
            assert!(keys.is_empty(), "keys left after an error: {keys:?}");
            assert_eq!(e.kind(), CommandErrorKind::BadKeyArguments, "{e:?}");
            check_error_text(e.as_bytes());
        }
    }
    let mut again: SmallVec<[usize; 8]> = SmallVec::new();
    let second = spec.key_indices(args, &mut again);
    assert_eq!(first, second, "key_indices is not deterministic");
    assert_eq!(keys, again, "key_indices is not deterministic");
}

/// An error text is sent as a simple error: one line, bounded.
fn check_error_text(text: &[u8]) {
    assert!(!text.is_empty(), "empty error text");
    assert!(
        !text.contains(&b'\r') && !text.contains(&b'\n'),
        "CR or LF in an error text: {text:?}"
    );
    assert!(
        text.len() <= MAX_ERROR_LEN,
        "error text of {} bytes",
        text.len()
    );
}

/// Swaps the case of an ASCII letter.
fn flip_case(b: &u8) -> u8 {
    if b.is_ascii_uppercase() {
        b.to_ascii_lowercase()
    } else {
        b.to_ascii_uppercase()
    }
}
