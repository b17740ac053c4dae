//! Writing to stdout. Rust ignores SIGPIPE, so `println!` panics when the reader has gone
//! (`redshard-admin check | head`); a closed stdout ends the program quietly instead.

use std::io::Write;

/// Writes one line to stdout; exits (0 when the reader closed the pipe, 1 on another error)
/// when it cannot.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        std::process::exit(i32::from(e.kind() != std::io::ErrorKind::BrokenPipe));
    }
}
