//! Encoders for the replies the proxy synthesizes, and for the requests it builds.
//!
//! Replies go through `redis-protocol`'s RESP2 encoder (they are rare and small). Requests
//! built for the sub-requests of split commands (MGET, MSET, DEL, ...) are on a warm path and
//! are written by hand.

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

use super::lex::write_decimal;

/// The `+OK` reply.
pub const OK: &[u8] = b"+OK\r\n";
/// The `+PONG` reply.
pub const PONG: &[u8] = b"+PONG\r\n";
/// The RESP2 null bulk string.
pub const NULL_BULK: &[u8] = b"$-1\r\n";
/// The RESP2 null array.
pub const NULL_ARRAY: &[u8] = b"*-1\r\n";

/// Appends `frame` to `out` with `redis-protocol`.
fn put(out: &mut BytesMut, frame: &BorrowedFrame<'_>) {
    // `extend_encode_borrowed` first grows `out` by exactly the frame's encoded length, so its
    // only failure (buffer too small) cannot happen.
    let encoded = extend_encode_borrowed(out, frame, false);
    debug_assert!(encoded.is_ok(), "{encoded:?}");
}

/// CR and LF would end a simple string or error early and desynchronize the client: like
/// Redis's `addReplyErrorFormat`, replace them with spaces.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ").into()
    } else {
        text.into()
    }
}

/// Appends the simple string `+{text}\r\n` (CR and LF in `text` become spaces).
pub fn simple(out: &mut BytesMut, text: &str) {
    put(out, &BorrowedFrame::SimpleString(one_line(text).as_bytes()));
}

/// Appends the error `-{text}\r\n`; `text` has no leading `-` and starts with the error code,
/// e.g. `ERR unknown command` (CR and LF in `text` become spaces).
pub fn error(out: &mut BytesMut, text: &str) {
    put(out, &BorrowedFrame::Error(&one_line(text)));
}

/// Appends the integer `:{n}\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    put(out, &BorrowedFrame::Integer(n));
}

/// Appends the bulk string `${len}\r\n{data}\r\n`.
pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    put(out, &BorrowedFrame::BulkString(data));
}

/// A text reply as Redis sends `INFO`, `CLIENT INFO` and `CLIENT LIST`: a bulk string in
/// RESP2, a verbatim string of format `txt` in RESP3.
#[must_use]
pub fn text(protocol: super::Protocol, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    match protocol {
        super::Protocol::Resp2 => bulk(&mut out, data),
        super::Protocol::Resp3 => {
            put_header(&mut out, b'=', data.len() + 4);
            out.put_slice(b"txt:");
            out.put_slice(data);
            out.put_slice(b"\r\n");
        }
    }
    out.freeze()
}

/// Appends the null bulk string `$-1\r\n`.
pub fn null_bulk(out: &mut BytesMut) {
    out.put_slice(NULL_BULK);
}

/// Appends the header `*{len}\r\n` of an array whose `len` elements the caller appends next
/// (typically replies forwarded as they are).
pub fn array_header(out: &mut BytesMut, len: usize) {
    put_header(out, b'*', len);
}

/// Appends the header of a map of `pairs` entries whose keys and values the caller appends
/// next: `%{pairs}` in RESP3, an array of `2 * pairs` elements in RESP2.
pub fn map_header(out: &mut BytesMut, protocol: super::Protocol, pairs: usize) {
    match protocol {
        super::Protocol::Resp3 => put_header(out, b'%', pairs),
        super::Protocol::Resp2 => array_header(out, pairs * 2),
    }
}

/// Appends the null array `*-1\r\n`.
pub fn null_array(out: &mut BytesMut) {
    out.put_slice(NULL_ARRAY);
}

/// Appends the command `args` as a RESP multibulk (`*N` then one `$len` bulk per argument),
/// e.g. the part of an `MGET` that goes to one shard.
pub fn request(out: &mut BytesMut, args: &[&[u8]]) {
    // Headers take at most 1 + 20 + 2 bytes; reserve once for the whole request.
    let size = 23 + args.iter().map(|a| a.len() + 25).sum::<usize>();
    out.reserve(size);
    put_header(out, b'*', args.len());
    for arg in args {
        put_header(out, b'$', arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Appends `{kind}{n}\r\n`.
#[inline]
fn put_header(out: &mut BytesMut, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    let start = write_decimal(&mut digits, n);
    out.put_u8(kind);
    out.put_slice(&digits[start..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::from(&b"prefix|"[..]);
        f(&mut out);
        out.split_off(7).to_vec()
    }

    #[test]
    fn text_is_bulk_in_resp2_and_verbatim_txt_in_resp3() {
        use crate::resp::Protocol;
        assert_eq!(&text(Protocol::Resp2, b"a:1\r\n")[..], b"$5\r\na:1\r\n\r\n");
        assert_eq!(
            &text(Protocol::Resp3, b"a:1\r\n")[..],
            b"=9\r\ntxt:a:1\r\n\r\n"
        );
        assert_eq!(&text(Protocol::Resp3, b"")[..], b"=4\r\ntxt:\r\n");
    }

    #[test]
    fn replies() {
        assert_eq!(encoded(|o| simple(o, "OK")), OK);
        assert_eq!(encoded(|o| simple(o, "PONG")), PONG);
        assert_eq!(encoded(|o| simple(o, "a\r\nb")), b"+a  b\r\n");
        assert_eq!(encoded(|o| error(o, "ERR no")), b"-ERR no\r\n");
        assert_eq!(encoded(|o| error(o, "ERR x\ny")), b"-ERR x y\r\n");
        assert_eq!(encoded(|o| integer(o, -12)), b":-12\r\n");
        assert_eq!(
            encoded(|o| integer(o, i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(encoded(|o| bulk(o, b"a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(encoded(|o| bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(encoded(null_bulk), NULL_BULK);
        assert_eq!(encoded(|o| array_header(o, 12)), b"*12\r\n");
        assert_eq!(encoded(null_array), b"*-1\r\n");
    }

    #[test]
    fn requests() {
        assert_eq!(
            encoded(|o| request(o, &[b"MGET", b"k1", b""])),
            b"*3\r\n$4\r\nMGET\r\n$2\r\nk1\r\n$0\r\n\r\n"
        );
        assert_eq!(encoded(|o| request(o, &[])), b"*0\r\n");
        let big = vec![b'x'; 1234];
        let out = encoded(|o| request(o, &[&big]));
        assert!(out.starts_with(b"*1\r\n$1234\r\nxxx"));
        assert_eq!(out.len(), 4 + 7 + 1234 + 2);
    }

    #[test]
    fn requests_scan_back() {
        let mut out = BytesMut::new();
        request(&mut out, &[b"SET", b"key", b"v\r\nv"]);
        let mut scanner = super::super::RequestScanner::default();
        let frame = scanner.scan(&out).unwrap().unwrap();
        assert_eq!(frame.len, out.len());
        let args: Vec<&[u8]> = scanner.args(&out).iter().collect();
        assert_eq!(args, vec![&b"SET"[..], b"key", b"v\r\nv"]);
    }
}
