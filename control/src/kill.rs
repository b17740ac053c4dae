//! `SCRIPT KILL` and `FUNCTION KILL` for clients.
//!
//! A node running a script answers nothing else until it ends, and the master connections
//! the data path shares queue every client's request behind it: a kill sent there would wait
//! for the script it is meant to stop. So a session hands the command to the controller
//! ([`ControlEvent::KillScript`](crate::events::ControlEvent::KillScript)), which sends it to
//! every master at once, each on a control connection of its own (`AUTH` and the kill are
//! among the commands Redis serves while a script runs), and answers as one server would:
//! `+OK` when some master stopped a script; else the first other error a master gave (such as
//! `-UNKILLABLE` for a script that already wrote); else the error of a master that could not
//! be asked; else `-NOTBUSY` (no master runs one).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use redshard_config::NodeAddr;
use tokio::sync::oneshot;
use tracing::info;

use super::conn::ConnError;
use super::Controller;
use redshard_dataplane::events::ScriptKill;
use redshard_protocol::client_error::{ClientError, Reached};
use redshard_protocol::resp::reply;

impl Controller {
    /// Sends `which` to every master and answers `done` with the client's reply (see the
    /// module docs).
    pub(super) fn kill_script(self: &Arc<Self>, which: ScriptKill, done: oneshot::Sender<Bytes>) {
        let controller = Arc::clone(self);
        tokio::spawn(async move {
            let masters: Vec<NodeAddr> = {
                let table = controller.state.router.load();
                let mut masters: Vec<NodeAddr> = table
                    .topology()
                    .shards
                    .iter()
                    .map(|s| s.master.clone())
                    .collect();
                masters.dedup();
                masters
            };
            let timeout = controller.state.config.health.timeout;
            let request = which.request();
            let answers = join_all(masters.iter().map(|master| {
                let controller = &controller;
                async move {
                    let answer = async {
                        let mut conn = controller.connect(master, timeout).await?;
                        conn.call(&request).await
                    }
                    .await;
                    (master.clone(), answer)
                }
            }))
            .await;
            let reply = combine(answers);
            if reply::is_ok(&reply) {
                info!(command = ?which, "a client stopped a running script");
            }
            let _ = done.send(reply);
        });
    }
}

/// The client's reply from every master's answer (see the module docs).
fn combine(answers: Vec<(NodeAddr, Result<Bytes, ConnError>)>) -> Bytes {
    // `-NOTBUSY`: the code of the error, whatever the text after it.
    let notbusy_error = ClientError::NotBusy.to_reply();
    let notbusy_code = notbusy_error
        .split(|&b| b == b' ')
        .next()
        .unwrap_or_default();
    let mut other: Option<Bytes> = None;
    let mut unreachable: Option<(NodeAddr, ConnError)> = None;
    let mut notbusy: Option<Bytes> = None;
    for (master, answer) in answers {
        match answer {
            Ok(answer) if reply::is_ok(&answer) => return answer,
            Ok(answer) if answer.starts_with(notbusy_code) => {
                notbusy.get_or_insert(answer);
            }
            Ok(answer) => {
                other.get_or_insert(answer);
            }
            Err(error) => {
                unreachable.get_or_insert((master, error));
            }
        }
    }
    if let Some(answer) = other {
        return answer;
    }
    if let Some((addr, error)) = unreachable {
        return ClientError::Backend {
            addr,
            why: format!("could not be asked to stop its script: {error}"),
            reached: Reached::No,
        }
        .to_reply();
    }
    notbusy.unwrap_or(notbusy_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> NodeAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    fn answer(text: &'static [u8]) -> Result<Bytes, ConnError> {
        Ok(Bytes::from_static(text))
    }

    const NOTBUSY: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";

    #[test]
    fn one_stopped_script_is_ok_and_none_is_notbusy() {
        let answers = vec![
            (addr(1), answer(NOTBUSY)),
            (addr(2), answer(b"+OK\r\n")),
            (addr(3), Err(ConnError::Refused(addr(3)))),
        ];
        assert_eq!(&combine(answers)[..], b"+OK\r\n");
        let answers = vec![(addr(1), answer(NOTBUSY)), (addr(2), answer(NOTBUSY))];
        assert_eq!(&combine(answers)[..], NOTBUSY);
        assert_eq!(&combine(Vec::new())[..], NOTBUSY);
    }

    #[test]
    fn a_script_that_cannot_be_stopped_or_a_master_that_cannot_be_asked_is_said() {
        let unkillable: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands against the dataset.\r\n";
        let answers = vec![
            (addr(1), answer(NOTBUSY)),
            (addr(2), Err(ConnError::Refused(addr(2)))),
            (addr(3), Ok(Bytes::from_static(unkillable))),
        ];
        assert_eq!(&combine(answers)[..], unkillable);
        let answers = vec![
            (addr(1), answer(NOTBUSY)),
            (addr(2), Err(ConnError::Refused(addr(2)))),
        ];
        let reply = combine(answers);
        assert!(
            reply.starts_with(b"-ERR backend 127.0.0.1:2 could not be asked"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
}
