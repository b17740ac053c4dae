//! The reply scanner: where each reply of a backend ends, so replies are forwarded as bytes.
//!
//! It knows RESP2 and RESP3: simple types (`+ - : _ # , (`), blobs (`$ ! =`, `$-1` being the
//! RESP2 null) and aggregates (`* ~ > %`, `*-1` being the RESP2 null array). A `|` attribute is
//! part of the reply that follows it. RESP3 streamed strings and aggregates (`$?`, `*?`) are
//! refused: Redis never sends them.
//!
//! Replies come from our own backends, so beyond framing the scanner only checks what is cheap
//! and catches a desynchronized stream early: CRLF after every line and blob, integers, nulls
//! and booleans well formed, sizes bounded.
//!
//! Nesting is not a framing error. The open aggregates are an explicit stack on the heap (never
//! recursion), which grows with the depth: at most one 8-byte entry per 4-byte `*1\r\n`
//! header, so its memory is bounded by the reply's own bytes. A reply nested deeper than the
//! scanner's `max_depth` is still framed to its end, so the stream stays in step, and is
//! reported by [`ReplyScanner::too_deep`]: the caller refuses that one reply, not the
//! connection.

use std::ops::Range;

use super::lex::{find_byte, parse_i64, quick_header};
use super::ProtocolError;

/// The largest blob (`$`, `!`, `=`) a reply may announce: 4 GiB, far above Redis's own 512 MiB
/// `proto-max-bulk-len` default. Anything bigger is taken as a corrupted stream.
pub const MAX_REPLY_BLOB_LEN: usize = u32::MAX as usize;
/// The most elements an aggregate may announce (a map or attribute announces pairs).
pub const MAX_REPLY_AGGREGATE_LEN: u64 = u32::MAX as u64;
/// The longest line (a simple string or error, a header) a reply may have: a Lua script can
/// return a status or error as long as any string.
pub const MAX_REPLY_LINE_LEN: usize = 512 * 1024 * 1024;

/// Stack entries a scanner keeps allocated between replies; a deeper reply's stack is freed
/// when it ends, so one deep reply does not pin its memory to the connection.
const RETAINED_DEPTH: usize = 64;

/// A resumable, bounded scanner of one backend connection's replies.
///
/// The caller keeps a read buffer whose front is the start of the next reply and calls
/// [`scan`](Self::scan) each time bytes were appended; on `Ok(Some(len))` it takes `len` bytes
/// from the front and calls `scan` again for the next reply.
///
/// [`Default`] is a scanner without a depth limit, for helpers that only need boundaries.
#[derive(Debug)]
pub struct ReplyScanner {
    /// The most aggregates (attributes included) that may be open at once before the reply
    /// counts as [too deep](Self::too_deep).
    max_depth: usize,
    /// Elements still to come in each open aggregate, innermost last. An attribute counts its
    /// pairs plus the value it is attached to, so attribute and value complete as one element.
    stack: Vec<u64>,
    /// The current reply opened more than `max_depth` aggregates at once.
    deep: bool,
    /// The reply last returned by [`scan`](Self::scan) was too deep.
    last_deep: bool,
    /// Offset of the first byte not consumed yet by the current reply. Never moves back before
    /// the reply is complete.
    pos: usize,
    /// Offset up to which the current line has been searched for its CR.
    scanned: usize,
    /// Payload length of the blob whose header was consumed, while its data is awaited.
    blob: Option<usize>,
    /// Bytes examined while searching for line ends, to test that the work is linear.
    #[cfg(test)]
    examined: usize,
}

