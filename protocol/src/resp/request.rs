//! The request scanner: where each client request ends, and where its arguments are.
//!
//! It frames requests exactly like Redis 7.0 (`processMultibulkBuffer`,
//! `processInlineBuffer` in `networking.c`), so that the original bytes the proxy forwards are
//! framed the same way by the backend:
//!
//! - a request starting with `*` is a multibulk: `*<count>\r\n` then `count` times
//!   `$<len>\r\n<len bytes>\r\n`. Like Redis, a header line ends at its first CR and the byte
//!   after the CR is skipped unchecked, and the two bytes after a bulk's data are skipped
//!   unchecked. A count `<= 0` is a request with nothing to execute.
//! - anything else is an inline command, one line ending in `\n` or `\r\n`, split like
//!   `sdssplitargs`, and re-encoded as a multibulk since backends must get RESP.
//!
//! Like Redis's `strchr`, the search for a line end stops at a NUL byte: a NUL in a header or
//! inline line hides its end, and the line can then only end as too long. Numbers are parsed
//! with Redis's `string2ll` rules. Every size is checked against
//! [`ScanLimits`] before anything is sized by it; a line longer than
//! [`ScanLimits::max_inline_len`] is refused as soon as that many bytes have arrived, whether
//! or not its end has arrived too, so the outcome never depends on how the bytes were split
//! into reads.

use std::ops::Range;

use super::inline::{encode_multibulk, split_args};
use super::lex::{find_either, parse_i64, quick_header};
use super::ProtocolError;

/// The largest multibulk count accepted by default: Redis 6's hard limit (Redis 7 accepts up to
/// `INT_MAX`, which no real command needs).
pub const DEFAULT_MAX_MULTIBULK_LEN: usize = 1024 * 1024;
/// Redis's default `proto-max-bulk-len`: 512 MiB.
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Redis's `PROTO_INLINE_MAX_SIZE`: 64 KiB, for inline lines and for count lines.
pub const DEFAULT_MAX_INLINE_LEN: usize = 64 * 1024;

/// At most this many argument spans are reserved up front, whatever count a header announces;
/// the span list grows as arguments actually arrive.
const SPANS_RESERVE: usize = 64;
/// After a request with more arguments than this, `reset` gives the extra span memory back.
const SPANS_KEEP: usize = 4096;

/// The bounds a client's requests must respect. Anything above them is a protocol error, found
/// before any memory is sized by the announced length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLimits {
    /// The largest `*<count>` accepted ("invalid multibulk length" above).
    pub max_multibulk_len: usize,
    /// The largest `$<len>` accepted ("invalid bulk length" above), Redis's
    /// `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// The longest inline command line, and the longest `*`/`$` header line, in bytes
    /// ("too big inline request", "too big mbulk count string", "too big bulk count string").
    pub max_inline_len: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_multibulk_len: DEFAULT_MAX_MULTIBULK_LEN,
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
        }
    }
}

/// What a scanned request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A RESP multibulk: its original bytes can be forwarded as they are.
    Multibulk,
    /// An inline command: forward [`RequestScanner::inline_resp`] instead of the original line.
    Inline,
    /// A blank inline line or a multibulk of count `<= 0` (`*0\r\n`, `*-1\r\n`): nothing to
    /// execute, nothing to reply; just consume the bytes.
    Empty,
}

/// One complete request at the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// How many bytes at the front of the buffer this request occupies.
    pub len: usize,
    /// What kind of request it is.
    pub kind: FrameKind,
}

/// Where the scanner is within the current request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing of the request seen yet.
    Start,
    /// In the `*<count>` line at offset 0.
    Count,
    /// Expecting a `$<len>` line at `pos`.
    BulkHeader,
    /// Waiting for `len` bytes of data plus CRLF at `pos`.
    BulkData { len: usize },
    /// In an inline line starting at offset 0.
    Inline,
    /// The request is complete; it stays so until `reset`.
    Done(Frame),
}

/// What looking for the end of a line found.
enum Line {
    /// The terminator is at this offset (and the byte Redis wants after it has arrived).
    Found(usize),
    /// Not yet: more bytes are needed.
    Partial,
    /// No terminator within the line length limit.
    TooLong,
}

