//! Redis's glob-style pattern matching (`stringmatchlen`).

/// Redis's `stringmatchlen`: `*`, `?`, `[...]`, `[^...]`, `\\`; `nocase` as CONFIG GET uses
/// it, case-sensitive as ACL key and channel patterns do.
/// Iterative with one backtrack point, so hostile patterns (`*a*a*a*...`) stay O(len²).
#[must_use]
pub fn matches(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it matched up to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            star = Some((p, t));
            continue;
        }
        if let Some(next) = match_one(pattern, p, text[t], nocase) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            Some((after, matched)) => {
                p = after;
                t = matched + 1;
                star = Some((after, matched + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// If the pattern element at `p` (not `*`) matches `c`, the index of the next element.
fn match_one(pattern: &[u8], p: usize, c: u8, nocase: bool) -> Option<usize> {
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let c = fold(c);
    match *pattern.get(p)? {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (fold(pattern[p + 1]) == c).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            while i < pattern.len() && pattern[i] != b']' {
                if pattern[i] == b'\\' && i + 1 < pattern.len() {
                    hit |= fold(pattern[i + 1]) == c;
                    i += 2;
                } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                    // As Redis: a `]` after the `-` ends the range, not the class (`[b-]c`
                    // is the range `]`..`b` and `c`, in a class left open).
                    let (a, b) = (fold(pattern[i]), fold(pattern[i + 2]));
                    hit |= (a.min(b)..=a.max(b)).contains(&c);
                    i += 3;
                } else {
                    hit |= fold(pattern[i]) == c;
                    i += 1;
                }
            }
            // An unterminated class runs to the end of the pattern, as in Redis.
            (hit != negate).then_some((i + 1).min(pattern.len()))
        }
        lit => (fold(lit) == c).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn glob_match(p: &[u8], t: &[u8]) -> bool {
        matches(p, t, true)
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b"maxclients"));
        assert!(glob_match(b"max*", b"maxclients"));
        assert!(glob_match(b"MAXCLIENTS", b"maxclients"));
        assert!(glob_match(b"d?tabases", b"databases"));
        assert!(glob_match(b"[a-d]atabases", b"databases"));
        assert!(!glob_match(b"[^d]atabases", b"databases"));
        assert!(!glob_match(b"max", b"maxclients"));
        assert!(glob_match(b"*s*s", b"databases"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        let hostile = b"*a".repeat(200);
        assert!(!glob_match(&hostile, &b"a".repeat(100)));
        assert!(matches(b"a*", b"abc", false));
        // What redis-server 7.0.15 answers (ACL DRYRUN of a user with `~a[b-]c`).
        assert!(matches(b"a[b-]c", b"ab", false));
        assert!(matches(b"a[b-]c", b"a^", false));
        assert!(!matches(b"a[b-]c", b"abc", false));
        assert!(!matches(b"a[b-]c", b"a-c", false));
        assert!(!matches(b"A*", b"abc", false));
    }
}
