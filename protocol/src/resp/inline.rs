//! Inline commands (`GET key\r\n` typed into telnet or `redis-cli` piped input): splitting a
//! line like Redis's `sdssplitargs`, and re-encoding it as a RESP multibulk for the backend.

use std::ops::Range;

use super::lex::push_decimal;
use super::ProtocolError;

/// `isspace` in the C locale, which `sdssplitargs` uses to skip blanks between arguments.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The value of an ASCII hex digit, if `b` is one.
#[inline]
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` (without its line ending) into arguments exactly like Redis 7.0's
/// `sdssplitargs`: blanks separate arguments; `"..."` understands `\n \r \t \b \a`, `\xHH` and
/// `\<any>`; `'...'` understands only `\'`; a closing quote must be followed by a blank or the
/// end of the line.
///
/// The bytes of the arguments are appended to `out` and their ranges in `out` pushed on
/// `spans`. Redis splits a C string, so a NUL byte ends the line there (an open quote before
/// it is then unbalanced); the request scanner never passes one, since like Redis it never
/// finds the end of a line holding a NUL.
///
/// # Errors
/// [`ProtocolError::UnbalancedQuotes`], as Redis.
pub(crate) fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    spans: &mut Vec<Range<usize>>,
) -> Result<(), ProtocolError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // The C string's byte at `i`: 0 past the end, as the terminating NUL.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(());
        }
        let start = out.len();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = at(p);
            if in_double {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3))) {
                        out.push(hi * 16 + lo);
                        p += 4;
                        continue;
                    }
                }
                if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    out.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        p += 1;
                        break;
                    }
                    0 => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => out.push(c),
                }
            }
            p += 1;
        }
        spans.push(start..out.len());
    }
}

/// Writes the arguments (`args[span]` for each span) as one RESP multibulk into `resp`, and
/// moves each span to where that argument now lies in `resp`.
pub(crate) fn encode_multibulk(args: &[u8], spans: &mut [Range<usize>], resp: &mut Vec<u8>) {
    resp.clear();
    resp.push(b'*');
    push_decimal(resp, spans.len());
    resp.extend_from_slice(b"\r\n");
    for span in spans.iter_mut() {
        let arg = args.get(span.clone()).unwrap_or_default();
        resp.push(b'$');
        push_decimal(resp, arg.len());
        resp.extend_from_slice(b"\r\n");
        let start = resp.len();
        resp.extend_from_slice(arg);
        *span = start..resp.len();
        resp.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        split_args(line, &mut out, &mut spans)?;
        Ok(spans.into_iter().map(|r| out[r].to_vec()).collect())
    }

    fn ok(line: &[u8], expected: &[&[u8]]) {
        let got = split(line).unwrap();
        let expected: Vec<Vec<u8>> = expected.iter().map(|a| a.to_vec()).collect();
        assert_eq!(got, expected, "line {:?}", String::from_utf8_lossy(line));
    }

    #[test]
    fn plain_words_and_blanks() {
        ok(b"", &[]);
        ok(b"   \t ", &[]);
        ok(b"PING", &[b"PING"]);
        ok(b"  SET  k \t v  ", &[b"SET", b"k", b"v"]);
        // \v and \f are skipped between arguments but are part of an unquoted argument.
        ok(b"\x0bGET\x0ck", &[b"GET\x0ck"]);
        // A lone CR inside the line ends an argument.
        ok(b"GET\rk", &[b"GET", b"k"]);
    }

    #[test]
    fn double_quotes_and_escapes() {
        ok(br#"SET "a b" "c""#, &[b"SET", b"a b", b"c"]);
        ok(br#""""#, &[b""]);
        ok(br#""\n\r\t\b\a\"\\\q""#, &[b"\n\r\t\x08\x07\"\\q"]);
        ok(br#""\x41\x4a\xff\x00z""#, &[b"AJ\xff\x00z"]);
        // Not a valid hex escape: `\x` is just an escaped `x`.
        ok(br#""\xZZ\x4""#, &[b"xZZx4"]);
        // A quote may open in the middle of an argument.
        ok(br#"ab"c d""#, &[b"abc d"]);
        ok(br#"k"v w""#, &[b"kv w"]);
    }

    #[test]
    fn single_quotes() {
        ok(br"'a b' 'it\'s' '\n'", &[b"a b", b"it's", b"\\n"]);
        ok(b"''", &[b""]);
    }

    #[test]
    fn unbalanced_quotes() {
        for line in [
            &br#"SET "abc"#[..],
            br#""abc"def"#,
            br"'abc",
            br"'abc'x",
            br#""abc\"#,
            b"\"ab\x00c\"",
        ] {
            assert_eq!(
                split(line),
                Err(ProtocolError::UnbalancedQuotes),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // Closing quote followed by a blank or the end: fine.
        ok(b"\"a\"\t\"b\"\x0b", &[b"a", b"b"]);
    }

    #[test]
    fn nul_ends_the_line_like_a_c_string() {
        ok(b"GET k\x00 ignored \"", &[b"GET", b"k"]);
    }

    #[test]
    fn reencodes_as_multibulk() {
        let mut args = Vec::new();
        let mut spans = Vec::new();
        split_args(br#"SET k "a\r\nb""#, &mut args, &mut spans).unwrap();
        let mut resp = Vec::new();
        encode_multibulk(&args, &mut spans, &mut resp);
        assert_eq!(resp, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        assert_eq!(&resp[spans[2].clone()], b"a\r\nb");
    }
}
