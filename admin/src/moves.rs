//! The verbs that move slots: `reshard` and `rebalance`. Each shows its plan, asks for
//! confirmation (unless `--cluster-yes`), queues the moves and draws a progress bar until they
//! are done or one fails.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use redshard_config::SlotRange;

use crate::client::{AdminClient, ConnectionLost};
use crate::model::{
    parse_ranges, show_ranges, MigrationView, PlannedMove, RebalanceView, TopologyView,
};
use crate::output::plural;

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(250);

/// How long a queued move may be missing from MIGRATIONS before the watch gives up.
const UNSEEN_LIMIT: Duration = Duration::from_secs(30);

/// `n` bytes for people: `512 B`, `1.5 KiB`, `3.2 MiB`, ...
#[must_use]
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The `count` highest-numbered slots of `owned` (ascending ranges), as ascending ranges.
#[must_use]
pub fn highest_slots(owned: &[SlotRange], count: usize) -> Vec<SlotRange> {
    let mut left = count;
    let mut picked = Vec::new();
    for range in owned.iter().rev() {
        if left == 0 {
            break;
        }
        let take = left.min(range.len());
        // `take <= range.len()`, so the start stays within the range.
        let start = range.end - u16::try_from(take - 1).unwrap_or(0);
        picked.push(SlotRange {
            start,
            end: range.end,
        });
        left -= take;
    }
    picked.reverse();
    picked
}

/// Asks `question` on stdout and reads the answer from stdin: only `yes` proceeds, as in
/// redis-cli.
fn confirm(question: &str) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    write!(out, "{question}")?;
    out.flush()?;
    drop(out);
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// `reshard --cluster-from A --cluster-to B --cluster-slots N [--cluster-yes]`: moves the
/// source's `count` highest-numbered slots. Returns whether every move finished.
///
/// # Errors
/// Unknown shards, too many slots asked, refused by the proxy, or aborted at the prompt.
pub fn reshard(
    client: &mut AdminClient,
    from: &str,
    to: &str,
    count: usize,
    yes: bool,
) -> Result<bool> {
    let t = TopologyView::fetch(client)?;
    if let Some(busy) = MigrationView::fetch_all(client)?
        .iter()
        .find(|m| !m.finished())
    {
        bail!(
            "slots {} are moving from {} to {} ({}): wait until they are done (`redshard-admin migrations`) or cancel them (`redshard-admin cancel`), then reshard",
            busy.slots,
            busy.from,
            busy.to,
            busy.state
        );
    }
    let no_shard = |name: &str| {
        anyhow!("no shard {name}: name a shard by its name or its master's address (`redshard-admin check` lists them)")
    };
    let source = t.shard(from).ok_or_else(|| no_shard(from))?;
    let target = t.shard(to).ok_or_else(|| no_shard(to))?;
    if source.name == target.name {
        bail!(
            "the source and the target are the same shard {}",
            source.name
        );
    }
    if count == 0 || count > source.slot_count {
        bail!(
            "shard {} owns {}: ask for 1 to {} with --cluster-slots",
            source.name,
            plural(source.slot_count, "slot"),
            source.slot_count
        );
    }
    let slots = highest_slots(&source.slots, count);
    say!("Ready to move {}.", plural(count, "slot"));
    say!(
        "  Source shard: {} ({}) owning {}",
        source.name,
        source.master,
        plural(source.slot_count, "slot")
    );
    say!(
        "  Destination shard: {} ({}) owning {}",
        target.name,
        target.master,
        plural(target.slot_count, "slot")
    );
    say!("  Resharding plan:");
    say!(
        "    Moving slots {} from {} to {}",
        show_ranges(&slots),
        source.name,
        target.name
    );
    if !yes && !confirm("Do you want to proceed with the proposed reshard plan (yes/no)? ")? {
        bail!("aborted: nothing was moved");
    }
    let texts: Vec<String> = slots.iter().map(ToString::to_string).collect();
    let mut args = vec!["MIGRATE", &source.name, &target.name, "SLOTS"];
    args.extend(texts.iter().map(String::as_str));
    let queued = client.ok(&args)?;
    let planned = PlannedMove {
        from: source.name.clone(),
        to: target.name.clone(),
        slot_count: count as u64,
        slots: show_ranges(&slots),
    };
    watch(client, &[planned], persisted(&queued))
}

/// The `persisted` field of a MIGRATE or REBALANCE reply: whether the proxy saved the queued
/// moves with its topology; `None` from a proxy that does not say.
fn persisted(reply: &crate::client::Value) -> Option<bool> {
    reply
        .text("persisted")
        .ok()
        .flatten()
        .map(|text| text == "yes")
}

