//! The persisted TOML form, and a property test of `apply` over random change sequences.

use proptest::prelude::*;

use super::{addr, apply, base, range};
use crate::topology::*;

#[test]
fn toml_form_is_compact_and_round_trips() {
    let t = apply(
        &base(),
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("[::1]:7000"),
        },
    );
    let t = apply(
        &t,
        TopologyChange::BeginMigration {
            slots: vec![range("100-199")],
            to: ShardId(3),
        },
    );
    let t = apply(
        &t,
        TopologyChange::SetReplicaState {
            shard: ShardId(2),
            addr: addr("127.0.0.1:6386"),
            state: ReplicaState::Stale,
        },
    );
    let text = toml::to_string(&t).unwrap();
    assert!(text.lines().count() < 60, "{text}");
    assert!(text.starts_with("epoch = 4\n"), "{text}");
    assert!(text.contains("slots = [\"0-99\", \"200-5460\"]"), "{text}");
    assert!(text.contains("state = \"stale\""), "{text}");
    assert!(
        text.contains("[[migration]]\nfrom = 0\nto = 3\nslots = [\"100-199\"]"),
        "{text}"
    );
    let back: Topology = toml::from_str(&text).unwrap();
    assert_eq!(back, t);
    let debug = format!("{t:?}");
    assert!(debug.len() < 2000 && debug.contains("100-199"), "{debug}");
}

#[test]
fn queued_migrations_are_written_in_order_and_read_back() {
    let moves = vec![
        Migration {
            from: ShardId(0),
            to: ShardId(1),
            slots: vec![range("5000-5460")],
        },
        Migration {
            from: ShardId(2),
            to: ShardId(1),
            slots: vec![range("16000-16383"), range("10923")],
        },
    ];
    let t = apply(
        &base(),
        TopologyChange::QueueMigrations {
            moves: moves.clone(),
        },
    );
    let text = toml::to_string(&t).unwrap();
    assert!(
        text.contains("[[queued]]\nfrom = 0\nto = 1\nslots = [\"5000-5460\"]\n\n[[queued]]\nfrom = 2\nto = 1\nslots = [\"16000-16383\", \"10923\"]"),
        "{text}"
    );
    let back: Topology = toml::from_str(&text).unwrap();
    assert_eq!(back.queued, moves);
    assert_eq!(back, t);
    // A hand-edited queue naming a shard that does not exist is refused at load.
    let bad = text.replace("from = 2", "from = 7");
    let e = toml::from_str::<Topology>(&bad).unwrap_err().to_string();
    assert!(e.contains("a queued migration refers to shard 7"), "{e}");
}

#[test]
fn toml_form_refuses_inconsistent_topologies() {
    let good = toml::to_string(&base()).unwrap();
    let cases = [
        (
            good.replace("\"0-5460\"", "\"0-5461\""),
            "slot 5461 is listed twice",
        ),
        (
            good.replace("\"0-5460\"", "\"1-5460\""),
            "slot 0 is not assigned",
        ),
        (good.replace("id = 2", "id = 1"), "shard id 1 is duplicated"),
        (
            good.replace("127.0.0.1:6385", "127.0.0.1:6381"),
            "node 127.0.0.1:6381 appears twice",
        ),
        (
            good.replace("name = \"s2\"", "name = \"s1\""),
            "\"s1\" already exists",
        ),
        (
            good.replace("\"0-5460\"", "\"0-99\", \"100-5460\"") + "\n",
            "",
        ),
        (good.replace("epoch = 1", "epoch = 1\nextra = 2"), "extra"),
        (good.replace("\"in-sync\"", "\"lost\""), "lost"),
        (
            good.replace("\"0-5460\"", "\"100-5460\"")
                + "[[migration]]\nfrom = 0\nto = 9\nslots = [\"0-99\"]\n",
            "shard 9, which does not exist",
        ),
        (
            good.replace("\"0-5460\"", "\"100-5460\"")
                + "[[migration]]\nfrom = 0\nto = 0\nslots = [\"0-99\"]\n",
            "migrates from shard 0 to itself",
        ),
    ];
    for (text, needle) in cases {
        match toml::from_str::<Topology>(&text) {
            Ok(_) if needle.is_empty() => {}
            Ok(_) => panic!("accepted (expected {needle:?}):\n{text}"),
            Err(e) => assert!(
                !needle.is_empty() && e.message().contains(needle),
                "{needle:?}: {e}"
            ),
        }
    }
}

