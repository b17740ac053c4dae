//! Key routing rules: keys that start with a configured prefix hash as if they carried one
//! routing tag, so an application's keys that must be together (one `MULTI`, one script, one
//! multi-key command) share a slot without `{hash tags}` in their names.
//!
//! ```toml
//! [[rule]]
//! prefix = "rq:"      # every key starting with "rq:" ...
//! tag = "rq"          # ... is in the slot of `{rq}` (CLUSTER KEYSLOT "{rq}")
//! own_tag = "wins"    # a key's own {hash tag} still decides (the default); "ignored": never
//!
//! [[rule]]
//! prefix = "rq:results:"   # no tag: an exception, these keys hash as Redis Cluster hashes them
//!
//! [[rule]]
//! prefix = ""                    # any key (or those of a prefix) ...
//! separator = "\u0006\u0016"     # ... containing this hashes by what comes before it
//! ```
//!
//! The rule with the longest matching prefix decides; keys no rule matches keep Redis Cluster's
//! rules ([`Slot::for_key`]). A separator rule makes `q` and `q<separator>3` share a slot
//! whatever `q` is (Celery's priority lists of a queue), the part before the separator hashed
//! by Redis Cluster's rules. Rules are part of the topology: a key's slot must not change while
//! it is stored, or no request would find it again.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::slot::{hash_tag, Slot};

/// Whether a key's own `{hash tag}` decides its slot when a tag rule matches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnTag {
    /// A key with a hash tag hashes by it, as in Redis Cluster; the rule applies to the others.
    #[default]
    Wins,
    /// The rule's tag decides, whatever the key holds.
    Ignored,
}

impl OwnTag {
    /// Whether it is the default (not written back).
    fn is_default(&self) -> bool {
        *self == OwnTag::default()
    }
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
    /// Keys starting with these bytes match; empty only in a separator rule.
    pub prefix: String,
    /// They hash as `{tag}` would (not empty). Without `tag` or `separator` the rule is an
    /// exception: its keys hash by Redis Cluster's rules although a shorter prefix matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Keys containing these bytes (not empty) hash by what comes before them. Not with `tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// With `tag`: whether a matching key's own hash tag still decides.
    #[serde(default, skip_serializing_if = "OwnTag::is_default")]
    pub own_tag: OwnTag,
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tag, &self.separator) {
            (Some(tag), _) => write!(
                f,
                "prefix {:?} -> {{{tag}}} (slot {}, own tag {})",
                self.prefix,
                Slot::for_hashed(tag.as_bytes()),
                self.own_tag
            ),
            (None, Some(separator)) => {
                write!(f, "prefix {:?} -> hashed up to {separator:?}", self.prefix)
            }
            (None, None) => write!(f, "prefix {:?} -> hashed by key", self.prefix),
        }
    }
}

/// What a compiled rule does with a key it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// The slot of the tag, computed once; the key's own hash tag first when it wins.
    Tag { slot: Slot, own_tag_wins: bool },
    /// Redis Cluster's rules (an exception to a shorter prefix).
    Plain,
    /// The part of the key before the first occurrence of these bytes.
    Before(Box<[u8]>),
}

/// A rule ready for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Compiled {
    prefix: Box<[u8]>,
    action: Action,
    /// Its index in [`KeyRules::rules`].
    rule: usize,
}

impl Compiled {
    /// Whether `key`'s own hash tag decides its slot rather than this tag rule.
    fn own_tag_decides(&self, key: &[u8]) -> bool {
        matches!(
            self.action,
            Action::Tag {
                own_tag_wins: true,
                ..
            }
        ) && hash_tag(key).is_some()
    }

    fn slot_of(&self, key: &[u8]) -> Slot {
        match &self.action {
            Action::Tag { .. } if self.own_tag_decides(key) => Slot::for_key(key),
            Action::Tag { slot, .. } => *slot,
            Action::Plain => Slot::for_key(key),
            Action::Before(separator) => Slot::for_key(before(key, separator)),
        }
    }
}

/// `key` up to the first occurrence of `separator` (not empty), or all of it.
fn before<'k>(key: &'k [u8], separator: &[u8]) -> &'k [u8] {
    key.windows(separator.len())
        .position(|w| w == separator)
        .map_or(key, |at| &key[..at])
}

