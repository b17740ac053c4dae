//! Reading the workspace's source as text, for the checks that need no build of it
//! (`layers.rs`, `error_texts.rs`).

use std::path::{Path, PathBuf};

/// Appends every `.rs` file below `dir` to `out`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
