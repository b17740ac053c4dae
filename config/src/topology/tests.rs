use super::TopologyError;
use super::*;

/// The persisted TOML form and a property test of `apply` (long enough for a file of its own).
mod form;

pub(super) fn addr(text: &str) -> NodeAddr {
    NodeAddr::parse(text).unwrap()
}

pub(super) fn range(text: &str) -> SlotRange {
    text.parse().unwrap()
}

pub(super) fn slot(n: u16) -> Slot {
    Slot::new(n).unwrap()
}

/// s1 (0-5460, one replica), s2 (5461-10922), s3 (10923-16383, two replicas).
pub(super) fn base() -> Topology {
    let config = Config::from_toml_str(
        r#"
[[shard]]
name = "s1"
master = "127.0.0.1:6381"
replicas = ["127.0.0.1:6384"]
slots = ["0-5460"]
[[shard]]
name = "s2"
master = "127.0.0.1:6382"
slots = ["5461-10922"]
[[shard]]
name = "s3"
master = "127.0.0.1:6383"
replicas = ["127.0.0.1:6385", "127.0.0.1:6386"]
slots = ["10923-16383"]
"#,
        "test.toml",
    )
    .unwrap();
    Topology::from_config(&config)
}

pub(super) fn apply(t: &Topology, change: TopologyChange) -> Topology {
    t.apply(&change).unwrap_or_else(|e| panic!("{change}: {e}"))
}

