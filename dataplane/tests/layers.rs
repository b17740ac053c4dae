//! The data plane's modules import only downward: a module of a lower layer never names one
//! of a higher layer. The layers are the table below (also in `docs/development.md`); the
//! check reads `dataplane/src/**/*.rs` as text, so it needs no redis-server.
//!
//! What counts as an import: every `crate::a::b` path and every `super::` path outside a
//! comment, in `use` lines and in code, resolved to the longest module of the table it names.
//! Imports within one layer are free. An upward import that had to stay for a while would be
//! listed in [`KNOWN_UPWARD`] with the reason (none is today); the test fails when an unlisted
//! one appears, and also when a listed one is gone (so the list only shrinks).
//!
//! Between crates the compiler holds the direction: the protocol (`redshard-protocol`) and the
//! metrics' recording API (`redshard-metrics`) are below this crate, the control plane
//! (`redshard-control`) and the ports (`redshard-proxy`) above it, and a crate cannot name one
//! that depends on it. Inside this crate, this test holds it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Appends every `.rs` file below `dir` to `out`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module of `dataplane/src`, with its layer: 1 is the bottom (layer 0, the protocol,
/// is the crate `redshard-protocol`). A module may import its own
/// layer and those below. A module path not in the table takes the layer of its longest listed
/// prefix (`session::park::room` is `session`); a module with no listed prefix fails the test,
/// so a new module is placed on purpose.
const LAYERS: &[(&str, u8)] = &[
    // Leaves everyone may call: the data plane → controller event channel, certificates, the
    // allocator, counters and small shared tables. (The metrics' recording API, also a
    // leaf, is the crate `redshard-metrics`.)
    ("events", 1),
    ("tls", 1),
    ("allocator", 1),
    ("clients", 1),
    ("auth_throttle", 1),
    ("slowlog", 1),
    ("outbuf", 1),
    ("ha_stats", 1),
    ("fleet_status", 1),
    // The proxy's users (ACL rules compiled from the configuration and ACL SETUSER), read by
    // the state and the session: a table with no data-plane imports.
    ("users", 1),
    // The literal keys of the scripts the proxy has seen, by SHA1, read by the session for an
    // EVALSHA called with no key: a table over the protocol's script reader.
    ("script_keys", 1),
    // The topology-writing capability: a token only the router mints and the controller
    // holds, named by the backend (`Node::fence`) as well as the router.
    ("router::writer", 1),
    // Data plane, bottom up: reply queues (and the drain signal that wakes them), backend
    // lanes, mirroring to replicas, the routing table, what is known of each node and the
    // migrations' queue and key mover, the state sessions share, the session.
    ("replies", 2),
    ("shutdown", 2),
    ("backend", 3),
    ("mirror", 4),
    ("router", 5),
    ("health", 6),
    ("migration", 6),
    // CLIENT TRACKING's hub: follows the router's masters and tells the clients; the state
    // holds it and lends it the router and the clients through `tracking::Hub`.
    ("tracking", 6),
    // MONITOR's registry of monitoring clients' reply queues, fed by the session, and the
    // masters' MONITOR connections it keeps while anyone monitors, following the router's
    // masters through `monitor::MonitorHub`.
    ("monitor", 6),
    ("state", 7),
    ("session", 8),
    // Above this crate: the control plane (layer 9, `redshard-control`: the controller and
    // reloads) and the ports and pages (layer 10, `redshard-proxy`).
];

/// Upward imports still in the code: (importing module, imported module, why it is still
/// there). Remove a line when its import goes.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module path of a source file: `metrics/scrape.rs` → `["metrics", "scrape"]`,
/// `backend/mod.rs` → `["backend"]`; `lib.rs` (the crate root, above every layer) → `None`.
fn module_of(file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && parts[0] == "lib" {
        return None;
    }
    Some(parts)
}

/// The listed module `path` belongs to (its longest listed prefix) and that module's layer.
fn layer_of(path: &[String]) -> Option<(&'static str, u8)> {
    (1..=path.len()).rev().find_map(|n| {
        let name = path[..n].join("::");
        LAYERS
            .iter()
            .find(|(listed, _)| *listed == name)
            .map(|&(listed, layer)| (listed, layer))
    })
}

/// The module paths a line names: each `crate::…` path, and each `super::…` path resolved
/// against `here`. In `use crate::{a, b::c}` every member counts.
fn named_paths(line: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (start, root) in [("crate::", None), ("super::", Some(()))] {
        let mut rest = line;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + start.len()..];
            rest = after;
            // `foo_crate::` or `self.super::` are not paths of this crate.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut base: Vec<String> = match root {
                None => Vec::new(),
                Some(()) => here[..here.len().saturating_sub(1)].to_vec(),
            };
            let mut tail = after;
            while let Some(more) = tail.strip_prefix("super::") {
                base.pop();
                tail = more;
            }
            if let Some(group) = tail.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for member in group[..end].split(',') {
                    out.push(with_segments(&base, member.trim()));
                }
            } else {
                out.push(with_segments(&base, tail));
            }
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// `base` followed by the identifier segments at the start of `text` (`a::b::C` of
/// `a::b::C::new(…)`).
fn with_segments(base: &[String], text: &str) -> Vec<String> {
    let mut path = base.to_vec();
    for segment in text.split("::") {
        let ident: String = segment
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        let whole = ident.len() == segment.len();
        path.push(ident);
        if !whole {
            break;
        }
    }
    path
}

