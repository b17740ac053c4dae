//! Asking the other proxies of the fleet whether they reach etcd: what a proxy out of touch
//! with etcd does before it decides between serving its last topology (`Frozen`) and serving
//! nothing (`Offline`). See `docs/fleet.md`, "etcd entirely down", and `LIFECYCLE.md`.
//!
//! Each proxy answers `FLEETPEER` on its admin port ([`PeerStatus`]). The asking proxy
//! connects to the `admin` address of every member it last read from etcd, AUTHs with its
//! own `admin_password` (the same on every proxy of a fleet), and [`judge`]s the answers:
//! etcd is down for the whole fleet only if every one of them answered, none is in touch with
//! etcd, and none has installed a newer topology than this proxy.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redshard_cluster::Member;
use redshard_config::NodeAddr;
use redshard_protocol::resp::{encode, reply};

use crate::conn::ControlConn;

/// One proxy's answer to `FLEETPEER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its id in the fleet.
    pub id: String,
    /// Whether its etcd session is alive (renewed within the lease TTL).
    pub session: bool,
    /// Whether it is in touch with etcd: its session is alive and a renewal sent less than
    /// half a TTL ago succeeded.
    pub contact: bool,
    /// Its role's label (`leader`, `follower`, `frozen`, `offline`).
    pub role: String,
    /// The topology epoch it has installed.
    pub epoch: u64,
}

impl PeerStatus {
    /// Reads a `FLEETPEER` reply (an array of alternating field names and values).
    fn parse(answer: &[u8]) -> Result<PeerStatus, String> {
        if reply::is_error(answer) {
            return Err(format!(
                "answered {}",
                String::from_utf8_lossy(answer).trim_end()
            ));
        }
        let elements = reply::aggregate_elements(answer)
            .ok_or_else(|| "FLEETPEER's reply is not an array".to_owned())?;
        let texts: Vec<String> = elements
            .into_iter()
            .map(|range| text_of(&answer[range]))
            .collect::<Option<_>>()
            .ok_or_else(|| "FLEETPEER's reply holds something else than text".to_owned())?;
        let field = |name: &str| {
            texts
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1).cloned())
                .ok_or_else(|| format!("FLEETPEER's reply has no {name}"))
        };
        Ok(PeerStatus {
            id: field("id")?,
            session: field("session")? == "alive",
            contact: field("contact")? == "yes",
            role: field("role")?,
            epoch: field("epoch")?
                .parse()
                .map_err(|_| "FLEETPEER's epoch is not a number".to_owned())?,
        })
    }
}

/// The text of a bulk string, simple string or integer reply.
fn text_of(element: &[u8]) -> Option<String> {
    let body = element.strip_suffix(b"\r\n")?;
    match body.first()? {
        b'+' | b':' => Some(String::from_utf8_lossy(&body[1..]).into_owned()),
        b'$' => {
            let start = body.iter().position(|&b| b == b'\n')? + 1;
            Some(String::from_utf8_lossy(body.get(start..)?).into_owned())
        }
        _ => None,
    }
}

/// What the answers of the other proxies mean for a proxy out of touch with etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every other proxy answered, none reaches etcd, none has a newer topology: etcd is down
    /// for the whole fleet (as this proxy knows it), so nobody can change the topology and
    /// the last one may be served.
    Freeze,
    /// Some proxy may reach etcd, or may have a newer topology: serve nothing. The text says
    /// why, for the log.
    Stop(String),
}

/// Judges the answers `asked` (each member with its answer or why it could not be asked)
/// for a proxy that has installed `epoch`.
#[must_use]
pub fn judge(epoch: u64, asked: &[(Member, Result<PeerStatus, String>)]) -> Verdict {
    for (member, answer) in asked {
        match answer {
            Err(e) => {
                return Verdict::Stop(format!(
                    "the proxy {} cannot be asked whether it reaches etcd ({e})",
                    member.id
                ))
            }
            Ok(peer) if peer.contact => {
                return Verdict::Stop(format!("the proxy {} reaches etcd", member.id))
            }
            Ok(peer) if peer.epoch > epoch => {
                return Verdict::Stop(format!(
                    "the proxy {} has installed a newer topology (epoch {}, this proxy {epoch})",
                    member.id, peer.epoch
                ))
            }
            Ok(_) => {}
        }
    }
    Verdict::Freeze
}