pub(super) fn refused(t: &Topology, change: TopologyChange) -> TopologyError {
    match t.apply(&change) {
        Ok(_) => panic!("{change} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn from_config_builds_epoch_one() {
    let t = base();
    assert_eq!(t.epoch, 1);
    assert_eq!(t.slots.len(), SLOT_COUNT);
    let ids: Vec<u16> = t.shards.iter().map(|s| s.id.get()).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert_eq!(t.shard(ShardId(2)).unwrap().name, "s3");
    assert!(t.shard(ShardId(3)).is_none());
    assert_eq!(t.shard_by_name("s2").unwrap().id, ShardId(1));
    assert!(t.shard_by_name("nope").is_none());
    assert!(t.shards[2]
        .replicas
        .iter()
        .all(|r| r.state == ReplicaState::InSync));
    assert_eq!(t.shards[2].in_sync_replicas().count(), 2);
    assert_eq!(t.slots_of(ShardId(1)), [range("5461-10922")]);
    assert_eq!(t.serving_shard(slot(0)), ShardId(0));
    assert_eq!(t.serving_shard(Slot::for_key(b"foo")), ShardId(2)); // slot 12182
    assert_eq!(t.slot_state(slot(5461)), SlotState::Owned(ShardId(1)));
    assert_eq!(t.nodes().count(), 6);
    let (shard, role) = t.find_node(&addr("127.0.0.1:6386")).unwrap();
    assert_eq!((shard.name.as_str(), role), ("s3", NodeRole::Replica));
    assert!(t.migrations().is_empty());
    t.check().unwrap();
}

#[test]
fn a_first_start_under_redis_replication_counts_no_replica_in_sync() {
    for (mode, state) in [
        ("redis", ReplicaState::Syncing),
        ("proxy", ReplicaState::InSync),
    ] {
        let text = format!(
            "[replication]\nmode = \"{mode}\"\n[[shard]]\nname = \"s1\"\nmaster = \"127.0.0.1:6381\"\nreplicas = [\"127.0.0.1:6384\", \"127.0.0.1:6385\"]\nslots = [\"0-16383\"]\n"
        );
        let config = Config::from_toml_str(&text, "test.toml").unwrap();
        // The file's topology (epoch 1, every replica in sync) but for the replicas' state.
        let mut expected = Topology::from_config(&config);
        for replica in &mut expected.shards[0].replicas {
            replica.state = state;
        }
        assert_eq!(Topology::first_start(&config), expected, "{mode}");
    }
}

#[test]
fn try_from_config_refuses_incomplete_configs() {
    let err = Topology::try_from_config(&Config::default()).unwrap_err();
    assert!(err.to_string().contains("slot 0 is not assigned"), "{err}");
}

#[test]
fn apply_returns_a_new_epoch_and_leaves_self_alone() {
    let t = base();
    let before = t.clone();
    let next = apply(
        &t,
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("127.0.0.1:6387"),
        },
    );
    assert_eq!(next.epoch, 2);
    assert_eq!(t, before);
    // A refused change leaves it alone too, even when it fails half-way through the slots.
    let err = refused(
        &next,
        TopologyChange::BeginMigration {
            slots: vec![range("0-10"), range("5461")],
            to: ShardId(1),
        },
    );
    assert_eq!(
        err,
        TopologyError::SlotAlreadyOwned {
            slot: 5461,
            shard: "s2".into()
        }
    );
    assert_eq!(next.slots_of(ShardId(0)), [range("0-5460")]);
}

#[test]
fn add_shard_checks_name_and_address() {
    let t = base();
    let change = |name: &str, master: &str| TopologyChange::AddShard {
        name: name.into(),
        master: addr(master),
    };
    let next = apply(&t, change("s4", "redis-4:6379"));
    let s4 = next.shard_by_name("s4").unwrap();
    assert_eq!(s4.id, ShardId(3));
    assert!(s4.replicas.is_empty());
    assert!(next.slots_of(ShardId(3)).is_empty());
    assert_eq!(
        refused(&t, change("s2", "redis-4:6379")),
        TopologyError::DuplicateShardName("s2".into())
    );
    let err = refused(&t, change("", "redis-4:6379"));
    assert!(err.to_string().contains("must not be empty"), "{err}");
    let err = refused(&t, change("a/b", "redis-4:6379"));
    assert!(err.to_string().contains("letters"), "{err}");
    let err = refused(&t, change("s4", "127.0.0.1:6385")).to_string();
    assert_eq!(
        err,
        "node 127.0.0.1:6385 is already the replica of shard \"s3\""
    );
    let err = refused(&t, change("s4", "127.0.0.1:6382")).to_string();
    assert_eq!(
        err,
        "node 127.0.0.1:6382 is already the master of shard \"s2\""
    );
}

#[test]
fn remove_shard_refuses_while_it_has_replicas_or_slots() {
    let t = base();
    let remove = |id| TopologyChange::RemoveShard { shard: ShardId(id) };
    let err = refused(&t, remove(0)).to_string();
    assert!(err.contains("remove the replica first, hand the slots back, then remove the master"));
    assert!(err.contains("\"s1\" still has 1 replica"), "{err}");
    let err = refused(&t, remove(1)).to_string();
    assert!(
        err.contains("\"s2\" still owns or migrates slots 5461-10922"),
        "{err}"
    );
    assert!(err.contains("hand the slots back"), "{err}");
    assert_eq!(
        refused(&t, remove(9)),
        TopologyError::UnknownShard(ShardId(9))
    );

    // A new shard that is only the target of a migration cannot go either.
    let t = apply(
        &t,
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("127.0.0.1:6390"),
        },
    );
    let t = apply(
        &t,
        TopologyChange::BeginMigration {
            slots: vec![range("100-199")],
            to: ShardId(3),
        },
    );
    let err = refused(&t, remove(3)).to_string();
    assert!(err.contains("slots 100-199"), "{err}");
    let t = apply(
        &t,
        TopologyChange::CancelMigration {
            slots: vec![range("100-199")],
        },
    );
    let t = apply(&t, remove(3));
    assert!(t.shard(ShardId(3)).is_none());
    assert_eq!(t.shards.len(), 3);
}

#[test]
fn removed_shards_do_not_renumber_others() {
    let t = base();
    // Move s2's slots to s1, then remove s2.
    let t = apply(
        &t,
        TopologyChange::BeginMigration {
            slots: vec![range("5461-10922")],
            to: ShardId(0),
        },
    );
    let t = apply(
        &t,
        TopologyChange::FinishMigration {
            slots: vec![range("5461-10922")],
        },
    );
    let t = apply(&t, TopologyChange::RemoveShard { shard: ShardId(1) });
    assert_eq!(t.shard_by_name("s3").unwrap().id, ShardId(2));
    assert_eq!(t.serving_shard(slot(16383)), ShardId(2));
    assert_eq!(t.slots_of(ShardId(0)), [range("0-10922")]);
    let t = apply(
        &t,
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("h:1"),
        },
    );
    assert_eq!(t.shard_by_name("s4").unwrap().id, ShardId(3));
    t.check().unwrap();
}