/// `rebalance [--cluster-use-empty-masters] [--cluster-threshold P] [--cluster-simulate]
/// [--cluster-yes]`. Returns whether every move finished.
///
/// # Errors
/// The proxy refused (a migration runs, a master is down, ...) or aborted at the prompt.
pub fn rebalance(
    client: &mut AdminClient,
    use_empty_masters: bool,
    threshold: Option<f64>,
    simulate: bool,
    yes: bool,
) -> Result<bool> {
    let threshold_text = threshold.map(|t| t.to_string());
    let mut args = vec!["REBALANCE"];
    if use_empty_masters {
        args.push("USE-EMPTY-MASTERS");
    }
    if let Some(t) = &threshold_text {
        args.extend(["THRESHOLD", t.as_str()]);
    }
    let t = TopologyView::fetch(client)?;
    if let Some(down) = t.shards.iter().find(|s| s.master_health == "down") {
        bail!(
            "the master {} of shard {} is down: fix it first (`redshard-admin check`), then rebalance",
            down.master,
            down.name
        );
    }
    let mut dry = args.clone();
    dry.push("DRY-RUN");
    let plan = RebalanceView::parse(&client.ok(&dry)?)?;
    say!(
        ">>> Rebalancing across {} shards (threshold {:.2}%)",
        plan.shares.len(),
        plan.threshold_pct
    );
    if plan.moves.is_empty() {
        say!(
            "*** No rebalancing needed! All shards are within the {:.2}% threshold.",
            plan.threshold_pct
        );
        return Ok(true);
    }
    for (name, now, after) in &plan.shares {
        say!("    {name}: {now} -> {}", plural(after, "slot"));
    }
    say_moves(&plan.moves);
    if simulate {
        say!("[OK] Simulation only (--cluster-simulate): nothing was moved.");
        return Ok(true);
    }
    if !yes && !confirm("Do you want to proceed with the proposed rebalance plan (yes/no)? ")? {
        bail!("aborted: nothing was moved");
    }
    let reply = client.ok(&args)?;
    let queued = RebalanceView::parse(&reply)?;
    if queued.moves != plan.moves {
        say!("The cluster changed since the plan was shown; queued instead:");
        say_moves(&queued.moves);
    }
    watch(client, &queued.moves, persisted(&reply))
}

/// Whether two range lists name the same slots.
fn same_slots(a: &str, b: &str) -> bool {
    let expand = |text: &str| -> Option<Vec<u16>> {
        let mut slots: Vec<u16> = parse_ranges(text)
            .ok()?
            .iter()
            .flat_map(|r| r.start..=r.end)
            .collect();
        slots.sort_unstable();
        Some(slots)
    };
    matches!((expand(a), expand(b)), (Some(x), Some(y)) if x == y)
}

/// What to tell the operator when the proxy goes away while `moves` run; `persisted` is
/// what the proxy said when they were queued.
fn went_away(
    lost: &ConnectionLost,
    moves: &[PlannedMove],
    seen: &[Option<MigrationView>],
    persisted: Option<bool>,
) -> anyhow::Error {
    let left: Vec<String> = moves
        .iter()
        .zip(seen)
        .filter(|(_, m)| !m.as_ref().is_some_and(MigrationView::finished))
        .map(|(p, _)| format!("{} {} -> {}", plural(p.slot_count, "slot"), p.from, p.to))
        .collect();
    let fate = match persisted {
        Some(false) => "the proxy runs without topology_file, so they are not saved and will not resume: once it is back, check the slots with `redshard-admin check` and plan again",
        _ => "they are saved with the proxy's topology (topology_file) and resume, in order, when it starts again (a move that no longer fits is reported as failed, never dropped silently); watch them with `redshard-admin migrations`, stop them with `redshard-admin cancel`",
    };
    anyhow!(
        "the proxy went away while the moves ran ({lost}); {} not finished ({}): {fate}",
        plural(left.len(), "move"),
        left.join(", ")
    )
}

