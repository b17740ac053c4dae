//! Hash slots: which of the 16384 slots a key belongs to, and ranges of slots.
//!
//! The rules are Redis Cluster's, exactly, so that a key lands in the same slot behind redshard
//! as it would in a Redis Cluster (and `CLUSTER KEYSLOT` can be used to check):
//!
//! - `slot = crc16_xmodem(hashed) % 16384`;
//! - `hashed` is the key's *hash tag* when it has one, else the whole key;
//! - the hash tag is the bytes between the **first** `{` and the **first** `}` after it, and only
//!   when those bytes are non-empty: `{user1}.a` → `user1`, `foo{}{bar}` → whole key,
//!   `foo{{bar}}` → `{bar`, `foo{bar}{zap}` → `bar`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SlotRangeError;

/// Number of hash slots, as in Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// The largest slot number, `SLOT_COUNT - 1`.
// SLOT_COUNT - 1 fits in u16: the cast cannot truncate.
#[allow(clippy::cast_possible_truncation)]
pub const MAX_SLOT: u16 = (SLOT_COUNT - 1) as u16;

/// A hash slot.
///
/// Invariant: the number is `< SLOT_COUNT` (16384), so it can index a slot table without a bounds
/// check failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

impl Slot {
    /// The slot numbered `n`, or `None` when `n >= 16384`.
    #[must_use]
    #[inline]
    pub const fn new(n: u16) -> Option<Slot> {
        if n <= MAX_SLOT {
            Some(Slot(n))
        } else {
            None
        }
    }

    /// The slot number, `0..16384`.
    #[must_use]
    #[inline]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The slot number as an index into a table of `SLOT_COUNT` entries.
    #[must_use]
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The slot of `key` under the Redis Cluster rules (see the module docs).
    ///
    /// Does not allocate; it is on every request's path.
    #[must_use]
    #[inline]
    pub fn for_key(key: &[u8]) -> Slot {
        Slot::for_hashed(hash_tag(key).unwrap_or(key))
    }

    /// The slot of the bytes `hashed` themselves, with no hash-tag extraction: that of a key
    /// whose hash tag is `hashed` (`Slot::for_hashed(b"rq") == Slot::for_key(b"{rq}")`).
    #[must_use]
    #[inline]
    pub fn for_hashed(hashed: &[u8]) -> Slot {
        Slot(crate::crc::xmodem(hashed) & MAX_SLOT)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The hash tag of `key`: the bytes between the first `{` and the first `}` after it, when
/// there are such bytes; `None` when the whole key is hashed.
#[must_use]
#[inline]
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = find_byte(b'{', key)?;
    let rest = &key[open + 1..];
    let close = find_byte(b'}', rest)?;
    if close == 0 {
        None
    } else {
        Some(&rest[..close])
    }
}

/// The index of the first `needle` in `haystack`, eight bytes per step: keys are short, where
/// a general `memchr` spends more on choosing its vector code than on searching.
#[inline]
fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut chunks = haystack.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // A high bit for each zero byte of `x` (the lowest flagged byte is always a true
        // zero; higher ones may be borrows, and are not looked at).
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

/// An inclusive range of slots, written `"0-5460"`, or `"7000"` for a single slot.
///
/// Invariant (checked by [`SlotRange::new`] and by parsing, and re-checked by every consumer
/// of ranges built by hand): `start <= end < SLOT_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotRange {
    /// First slot of the range.
    pub start: u16,
    /// Last slot of the range (inclusive, so a one-slot range has `start == end`).
    pub end: u16,
}

impl SlotRange {
    /// The range `start..=end`.
    ///
    /// # Errors
    ///
    /// [`SlotRangeError::OutOfRange`] when a bound is `>= 16384`, [`SlotRangeError::Reversed`]
    /// when `start > end`.
    pub fn new(start: u16, end: u16) -> Result<SlotRange, SlotRangeError> {
        let range = SlotRange { start, end };
        range.check()?;
        Ok(range)
    }

