//! Byte-level helpers shared by the scanners: a fast byte search and Redis's `string2ll`.

/// Index of the first `needle` in `hay`.
///
/// Eight bytes at a time (SWAR): protocol lines are found in one or two words, and a long
/// inline line is searched without a byte-at-a-time loop, all in safe code.
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word) ^ pattern;
        // A zero byte of `x` is a match. This classic test can flag a byte above a real match
        // (borrow propagation) but never below one, so the lowest flag is the first match.
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// Index of the first `a` or `b` in `hay`, eight bytes at a time like [`find_byte`].
#[inline]
pub(crate) fn find_either(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let (pattern_a, pattern_b) = (LO * u64::from(a), LO * u64::from(b));
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(word);
        let (x, y) = (word ^ pattern_a, word ^ pattern_b);
        // As in `find_byte`; a false flag only ever sits above a real match of its own
        // pattern, so the lowest flag of the union is still the first match.
        let found = (x.wrapping_sub(LO) & !x & HI) | (y.wrapping_sub(LO) & !y & HI);
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == a || c == b)
        .map(|i| base + i)
}

/// Redis's `string2ll` (util.c): a strict signed decimal.
///
/// No sign but a leading `-`, no leading zeros (only `0` itself), no spaces, no `-0`, fewer than
/// 21 bytes, no overflow of `i64`. The scanners accept exactly the numbers Redis accepts, so
/// the proxy and the backend always agree on where a request ends.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE in Redis.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (&first, rest) = digits.split_first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut v = u64::from(first - b'0');
    for &d in rest {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // -(2^63) is the one value whose magnitude does not fit in i64.
        if v == 1 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(v).ok().map(|v| -v)
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// The common header `<type><digits>\r<one more byte>` at the front of `line`, parsed in one
/// pass: returns the number and the header's length (type byte to the byte after the CR).
///
/// Only for 1 to 18 digits without a leading zero, where the result is exactly what finding
/// the first CR and [`parse_i64`] give; `None` sends the caller to that general path (sign,
/// leading zeros, huge numbers, garbage, or the header not complete yet).
#[inline(always)]
pub(crate) fn quick_header(line: &[u8]) -> Option<(u64, usize)> {
    // One to three digits (every argument and reply up to 999 bytes, every count up to 999):
    // no loop, the same answer as the loop below.
    let digit = |b: u8| b.wrapping_sub(b'0');
    if let [_, d0, rest @ ..] = line {
        let d0 = digit(*d0);
        if d0 < 10 {
            match rest {
                [b'\r', _, ..] => return Some((u64::from(d0), 4)),
                [d1, b'\r', _, ..] if d0 > 0 && digit(*d1) < 10 => {
                    return Some((u64::from(d0 * 10 + digit(*d1)), 5));
                }
                [d1, d2, b'\r', _, ..] if d0 > 0 && digit(*d1) < 10 && digit(*d2) < 10 => {
                    let n = u64::from(d0) * 100 + u64::from(digit(*d1) * 10 + digit(*d2));
                    return Some((n, 6));
                }
                _ => {}
            }
        }
    }
    quick_header_loop(line)
}

/// [`quick_header`] digit by digit, for the headers its unrolled cases do not cover.
#[inline]
fn quick_header_loop(line: &[u8]) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    let mut i = 1;
    loop {
        let b = *line.get(i)?;
        if b.is_ascii_digit() {
            if i == 19 || (i == 2 && n == 0) {
                return None;
            }
            n = n * 10 + u64::from(b - b'0');
            i += 1;
        } else if b == b'\r' && i > 1 {
            line.get(i + 1)?;
            return Some((n, i + 2));
        } else {
            return None;
        }
    }
}

/// Appends `n` in decimal to `out`, without going through `fmt`.
#[inline]
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let start = write_decimal(&mut digits, n);
    out.extend_from_slice(&digits[start..]);
}

/// Writes `n` in decimal at the end of `digits`; returns where the digits start.
#[inline]
pub(crate) fn write_decimal(digits: &mut [u8; 20], mut n: usize) -> usize {
    let mut i = digits.len();
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_matches_naive_search() {
        let hay: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(37)).collect();
        for start in 0..40 {
            for needle in [0u8, 1, 13, 10, 0x80, 0xff, 37, 74] {
                let h = &hay[start..];
                assert_eq!(
                    find_byte(h, needle),
                    h.iter().position(|&b| b == needle),
                    "start {start} needle {needle}"
                );
            }
        }
        // A byte just above a match can be flagged by the borrow; the first match must win.
        assert_eq!(find_byte(b"\x01\x00xxxxxx", 0), Some(1));
        assert_eq!(find_byte(b"ab\r\r\rzzzz", b'\r'), Some(2));
        assert_eq!(find_byte(b"", b'\r'), None);
    }

    #[test]
    fn find_either_matches_naive_search() {
        let hay: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(37)).collect();
        for start in 0..40 {
            for (a, b) in [(0u8, 13u8), (10, 0), (37, 74), (0xff, 1), (5, 5)] {
                let h = &hay[start..];
                assert_eq!(
                    find_either(h, a, b),
                    h.iter().position(|&c| c == a || c == b),
                    "start {start} {a} {b}"
                );
            }
        }
        assert_eq!(find_either(b"ab\x01\x00\rxxxx", b'\r', 0), Some(3));
        assert_eq!(find_either(b"abc", b'\r', 0), None);
    }

    #[test]
    fn parse_i64_is_redis_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"3"), Some(3));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"100000000000000000000",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn quick_header_agrees_with_the_general_path() {
        let general = |line: &[u8]| {
            let cr = find_byte(line, b'\r')?;
            line.get(cr + 1)?;
            let n = u64::try_from(parse_i64(&line[1..cr])?).ok()?;
            Some((n, cr + 2))
        };
        let mut cases: Vec<Vec<u8>> = [
            &b"$0\r\n"[..],
            b"$7\r\n",
            b"*10\r\n",
            b"$00\r\n",
            b"$01\r\n",
            b"$-1\r\n",
            b"$\r\n",
            b"$1\r",
            b"$1",
            b"$1x\r\n",
            b"$999999999999999999\r\n",
            b"$1000000000000000000\r\n",
            b"$99999999999999999999\r\n",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        for n in [
            0u64,
            1,
            9,
            10,
            100,
            123_456_789,
            10u64.pow(17),
            10u64.pow(18) - 1,
        ] {
            cases.push(format!("${n}\r\n").into_bytes());
        }
        for case in &cases {
            if let Some(quick) = quick_header(case) {
                assert_eq!(
                    Some(quick),
                    general(case),
                    "{:?}",
                    String::from_utf8_lossy(case)
                );
            }
        }
        assert_eq!(quick_header(b"$1234\r\n"), Some((1234, 7)));
        assert_eq!(quick_header(b"$1234\r"), None);
    }

    /// The unrolled cases of `quick_header` answer exactly as its loop does, for every line of
    /// up to 7 bytes over the bytes that matter.
    #[test]
    fn quick_header_agrees_with_its_loop() {
        const ALPHABET: &[u8] = b"0159\r\n-x";
        let mut line = vec![b'$'];
        fn each(line: &mut Vec<u8>, left: usize) {
            assert_eq!(
                quick_header(line),
                quick_header_loop(line),
                "{:?}",
                String::from_utf8_lossy(line)
            );
            if left == 0 {
                return;
            }
            for &b in ALPHABET {
                line.push(b);
                each(line, left - 1);
                line.pop();
            }
        }
        each(&mut line, 6);
    }

    #[test]
    fn decimal_formatting() {
        for n in [0usize, 7, 10, 99, 100, 12345, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
