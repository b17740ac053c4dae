//! Splitting a multi-key command (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) whose keys live on
//! several shards.
//!
//! Keys are grouped by (shard, lane) rather than by shard alone: a key's commands always travel
//! on its slot's lane, so a client that writes a key and then reads it with MGET in one
//! pipeline still reads its own write. When every key falls in one group the original bytes are
//! forwarded unchanged.

use bytes::BytesMut;
use smallvec::SmallVec;

use super::dispatch::Action;
use super::merge::MergePlan;
use super::Ctx;
use crate::router::RoutingTable;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandSpec, Split};
use redshard_protocol::resp::{encode, Args};

/// The keys (with their values, for MSET) bound for one (shard, lane).
#[derive(Debug)]
struct Group {
    /// Index of the shard in the routing table.
    shard: usize,
    /// A slot of the group, which picks the lane.
    slot: u16,
    /// The lane number, to tell groups apart.
    lane: usize,
    /// Argument indices of the group's keys.
    keys: SmallVec<[usize; 8]>,
}

/// Plans and sends a split command; returns `Action::Forward` when no split is needed.
pub(super) fn split(
    ctx: &mut Ctx,
    table: &RoutingTable,
    spec: &'static CommandSpec,
    kind: Split,
    args: Args<'_>,
) -> Action {
    if kind == Split::Mset && args.len() % 2 == 0 {
        // MSET takes key-value pairs; Redis checks this in the command itself.
        return Action::error(ctx, ClientError::WrongArity { command: spec.name });
    }
    if let Err(e) = spec.key_indices(&args, &mut ctx.keys) {
        return Action::error(ctx, ClientError::Command(e));
    }
    let mut groups: SmallVec<[Group; 8]> = SmallVec::new();
    let mut order = Vec::with_capacity(if kind == Split::Mget {
        ctx.keys.len()
    } else {
        0
    });
    for &key in &ctx.keys {
        let slot = table.slot_of(args.get(key));
        let shard = table.shard_of(slot);
        let lane = usize::from(slot.get()) % table.shards()[shard].master.lane_count();
        let index = match groups
            .iter()
            .position(|g| g.shard == shard && g.lane == lane)
        {
            Some(index) => index,
            None => {
                groups.push(Group {
                    shard,
                    slot: slot.get(),
                    lane,
                    keys: SmallVec::new(),
                });
                groups.len() - 1
            }
        };
        groups[index].keys.push(key);
        if kind == Split::Mget {
            order.push(index as u32);
        }
    }
    let write = super::dispatch::is_mirrored(spec);
    match groups.len() {
        0 => {
            return Action::Forward {
                shard: 0,
                slot: 0,
                mirror: None,
            }
        }
        1 => {
            return Action::Forward {
                shard: groups[0].shard,
                slot: groups[0].slot,
                mirror: super::dispatch::plan(table, groups[0].shard, spec, &args),
            }
        }
        _ => {}
    }
    let plan = match kind {
        Split::Mget => MergePlan::Mget { order },
        Split::Mset => MergePlan::AllOk,
        Split::SumIntegers => MergePlan::SumIntegers,
    };
    let seq = ctx.queue.reserve_gather(groups.len(), plan);
    let mut parts: SmallVec<[&[u8]; 16]> = SmallVec::new();
    for (index, group) in groups.iter().enumerate() {
        parts.clear();
        parts.push(args.get(0));
        for &key in &group.keys {
            parts.push(args.get(key));
            if kind == Split::Mset {
                parts.push(args.get(key + 1));
            }
        }
        let mut request = BytesMut::new();
        encode::request(&mut request, &parts);
        // MSET, DEL and UNLINK are deterministic: their parts are mirrored as they are.
        crate::router::send_master(
            &table.shards()[group.shard],
            group.slot,
            request.freeze(),
            ctx.queue.part(seq, index as u32).into(),
            ctx.protocol,
            write.then_some(crate::mirror::effect::Effect::Same),
            1,
            ctx.db,
        );
    }
    Action::Done
}