/// A resumable, bounded scanner of client requests; one per client connection.
///
/// The caller keeps a read buffer whose front is the start of the current request, and calls
/// [`scan`](Self::scan) each time bytes were appended. On `Ok(Some(frame))` it reads the
/// arguments with [`args`](Self::args), forwards `frame.len` bytes (or
/// [`inline_resp`](Self::inline_resp)), drops them from its buffer and calls
/// [`reset`](Self::reset).
#[derive(Debug)]
pub struct RequestScanner {
    /// The bounds requests must respect.
    limits: ScanLimits,
    /// Where the scanner is within the current request.
    phase: Phase,
    /// Offset of the first byte not consumed yet by the current request. Never moves back
    /// before `reset`.
    pos: usize,
    /// Offset up to which the current line has been searched for its terminator, so a line
    /// that arrives in pieces is searched only once.
    scanned: usize,
    /// Arguments of the current multibulk still to come.
    args_left: usize,
    /// The arguments found so far: ranges in the caller's buffer for a multibulk, in `inline`
    /// for an inline command. Reused from request to request.
    spans: Vec<Range<usize>>,
    /// The arguments of an inline command, unquoted, back to back (before re-encoding).
    scratch: Vec<u8>,
    /// The last inline command re-encoded as a RESP multibulk.
    inline: Vec<u8>,
    /// Bytes examined while searching for line ends, to test that the work is linear.
    #[cfg(test)]
    examined: usize,
}

impl Default for RequestScanner {
    fn default() -> Self {
        Self::new(ScanLimits::default())
    }
}

impl RequestScanner {
    /// A scanner enforcing `limits`, ready for the first request.
    pub fn new(limits: ScanLimits) -> Self {
        Self {
            limits,
            phase: Phase::Start,
            pos: 0,
            scanned: 0,
            args_left: 0,
            spans: Vec::new(),
            scratch: Vec::new(),
            inline: Vec::new(),
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Changes the limits (after `CONFIG SET` on the proxy); they apply from the next header or
    /// line scanned.
    pub fn set_limits(&mut self, limits: ScanLimits) {
        self.limits = limits;
    }

    /// Scans the request that starts at `buf[0]`.
    ///
    /// Returns `Ok(None)` when more bytes are needed: call again with the same buffer extended
    /// by the newly read bytes. Bytes already scanned are not scanned again. Once a frame is
    /// returned, further calls return the same frame until [`reset`](Self::reset).
    ///
    /// # Errors
    /// A [`ProtocolError`] with Redis's text, when the request is malformed or exceeds the
    /// limits. The connection cannot be framed any more: reply the error and close it. (The
    /// scanner is reset, so scanning the same bytes again gives the same error.)
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let scanned = self.scan_inner(buf);
        if scanned.is_err() {
            self.reset();
        }
        scanned
    }

    /// [`scan`](Self::scan), leaving the state as it was at the error.
    fn scan_inner(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        loop {
            match self.phase {
                Phase::Start => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    self.phase = if first == b'*' {
                        Phase::Count
                    } else {
                        Phase::Inline
                    };
                }
                Phase::Count => {
                    let count = if let Some((n, header)) = self.quick_header(buf, 0, b'*') {
                        self.pos = header;
                        n
                    } else {
                        let cr = match self.line_end(buf, 0, b'\r', 1) {
                            Line::Found(cr) => cr,
                            Line::Partial => return Ok(None),
                            Line::TooLong => return Err(ProtocolError::MultibulkCountTooBig),
                        };
                        let count = buf
                            .get(1..cr)
                            .and_then(parse_i64)
                            .ok_or(ProtocolError::InvalidMultibulkLength)?;
                        self.pos = cr + 2;
                        if count <= 0 {
                            return Ok(Some(self.finish(FrameKind::Empty)));
                        }
                        count.unsigned_abs()
                    };
                    if count == 0 {
                        return Ok(Some(self.finish(FrameKind::Empty)));
                    }
                    let count = usize::try_from(count)
                        .ok()
                        .filter(|&n| n <= self.limits.max_multibulk_len)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    self.args_left = count;
                    self.spans.reserve(count.min(SPANS_RESERVE));
                    self.scanned = self.pos;
                    return self.scan_args(buf, None);
                }
                Phase::BulkHeader => return self.scan_args(buf, None),
                Phase::BulkData { len } => return self.scan_args(buf, Some(len)),
                Phase::Inline => {
                    let newline = match self.line_end(buf, 0, b'\n', 0) {
                        Line::Found(newline) => newline,
                        Line::Partial => return Ok(None),
                        Line::TooLong => return Err(ProtocolError::InlineTooBig),
                    };
                    let line = &buf[..newline];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.scratch.clear();
                    self.spans.clear();
                    split_args(line, &mut self.scratch, &mut self.spans)?;
                    self.pos = newline + 1;
                    if self.spans.is_empty() {
                        return Ok(Some(self.finish(FrameKind::Empty)));
                    }
                    encode_multibulk(&self.scratch, &mut self.spans, &mut self.inline);
                    return Ok(Some(self.finish(FrameKind::Inline)));
                }
                Phase::Done(frame) => return Ok(Some(frame)),
            }
        }
    }