    /// The range holding only `slot`.
    #[must_use]
    pub const fn single(slot: Slot) -> SlotRange {
        SlotRange {
            start: slot.get(),
            end: slot.get(),
        }
    }

    /// The range of every slot, `0-16383`.
    #[must_use]
    pub const fn all() -> SlotRange {
        SlotRange {
            start: 0,
            end: MAX_SLOT,
        }
    }

    /// Checks the invariant; for ranges built with the public fields.
    ///
    /// # Errors
    ///
    /// As [`SlotRange::new`].
    pub fn check(&self) -> Result<(), SlotRangeError> {
        for bound in [self.start, self.end] {
            if bound > MAX_SLOT {
                return Err(SlotRangeError::OutOfRange {
                    text: self.to_string(),
                });
            }
        }
        if self.start > self.end {
            return Err(SlotRangeError::Reversed {
                text: self.to_string(),
            });
        }
        Ok(())
    }

    /// Number of slots in the range.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.end.saturating_sub(self.start)) + 1
    }

    /// Always false: a range holds at least one slot.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `slot` is in the range.
    #[must_use]
    pub fn contains(&self, slot: Slot) -> bool {
        (self.start..=self.end).contains(&slot.get())
    }

    /// The slots of the range, in order. Bounds past the last slot are clamped.
    pub fn slots(&self) -> impl Iterator<Item = Slot> {
        (self.start..=self.end.min(MAX_SLOT)).map(Slot)
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for SlotRange {
    type Err = SlotRangeError;

    fn from_str(text: &str) -> Result<SlotRange, SlotRangeError> {
        let parse_bound = |part: &str| -> Result<u16, SlotRangeError> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SlotRangeError::Syntax {
                    text: text.to_owned(),
                });
            }
            // Only digits: the parse fails only on overflow, which is out of range anyway.
            match part.parse::<u16>() {
                Ok(n) if n <= MAX_SLOT => Ok(n),
                _ => Err(SlotRangeError::OutOfRange {
                    text: text.to_owned(),
                }),
            }
        };
        let (start, end) = match text.split_once('-') {
            Some((a, b)) => (parse_bound(a)?, parse_bound(b)?),
            None => {
                let n = parse_bound(text)?;
                (n, n)
            }
        };
        if start > end {
            return Err(SlotRangeError::Reversed {
                text: text.to_owned(),
            });
        }
        Ok(SlotRange { start, end })
    }
}