/// Who asks, for the proxies asked: its id and its admin address, which they ask back while
/// they are out of touch with etcd themselves (`FLEETPEER FROM <id> <admin>`).
#[derive(Clone, Copy, Debug)]
pub struct Asker<'a> {
    /// The asking proxy's id.
    pub id: &'a str,
    /// Its admin address, when it registered one.
    pub admin: Option<&'a str>,
    /// `admin_password`, to authenticate with.
    pub password: Option<&'a str>,
}

/// Asks every one of `members` (the asker left out) with `FLEETPEER`, all at once, each
/// within `timeout`; then [`judge`]s for a proxy that installed `epoch`.
pub async fn poll(asker: Asker<'_>, members: &[Member], epoch: u64, timeout: Duration) -> Verdict {
    let others: Vec<&Member> = members.iter().filter(|m| m.id != asker.id).collect();
    let answers = futures_util::future::join_all(others.iter().map(|member| async move {
        match &member.admin {
            None => Err("it registered no admin address".to_owned()),
            Some(admin) => tokio::time::timeout(timeout, ask(admin, asker, timeout))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis()))),
        }
    }))
    .await;
    let asked: Vec<(Member, Result<PeerStatus, String>)> = others
        .into_iter()
        .cloned()
        .zip(answers)
        .map(|(member, answer)| {
            // An answer from another proxy than the one registered there is no answer.
            let answer = answer.and_then(|peer| {
                if peer.id == member.id {
                    Ok(peer)
                } else {
                    Err(format!("{} answers there", peer.id))
                }
            });
            (member, answer)
        })
        .collect();
    judge(epoch, &asked)
}

/// One `FLEETPEER` exchange with the admin port at `admin`.
async fn ask(admin: &str, asker: Asker<'_>, timeout: Duration) -> Result<PeerStatus, String> {
    let addr = NodeAddr::parse(admin).map_err(|e| format!("{admin}: {e}"))?;
    let auth = asker.password.map(|password| {
        let mut request = BytesMut::new();
        encode::request(&mut request, &[b"AUTH", password.as_bytes()]);
        Bytes::from(request)
    });
    let mut conn = ControlConn::open(&addr, auth.as_ref(), None, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut request: Vec<&[u8]> = vec![b"FLEETPEER"];
    if let Some(own) = asker.admin {
        request.extend([b"FROM".as_slice(), asker.id.as_bytes(), own.as_bytes()]);
    }
    let answer = conn.call(&request).await.map_err(|e| e.to_string())?;
    PeerStatus::parse(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            addr: String::new(),
            admin: Some("127.0.0.1:1".to_owned()),
            epoch: 0,
        }
    }

    fn peer(id: &str, contact: bool, epoch: u64) -> Result<PeerStatus, String> {
        Ok(PeerStatus {
            id: id.to_owned(),
            session: contact,
            contact,
            role: "offline".to_owned(),
            epoch,
        })
    }

    #[test]
    fn only_a_fleet_wholly_out_of_touch_freezes() {
        // Alone: nobody to disagree.
        assert_eq!(judge(5, &[]), Verdict::Freeze);
        let out = [
            (member("b"), peer("b", false, 5)),
            (member("c"), peer("c", false, 4)),
        ];
        assert_eq!(judge(5, &out), Verdict::Freeze);
        let reaching = [
            (member("b"), peer("b", false, 5)),
            (member("c"), peer("c", true, 5)),
        ];
        assert!(
            matches!(judge(5, &reaching), Verdict::Stop(why) if why.contains("c reaches etcd"))
        );
        let silent = [(member("b"), Err("refused".to_owned()))];
        assert!(matches!(judge(5, &silent), Verdict::Stop(why) if why.contains("cannot be asked")));
        let newer = [(member("b"), peer("b", false, 6))];
        assert!(matches!(judge(5, &newer), Verdict::Stop(why) if why.contains("newer topology")));
    }

    #[test]
    fn a_fleetpeer_reply_is_read() {
        let mut out = BytesMut::new();
        encode::array_header(&mut out, 10);
        for (name, value) in [
            ("id", "p2"),
            ("session", "lost"),
            ("contact", "no"),
            ("role", "frozen"),
        ] {
            encode::bulk(&mut out, name.as_bytes());
            encode::bulk(&mut out, value.as_bytes());
        }
        encode::bulk(&mut out, b"epoch");
        encode::integer(&mut out, 7);
        let status = PeerStatus::parse(&out).unwrap();
        assert_eq!(
            status,
            PeerStatus {
                id: "p2".into(),
                session: false,
                contact: false,
                role: "frozen".into(),
                epoch: 7,
            }
        );
        assert!(PeerStatus::parse(b"-NOAUTH Authentication required.\r\n").is_err());
    }
}