#[test]
fn replicas_are_added_removed_and_marked() {
    let t = base();
    let r = addr("127.0.0.1:7001");
    let t = apply(
        &t,
        TopologyChange::AddReplica {
            shard: ShardId(1),
            addr: r.clone(),
            state: ReplicaState::Syncing,
        },
    );
    assert_eq!(
        t.shards[1].replica(&r).unwrap().state,
        ReplicaState::Syncing
    );
    assert_eq!(t.shards[1].in_sync_replicas().count(), 0);
    let err = refused(
        &t,
        TopologyChange::AddReplica {
            shard: ShardId(0),
            addr: r.clone(),
            state: ReplicaState::Syncing,
        },
    );
    assert!(
        matches!(
            err,
            TopologyError::AddressInUse {
                role: NodeRole::Replica,
                ..
            }
        ),
        "{err}"
    );
    let t = apply(
        &t,
        TopologyChange::SetReplicaState {
            shard: ShardId(1),
            addr: r.clone(),
            state: ReplicaState::InSync,
        },
    );
    assert_eq!(t.shards[1].in_sync_replicas().count(), 1);
    let err = refused(
        &t,
        TopologyChange::SetReplicaState {
            shard: ShardId(0),
            addr: r.clone(),
            state: ReplicaState::Stale,
        },
    );
    assert_eq!(
        err.to_string(),
        "node 127.0.0.1:7001 is not a replica of shard \"s1\""
    );
    let t = apply(
        &t,
        TopologyChange::RemoveReplica {
            shard: ShardId(1),
            addr: r.clone(),
        },
    );
    assert!(t.shards[1].replicas.is_empty());
    assert!(refused(
        &t,
        TopologyChange::RemoveReplica {
            shard: ShardId(1),
            addr: r.clone()
        }
    )
    .to_string()
    .contains("not a replica"));
    assert_eq!(
        refused(
            &t,
            TopologyChange::AddReplica {
                shard: ShardId(7),
                addr: r,
                state: ReplicaState::InSync
            }
        ),
        TopologyError::UnknownShard(ShardId(7))
    );
}

#[test]
fn promote_swaps_master_and_fences_the_old_one() {
    let t = base();
    let old = addr("127.0.0.1:6383");
    let new = addr("127.0.0.1:6386");
    let next = apply(
        &t,
        TopologyChange::Promote {
            shard: ShardId(2),
            replica: new.clone(),
        },
    );
    let s3 = next.shard(ShardId(2)).unwrap();
    assert_eq!(s3.master, new);
    assert_eq!(s3.replicas[0].addr, addr("127.0.0.1:6385"));
    assert_eq!(
        s3.replicas[1],
        Replica {
            addr: old.clone(),
            state: ReplicaState::Stale
        }
    );
    assert_eq!(next.slots, t.slots);

    // The fenced old master cannot be promoted back until it is in sync again.
    let err = refused(
        &next,
        TopologyChange::Promote {
            shard: ShardId(2),
            replica: old.clone(),
        },
    );
    assert!(matches!(
        err,
        TopologyError::ReplicaNotInSync {
            state: ReplicaState::Stale,
            ..
        }
    ));
    assert!(
        err.to_string().contains("is stale and cannot be promoted"),
        "{err}"
    );
    let next = apply(
        &next,
        TopologyChange::SetReplicaState {
            shard: ShardId(2),
            addr: old.clone(),
            state: ReplicaState::InSync,
        },
    );
    let next = apply(
        &next,
        TopologyChange::Promote {
            shard: ShardId(2),
            replica: old.clone(),
        },
    );
    assert_eq!(next.shard(ShardId(2)).unwrap().master, old);
    assert!(refused(
        &t,
        TopologyChange::Promote {
            shard: ShardId(1),
            replica: new
        }
    )
    .to_string()
    .contains("not a replica"));
}

