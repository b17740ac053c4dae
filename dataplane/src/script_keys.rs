//! The keys of the scripts the proxy has seen, for an `EVALSHA` called with no key.
//!
//! A script called with no key whose body names every key it can touch as a literal is
//! routed by those keys (`redshard_protocol::command::script_keys`). `EVAL` carries the body;
//! `EVALSHA` carries only its SHA1, so the proxy remembers the keys of each such body it saw
//! in an `EVAL` or a `SCRIPT LOAD` (clients' script helpers load a script once, then call it
//! by SHA1). At most `[mirror] max_scripts` are kept: past that the record starts again
//! empty, and a script is learnt again at its next `EVAL` or `SCRIPT LOAD`. `SCRIPT FLUSH`
//! forgets them. A script not remembered runs as one without keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use redshard_protocol::command::script_keys::literal_keys;

/// The literal keys of script bodies, by the SHA1 of the body.
#[derive(Debug)]
pub struct ScriptKeys {
    /// Keys by SHA1; only bodies that name at least one key.
    by_sha: Mutex<HashMap<[u8; 20], Arc<[Bytes]>>>,
    /// Most scripts kept (`[mirror] max_scripts`).
    limit: usize,
}

impl ScriptKeys {
    /// An empty record keeping at most `limit` scripts.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            by_sha: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// The keys `body` names as literals (none when its text does not show them all), which
    /// are remembered under its SHA1 when there are any.
    pub(crate) fn learn(&self, body: &[u8]) -> Vec<Bytes> {
        let Some(keys) = literal_keys(body).filter(|keys| !keys.is_empty()) else {
            return Vec::new();
        };
        let sha = sha1_smol::Sha1::from(body).digest().bytes();
        let mut by_sha = self.by_sha.lock().unwrap_or_else(PoisonError::into_inner);
        if !by_sha.contains_key(&sha) {
            if by_sha.len() >= self.limit {
                by_sha.clear();
            }
            by_sha.insert(sha, keys.clone().into());
        }
        keys
    }

    /// The keys remembered for the script of SHA1 `sha` (40 hex digits, either case).
    pub(crate) fn keys_of(&self, sha: &[u8]) -> Option<Arc<[Bytes]>> {
        let sha = parse_sha(sha)?;
        self.by_sha
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&sha)
            .cloned()
    }

    /// Forgets every script (`SCRIPT FLUSH`).
    pub(crate) fn forget(&self) {
        self.by_sha
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The 20 bytes of a SHA1 written as 40 hex digits.
fn parse_sha(hex: &[u8]) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let digit = |b: u8| char::from(b).to_digit(16);
    let mut sha = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        sha[i] = u8::try_from(value).ok()?;
    }
    Some(sha)
}

#[cfg(test)]
mod tests {
    use super::ScriptKeys;

    #[test]
    fn scripts_naming_keys_are_remembered_by_sha_within_the_limit() {
        let record = ScriptKeys::new(2);
        let body = b"return redis.call('GET', 'a')";
        assert_eq!(record.learn(body), vec![bytes::Bytes::from_static(b"a")]);
        let sha = sha1_smol::Sha1::from(&body[..]).digest().to_string();
        assert_eq!(&*record.keys_of(sha.as_bytes()).unwrap(), &["a"][..]);
        assert_eq!(
            &*record.keys_of(sha.to_uppercase().as_bytes()).unwrap(),
            &["a"][..]
        );
        // Bodies without literal keys are not kept; a malformed SHA names nothing.
        assert!(record.learn(b"return 1").is_empty());
        assert!(record
            .learn(b"return redis.call('GET', ARGV[1])")
            .is_empty());
        assert!(record.keys_of(b"zz").is_none());
        assert!(record.keys_of(&[b'g'; 40]).is_none());
        // Past the limit the record starts again.
        record.learn(b"return redis.call('GET', 'b')");
        record.learn(b"return redis.call('GET', 'c')");
        assert!(record.keys_of(sha.as_bytes()).is_none());
        record.learn(body);
        assert!(record.keys_of(sha.as_bytes()).is_some());
        record.forget();
        assert!(record.keys_of(sha.as_bytes()).is_none());
    }
}