/// Any change, valid or not, over a small universe of shards, nodes and slot ranges.
fn any_change() -> impl Strategy<Value = TopologyChange> {
    let shard = (0u16..5).prop_map(ShardId);
    let node = (6380u16..6392).prop_map(|port| addr(&format!("127.0.0.1:{port}")));
    let state = prop_oneof![
        Just(ReplicaState::InSync),
        Just(ReplicaState::Syncing),
        Just(ReplicaState::Stale)
    ];
    // Mostly aligned chunks, so that a later step names the slots an earlier one moved.
    let one_range = prop_oneof![
        4 => (0u16..8).prop_map(|c| SlotRange { start: c * 2048, end: c * 2048 + 2047 }),
        1 => (0u16..16384, 0u16..300)
            .prop_map(|(s, len)| SlotRange { start: s, end: (s + len).min(16383) }),
    ];
    let ranges = prop_oneof![
        3 => proptest::collection::vec(one_range.clone(), 1..2),
        1 => proptest::collection::vec(one_range, 2..3),
    ];
    prop_oneof![
        ((0u8..6), node.clone()).prop_map(|(n, master)| TopologyChange::AddShard {
            name: format!("n{n}"),
            master
        }),
        shard
            .clone()
            .prop_map(|shard| TopologyChange::RemoveShard { shard }),
        (shard.clone(), node.clone(), state.clone())
            .prop_map(|(shard, addr, state)| TopologyChange::AddReplica { shard, addr, state }),
        (shard.clone(), node.clone())
            .prop_map(|(shard, addr)| TopologyChange::RemoveReplica { shard, addr }),
        (shard.clone(), node.clone(), state).prop_map(|(shard, addr, state)| {
            TopologyChange::SetReplicaState { shard, addr, state }
        }),
        (shard.clone(), node)
            .prop_map(|(shard, replica)| TopologyChange::Promote { shard, replica }),
        (ranges.clone(), shard.clone())
            .prop_map(|(slots, to)| TopologyChange::BeginMigration { slots, to }),
        ranges
            .clone()
            .prop_map(|slots| TopologyChange::FinishMigration { slots }),
        ranges
            .clone()
            .prop_map(|slots| TopologyChange::CancelMigration { slots }),
        (shard.clone(), shard.clone(), ranges.clone()).prop_map(|(from, to, slots)| {
            TopologyChange::QueueMigrations {
                moves: vec![Migration { from, to, slots }],
            }
        }),
        (shard.clone(), shard.clone(), ranges.clone()).prop_map(|(from, to, slots)| {
            TopologyChange::StartMigration {
                migration: Migration { from, to, slots },
            }
        }),
        (shard.clone(), shard, ranges).prop_map(|(from, to, slots)| {
            TopologyChange::DropQueuedMigration {
                migration: Migration { from, to, slots },
            }
        }),
        Just(TopologyChange::ClearQueuedMigrations),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever sequence of changes is tried, accepted ones keep every invariant and add one
    /// to the epoch, refused ones change nothing, and the result survives the TOML form.
    #[test]
    fn changes_keep_invariants(changes in proptest::collection::vec(any_change(), 1..40)) {
        let mut t = base();
        for change in &changes {
            let before = t.clone();
            match t.apply(change) {
                Ok(next) => {
                    prop_assert_eq!(next.epoch, t.epoch + 1);
                    prop_assert!(next.check().is_ok(), "{} broke: {:?}", change, next.check());
                    t = next;
                }
                Err(_) => prop_assert_eq!(&t, &before),
            }
        }
        let back: Topology = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        prop_assert_eq!(back, t);
    }
}

#[test]
fn rules_are_persisted_carried_through_changes_and_checked_when_read() {
    let mut t = base();
    t.rules = crate::rules::KeyRules::new(vec![crate::rules::KeyRule {
        prefix: "rq:".into(),
        tag: Some("rq".into()),
        separator: None,
        own_tag: crate::rules::OwnTag::Ignored,
    }]);
    let t = apply(
        &t,
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("[::1]:7000"),
        },
    );
    assert_eq!(t.rules.rules().len(), 1, "a change keeps the rules");
    assert_eq!(t.slot_of(b"rq:job:{x}"), crate::Slot::for_key(b"{rq}"));
    let text = toml::to_string(&t).unwrap();
    assert!(
        text.contains("[[rule]]\nprefix = \"rq:\"\ntag = \"rq\"\nown_tag = \"ignored\""),
        "{text}"
    );
    let back: Topology = toml::from_str(&text).unwrap();
    assert_eq!(back, t);
    // Without rules nothing is written, and a hand-edited file with a bad rule is refused.
    assert!(!toml::to_string(&base()).unwrap().contains("rule"));
    let bad = text.replace("prefix = \"rq:\"", "prefix = \"\"");
    let err = toml::from_str::<Topology>(&bad).unwrap_err().to_string();
    assert!(err.contains("rule 1") && err.contains("prefix"), "{err}");
}
