//! The command-support table of `docs/commands.md`, rendered from the command table itself so
//! that it cannot drift from what the proxy does (`proxy/tests/readme_commands.rs` checks the
//! document holds exactly this text).

use std::fmt::Write as _;

use super::{commands, CommandId, CommandSpec, Local, Merge, Route, Split};

/// What a route means for a user, and a note.
fn describe(spec: &CommandSpec) -> (&'static str, String) {
    match spec.route {
        Route::Keyed if spec.first_key == 0 && spec.key_specs.is_empty() => {
            ("works", "no key: any master".into())
        }
        Route::Keyed => (
            "works",
            "on the master of its keys' slot; keys must share a slot".into(),
        ),
        Route::Split(Split::Mget) => (
            "works",
            "split per shard, values merged in key order".into(),
        ),
        Route::Split(Split::Mset) => (
            "works",
            "split per shard; OK when every shard said OK".into(),
        ),
        Route::Split(Split::SumIntegers) => ("works", "split per shard, counts summed".into()),
        Route::Local if Local::of(spec.id) == Some(Local::FromBackend) => {
            ("works", "any master's answer (same Redis version)".into())
        }
        Route::Local if Local::of(spec.id) == Some(Local::NotACluster) => (
            "refused",
            "answered by the proxy as by a standalone Redis: cluster support disabled".into(),
        ),
        Route::Local if Local::of(spec.id) == Some(Local::Tracking) => (
            "works",
            "answered by the proxy; invalidations from every master (see client-side-caching.md)"
                .into(),
        ),
        Route::Local if Local::of(spec.id) == Some(Local::EveryNode) => (
            "works",
            "every node, masters and replicas; OK when all said OK".into(),
        ),
        Route::Local if Local::of(spec.id) == Some(Local::EveryMaster) => (
            "works",
            "every master; one server's answer when all gave it".into(),
        ),
        Route::Local if Local::of(spec.id) == Some(Local::ModuleList) => (
            "works",
            "answered by the proxy: no modules (it serves Redis's own commands)".into(),
        ),
        Route::Local if Local::of(spec.id) == Some(Local::Replicaof) => (
            "works",
            "`NO ONE`: OK, as from a master; `host port` refused".into(),
        ),
        Route::Local => ("works", "answered by the proxy".into()),
        Route::FanOut(merge) => (
            "works",
            match merge {
                Merge::SumIntegers => "every master, counts summed",
                Merge::ConcatArrays => "every master, lists joined",
                Merge::AllOk => "every master; OK when all said OK",
                Merge::First => "every master, same answer expected",
                Merge::AndArrays => "every master; true where all say true",
                Merge::AnyNonNull => "every master, first non-nil from a random start",
                Merge::Oldest => "every master, the oldest time",
            }
            .into(),
        ),
        Route::Flush => (
            "works when enabled",
            "every master, only with `allow_flush = true`".into(),
        ),
        Route::Forbidden => ("refused", "never reaches a backend from a client".into()),
        Route::Dedicated => (
            "works",
            "on the client's private backend connection; keys must share a slot".into(),
        ),
        Route::Scan => (
            "works",
            "visits every master; the cursor carries the shard".into(),
        ),
        Route::PubSub => (
            "works",
            "channels on their slot's master, patterns on every master".into(),
        ),
    }
}

/// The markdown table: one row per command, and per subcommand of container commands.
#[must_use]
pub fn markdown_table() -> String {
    let mut out = String::from("| Command | Status | Notes |\n|---|---|---|\n");
    let mut row = |spec: &CommandSpec| {
        let (status, note) = describe(spec);
        let name = spec.name.replace('|', " ").to_ascii_uppercase();
        let _ = writeln!(out, "| {name} | {status} | {note} |");
    };
    for spec in commands() {
        if spec.subcommands.is_empty() {
            row(spec);
        } else {
            for sub in spec.subcommands {
                row(sub);
            }
            if spec.id == CommandId::Client {
                for sub in &super::extra::CLIENT_EXTRAS {
                    row(sub);
                }
            }
        }
    }
    out
}
