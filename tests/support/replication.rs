//! Helpers for mirroring and failover tests: digests, key expiry times, waiting for a state.

use std::time::Duration;

pub use crate::wait::wait_until;

use crate::{Client, Reply};

/// `DEBUG DIGEST` of the node at `addr` (nodes must run with `--enable-debug-command yes`).
pub async fn digest(addr: &str) -> String {
    match Client::connect(addr.to_owned())
        .await
        .cmd(&["DEBUG", "DIGEST"])
        .await
    {
        Reply::Status(s) => s,
        other => panic!("DEBUG DIGEST on {addr}: {other:?}"),
    }
}

/// Waits (at most 10 s) until the replica at `replica` holds exactly the data of its master
/// at `master` (`DEBUG DIGEST`): Redis replication is asynchronous, so a replica may still be
/// applying the master's last writes.
pub async fn wait_digest_equal(master: &str, replica: &str) {
    let what = format!("{replica} to hold its master {master}'s data");
    wait_until(Duration::from_secs(10), &what, || async {
        digest(master).await == digest(replica).await
    })
    .await;
}

/// Every key of the node at `addr` with its `PEXPIRETIME`, sorted.
pub async fn expiry_times(addr: &str) -> Vec<(Vec<u8>, i64)> {
    let mut client = Client::connect(addr.to_owned()).await;
    let mut keys = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let Reply::Array(parts) = client.cmd(&["SCAN", &cursor, "COUNT", "1000"]).await else {
            panic!("SCAN failed on {addr}");
        };
        cursor = parts[0].text();
        if let Reply::Array(batch) = &parts[1] {
            for key in batch {
                if let Reply::Bulk(Some(key)) = key {
                    keys.push(key.clone());
                }
            }
        }
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let commands: Vec<Vec<&[u8]>> = chunk
            .iter()
            .map(|k| vec![b"PEXPIRETIME".as_slice(), k.as_slice()])
            .collect();
        for (key, reply) in chunk.iter().zip(client.pipeline(&commands).await) {
            match reply {
                Reply::Int(at) => out.push((key.clone(), at)),
                other => panic!("PEXPIRETIME on {addr}: {other:?}"),
            }
        }
    }
    out
}

/// `INFO` field `field` of section `section` on the node at `addr`.
pub async fn info_field(addr: &str, section: &str, field: &str) -> Option<String> {
    Client::connect(addr.to_owned())
        .await
        .info_field(section, field)
        .await
}

/// Waits (at most 5 s) until field `field` of `INFO section` on the node at `addr` reads
/// `want` (a client blocked, a replica linked, ...).
pub async fn wait_for_info(addr: &str, section: &str, field: &str, want: &str) {
    let what = format!("{field}:{want} on {addr}");
    wait_until(Duration::from_secs(5), &what, || async move {
        info_field(addr, section, field).await.as_deref() == Some(want)
    })
    .await;
}

/// Sends SIGSTOP or SIGCONT to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid}");
}
