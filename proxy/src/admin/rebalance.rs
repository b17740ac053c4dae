//! Planning a rebalance: which slots move from which shard to which, so that every shard
//! taking part serves an equal share of the 16384 slots.
//!
//! The rules are those of `redis-cli --cluster rebalance` with equal weights:
//! - the shards taking part are those that own slots, or every shard with
//!   `use_empty_masters` (a new, empty shard receives slots only then);
//! - each gets `16384 / n` slots; the `16384 % n` left over go one each to the shards that
//!   own the most now (ties: lowest id), which keeps the moves fewest;
//! - nothing moves when every shard is within `threshold_pct` percent of its share (redis-cli's
//!   `--cluster-threshold`, 2 by default): the deviation of a shard owning `c` slots with a
//!   share of `e` is `|c - e| / c` in percent, and an empty shard with a share is always over;
//! - the shard with the largest surplus gives to the one with the largest deficit, as many
//!   slots as the smaller of the two, until all are balanced. A source gives its
//!   highest-numbered slots first (as `MIGRATE <from> <to> <count>` does).
//!
//! The plan is pure: it reads a topology and returns moves; the admin port queues them.

use redshard_config::slot::compact as compact_slots;
use redshard_config::{ShardId, Slot, SlotRange, SlotState, Topology, SLOT_COUNT};

/// redis-cli's default `--cluster-threshold`, in percent.
pub const DEFAULT_THRESHOLD_PCT: f64 = 2.0;

/// What to balance over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Give a share to shards that own no slots too (`--cluster-use-empty-masters`).
    pub use_empty_masters: bool,
    /// Move nothing when every shard is within this many percent of its share.
    pub threshold_pct: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            use_empty_masters: false,
            threshold_pct: DEFAULT_THRESHOLD_PCT,
        }
    }
}

/// Slots to move from one shard to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The shard that gives them.
    pub from: ShardId,
    /// The shard that receives them.
    pub to: ShardId,
    /// The slots, compacted into ascending ranges.
    pub slots: Vec<SlotRange>,
}

impl Move {
    /// How many slots move.
    #[must_use]
    pub fn count(&self) -> usize {
        self.slots.iter().map(SlotRange::len).sum()
    }
}

/// A rebalance plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The shards taking part, with the number of slots each should end with, by id.
    pub shares: Vec<(ShardId, usize)>,
    /// The moves, in the order to run them; empty when balanced.
    pub moves: Vec<Move>,
}

/// Why no plan can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Slots are migrating: the ownership a plan starts from is not settled.
    #[error("slots are migrating ({0}); wait until the migrations are done (MIGRATIONS) or cancel them (MIGRATION CANCEL), then rebalance")]
    Migrating(String),
    /// No shard takes part.
    #[error("no shard to balance over")]
    NoShards,
}

