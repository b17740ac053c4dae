//! The state metrics of one proxy, read at each scrape (see [`super::names`]).

use std::sync::atomic::Ordering;

use super::names;
use super::text::Text;
use crate::health::{slots_per_shard, NodeStatus};
use crate::state::ProxyState;

/// Writes the state metrics of `state`.
pub(crate) fn render_state(text: &mut Text<'_>, state: &ProxyState) {
    text.header(&names::BUILD_INFO);
    text.sample(&names::BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1);
    text.single(&names::UPTIME_IN_SECONDS, state.started.elapsed().as_secs());
    text.single(&names::CONNECTED_CLIENTS, state.clients.connected());
    text.single(
        &names::CONNECTIONS_RECEIVED_TOTAL,
        state.clients.total_connections.load(Ordering::Relaxed),
    );
    text.single(
        &names::REJECTED_CONNECTIONS_TOTAL,
        state.clients.rejected_connections.load(Ordering::Relaxed),
    );

    let table = state.router.load();
    text.single(&names::TOPOLOGY_EPOCH, table.epoch());
    text.header(&names::SLOTS);
    for (shard, count) in table.shards().iter().zip(slots_per_shard(&table)) {
        text.sample(&names::SLOTS, &[&shard.name], count);
    }

    let nodes = state.health.snapshot();
    if !nodes.is_empty() {
        text.header(&names::BACKEND_UP);
        for (node, status) in nodes {
            let up = u8::from(matches!(status, NodeStatus::Up));
            text.sample(&names::BACKEND_UP, &[node.as_str()], up);
        }
    }
}