#[test]
fn migrations_begin_finish_and_cancel() {
    let t = apply(
        &base(),
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("h:1"),
        },
    );
    let s4 = ShardId(3);
    // Slots from two owners at once.
    let moving = vec![range("5000-5999"), range("16383")];
    let t = apply(
        &t,
        TopologyChange::BeginMigration {
            slots: moving.clone(),
            to: s4,
        },
    );
    assert_eq!(
        t.slot_state(slot(5000)),
        SlotState::Migrating {
            from: ShardId(0),
            to: s4
        }
    );
    assert_eq!(
        t.slot_state(slot(5461)),
        SlotState::Migrating {
            from: ShardId(1),
            to: s4
        }
    );
    assert_eq!(t.serving_shard(slot(5999)), s4);
    assert_eq!(t.serving_shard(slot(6000)), ShardId(1));
    assert_eq!(t.slots_of(ShardId(0)), [range("0-4999")]);
    assert!(t.slots_of(s4).is_empty());
    let migrations = t.migrations();
    assert_eq!(migrations.len(), 3);
    assert_eq!(
        migrations[0],
        Migration {
            from: ShardId(0),
            to: s4,
            slots: vec![range("5000-5460")]
        }
    );
    assert_eq!(migrations[2].slots, [range("16383")]);

    let err = refused(
        &t,
        TopologyChange::BeginMigration {
            slots: vec![range("5500")],
            to: ShardId(0),
        },
    );
    assert_eq!(
        err.to_string(),
        "slot 5500 is already migrating from shard \"s2\" to shard \"s4\""
    );

    let finished = apply(
        &t,
        TopologyChange::FinishMigration {
            slots: moving.clone(),
        },
    );
    assert_eq!(finished.slots_of(s4), [range("5000-5999"), range("16383")]);
    assert!(finished.migrations().is_empty());
    let err = refused(
        &finished,
        TopologyChange::FinishMigration {
            slots: vec![range("5000")],
        },
    );
    assert_eq!(
        err.to_string(),
        "slot 5000 is not migrating (it is owned by shard \"s4\")"
    );

    let cancelled = apply(&t, TopologyChange::CancelMigration { slots: moving });
    assert_eq!(cancelled.slots, base().slots);
    assert!(refused(
        &cancelled,
        TopologyChange::CancelMigration {
            slots: vec![range("1")]
        }
    )
    .to_string()
    .contains("not migrating"));
}

#[test]
fn migration_slot_lists_are_checked() {
    let t = base();
    let begin = |slots: Vec<SlotRange>, to| TopologyChange::BeginMigration {
        slots,
        to: ShardId(to),
    };
    assert_eq!(refused(&t, begin(vec![], 1)), TopologyError::NoSlots);
    assert_eq!(
        refused(&t, TopologyChange::FinishMigration { slots: vec![] }),
        TopologyError::NoSlots
    );
    let reversed = SlotRange { start: 9, end: 3 };
    assert_eq!(
        refused(&t, begin(vec![reversed], 1)),
        TopologyError::InvalidSlotRange(reversed)
    );
    let past = SlotRange {
        start: 16000,
        end: 16384,
    };
    assert!(refused(&t, begin(vec![past], 1))
        .to_string()
        .contains("16000-16384"));
    assert_eq!(
        refused(&t, begin(vec![range("1-10"), range("10-12")], 1)),
        TopologyError::SlotNamedTwice(10)
    );
    assert_eq!(
        refused(&t, begin(vec![range("1")], 5)),
        TopologyError::UnknownShard(ShardId(5))
    );
    assert_eq!(
        refused(&t, begin(vec![range("1")], 0)).to_string(),
        "slot 1 is already owned by shard \"s1\""
    );
}

#[test]
fn epoch_cannot_overflow() {
    let mut t = base();
    t.epoch = u64::MAX;
    let err = refused(&t, TopologyChange::RemoveShard { shard: ShardId(0) });
    assert_eq!(err, TopologyError::EpochExhausted(u64::MAX));
}

#[test]
fn check_refuses_a_short_slot_table() {
    let mut t = base();
    t.slots = t.slots[..100].to_vec().into_boxed_slice();
    assert!(t
        .check()
        .unwrap_err()
        .to_string()
        .contains("100 slot states"));
}