/// Plans the moves that balance `topology` under `options` (see the module docs).
///
/// # Errors
/// [`PlanError::Migrating`] while any slot migrates; [`PlanError::NoShards`] when no shard
/// takes part.
pub fn plan(topology: &Topology, options: Options) -> Result<Plan, PlanError> {
    let migrating = topology.migrations();
    if !migrating.is_empty() {
        let ranges: Vec<String> = migrating
            .iter()
            .flat_map(|m| m.slots.iter().map(ToString::to_string))
            .collect();
        return Err(PlanError::Migrating(ranges.join(",")));
    }
    // Each shard's slots, ascending, by shard position.
    let mut owned: Vec<Vec<Slot>> = vec![Vec::new(); topology.shards.len()];
    for slot in SlotRange::all().slots() {
        if let SlotState::Owned(id) = topology.slot_state(slot) {
            if let Ok(i) = topology.shards.binary_search_by_key(&id, |s| s.id) {
                owned[i].push(slot);
            }
        }
    }
    let mut taking_part: Vec<usize> = (0..topology.shards.len())
        .filter(|&i| options.use_empty_masters || !owned[i].is_empty())
        .collect();
    if taking_part.is_empty() {
        return Err(PlanError::NoShards);
    }
    // The leftover slots go to the shards that own the most (ties: lowest id).
    taking_part.sort_by_key(|&i| (std::cmp::Reverse(owned[i].len()), topology.shards[i].id));
    let n = taking_part.len();
    let share = |rank: usize| SLOT_COUNT / n + usize::from(rank < SLOT_COUNT % n);
    let targets: Vec<(usize, usize)> = taking_part
        .iter()
        .enumerate()
        .map(|(rank, &i)| (i, share(rank)))
        .collect();
    let mut shares: Vec<(ShardId, usize)> = targets
        .iter()
        .map(|&(i, target)| (topology.shards[i].id, target))
        .collect();
    shares.sort_unstable();
    let over = targets
        .iter()
        .any(|&(i, target)| beyond_threshold(owned[i].len(), target, options.threshold_pct));
    if !over {
        return Ok(Plan {
            shares,
            moves: Vec::new(),
        });
    }
    // Surplus (> 0) or deficit (< 0) of each shard taking part.
    let mut balance: Vec<(usize, isize)> = targets
        .iter()
        .map(|&(i, target)| (i, signed(owned[i].len()) - signed(target)))
        .collect();
    let mut moves = Vec::new();
    loop {
        let giver = balance
            .iter()
            .enumerate()
            .filter(|(_, b)| b.1 > 0)
            .max_by_key(|(k, b)| (b.1, std::cmp::Reverse(*k)))
            .map(|(k, _)| k);
        let taker = balance
            .iter()
            .enumerate()
            .filter(|(_, b)| b.1 < 0)
            .min_by_key(|(k, b)| (b.1, *k))
            .map(|(k, _)| k);
        let (Some(g), Some(t)) = (giver, taker) else {
            break;
        };
        let count = balance[g].1.min(-balance[t].1);
        let (from, to) = (balance[g].0, balance[t].0);
        let source = &mut owned[from];
        let keep = source.len() - count.unsigned_abs();
        let given = source.split_off(keep);
        balance[g].1 -= count;
        balance[t].1 += count;
        moves.push(Move {
            from: topology.shards[from].id,
            to: topology.shards[to].id,
            slots: compact_slots(given),
        });
    }
    Ok(Plan { shares, moves })
}

/// Whether a shard owning `owned` slots with a share of `target` is off by more than
/// `threshold_pct` percent of what it owns.
fn beyond_threshold(owned: usize, target: usize, threshold_pct: f64) -> bool {
    if owned == 0 {
        return target > 0;
    }
    let off = owned.abs_diff(target) as f64 * 100.0 / owned as f64;
    off > threshold_pct
}

