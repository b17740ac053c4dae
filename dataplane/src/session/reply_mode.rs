//! CLIENT REPLY ON|OFF|SKIP: which of the client's replies the proxy writes.
//!
//! Replies keep their places in the reply queue (so order and the client's limits work as
//! always); what is silenced is dropped when it reaches the front, by its entry's sequence
//! number. As in Redis, OFF silences everything from the next entry on (replies, pub/sub
//! messages, MONITOR lines) until ON, whose `+OK` is written; SKIP silences the next
//! command's reply. OFF and SKIP themselves are not answered. A client that never sends
//! CLIENT REPLY carries only an empty `Option` for it.

use std::collections::VecDeque;

use bytes::Bytes;

use super::dispatch::Action;
use super::Ctx;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::encode;

/// Where SKIP stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Skip {
    /// No SKIP.
    #[default]
    None,
    /// SKIP is the command being dispatched: the next one is silenced.
    Sent,
    /// The command being dispatched is silenced.
    Armed,
}

/// A client's silenced replies.
#[derive(Debug, Default)]
pub(crate) struct Silence {
    /// OFF since this sequence number, until ON.
    off_since: Option<u64>,
    /// SKIP's progress.
    skip: Skip,
    /// Sequence ranges `[start, end)` silenced and not yet all taken, oldest first.
    ranges: VecDeque<(u64, u64)>,
}

impl Silence {
    /// Whether the entry `seq` is dropped; forgets ranges already passed.
    pub(crate) fn drops(&mut self, seq: u64) -> bool {
        while self.ranges.front().is_some_and(|&(_, end)| end <= seq) {
            self.ranges.pop_front();
        }
        self.off_since.is_some_and(|since| seq >= since)
            || self
                .ranges
                .front()
                .is_some_and(|&(start, end)| (start..end).contains(&seq))
    }

    /// Whether nothing is or will be silenced.
    pub(crate) fn idle(&self) -> bool {
        self.off_since.is_none() && self.skip == Skip::None && self.ranges.is_empty()
    }

    /// Ends OFF and SKIP before the entry `next` (ON, RESET).
    fn end(&mut self, next: u64) {
        if let Some(since) = self.off_since.take() {
            self.ranges.push_back((since, next));
        }
        self.skip = Skip::None;
    }

    /// A command was dispatched whose entries are `[first, next)`: silenced when armed by
    /// SKIP; a SKIP just sent arms for the next command.
    pub(crate) fn dispatched(&mut self, first: u64, next: u64) {
        match self.skip {
            Skip::Armed => {
                if next > first && self.off_since.is_none() {
                    self.ranges.push_back((first, next));
                }
                self.skip = Skip::None;
            }
            Skip::Sent => self.skip = Skip::Armed,
            Skip::None => {}
        }
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`.
pub(super) fn client_reply(ctx: &mut Ctx, mode: &[u8]) -> Action {
    let next = ctx.queue.next_seq();
    if mode.eq_ignore_ascii_case(b"on") {
        if let Some(silence) = ctx.silence.as_deref_mut() {
            silence.end(next);
        }
        Action::reply(ctx, Bytes::from_static(encode::OK))
    } else if mode.eq_ignore_ascii_case(b"off") {
        let silence = ctx.silence.get_or_insert_with(Box::default);
        silence.off_since.get_or_insert(next);
        // No reply, so no entry to label.
        ctx.current_cmd = None;
        Action::Done
    } else if mode.eq_ignore_ascii_case(b"skip") {
        let silence = ctx.silence.get_or_insert_with(Box::default);
        // Redis ignores SKIP while OFF.
        if silence.off_since.is_none() {
            silence.skip = Skip::Sent;
        }
        ctx.current_cmd = None;
        Action::Done
    } else {
        Action::error(ctx, ClientError::SyntaxError)
    }
}

/// RESET turns replies back on (its own `+RESET` is written).
pub(super) fn reset(ctx: &mut Ctx) {
    let next = ctx.queue.next_seq();
    if let Some(silence) = ctx.silence.as_deref_mut() {
        silence.end(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_silences_until_on_and_skip_the_next_command() {
        let mut s = Silence {
            off_since: Some(3),
            ..Silence::default()
        };
        assert!(!s.drops(2));
        assert!(s.drops(3) && s.drops(10));
        s.end(6);
        assert!(s.drops(4) && s.drops(5) && !s.drops(6));
        assert!(s.idle());

        s.skip = Skip::Sent;
        s.dispatched(6, 6); // SKIP itself: no entry.
        s.dispatched(6, 7); // Silenced.
        s.dispatched(7, 8);
        assert!(s.drops(6) && !s.drops(7));
        assert!(s.idle());
    }
}