impl ReplyScanner {
    /// A scanner that reports replies with more than `max_depth` aggregates open at once as
    /// [too deep](Self::too_deep).
    pub fn new(max_depth: usize) -> Self {
        Self {
            max_depth,
            stack: Vec::new(),
            deep: false,
            last_deep: false,
            pos: 0,
            scanned: 0,
            blob: None,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Scans the reply that starts at `buf[0]`.
    ///
    /// Returns `Ok(Some(len))` when `buf` starts with one complete reply of `len` bytes; the
    /// scanner is then ready for the next reply, which starts at `buf[len]` (drop `len` bytes
    /// and call again). Returns `Ok(None)` when more bytes are needed: call again with the same
    /// buffer extended. Bytes already scanned are not scanned again.
    ///
    /// A reply of any depth is framed; whether the one returned nests deeper than `max_depth`
    /// is [`too_deep`](Self::too_deep).
    ///
    /// # Errors
    /// [`ProtocolError::InvalidReply`] when the reply is malformed or announces an absurd size.
    /// The connection cannot be framed any more. (The scanner is reset, so scanning the same
    /// bytes again gives the same error.)
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let scanned = self.scan_inner(buf);
        if scanned.is_err() {
            self.finish();
            self.blob = None;
        }
        scanned
    }

    /// The error reply that stands for a reply too deep for this scanner: the same text for
    /// every connection with the same limit, so that a master's and its replica's refused
    /// replies still compare equal.
    #[must_use]
    pub fn too_deep_error(&self) -> Vec<u8> {
        format!(
            "-ERR reply nested deeper than {} levels refused by the proxy (limits.max_reply_depth)\r\n",
            self.max_depth
        )
        .into_bytes()
    }

    /// Whether the reply last returned by [`scan`](Self::scan) had more than `max_depth`
    /// aggregates open at once. It was framed like any other and the next reply is scanned
    /// normally; the caller decides what to do with this one (a lane answers its request with
    /// an error instead).
    #[must_use]
    pub fn too_deep(&self) -> bool {
        self.last_deep
    }

    /// [`scan`](Self::scan), leaving the state as it was at the error.
    fn scan_inner(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            if let Some(len) = self.blob {
                let end = self.pos.saturating_add(len).saturating_add(2);
                let Some(data) = buf.get(self.pos..end) else {
                    return Ok(None);
                };
                if !data.ends_with(b"\r\n") {
                    return Err(invalid("blob not followed by CRLF"));
                }
                self.blob = None;
                self.pos = end;
                self.scanned = end;
                if self.element_done() {
                    return Ok(Some(self.finish()));
                }
                continue;
            }
            let start = self.pos;
            // Check the type byte before searching the line, so the verdict on a bad stream
            // does not depend on how it was split into reads (found by fuzzing: `\r1\r\n`).
            match buf.get(start) {
                None => return Ok(None),
                Some(
                    b'+' | b'-' | b',' | b'(' | b':' | b'_' | b'#' | b'$' | b'!' | b'=' | b'*'
                    | b'~' | b'>' | b'%' | b'|',
                ) => {}
                Some(_) => return Err(invalid("unknown type byte")),
            }
            // The common canonical header or integer in one pass; the general path otherwise,
            // and whenever an earlier call already searched part of this line.
            let quick = match buf.get(start..) {
                Some(line) if self.scanned == start => quick_header(line),
                _ => None,
            };
            let (cr, quick) = match quick {
                Some((n, header)) => (start + header - 2, i64::try_from(n).ok()),
                None => match self.line_end(buf, start)? {
                    Some(cr) => (cr, None),
                    None => return Ok(None),
                },
            };
            let number = |body: &[u8]| quick.or_else(|| parse_i64(body));
            // `line_end` found the CR at or after `start` with one more byte after it.
            let (Some(&kind), Some(body), Some(&lf)) =
                (buf.get(start), buf.get(start + 1..cr), buf.get(cr + 1))
            else {
                return Err(invalid("empty line"));
            };
            if lf != b'\n' {
                return Err(invalid("CR not followed by LF"));
            }
            let complete = match kind {
                b'+' | b'-' | b',' | b'(' => true,
                b':' => {
                    number(body).ok_or(invalid("malformed integer"))?;
                    true
                }
                b'_' if body.is_empty() => true,
                b'_' => return Err(invalid("malformed null")),
                b'#' if body == b"t" || body == b"f" => true,
                b'#' => return Err(invalid("malformed boolean")),
                b'$' | b'!' | b'=' => match number(body) {
                    Some(-1) if kind == b'$' => true,
                    Some(n) => {
                        let len = usize::try_from(n)
                            .ok()
                            .filter(|&n| n <= MAX_REPLY_BLOB_LEN)
                            .ok_or(invalid("blob length out of range"))?;
                        self.blob = Some(len);
                        false
                    }
                    None if body == b"?" => return Err(invalid("streamed string")),
                    None => return Err(invalid("malformed blob length")),
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => match number(body) {
                    Some(-1) if kind == b'*' => true,
                    Some(n) => {
                        let n = u64::try_from(n)
                            .ok()
                            .filter(|&n| n <= MAX_REPLY_AGGREGATE_LEN)
                            .ok_or(invalid("aggregate length out of range"))?;
                        let elements = match kind {
                            b'%' => 2 * n,
                            b'|' => 2 * n + 1,
                            _ => n,
                        };
                        if elements > 0 {
                            if self.stack.len() >= self.max_depth {
                                self.deep = true;
                            }
                            // The header took at least 4 bytes of the reply, which the caller
                            // holds until the reply is complete: the stack's memory is bounded
                            // by the reply's bytes.
                            self.stack.push(elements);
                        }
                        elements == 0
                    }
                    None if body == b"?" => return Err(invalid("streamed aggregate")),
                    None => return Err(invalid("malformed aggregate length")),
                },
                _ => return Err(invalid("unknown type byte")),
            };
            self.pos = cr + 2;
            self.scanned = self.pos;
            if complete && self.element_done() {
                return Ok(Some(self.finish()));
            }
        }
    }

    /// Counts one element as complete in the open aggregates, closing those that are full.
    /// Returns whether the whole reply is complete.
    fn element_done(&mut self) -> bool {
        while let Some(left) = self.stack.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }

    /// Ends the current reply: returns its length and gets ready for the next one.
    fn finish(&mut self) -> usize {
        let len = self.pos;
        self.pos = 0;
        self.scanned = 0;
        self.last_deep = std::mem::take(&mut self.deep);
        if self.stack.capacity() > RETAINED_DEPTH {
            self.stack = Vec::new();
        } else {
            self.stack.clear();
        }
        len
    }

    /// Finds the CR ending the line at `start`, resuming where the last call stopped; `None`
    /// until the CR and the byte after it have arrived.
    fn line_end(&mut self, buf: &[u8], start: usize) -> Result<Option<usize>, ProtocolError> {
        let limit = start.saturating_add(MAX_REPLY_LINE_LEN).saturating_add(1);
        let window_end = buf.len().min(limit);
        let from = self.scanned.max(start);
        if from < window_end {
            let found = find_byte(&buf[from..window_end], b'\r');
            #[cfg(test)]
            {
                self.examined += found.map_or(window_end - from, |i| i + 1);
            }
            if let Some(i) = found {
                let cr = from + i;
                self.scanned = cr;
                return Ok((cr + 1 < buf.len()).then_some(cr));
            }
            self.scanned = window_end;
        }
        if window_end == limit {
            Err(invalid("line too long"))
        } else {
            Ok(None)
        }
    }
}

/// The error for a malformed reply.
fn invalid(what: &'static str) -> ProtocolError {
    ProtocolError::InvalidReply(what)
}

impl Default for ReplyScanner {
    /// A scanner without a depth limit (boundaries only; the stack still grows only with the
    /// bytes of the reply).
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

/// Length of the one reply at the front of `buf`, if it is complete and well formed, at any
/// depth.
pub fn element_len(buf: &[u8]) -> Option<usize> {
    ReplyScanner::default().scan(buf).ok().flatten()
}

/// Offset of the value in `reply`, after any `|` attributes attached to it.
fn value_start(reply: &[u8]) -> Option<usize> {
    let mut off = 0;
    while reply.get(off) == Some(&b'|') {
        let (pairs, header_end) = header(&reply[off..])?;
        off += header_end;
        for _ in 0..pairs.checked_mul(2)? {
            off += element_len(reply.get(off..)?)?;
        }
    }
    Some(off)
}

/// The count of the `<type><count>\r\n` header at the front of `buf`, and the header's length.
fn header(buf: &[u8]) -> Option<(usize, usize)> {
    let cr = find_byte(buf, b'\r')?;
    if buf.get(cr + 1) != Some(&b'\n') {
        return None;
    }
    let n = parse_i64(buf.get(1..cr)?)?;
    Some((usize::try_from(n).ok()?, cr + 2))
}

/// Whether the complete reply `reply` is an error (`-` simple error or `!` blob error),
/// attributes aside.
pub fn is_error(reply: &[u8]) -> bool {
    value_start(reply)
        .and_then(|off| reply.get(off))
        .is_some_and(|&b| b == b'-' || b == b'!')
}

/// The value of the complete reply `reply` if it is an integer (`:123\r\n`), attributes aside.
pub fn integer(reply: &[u8]) -> Option<i64> {
    let value = reply.get(value_start(reply)?..)?;
    parse_i64(value.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
}

/// Whether the complete reply `reply` is exactly `+OK\r\n`, attributes aside.
pub fn is_ok(reply: &[u8]) -> bool {
    value_start(reply).is_some_and(|off| reply.get(off..) == Some(b"+OK\r\n"))
}

/// The byte ranges, in `reply`, of the elements of the complete reply `reply` if it is an
/// array (`*`), set (`~`) or push (`>`) reply, attributes aside. An element's range includes
/// its own attributes.
///
/// `None` for any other reply, for the null array `*-1\r\n`, and for a malformed one.
pub fn aggregate_elements(reply: &[u8]) -> Option<Vec<Range<usize>>> {
    let off = value_start(reply)?;
    if !matches!(reply.get(off)?, b'*' | b'~' | b'>') {
        return None;
    }
    let (count, header_len) = header(&reply[off..])?;
    let mut at = off + header_len;
    // Every element takes at least 3 bytes: a count above that is a lie, and must not size
    // the allocation.
    if count > (reply.len() - at) / 3 {
        return None;
    }
    let mut elements = Vec::with_capacity(count);
    for _ in 0..count {
        let len = element_len(reply.get(at..)?)?;
        elements.push(at..at + len);
        at += len;
    }
    Some(elements)
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
