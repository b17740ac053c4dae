//! The Lua scripts the proxy has seen, so replicas can run `EVALSHA` too.
//!
//! Redis 7 does not carry its script cache through a full sync, and a replica that missed a
//! `SCRIPT LOAD` (it was added, or resynchronised, later) would answer a mirrored `EVALSHA`
//! with `NOSCRIPT` and be made stale again and again. So the proxy remembers the body of every
//! script that went through it (`EVAL`, `SCRIPT LOAD`), mirrors `EVALSHA` as `EVAL` of the
//! body when it knows it, and loads every known script into a replica before a resync makes
//! it in sync. At most `[mirror] max_scripts` bodies are kept (`SCRIPT FLUSH` forgets them);
//! past that, `EVALSHA` of a script loaded earlier than the replica's resync makes it stale.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};

use redshard_protocol::resp::{encode, RequestScanner};

/// Script bodies by their SHA1 (40 lowercase hex digits).
#[derive(Debug)]
pub struct ScriptCache {
    /// Bodies by SHA1.
    scripts: Mutex<HashMap<String, Bytes>>,
    /// Most bodies kept.
    limit: usize,
}

/// The command name of a request, read from its first argument without parsing the rest
/// (`*N\r\n$L\r\nNAME\r\n...`).
fn command_name(request: &[u8]) -> Option<&[u8]> {
    let rest = &request[request.iter().position(|&b| b == b'\n')? + 1..];
    let rest = rest.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    rest.get(cr + 2..cr + 2 + len)
}

/// SHA1 of `body` in lowercase hex, as Redis names scripts.
fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

impl ScriptCache {
    /// An empty cache keeping at most `limit` bodies.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            scripts: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// Most bodies kept (`[mirror] max_scripts`).
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Learns from a script request the master has answered (`EVAL`, `SCRIPT LOAD`,
    /// `SCRIPT FLUSH`), and returns the request the replicas should run instead: `EVAL` of
    /// the body for an `EVALSHA` whose body is known. Cheap for any other request.
    pub(crate) fn observe(&self, request: &Bytes, master_reply: &[u8]) -> Option<Bytes> {
        let name = command_name(request)?;
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if !(is(b"EVAL") || is(b"EVALSHA") || is(b"SCRIPT")) || master_reply.first() == Some(&b'-')
        {
            return None;
        }
        let mut scanner = RequestScanner::default();
        scanner.scan(request).ok()??;
        let args: Vec<&[u8]> = scanner.args(request).iter().collect();
        let mut scripts = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
        if is(b"EVAL") || (is(b"SCRIPT") && args.get(1)?.eq_ignore_ascii_case(b"LOAD")) {
            let body = args.get(if is(b"EVAL") { 1 } else { 2 })?;
            if scripts.len() < self.limit {
                scripts.insert(sha1_hex(body), Bytes::copy_from_slice(body));
            }
            return None;
        }
        if is(b"SCRIPT") {
            if args.get(1)?.eq_ignore_ascii_case(b"FLUSH") {
                scripts.clear();
            }
            return None;
        }
        let sha = String::from_utf8_lossy(args.get(1)?).to_ascii_lowercase();
        let body = scripts.get(&sha)?;
        let mut eval: Vec<&[u8]> = Vec::with_capacity(args.len());
        eval.push(b"EVAL");
        eval.push(body);
        eval.extend_from_slice(&args[2..]);
        let mut out = BytesMut::new();
        encode::request(&mut out, &eval);
        Some(out.freeze())
    }

    /// Every known body, to load into a replica.
    #[must_use]
    pub fn bodies(&self) -> Vec<Bytes> {
        let scripts = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
        scripts.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&[u8]]) -> Bytes {
        let mut out = BytesMut::new();
        encode::request(&mut out, args);
        out.freeze()
    }

    #[test]
    fn evalsha_becomes_eval_of_a_known_body() {
        let cache = ScriptCache::new(10);
        let body: &[u8] = b"return redis.call('INCR', KEYS[1])";
        let sha = sha1_hex(body);
        assert_eq!(
            cache.observe(&req(&[b"EVALSHA", sha.as_bytes(), b"1", b"k"]), b":1\r\n"),
            None
        );
        cache.observe(&req(&[b"SCRIPT", b"LOAD", body]), b"$40\r\n...\r\n");
        assert_eq!(
            cache.observe(
                &req(&[b"evalsha", sha.to_uppercase().as_bytes(), b"1", b"k"]),
                b":2\r\n"
            ),
            Some(req(&[b"EVAL", body, b"1", b"k"]))
        );
        cache.observe(&req(&[b"SCRIPT", b"FLUSH"]), b"+OK\r\n");
        assert!(cache.bodies().is_empty());
        cache.observe(&req(&[b"EVAL", body, b"1", b"k"]), b":3\r\n");
        assert_eq!(cache.bodies(), vec![Bytes::copy_from_slice(body)]);
        // Refused scripts and other commands teach nothing.
        cache.observe(&req(&[b"EVAL", b"x(", b"0"]), b"-ERR syntax\r\n");
        cache.observe(&req(&[b"SET", b"k", b"v"]), b"+OK\r\n");
        assert_eq!(cache.bodies().len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ScriptCache::new(2);
        for i in 0..5 {
            cache.observe(
                &req(&[b"EVAL", format!("return {i}").as_bytes(), b"0"]),
                b":1\r\n",
            );
        }
        assert_eq!(cache.bodies().len(), 2);
    }
}
