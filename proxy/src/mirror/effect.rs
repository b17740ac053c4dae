//! How a write is made deterministic and what each replica receives (interim: verbatim).

use bytes::Bytes;

use crate::resp::{Args, Protocol};

/// What the proxy does with a write before sending it.
#[derive(Debug)]
pub struct Prepared {
    /// The request to send instead of the client's bytes, if rewritten.
    pub request: Option<Bytes>,
    /// How the replicas get the write once the master answered.
    pub effect: Effect,
}

/// How the replicas get one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The request as sent to the master; the replica must answer the same bytes.
    Same,
    /// Not a write: nothing to mirror.
    Skip,
}

/// What the replica receives for one write and the reply it must give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrored {
    /// The replica's request.
    pub request: Bytes,
    /// Its exact expected reply.
    pub expect: Bytes,
}

/// Decides how `args` (command `name`) is sent and mirrored.
#[must_use]
pub fn prepare(_name: &str, _args: &Args<'_>, _now_ms: i64) -> Prepared {
    Prepared {
        request: None,
        effect: Effect::Same,
    }
}

/// The effect of a transaction of requests with `queued` effects.
#[must_use]
pub fn prepare_exec(_queued: Vec<Effect>) -> Effect {
    Effect::Same
}

/// The replica's request for `effect`, given the master's reply.
#[must_use]
pub fn replica_request(
    effect: &Effect,
    request: &Bytes,
    master_reply: &Bytes,
    _protocol: Protocol,
) -> Option<Mirrored> {
    match effect {
        Effect::Same => Some(Mirrored {
            request: request.clone(),
            expect: master_reply.clone(),
        }),
        Effect::Skip => None,
    }
}