/// Slot counts are at most 16384: they fit an `isize` on every platform Rust supports.
fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redshard_config::{NodeAddr, Shard};

    /// A topology of shards owning `counts[i]` consecutive slots each (in order), plus
    /// `empty` shards owning none.
    fn topology(counts: &[usize], empty: usize) -> Topology {
        assert_eq!(counts.iter().sum::<usize>(), SLOT_COUNT);
        let total = counts.len() + empty;
        let shards: Vec<Shard> = (0..total)
            .map(|i| Shard {
                id: ShardId(u16::try_from(i).unwrap()),
                name: format!("s{}", i + 1),
                master: NodeAddr::parse(&format!("127.0.0.1:{}", 7000 + i)).unwrap(),
                replicas: Vec::new(),
            })
            .collect();
        let mut slots = Vec::with_capacity(SLOT_COUNT);
        for (i, &count) in counts.iter().enumerate() {
            slots.extend(std::iter::repeat_n(
                SlotState::Owned(ShardId(u16::try_from(i).unwrap())),
                count,
            ));
        }
        let topology = Topology {
            epoch: 1,
            shards,
            slots: slots.into_boxed_slice(),
            queued: Vec::new(),
            rules: redshard_config::KeyRules::default(),
            users: None,
        };
        topology.check().unwrap();
        topology
    }

    /// Applies `plan` to `topology` (checking every move takes slots its source owns) and
    /// returns each shard's slot count.
    fn apply(topology: &Topology, plan: &Plan) -> Vec<usize> {
        let mut slots = topology.slots.to_vec();
        for m in &plan.moves {
            assert_ne!(m.from, m.to);
            assert!(m.count() > 0);
            for range in &m.slots {
                for slot in range.slots() {
                    assert_eq!(slots[slot.index()], SlotState::Owned(m.from), "{m:?}");
                    slots[slot.index()] = SlotState::Owned(m.to);
                }
            }
        }
        topology
            .shards
            .iter()
            .map(|s| {
                slots
                    .iter()
                    .filter(|&&st| st == SlotState::Owned(s.id))
                    .count()
            })
            .collect()
    }

    fn with_empty() -> Options {
        Options {
            use_empty_masters: true,
            ..Options::default()
        }
    }

    #[test]
    fn an_empty_master_gets_a_quarter_only_when_asked() {
        let t = topology(&[5461, 5461, 5462], 1);
        let plan = super::plan(&t, Options::default()).unwrap();
        assert!(plan.moves.is_empty(), "{plan:?}");
        assert_eq!(plan.shares.len(), 3);

        let plan = super::plan(&t, with_empty()).unwrap();
        assert_eq!(apply(&t, &plan), vec![4096, 4096, 4096, 4096]);
        assert_eq!(plan.moves.len(), 3);
        assert!(plan.moves.iter().all(|m| m.to == ShardId(3)));
        // Highest-numbered slots first: s1 gives the top of 0-5460.
        let s1 = plan.moves.iter().find(|m| m.from == ShardId(0)).unwrap();
        assert_eq!(s1.slots, vec![SlotRange::new(4096, 5460).unwrap()]);
        assert_eq!(s1.count(), 1365);
    }

    #[test]
    fn handing_back_a_shard_that_owns_nothing_leaves_it_out() {
        // After the 4th shard's slots were moved away, rebalancing without empty masters
        // spreads over the three that own slots.
        let t = topology(&[8192, 4096, 4096], 1);
        let plan = super::plan(&t, Options::default()).unwrap();
        let counts = apply(&t, &plan);
        assert_eq!(counts[3], 0);
        assert_eq!(counts[..3].iter().sum::<usize>(), SLOT_COUNT);
        assert!(
            counts[..3].iter().all(|&c| (5461..=5462).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn within_the_threshold_nothing_moves() {
        // Shares 5461, 5461, 5462: 5400 is 1.1% off, 5534 1.3%, 5300 3.0%.
        let t = topology(&[5400, 5450, 5534], 0);
        let plan = super::plan(&t, Options::default()).unwrap();
        assert!(plan.moves.is_empty(), "{plan:?}");
        let plan = super::plan(
            &t,
            Options {
                threshold_pct: 0.5,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(apply(&t, &plan), vec![5461, 5461, 5462]);
        let t = topology(&[5300, 5500, 5584], 0);
        assert!(!super::plan(&t, Options::default())
            .unwrap()
            .moves
            .is_empty());
    }

    #[test]
    fn a_migration_in_progress_is_refused() {
        let t = topology(&[8192, 8192], 0);
        let t = t
            .apply(&redshard_config::TopologyChange::BeginMigration {
                slots: vec![SlotRange::new(0, 9).unwrap()],
                to: ShardId(1),
            })
            .unwrap();
        let e = super::plan(&t, Options::default()).unwrap_err();
        assert_eq!(e, PlanError::Migrating("0-9".into()));
        assert!(e.to_string().contains("MIGRATION CANCEL"));
    }

    #[test]
    fn one_shard_owning_everything_is_balanced() {
        let t = topology(&[SLOT_COUNT], 0);
        assert!(super::plan(&t, Options::default())
            .unwrap()
            .moves
            .is_empty());
        let t = topology(&[SLOT_COUNT], 2);
        let plan = super::plan(&t, with_empty()).unwrap();
        assert_eq!(apply(&t, &plan), vec![5462, 5461, 5461]);
        assert_eq!(plan.moves.len(), 2, "one source, two targets");
    }

    proptest! {
        #[test]
        fn every_plan_balances_within_one_slot(
            cuts in proptest::collection::vec(0usize..SLOT_COUNT, 0..8),
            empty in 0usize..3,
            use_empty in any::<bool>(),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut counts = Vec::new();
            let mut last = 0;
            for cut in cuts.into_iter().chain([SLOT_COUNT]) {
                if cut > last {
                    counts.push(cut - last);
                    last = cut;
                }
            }
            let t = topology(&counts, empty);
            let options = Options { use_empty_masters: use_empty, threshold_pct: 0.0 };
            let plan = super::plan(&t, options).unwrap();
            let after = apply(&t, &plan);
            let taking: Vec<usize> = after
                .iter()
                .enumerate()
                .filter(|&(i, _)| use_empty || i < counts.len())
                .map(|(_, &c)| c)
                .collect();
            let (lo, hi) = (taking.iter().min().unwrap(), taking.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{after:?}");
            // Each shard gives or receives, never both.
            for m in &plan.moves {
                prop_assert!(!plan.moves.iter().any(|o| o.to == m.from));
            }
            // The shares are what the shards end with.
            for (id, share) in &plan.shares {
                prop_assert_eq!(after[usize::from(id.get())], *share);
            }
        }
    }
}
