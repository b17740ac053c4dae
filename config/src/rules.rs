//! Key routing rules: keys that start with a configured prefix hash as if they carried one
//! routing tag, so an application's keys that must be together (one `MULTI`, one script, one
//! multi-key command) share a slot without `{hash tags}` in their names.
//!
//! ```toml
//! [[rule]]
//! prefix = "rq:"      # every key starting with "rq:" ...
//! tag = "rq"          # ... is in the slot of `{rq}` (CLUSTER KEYSLOT "{rq}")
//! own_tag = "wins"    # a key's own {hash tag} still decides (the default); "ignored": never
//! ```
//!
//! The longest matching prefix decides; keys no rule matches keep Redis Cluster's rules
//! ([`Slot::for_key`]). Rules are part of the topology: a key's slot must not change while it
//! is stored, or no request would find it again.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::slot::{hash_tag, Slot};

/// Whether a key's own `{hash tag}` decides its slot when a rule matches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnTag {
    /// A key with a hash tag hashes by it, as in Redis Cluster; the rule applies to the others.
    #[default]
    Wins,
    /// The rule's tag decides, whatever the key holds.
    Ignored,
}

impl fmt::Display for OwnTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OwnTag::Wins => "wins",
            OwnTag::Ignored => "ignored",
        })
    }
}

/// One routing rule, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    /// Keys starting with these bytes match (not empty).
    pub prefix: String,
    /// They hash as `{tag}` would (not empty).
    pub tag: String,
    /// Whether a matching key's own hash tag still decides.
    #[serde(default)]
    pub own_tag: OwnTag,
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prefix {:?} -> {{{}}} (slot {}, own tag {})",
            self.prefix,
            self.tag,
            tag_slot(&self.tag),
            self.own_tag
        )
    }
}

/// The slot a rule's keys go to: that of a key `{tag}`.
fn tag_slot(tag: &str) -> Slot {
    Slot::for_hashed(tag.as_bytes())
}

/// A rule ready for matching: its prefix, and its slot computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Compiled {
    prefix: Box<[u8]>,
    slot: Slot,
    own_tag_wins: bool,
}

/// The routing rules of a topology, ready for the data path: [`KeyRules::slot_of`] is every
/// request's key → slot function.
///
/// With no rule it costs one test of a zeroed table more than [`Slot::for_key`]; with rules, a
/// key whose first byte begins no prefix costs the same, and a candidate is compared with the
/// prefixes longest first (operators write a handful of rules, not thousands).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyRules {
    /// The rules as configured, in the configured order (for display and persistence).
    rules: Vec<KeyRule>,
    /// The same, longest prefix first, for matching.
    compiled: Vec<Compiled>,
    /// Bit `b` set when some prefix starts with byte `b`.
    first_bytes: [u64; 4],
}

/// What is wrong with the rule at `index` of `rules` (given the ones before it), if anything:
/// an empty prefix or tag, or a prefix an earlier rule has (two rules for one prefix would leave
/// its keys' slot to the order of the file).
#[must_use]
pub fn problem(rules: &[KeyRule], index: usize) -> Option<String> {
    let rule = &rules[index];
    if rule.prefix.is_empty() {
        return Some(
            "prefix must not be empty (a rule for every key would put them all in one slot)"
                .to_owned(),
        );
    }
    if rule.tag.is_empty() {
        return Some("tag must not be empty".to_owned());
    }
    rules[..index]
        .iter()
        .position(|r| r.prefix == rule.prefix)
        .map(|first| {
            format!(
                "prefix {:?} is already the prefix of rule {}",
                rule.prefix,
                first + 1
            )
        })
}

impl KeyRules {
    /// Rules from a list without [`problem`]s (checked by the configuration and by the
    /// topology).
    #[must_use]
    pub fn new(rules: Vec<KeyRule>) -> KeyRules {
        let mut compiled: Vec<Compiled> = rules
            .iter()
            .map(|r| Compiled {
                prefix: r.prefix.as_bytes().into(),
                slot: tag_slot(&r.tag),
                own_tag_wins: r.own_tag == OwnTag::Wins,
            })
            .collect();
        compiled.sort_by_key(|c| std::cmp::Reverse(c.prefix.len()));
        let mut first_bytes = [0u64; 4];
        for c in &compiled {
            if let Some(&b) = c.prefix.first() {
                first_bytes[usize::from(b >> 6)] |= 1 << (b & 63);
            }
        }
        KeyRules {
            rules,
            compiled,
            first_bytes,
        }
    }

    /// The rules, in the configured order.
    #[must_use]
    pub fn rules(&self) -> &[KeyRule] {
        &self.rules
    }