/// What is wrong with the rule at `index` of `rules` (given the ones before it), if anything:
/// an empty prefix outside a separator rule, an empty tag or separator, both, or a prefix an
/// earlier rule has (two rules for one prefix would leave its keys' slot to the order of the
/// file).
#[must_use]
pub fn problem(rules: &[KeyRule], index: usize) -> Option<String> {
    let rule = &rules[index];
    if rule.tag.is_some() && rule.separator.is_some() {
        return Some("tag and separator exclude each other".to_owned());
    }
    if rule.prefix.is_empty() && rule.separator.is_none() {
        return Some(
            "prefix must not be empty, but in a separator rule (a tag for every key would put them all in one slot)"
                .to_owned(),
        );
    }
    if rule.tag.as_deref() == Some("") {
        return Some("tag must not be empty (leave it out for keys hashed as they are)".to_owned());
    }
    if rule.separator.as_deref() == Some("") {
        return Some("separator must not be empty".to_owned());
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

/// The routing rules of a topology, ready for the data path: [`KeyRules::slot_of`] is every
/// request's key → slot function.
///
/// With no rule it costs one branch more than [`Slot::for_key`]; with rules, a key whose first
/// byte begins no prefix (and no empty-prefix rule) costs one table lookup more, and a
/// candidate is compared with the prefixes longest first (operators write a handful of rules,
/// not thousands).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyRules {
    /// The rules as configured, in the configured order (for display and persistence).
    rules: Vec<KeyRule>,
    /// The same, longest prefix first, for matching.
    compiled: Vec<Compiled>,
    /// Bit `b` set when some prefix starts with byte `b`.
    first_bytes: [u64; 4],
    /// Whether some rule has the empty prefix (every key is a candidate).
    any_key: bool,
}

impl KeyRules {
    /// Rules from a list without [`problem`]s (checked by the configuration and by the
    /// topology).
    #[must_use]
    pub fn new(rules: Vec<KeyRule>) -> KeyRules {
        let mut compiled: Vec<Compiled> = rules
            .iter()
            .enumerate()
            .map(|(rule, r)| Compiled {
                prefix: r.prefix.as_bytes().into(),
                rule,
                action: match (&r.tag, &r.separator) {
                    (Some(tag), _) => Action::Tag {
                        slot: Slot::for_hashed(tag.as_bytes()),
                        own_tag_wins: r.own_tag == OwnTag::Wins,
                    },
                    (None, Some(separator)) if !separator.is_empty() => {
                        Action::Before(separator.as_bytes().into())
                    }
                    _ => Action::Plain,
                },
            })
            .collect();
        compiled.sort_by_key(|c| std::cmp::Reverse(c.prefix.len()));
        let mut first_bytes = [0u64; 4];
        let mut any_key = false;
        for c in &compiled {
            match c.prefix.first() {
                Some(&b) => first_bytes[usize::from(b >> 6)] |= 1 << (b & 63),
                None => any_key = true,
            }
        }
        KeyRules {
            rules,
            compiled,
            first_bytes,
            any_key,
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

    /// The compiled rule matching `key` (the longest prefix), if any.
    #[inline]
    fn matching(&self, key: &[u8]) -> Option<&Compiled> {
        let candidate = self.any_key
            || key
                .first()
                .is_some_and(|&b| self.first_bytes[usize::from(b >> 6)] & (1 << (b & 63)) != 0);
        if !candidate {
            return None;
        }
        self.compiled.iter().find(|c| key.starts_with(&c.prefix))
    }

    /// The slot of `key`: by the longest matching rule, else Redis Cluster's. Does not allocate.
    #[must_use]
    #[inline]
    pub fn slot_of(&self, key: &[u8]) -> Slot {
        match self.matching(key) {
            Some(rule) => rule.slot_of(key),
            None => Slot::for_key(key),
        }
    }

    /// The rule that decides `key`'s slot, if one does: not one whose key's own hash tag wins.
    #[must_use]
    pub fn rule_for(&self, key: &[u8]) -> Option<&KeyRule> {
        let compiled = self.matching(key)?;
        (!compiled.own_tag_decides(key)).then(|| &self.rules[compiled.rule])
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
            tag: Some(tag.into()),
            separator: None,
            own_tag,
        }
    }

    fn plain(prefix: &str) -> KeyRule {
        KeyRule {
            prefix: prefix.into(),
            tag: None,
            separator: None,
            own_tag: OwnTag::Wins,
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
        assert!(
            wins.rule_for(b"app:{u1}:x").is_none(),
            "its own tag decides"
        );
        assert_eq!(wins.rule_for(b"app:x").unwrap().prefix, "app:");
        let ignored = KeyRules::new(vec![rule("app:", "app", OwnTag::Ignored)]);
        assert_eq!(ignored.slot_of(b"app:{u1}:x"), Slot::for_key(b"{app}"));
        assert_eq!(
            ignored.rule_for(b"app:{u1}:x").unwrap().tag.as_deref(),
            Some("app")
        );
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
    fn a_rule_without_tag_is_an_exception_to_a_shorter_prefix() {
        let rules = KeyRules::new(vec![
            rule("celery", "kombu", OwnTag::Wins),
            plain("celery-task-meta-"),
        ]);
        assert_eq!(rules.slot_of(b"celery"), Slot::for_key(b"{kombu}"));
        for key in [&b"celery-task-meta-1"[..], b"celery-task-meta-{x}2"] {
            assert_eq!(rules.slot_of(key), Slot::for_key(key));
            assert_eq!(rules.rule_for(key).unwrap().prefix, "celery-task-meta-");
        }
        assert_eq!(
            rules.rules()[1].to_string(),
            "prefix \"celery-task-meta-\" -> hashed by key"
        );
    }

    #[test]
    fn a_separator_rule_hashes_what_comes_before_the_separator() {
        let rules = KeyRules::new(vec![
            KeyRule {
                prefix: String::new(),
                tag: None,
                separator: Some("\u{6}\u{16}".into()),
                own_tag: OwnTag::Wins,
            },
            rule("unacked", "kombu", OwnTag::Wins),
        ]);
        for queue in [&b"celery"[..], b"x.reply.celery.pidbox", b"q{t}"] {
            let mut variant = queue.to_vec();
            variant.extend_from_slice(b"\x06\x163");
            assert_eq!(rules.slot_of(&variant), Slot::for_key(queue), "{variant:?}");
            assert_eq!(rules.slot_of(queue), Slot::for_key(queue));
        }
        // A longer prefix decides before the empty one; keys without the separator are theirs.
        assert_eq!(rules.slot_of(b"unacked_index"), Slot::for_key(b"{kombu}"));
        assert_eq!(rules.slot_of(b"\x06\x16"), Slot::for_key(b""));
        assert_eq!(rules.slot_of(b""), Slot::for_key(b""));
        assert_eq!(
            rules.rules()[0].to_string(),
            "prefix \"\" -> hashed up to \"\\u{6}\\u{16}\""
        );
    }

    #[test]
    fn rules_that_cannot_work_are_named() {
        let sep = |prefix: &str, separator: &str| KeyRule {
            prefix: prefix.into(),
            tag: None,
            separator: Some(separator.into()),
            own_tag: OwnTag::Wins,
        };
        let both = KeyRule {
            tag: Some("t".into()),
            ..sep("a", ":")
        };
        let cases: [(Vec<KeyRule>, &str); 6] = [
            (vec![plain("")], "prefix must not be empty"),
            (vec![rule("a", "", OwnTag::Wins)], "tag must not be empty"),
            (vec![sep("", "")], "separator must not be empty"),
            (vec![both], "exclude each other"),
            (vec![plain("a"), rule("a", "t", OwnTag::Wins)], "rule 1"),
            (vec![sep("", ":"), sep("", "/")], "rule 1"),
        ];
        for (rules, words) in cases {
            let last = rules.len() - 1;
            let found = problem(&rules, last).unwrap_or_default();
            assert!(found.contains(words), "{rules:?}: {found}");
        }
        assert_eq!(problem(&[sep("", ":")], 0), None);
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
