//! Every error reply the proxy gives a client is a `ClientError` (`protocol/src/client_error.rs`),
//! which owns the texts: this test reads the `src/**/*.rs` of every crate of the proxy as text
//! and fails on a string literal that looks like an error reply written anywhere else
//! (`"-ERR ..."`, `b"-..."`, `"CROSSSLOT ..."`, `"ERR ..."` handed to an encoder). See
//! docs/development.md for how to add an error.
//!
//! Not checked: test code (`#[cfg(test)]` modules, `tests.rs` and `*_tests.rs` files),
//! comments, the protocol's own errors that `ClientError` wraps ([`OWNERS`]), and the admin port
//! (`proxy/src/admin`), whose replies go to operators, not to data clients, and keep their own
//! texts. A literal that *reads* a node's reply (`starts_with("-NOAUTH")`) is listed in
//! [`READS_REPLIES`] with where it is; the test also fails when a listed one is gone.

use std::path::{Path, PathBuf};

mod source;
use source::rust_files;

/// Redis's error codes (and redshard's use of them). A literal starting with one of these,
/// followed by a space or the end of the literal, is an error text.
const CODES: &[&str] = &[
    "ERR",
    "WRONGTYPE",
    "CROSSSLOT",
    "CLUSTERDOWN",
    "NOSCRIPT",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "EXECABORT",
    "BUSY",
    "BUSYKEY",
    "LOADING",
    "READONLY",
    "OOM",
    "TRYAGAIN",
    "NOPROTO",
    "MOVED",
    "ASK",
    "MASTERDOWN",
    "MISCONF",
    "NOREPLICAS",
    "NOGROUP",
    "UNBLOCKED",
];

/// The files that own error texts, relative to the workspace: `ClientError`, and the two
/// protocol errors it wraps (`ProtocolError`: framing; `CommandError`: unknown command, arity,
/// key arguments, whose texts are found by the command table's code).
const OWNERS: &[&str] = &[
    "protocol/src/client_error.rs",
    "protocol/src/resp/mod.rs",
    "protocol/src/command/error.rs",
    "protocol/src/command/procs.rs",
    "proxy/src/admin",
];

/// Literals that match a node's error reply rather than write one: (file,
/// the literal as written, why it is there).
const READS_REPLIES: &[(&str, &str, &str)] = &[
    (
        "dataplane/src/backend/connect.rs",
        "\"WRONGPASS\"",
        "tells a refused AUTH from a node's other errors",
    ),
    (
        "dataplane/src/backend/connect.rs",
        "\"NOAUTH\"",
        "tells a refused AUTH from a node's other errors",
    ),
    (
        "dataplane/src/backend/connect.rs",
        "\"ERR max number of clients reached\"",
        "tells a node at maxclients from a refused handshake step",
    ),
    (
        "dataplane/src/backend/lane.rs",
        "\"-WRONGPASS\"",
        "a refused switch to the proxy's ACL user",
    ),
    (
        "control/src/nodes.rs",
        "b\"-NOAUTH\"",
        "a node that wants credentials still answers",
    ),
    (
        "dataplane/src/migration.rs",
        "\"BUSYKEY\"",
        "a fleet's MIGRATE found the key on the target too",
    ),
];

/// The workspace root (this crate is `proxy/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proxy/ is in the workspace")
        .to_path_buf()
}

/// The string literals' openings on `line`: the text right after each `"` that starts one
/// (not a closing quote, not an escaped one).
fn literal_starts(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut inside = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if inside => i += 1,
            b'"' => {
                if !inside {
                    out.push(&line[i + 1..]);
                }
                inside = !inside;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether a literal starting with `text` is an error reply: `-` and a capital letter, or an
/// error code followed by a space, `\r` or the end of the literal.
fn is_error_text(text: &str) -> bool {
    if let Some(rest) = text.strip_prefix('-') {
        return rest.starts_with(|c: char| c.is_ascii_uppercase());
    }
    CODES.iter().any(|code| {
        text.strip_prefix(code)
            .is_some_and(|rest| rest.starts_with([' ', '"']) || rest.starts_with("\\r"))
    })
}

/// `(file, line number, line)` of every error literal outside test code and comments.
fn error_literals() -> Vec<(String, usize, String)> {
    let mut files = Vec::new();
    for dir in [
        "protocol/src",
        "metrics/src",
        "dataplane/src",
        "control/src",
        "proxy/src",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let name = file.file_name().unwrap().to_string_lossy();
        if OWNERS.iter().any(|owner| rel.starts_with(owner))
            || name == "tests.rs"
            || name.ends_with("_tests.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            // A file's test module is its last item.
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            if literal_starts(code).into_iter().any(is_error_text) {
                found.push((rel.clone(), n + 1, line.trim().to_owned()));
            }
        }
    }
    found
}

#[test]
fn error_texts_live_in_client_error() {
    let found = error_literals();
    let written: Vec<String> = found
        .iter()
        .filter(|(file, _, line)| {
            !READS_REPLIES
                .iter()
                .any(|(f, literal, _)| f == file && line.contains(literal))
        })
        .map(|(file, n, line)| format!("{file}:{n}: {line}"))
        .collect();
    assert!(
        written.is_empty(),
        "error texts written outside protocol/src/client_error.rs (add a ClientError variant \
         and use it; see docs/development.md):\n  {}",
        written.join("\n  ")
    );
    let gone: Vec<&(&str, &str, &str)> = READS_REPLIES
        .iter()
        .filter(|(f, literal, _)| {
            !found
                .iter()
                .any(|(file, _, line)| file == f && line.contains(literal))
        })
        .collect();
    assert!(
        gone.is_empty(),
        "listed in READS_REPLIES but no longer in the code, remove them: {gone:?}"
    );
}

#[test]
fn the_scan_sees_error_literals() {
    for line in [
        r#"Action::error(ctx, "ERR syntax error")"#,
        r#"Bytes::from_static(b"-ERR backend lane closed\r\n")"#,
        r#"format!("-ERR backend {addr} {why}\r\n")"#,
        r#"const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";"#,
        r#"x("NOAUTH")"#,
    ] {
        assert!(
            literal_starts(line).into_iter().any(is_error_text),
            "{line}"
        );
    }
    for line in [
        r#"rules.extend(["-@dangerous", "-@admin"].map(String::from));"#,
        r#"let s = "ERRATA"; let t = "-1";"#,
        r#"warn!("AUTH failed"); f("x\"ERR ", "y")"#,
    ] {
        let flagged: Vec<&str> = literal_starts(line)
            .into_iter()
            .filter(|t| is_error_text(t))
            .collect();
        assert!(flagged.is_empty(), "{line}: {flagged:?}");
    }
}