/// An import that runs upward: (importing module, imported module) and where it first is.
type Upward = ((String, String), String);

/// Every (importing module, imported module) pair of listed modules that runs upward, with
/// the file and line of its first occurrence.
fn upward_imports() -> Vec<Upward> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut seen = BTreeSet::new();
    let mut upward = Vec::new();
    for file in &files {
        let Some(here) = module_of(file) else {
            continue;
        };
        let rel = file.strip_prefix(src_dir()).unwrap().display().to_string();
        let (from, from_layer) = layer_of(&here)
            .unwrap_or_else(|| panic!("{rel}: module {} has no layer in LAYERS", here.join("::")));
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for path in named_paths(line, &here) {
                let Some((to, to_layer)) = layer_of(&path) else {
                    continue;
                };
                let pair = (from.to_owned(), to.to_owned());
                if to_layer > from_layer && seen.insert(pair.clone()) {
                    let at = format!(
                        "{rel}:{}: {from} (layer {from_layer}) imports {to} (layer {to_layer})",
                        n + 1
                    );
                    upward.push((pair, at));
                }
            }
        }
    }
    upward
}

#[test]
fn modules_import_only_downward() {
    let upward = upward_imports();
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(from, to, _)| ((*from).to_owned(), (*to).to_owned()))
        .collect();
    let new: Vec<&str> = upward
        .iter()
        .filter(|(pair, _)| !known.contains(pair))
        .map(|(_, at)| at.as_str())
        .collect();
    assert!(
        new.is_empty(),
        "imports that run up a layer (move the item down, or pass it in from above; see \
         docs/development.md):\n  {}",
        new.join("\n  ")
    );
    let found: BTreeSet<(String, String)> = upward.into_iter().map(|(pair, _)| pair).collect();
    let gone: Vec<&(String, String)> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "listed in KNOWN_UPWARD but no longer imported, remove them: {gone:?}"
    );
}

#[test]
fn every_module_has_a_layer() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter_map(|f| module_of(f))
        .filter(|m| layer_of(m).is_none())
        .map(|m| m.join("::"))
        .collect();
    assert!(missing.is_empty(), "modules without a layer: {missing:?}");
}

#[test]
fn the_check_sees_an_upward_import() {
    // The parser itself: a `use` of a higher layer, a grouped one and a `super::` path.
    let here = vec!["replies".to_owned()];
    let paths = named_paths("use crate::session::merge::MergePlan;", &here);
    assert_eq!(layer_of(&paths[0]), Some(("session", 8)));
    let grouped = named_paths("use crate::{backend::Dest, router::ShardRoute};", &here);
    let names: Vec<_> = grouped.iter().filter_map(|p| layer_of(p)).collect();
    assert_eq!(names, [("backend", 3), ("router", 5)]);
    let writer = vec!["router".to_owned(), "writer".to_owned()];
    let up = named_paths("use super::{Router, RoutingTable};", &writer);
    assert_eq!(layer_of(&up[0]), Some(("router", 5)));
    let deep = named_paths(
        "let x = crate::router::writer::TopologyWriter::mint();",
        &["session".to_owned()],
    );
    assert_eq!(layer_of(&deep[0]), Some(("router::writer", 1)));
    assert!(named_paths("use redshard_crate::x;", &here).is_empty());
}

/// The modules of this crate that may name the topology's writer: the router that mints it,
/// the backend whose `Node::fence` takes it, and the state that hands it over at start. Of
/// the other crates, only the controller (`control/src`) holds it; the compiler already
/// makes sure nobody else mints one (its constructor is private to this crate), and this
/// makes sure nobody else is handed one either.
const WRITER_NAMED_IN: &[&str] = &["router", "router::writer", "backend", "state"];

/// The other crates of the proxy, which must not name the writer.
const WRITER_NOT_NAMED_IN: &[&str] = &["metrics/src", "proxy/src", "admin/src"];

/// Whether `file` names `TopologyWriter` outside a comment.
fn names_the_writer(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .any(|l| !l.trim_start().starts_with("//") && l.contains("TopologyWriter"))
}

#[test]
fn only_the_controller_holds_the_writer() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut outside = Vec::new();
    for file in &files {
        let Some(here) = module_of(file) else {
            continue;
        };
        let Some((module, _)) = layer_of(&here) else {
            continue;
        };
        if names_the_writer(file) && !WRITER_NAMED_IN.contains(&module) {
            outside.push(file.strip_prefix(src_dir()).unwrap().display().to_string());
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in WRITER_NOT_NAMED_IN {
        let mut files = Vec::new();
        rust_files(&workspace.join(dir), &mut files);
        files.sort();
        outside.extend(
            files
                .iter()
                .filter(|f| names_the_writer(f))
                .map(|f| f.strip_prefix(&workspace).unwrap().display().to_string()),
        );
    }
    assert!(
        outside.is_empty(),
        "the topology's writer is named outside the router, backend, state and controller \
         (ask the controller to change the topology instead): {outside:?}"
    );
}