/// Draws the progress of `moves` until each is done, failed or cancelled. Returns whether
/// all are done. `persisted`: whether the proxy saved them with its topology.
fn watch(client: &mut AdminClient, moves: &[PlannedMove], persisted: Option<bool>) -> Result<bool> {
    say!("(Ctrl-C stops watching only: the moves go on; `redshard-admin migrations` shows them, `redshard-admin cancel` stops them.)");
    let total: u64 = moves.iter().map(|m| m.slot_count).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} slots\n  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut seen: Vec<Option<MigrationView>> = vec![None; moves.len()];
    loop {
        let all = match MigrationView::fetch_all(client) {
            Ok(all) => all,
            Err(e) => {
                bar.abandon();
                return Err(match e.downcast_ref::<ConnectionLost>() {
                    Some(lost) => went_away(lost, moves, &seen, persisted),
                    None => e,
                });
            }
        };
        for (i, planned) in moves.iter().enumerate() {
            let found = all.iter().rev().find(|m| {
                m.from == planned.from && m.to == planned.to && same_slots(&m.slots, &planned.slots)
            });
            if let Some(found) = found {
                seen[i] = Some(found.clone());
            }
        }
        if seen.iter().any(Option::is_none) && started.elapsed() > UNSEEN_LIMIT {
            bar.abandon();
            bail!("the proxy does not list every queued move after {} s; see `redshard-admin migrations`", UNSEEN_LIMIT.as_secs());
        }
        let (mut slots, mut keys, mut estimate, mut bytes, mut rate) = (0.0, 0, 0, 0, 0.0);
        let mut eta: Option<f64> = None;
        for m in seen.iter().flatten() {
            keys += m.keys_moved;
            estimate += m.keys_estimate.max(m.keys_moved);
            bytes += m.bytes_moved;
            match m.state.as_str() {
                "done" => slots += m.slot_count as f64,
                "running" => {
                    rate += m.rate;
                    let part = if m.keys_estimate > 0 {
                        (m.keys_moved as f64 / m.keys_estimate as f64).min(0.99)
                    } else {
                        0.0
                    };
                    slots += m.slot_count as f64 * part;
                    eta = m.eta_secs.or(eta);
                }
                _ => {}
            }
        }
        bar.set_position(slots as u64);
        let waiting = seen
            .iter()
            .filter(|m| m.as_ref().is_none_or(|m| m.state == "queued"))
            .count();
        bar.set_message(format!(
            "keys {keys}/{estimate} · {} moved · {rate:.0} keys/s · ETA {}{}",
            human_bytes(bytes),
            eta.map_or_else(|| "?".to_owned(), |s| format!("{s:.0} s")),
            if waiting > 0 {
                format!(" for this move, {waiting} more queued")
            } else {
                String::new()
            }
        ));
        if seen
            .iter()
            .all(|m| m.as_ref().is_some_and(MigrationView::finished))
        {
            break;
        }
        std::thread::sleep(POLL);
    }
    bar.finish_and_clear();
    let mut all_done = true;
    for m in seen.iter().flatten() {
        match m.state.as_str() {
            "done" => say!(
                "[OK] Moved {} ({}) from {} to {}: {}, {} in {:.1} s.",
                plural(m.slot_count, "slot"),
                m.slots,
                m.from,
                m.to,
                plural(m.keys_moved, "key"),
                human_bytes(m.bytes_moved),
                m.elapsed_secs
            ),
            "failed" => {
                all_done = false;
                say!(
                    "[ERR] Moving slots {} from {} to {} failed: {}. `redshard-admin cancel` hands the unfinished slots back to {}; then retry.",
                    m.slots,
                    m.from,
                    m.to,
                    m.error.as_deref().unwrap_or("no reason given"),
                    m.from
                );
            }
            state => {
                all_done = false;
                say!(
                    "[WARNING] Moving slots {} from {} to {}: {state}.",
                    m.slots,
                    m.from,
                    m.to
                );
            }
        }
    }
    Ok(all_done)
}

/// Prints one `>>> Moving ...` line per planned move, as `redis-cli --cluster rebalance` does.
fn say_moves(moves: &[PlannedMove]) {
    for m in moves {
        say!(
            ">>> Moving {} from {} to {} ({})",
            plural(m.slot_count, "slot"),
            m.from,
            m.to,
            m.slots
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> SlotRange {
        SlotRange { start: a, end: b }
    }

    #[test]
    fn the_highest_slots_are_picked_across_ranges() {
        let owned = [r(0, 9), r(100, 104)];
        assert_eq!(highest_slots(&owned, 3), vec![r(102, 104)]);
        assert_eq!(highest_slots(&owned, 5), vec![r(100, 104)]);
        assert_eq!(highest_slots(&owned, 7), vec![r(8, 9), r(100, 104)]);
        assert_eq!(highest_slots(&owned, 15), vec![r(0, 9), r(100, 104)]);
        assert_eq!(highest_slots(&owned, 0), vec![]);
    }

    #[test]
    fn slot_lists_compare_by_content() {
        assert!(same_slots("0-9,20", "20,0-4,5-9"));
        assert!(!same_slots("0-9", "0-8"));
        assert!(!same_slots("x", "x"));
    }

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