#[test]
fn a_reversed_migration_moves_the_slots_back() {
    let t = base();
    let (from, to) = (t.shards[0].id, t.shards[2].id);
    let slots = vec![range("10-20")];
    let t = apply(
        &t,
        TopologyChange::BeginMigration {
            slots: slots.clone(),
            to,
        },
    );
    let t = apply(
        &t,
        TopologyChange::ReverseMigration {
            slots: slots.clone(),
        },
    );
    assert_eq!(
        t.slot_state(slot(15)),
        SlotState::Migrating { from: to, to: from }
    );
    let t = apply(&t, TopologyChange::FinishMigration { slots });
    assert_eq!(t.slot_state(slot(15)), SlotState::Owned(from));
    refused(
        &t,
        TopologyChange::ReverseMigration {
            slots: vec![range("10-20")],
        },
    );
}

fn mv(from: u16, to: u16, slots: &str) -> Migration {
    Migration {
        from: ShardId(from),
        to: ShardId(to),
        slots: vec![range(slots)],
    }
}

#[test]
fn queued_migrations_begin_in_one_change_and_are_checked() {
    let t = apply(
        &base(),
        TopologyChange::QueueMigrations {
            moves: vec![mv(0, 1, "5000-5460"), mv(2, 1, "16000-16383")],
        },
    );
    assert_eq!(t.queued.len(), 2);
    // Slots already queued, not owned by the source, or a move to itself are refused.
    let e = refused(
        &t,
        TopologyChange::QueueMigrations {
            moves: vec![mv(0, 2, "5400-5500")],
        },
    );
    assert_eq!(e, TopologyError::SlotQueued(5400));
    let e = refused(
        &t,
        TopologyChange::QueueMigrations {
            moves: vec![mv(0, 2, "6000")],
        },
    );
    assert_eq!(
        e.to_string(),
        "slot 6000 is not owned by shard \"s1\" (it is owned by \"s2\")"
    );
    let e = refused(
        &t,
        TopologyChange::QueueMigrations {
            moves: vec![mv(0, 0, "0")],
        },
    );
    assert_eq!(e, TopologyError::MigrationToItself("s1".into()));
    // A shard named by a queued move stays, even while it owns nothing yet.
    let with_new = apply(
        &t,
        TopologyChange::AddShard {
            name: "s4".into(),
            master: addr("127.0.0.1:6390"),
        },
    );
    let with_new = apply(
        &with_new,
        TopologyChange::QueueMigrations {
            moves: vec![mv(0, 3, "0-9")],
        },
    );
    assert_eq!(
        refused(&with_new, TopologyChange::RemoveShard { shard: ShardId(3) }),
        TopologyError::ShardHasQueuedMigrations("s4".into())
    );

    // Beginning one takes it off the queue and makes its slots migrate, in one epoch.
    let begun = apply(
        &t,
        TopologyChange::StartMigration {
            migration: mv(2, 1, "16000-16383"),
        },
    );
    assert_eq!(begun.queued, vec![mv(0, 1, "5000-5460")]);
    assert_eq!(
        begun.slot_state(slot(16000)),
        SlotState::Migrating {
            from: ShardId(2),
            to: ShardId(1)
        }
    );
    // A move whose slots changed owner meanwhile does not begin.
    let moved = apply(
        &t,
        TopologyChange::BeginMigration {
            slots: vec![range("5000-5460")],
            to: ShardId(2),
        },
    );
    let moved = apply(
        &moved,
        TopologyChange::FinishMigration {
            slots: vec![range("5000-5460")],
        },
    );
    let e = refused(
        &moved,
        TopologyChange::StartMigration {
            migration: mv(0, 1, "5000-5460"),
        },
    );
    assert_eq!(
        e.to_string(),
        "slot 5000 is not owned by shard \"s1\" (it is owned by \"s3\")"
    );
    let dropped = apply(
        &moved,
        TopologyChange::DropQueuedMigration {
            migration: mv(0, 1, "5000-5460"),
        },
    );
    assert_eq!(dropped.queued, vec![mv(2, 1, "16000-16383")]);
    assert!(matches!(
        refused(
            &dropped,
            TopologyChange::DropQueuedMigration {
                migration: mv(0, 1, "5000-5460"),
            }
        ),
        TopologyError::NotQueued(_)
    ));
    let cleared = apply(&dropped, TopologyChange::ClearQueuedMigrations);
    assert!(cleared.queued.is_empty());
}