    /// Whether there is no rule (every key follows Redis Cluster's rules).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The slot of `key`: the longest matching rule's, else Redis Cluster's. Does not allocate.
    #[must_use]
    #[inline]
    pub fn slot_of(&self, key: &[u8]) -> Slot {
        if let Some(&b) = key.first() {
            if self.first_bytes[usize::from(b >> 6)] & (1 << (b & 63)) != 0 {
                if let Some(rule) = self.compiled.iter().find(|c| key.starts_with(&c.prefix)) {
                    if !(rule.own_tag_wins && hash_tag(key).is_some()) {
                        return rule.slot;
                    }
                }
            }
        }
        Slot::for_key(key)
    }

    /// The rule that decides `key`'s slot, if one does.
    #[must_use]
    pub fn rule_for(&self, key: &[u8]) -> Option<&KeyRule> {
        let compiled = self.compiled.iter().find(|c| key.starts_with(&c.prefix))?;
        if compiled.own_tag_wins && hash_tag(key).is_some() {
            return None;
        }
        self.rules
            .iter()
            .find(|r| r.prefix.as_bytes() == &*compiled.prefix)
    }
}

impl fmt::Debug for KeyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.rules).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, tag: &str, own_tag: OwnTag) -> KeyRule {
        KeyRule {
            prefix: prefix.into(),
            tag: tag.into(),
            own_tag,
        }
    }

    #[test]
    fn without_rules_every_key_follows_redis_cluster() {
        let rules = KeyRules::default();
        for key in [&b""[..], b"a", b"rq:job:1", b"{user}.x", b"\xff"] {
            assert_eq!(rules.slot_of(key), Slot::for_key(key));
        }
    }

    #[test]
    fn matching_keys_share_the_slot_of_their_tag_and_others_are_untouched() {
        let rules = KeyRules::new(vec![rule("rq:", "rq", OwnTag::Wins)]);
        let rq = Slot::for_key(b"{rq}");
        assert_eq!(rules.slot_of(b"rq:job:1"), rq);
        assert_eq!(rules.slot_of(b"rq:queue:default"), rq);
        assert_eq!(rules.slot_of(b"rq:"), rq);
        // Not a match: shorter than the prefix, another prefix, a prefix elsewhere in the key.
        for key in [&b"rq"[..], b"r", b"celery", b"x:rq:job"] {
            assert_eq!(rules.slot_of(key), Slot::for_key(key), "{key:?}");
        }
    }

    #[test]
    fn own_tags_win_unless_the_rule_ignores_them() {
        let wins = KeyRules::new(vec![rule("app:", "app", OwnTag::Wins)]);
        assert_eq!(wins.slot_of(b"app:{u1}:x"), Slot::for_key(b"{u1}"));
        assert_eq!(wins.slot_of(b"app:{}:x"), Slot::for_key(b"{app}"));
        assert!(wins.rule_for(b"app:{u1}:x").is_none());
        let ignored = KeyRules::new(vec![rule("app:", "app", OwnTag::Ignored)]);
        assert_eq!(ignored.slot_of(b"app:{u1}:x"), Slot::for_key(b"{app}"));
        assert_eq!(ignored.rule_for(b"app:{u1}:x").unwrap().tag, "app");
    }

    #[test]
    fn the_longest_prefix_decides_in_any_order() {
        for order in [[0, 1], [1, 0]] {
            let both = [
                rule("celery", "celery", OwnTag::Wins),
                rule("celery-task-meta-", "results", OwnTag::Wins),
            ];
            let rules = KeyRules::new(order.iter().map(|&i| both[i].clone()).collect());
            assert_eq!(rules.slot_of(b"celery"), Slot::for_key(b"{celery}"));
            assert_eq!(
                rules.slot_of(b"celery\x06\x163"),
                Slot::for_key(b"{celery}")
            );
            assert_eq!(
                rules.slot_of(b"celery-task-meta-42"),
                Slot::for_key(b"{results}")
            );
            assert_eq!(rules.rules()[0], both[order[0]], "configured order is kept");
        }
    }

    #[test]
    fn any_first_byte_works() {
        let rules = KeyRules::new(vec![
            rule("\u{7f}x", "a", OwnTag::Wins),
            rule("é", "b", OwnTag::Wins),
            rule("\u{1}", "c", OwnTag::Wins),
        ]);
        assert_eq!(rules.slot_of(b"\x7fxy"), Slot::for_key(b"{a}"));
        assert_eq!(rules.slot_of("ét".as_bytes()), Slot::for_key(b"{b}"));
        assert_eq!(rules.slot_of(b"\x01"), Slot::for_key(b"{c}"));
        assert_eq!(rules.slot_of(b"\x7f"), Slot::for_key(b"\x7f"));
    }
}
