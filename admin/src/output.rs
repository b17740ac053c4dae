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

/// `count` and `noun`, with an `s` unless the count is one: "1 key", "2 keys", "0 slots".
pub fn plural(count: impl std::fmt::Display, noun: &str) -> String {
    let count = count.to_string();
    let s = if count == "1" { "" } else { "s" };
    format!("{count} {noun}{s}")
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(plural(1_usize, "key"), "1 key");
        assert_eq!(plural(0_u64, "slot"), "0 slots");
        assert_eq!(plural(2_i64, "replica"), "2 replicas");
        assert_eq!(plural(11_usize, "move"), "11 moves");
    }
}