    /// Scans the arguments of a multibulk, in one loop rather than one trip through the phase
    /// `match` per line (which costs an unpredictable jump each time). `pending` is the length
    /// of the argument whose `$<len>` header was already consumed.
    fn scan_args(
        &mut self,
        buf: &[u8],
        mut pending: Option<usize>,
    ) -> Result<Option<Frame>, ProtocolError> {
        loop {
            if let Some(len) = pending {
                let start = self.pos;
                // Like Redis, the two bytes after the data are taken as the CRLF unchecked.
                let end = start.saturating_add(len).saturating_add(2);
                if buf.len() < end {
                    self.phase = Phase::BulkData { len };
                    return Ok(None);
                }
                self.spans.push(start..start + len);
                self.pos = end;
                self.scanned = end;
                self.args_left -= 1;
            }
            if self.args_left == 0 {
                return Ok(Some(self.finish(FrameKind::Multibulk)));
            }
            pending = self.bulk_header(buf)?;
            if pending.is_none() {
                self.phase = Phase::BulkHeader;
                return Ok(None);
            }
        }
    }

    /// Consumes the `$<len>` header at `pos`; `None` until it has arrived whole.
    #[inline]
    fn bulk_header(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let start = self.pos;
        let len = if let Some((n, header)) = self.quick_header(buf, start, b'$') {
            self.pos = start + header;
            n
        } else {
            let cr = match self.line_end(buf, start, b'\r', 1) {
                Line::Found(cr) => cr,
                Line::Partial => return Ok(None),
                Line::TooLong => return Err(ProtocolError::BulkCountTooBig),
            };
            match buf.get(start) {
                Some(b'$') => {}
                Some(&other) => return Err(ProtocolError::ExpectedDollar(other)),
                None => return Ok(None),
            }
            let len = buf
                .get(start + 1..cr)
                .and_then(parse_i64)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or(ProtocolError::InvalidBulkLength)?;
            self.pos = cr + 2;
            len
        };
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.limits.max_bulk_len)
            .map(Some)
            .ok_or(ProtocolError::InvalidBulkLength)
    }

    /// The arguments of the frame just scanned; empty unless [`scan`](Self::scan) has returned
    /// a frame since the last [`reset`](Self::reset).
    ///
    /// `buf` must be the buffer that was scanned (for an inline command it is not used: the
    /// arguments are in the scanner).
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Args<'a> {
        let data = match self.phase {
            Phase::Done(Frame {
                kind: FrameKind::Multibulk,
                ..
            }) => buf,
            Phase::Done(Frame {
                kind: FrameKind::Inline,
                ..
            }) => &self.inline,
            _ => {
                return Args {
                    data: &[],
                    spans: &[],
                }
            }
        };
        Args {
            data,
            spans: &self.spans,
        }
    }

    /// For a [`FrameKind::Inline`] frame: the request re-encoded as a RESP multibulk, which is
    /// what the proxy forwards. Empty for other frames.
    pub fn inline_resp(&self) -> &[u8] {
        match self.phase {
            Phase::Done(Frame {
                kind: FrameKind::Inline,
                ..
            }) => &self.inline,
            _ => &[],
        }
    }

    /// Forgets the current request, ready to scan the next one at the front of the buffer
    /// (after the caller dropped `frame.len` bytes). Keeps the memory for the next request.
    pub fn reset(&mut self) {
        self.phase = Phase::Start;
        self.pos = 0;
        self.scanned = 0;
        self.args_left = 0;
        self.spans.clear();
        if self.spans.capacity() > SPANS_KEEP {
            self.spans.shrink_to(SPANS_KEEP);
        }
        self.inline.clear();
        self.scratch.clear();
    }

    /// Frees the argument and inline storage, for a connection that has gone idle (between
    /// requests only: the next `scan` starts a new request).
    pub fn release(&mut self) {
        self.reset();
        self.spans = Vec::new();
        self.scratch = Vec::new();
        self.inline = Vec::new();
    }

    /// Completes the current request.
    fn finish(&mut self, kind: FrameKind) -> Frame {
        let frame = Frame {
            len: self.pos,
            kind,
        };
        self.phase = Phase::Done(frame);
        frame
    }

    /// The header `<kind><count>\r?` at `start` in one pass, when it is the common canonical
    /// kind and this line has not been partly searched by an earlier call already (then the
    /// general path resumes where it stopped, so no byte is searched twice).
    #[inline]
    fn quick_header(&self, buf: &[u8], start: usize, kind: u8) -> Option<(u64, usize)> {
        if self.scanned != start {
            return None;
        }
        let line = buf.get(start..)?;
        if line.first() != Some(&kind) {
            return None;
        }
        let (n, header) = quick_header(line)?;
        // The line limit holds on this path too (a header is at most 20 bytes here).
        (header - 2 <= self.limits.max_inline_len).then_some((n, header))
    }

    /// Looks for `terminator` in the line starting at `start`, resuming where the last call
    /// stopped. `after` is how many bytes must have arrived after the terminator (Redis wants
    /// the byte after a header's CR before it parses the header).
    ///
    /// The line, without its terminator, may be at most `max_inline_len` bytes: once that many
    /// bytes have arrived without a terminator, the line is too long.
    ///
    /// Redis looks for the terminator with `strchr`, which stops at a NUL byte: a NUL before
    /// the terminator hides it for good, and Redis waits until the line is too long. So does
    /// this scanner.
    fn line_end(&mut self, buf: &[u8], start: usize, terminator: u8, after: usize) -> Line {
        let limit = start
            .saturating_add(self.limits.max_inline_len)
            .saturating_add(1);
        let window_end = buf.len().min(limit);
        let from = self.scanned.max(start);
        if from < window_end {
            let found = find_either(&buf[from..window_end], terminator, 0);
            #[cfg(test)]
            {
                self.examined += found.map_or(window_end - from, |i| i + 1);
            }
            if let Some(i) = found.filter(|&i| buf[from + i] != 0) {
                let at = from + i;
                self.scanned = at;
                return if at + after < buf.len() {
                    Line::Found(at)
                } else {
                    Line::Partial
                };
            }
            // Nothing more to search in this line: either the window is searched, or a NUL
            // hid the terminator and nothing but the limit can end the line.
            self.scanned = if found.is_some() { limit } else { window_end };
        }
        if window_end == limit {
            Line::TooLong
        } else {
            Line::Partial
        }
    }
}

/// A borrowed view of one request's arguments (command name first).
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    /// The bytes the spans point into: the client's buffer, or the scanner's inline buffer.
    data: &'a [u8],
    /// Where each argument lies in `data`.
    spans: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// The number of arguments, command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no arguments (no frame scanned, or an empty one).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`-th argument (0 is the command name).
    ///
    /// # Panics
    /// If `i >= self.len()`, or if the buffer given to [`RequestScanner::args`] is not the one
    /// that was scanned (too short). The caller checks the arity first.
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.data[self.spans[i].clone()]
    }

    /// The arguments in order.
    ///
    /// # Panics
    /// While iterating, if the buffer given to [`RequestScanner::args`] is not the one that was
    /// scanned (too short).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.spans.iter().map(move |span| &data[span.clone()])
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