impl Serialize for SlotRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SlotRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SlotRange, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Compacts an ascending sequence of slots into the fewest inclusive ranges (for display and
/// for the persisted topology).
pub fn compact(slots: impl IntoIterator<Item = Slot>) -> Vec<SlotRange> {
    let mut ranges: Vec<SlotRange> = Vec::new();
    for slot in slots {
        match ranges.last_mut() {
            Some(last) if last.end.checked_add(1) == Some(slot.get()) => last.end = slot.get(),
            _ => ranges.push(SlotRange::single(slot)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(key: &[u8]) -> u16 {
        Slot::for_key(key).get()
    }

    #[test]
    fn crc16_xmodem_check_value() {
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        // 0x31C3 = 12739 < 16384: the slot is the CRC itself.
        assert_eq!(slot(b"123456789"), 12739);
    }

    /// Every expected value below was read from `CLUSTER KEYSLOT` of a redis-server 7.0.15
    /// started with `--cluster-enabled yes`.
    #[test]
    fn slots_match_redis_cluster_keyslot() {
        let vectors: &[(&[u8], u16)] = &[
            (b"foo", 12182),
            (b"bar", 5061),
            (b"hello", 866),
            (b"123456789", 12739),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}", 4015),
            (b"{bar", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"{}", 15257),
            (b"", 0),
            (b"a", 15495),
            (b"{a}", 15495),
            (b"x{a}y", 15495),
            (b"}{a}", 15495),
            (b"user:1000", 1649),
            (b"{", 4092),
            (b"{{}}", 4092),
            (b"}", 12090),
            (b"abc{", 3048),
            (b"key:{slot}", 4772),
            (b"somekey", 11058),
            (b"{}{a}", 13650),
            (b"a{b", 13340),
            (b"a}b{c}", 7365),
            (b"k\xff\x00z", 6003),
            (b"{\x00\xff}tail", 7920),
            (b"\x00\xff", 7920),
        ];
        for &(key, expected) in vectors {
            assert_eq!(
                slot(key),
                expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), Some(&b"user1000"[..]));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"foo{{bar}}"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"foo{bar}{zap}"), Some(&b"bar"[..]));
        assert_eq!(hash_tag(b"foo"), None);
        assert_eq!(hash_tag(b"foo{bar"), None);
        assert_eq!(hash_tag(b"}{x}"), Some(&b"x"[..]));
    }

    #[test]
    fn slot_new_bounds() {
        assert_eq!(Slot::new(0).map(Slot::get), Some(0));
        assert_eq!(Slot::new(16383).map(Slot::index), Some(16383));
        assert_eq!(Slot::new(16384), None);
    }

    #[test]
    fn slot_range_parse_and_display() {
        let r: SlotRange = "0-5460".parse().unwrap();
        assert_eq!(
            r,
            SlotRange {
                start: 0,
                end: 5460
            }
        );
        assert_eq!(r.to_string(), "0-5460");
        assert_eq!(r.len(), 5461);
        let r: SlotRange = "7000".parse().unwrap();
        assert_eq!(
            r,
            SlotRange {
                start: 7000,
                end: 7000
            }
        );
        assert_eq!(r.to_string(), "7000");
        assert_eq!(
            " 3 - 16383 ".trim().parse::<SlotRange>().unwrap().end,
            16383
        );
    }

    #[test]
    fn slot_range_errors() {
        let cases = [
            ("5-3", "start"),
            ("16384", "16384"),
            ("0-16384", "16384"),
            ("99999999999", "out of range"),
            ("abc", "abc"),
            ("", "\"\""),
            ("-5", "-5"),
            ("1-2-3", "1-2-3"),
            ("+1", "+1"),
        ];
        for (text, needle) in cases {
            let err = text.parse::<SlotRange>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        assert!(SlotRange::new(3, 2).is_err());
        assert!(SlotRange::new(0, 16384).is_err());
        assert!(SlotRange::new(0, 16383).is_ok());
    }

    #[test]
    fn compact_merges_adjacent_slots() {
        let slots = [0u16, 1, 2, 5, 7, 8].map(|n| Slot::new(n).unwrap());
        let ranges: Vec<String> = compact(slots).iter().map(ToString::to_string).collect();
        assert_eq!(ranges, ["0-2", "5", "7-8"]);
    }

    /// The rule written the obvious way, to check the fast one against.
    fn reference_tag(key: &[u8]) -> &[u8] {
        let Some(open) = key.iter().position(|&b| b == b'{') else {
            return key;
        };
        for close in open + 1..key.len() {
            if key[close] == b'}' {
                return if close == open + 1 {
                    key
                } else {
                    &key[open + 1..close]
                };
            }
        }
        key
    }

    proptest! {
        #[test]
        fn find_byte_matches_position(
            haystack in proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'z'), any::<u8>()], 0..40),
            needle in prop_oneof![Just(b'{'), Just(b'}'), any::<u8>()],
        ) {
            prop_assert_eq!(
                find_byte(needle, &haystack),
                haystack.iter().position(|&b| b == needle)
            );
        }

        #[test]
        fn tag_matches_reference(key in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), Just(b'a'), any::<u8>()], 0..24)) {
            let hashed = hash_tag(&key).unwrap_or(&key);
            prop_assert_eq!(hashed, reference_tag(&key));
            let expected = crc16::State::<crc16::XMODEM>::calculate(reference_tag(&key)) % 16384;
            prop_assert_eq!(Slot::for_key(&key).get(), expected);
        }

        #[test]
        fn slot_range_round_trips(a in 0u16..16384, b in 0u16..16384) {
            let range = SlotRange { start: a.min(b), end: a.max(b) };
            prop_assert_eq!(range.to_string().parse::<SlotRange>().unwrap(), range);
        }
    }
}
