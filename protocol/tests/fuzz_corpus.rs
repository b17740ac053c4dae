//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets' own invariant
//! checks, in the ordinary test run: no libfuzzer, no nightly flags.
//!
//! The checks live in `fuzz/src/checks.rs` and are compiled here as a module, so a seed or a
//! minimised crash added to the corpus is checked by every `cargo test` exactly as the fuzzer
//! checks it. A missing or empty corpus folder fails, so this test cannot silently test nothing.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::io::Write;
use std::panic;
use std::path::{Path, PathBuf};
use std::{fs, io};

/// The folder of the corpus of each fuzz target.
fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of the target's corpus folder; fails naming every input that
/// broke an invariant.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus folder entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus folder {} is empty: nothing would be tested",
        dir.display()
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    // Straight to stderr, past the test harness's capture: the count shows in a normal run.
    let _ = writeln!(
        io::stderr(),
        "fuzz corpus: replayed {} inputs of {target}",
        files.len()
    );
    assert!(
        failed.is_empty(),
        "{target}: invariants broken by {failed:#?} (the panic messages are above)"
    );
}

#[test]
fn request_scanner_corpus() {
    replay("request_scanner", checks::request_scanner);
}

#[test]
fn reply_scanner_corpus() {
    replay("reply_scanner", checks::reply_scanner);
}

#[test]
fn command_keys_corpus() {
    replay("command_keys", checks::command_keys);
}

/// Every corpus folder belongs to a target replayed above (a new target's corpus must not go
/// unreplayed).
#[test]
fn every_corpus_folder_is_replayed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for entry in fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let name = entry.expect("corpus entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            ["request_scanner", "reply_scanner", "command_keys"].contains(&name.as_ref()),
            "fuzz/corpus/{name} is not replayed by this test"
        );
    }
}
