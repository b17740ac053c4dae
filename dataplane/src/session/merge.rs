//! Merging the replies of a request that was split across shards or fanned out to every master.
//!
//! The parts arrive as raw reply bytes; only here are they decoded (just enough) and a new reply
//! encoded. An error from any part becomes the reply (the first one, in part order), the same
//! choice Redis Cluster clients make when one node of a multi-node command fails.

use bytes::{Bytes, BytesMut};

use crate::outbuf::OutBuf;
pub use crate::replies::MergePlan;
use crate::replies::TxAnswer;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::{encode, reply, Protocol};

/// What a part of another type than expected becomes.
const UNEXPECTED: ClientError = ClientError::UnexpectedSplitReply;

/// Writes the merged reply of `parts` to `out`.
pub fn merge(parts: &[Bytes], plan: MergePlan, out: &mut OutBuf) {
    if let MergePlan::Info {
        text,
        nodes,
        protocol,
    } = plan
    {
        out.push(super::info::with_nodes(text, nodes, parts, protocol));
        return;
    }
    if let MergePlan::ConfigGet {
        overrides,
        protocol,
    } = plan
    {
        let mut buf = BytesMut::new();
        config_get(
            parts.first().map_or(&[][..], |p| p),
            &overrides,
            protocol,
            &mut buf,
        );
        out.push(buf.freeze());
        return;
    }
    if let MergePlan::Exec { answers, protocol } = plan {
        out.push(exec(parts, answers, protocol));
        return;
    }
    if plan == MergePlan::Last {
        if let Some(last) = parts.last() {
            out.push(last.clone());
        }
        return;
    }
    if let Some(error) = parts.iter().find(|p| reply::is_error(p)) {
        out.push(error.clone());
        return;
    }
    let mut buf = BytesMut::new();
    match plan {
        MergePlan::Mget { order } => mget(parts, &order, &mut buf),
        MergePlan::AllOk => match parts.iter().find(|p| !reply::is_ok(p)) {
            Some(other) => {
                out.push(other.clone());
                return;
            }
            None => buf.extend_from_slice(encode::OK),
        },
        MergePlan::SumIntegers => match fold_integers(parts, 0, i64::saturating_add) {
            Some(sum) => encode::integer(&mut buf, sum),
            None => UNEXPECTED.encode(&mut buf),
        },
        MergePlan::ConcatArrays => {
            let mut bodies = Vec::with_capacity(parts.len());
            let mut count = 0;
            for part in parts {
                let Some(elements) = reply::aggregate_elements(part) else {
                    UNEXPECTED.encode(&mut buf);
                    out.push(buf.freeze());
                    return;
                };
                count += elements.len();
                if let (Some(first), Some(last)) = (elements.first(), elements.last()) {
                    bodies.push(&part[first.start..last.end]);
                }
            }
            encode::array_header(&mut buf, count);
            for body in bodies {
                buf.extend_from_slice(body);
            }
        }
        MergePlan::First => {
            if let Some(first) = parts.first() {
                out.push(first.clone());
            }
            return;
        }
        MergePlan::AndArrays => and_arrays(parts, &mut buf),
        MergePlan::Oldest => match fold_integers(parts, i64::MAX, i64::min) {
            // No part at all: 0, as before any save.
            Some(oldest) => encode::integer(&mut buf, if parts.is_empty() { 0 } else { oldest }),
            None => UNEXPECTED.encode(&mut buf),
        },
        MergePlan::AnyNonNull { start } => {
            let n = parts.len().max(1);
            let found = (0..parts.len())
                .map(|i| &parts[(start + i) % n])
                .find(|p| !p.starts_with(b"$-1") && !p.starts_with(b"_"));
            // All empty: any part's null is the null of the client's protocol.
            match found.or(parts.first()) {
                Some(part) => out.push(part.clone()),
                None => out.push(Bytes::from_static(encode::NULL_BULK)),
            }
            return;
        }
        MergePlan::SumPairs => sum_pairs(parts, &mut buf),
        MergePlan::Confirm { text } => {
            out.push(text);
            return;
        }
        MergePlan::Info { .. }
        | MergePlan::Last
        | MergePlan::ConfigGet { .. }
        | MergePlan::Exec { .. } => unreachable!("handled above"),
    }
    out.push(buf.freeze());
}

/// The parts' integers folded with `f` from `init`; `None` when a part is not an integer.
fn fold_integers(parts: &[Bytes], init: i64, f: impl Fn(i64, i64) -> i64) -> Option<i64> {
    parts
        .iter()
        .try_fold(init, |acc, part| reply::integer(part).map(|n| f(acc, n)))
}

/// The elements of a flat array or of a map (keys and values in turn), attributes aside.
fn pairs(reply: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    if reply.first() != Some(&b'%') {
        return reply::aggregate_elements(reply).filter(|e| e.len() % 2 == 0);
    }
    let cr = reply.iter().position(|&b| b == b'\r')?;
    let count: usize = std::str::from_utf8(&reply[1..cr]).ok()?.parse().ok()?;
    let mut at = cr + 2;
    let mut elements = Vec::new();
    for _ in 0..count.checked_mul(2)? {
        let len = reply::element_len(reply.get(at..)?)?;
        elements.push(at..at + len);
        at += len;
    }
    Some(elements)
}

/// The body of a bulk string (`$3\r\nabc\r\n`) or simple string (`+abc\r\n`).
fn string_body(element: &[u8]) -> Option<&[u8]> {
    match element.first()? {
        b'+' => element.get(1..)?.strip_suffix(b"\r\n"),
        b'$' => {
            let cr = element.iter().position(|&b| b == b'\r')?;
            element.get(cr + 2..)?.strip_suffix(b"\r\n")
        }
        _ => None,
    }
}

/// CONFIG GET: the master's parameters, those the proxy owns (`overrides`) with the proxy's
/// values, each once. A master that could not answer (an error, a reply of another shape)
/// leaves the proxy's own parameters.
pub(super) fn config_get(
    part: &[u8],
    overrides: &[(&'static str, String)],
    protocol: Protocol,
    out: &mut BytesMut,
) {
    let elements = if reply::is_error(part) {
        None
    } else {
        pairs(part)
    };
    let mut node: Vec<(&[u8], &[u8])> = Vec::new();
    for pair in elements.unwrap_or_default().chunks_exact(2) {
        let name = &part[pair[0].clone()];
        let owned = string_body(name).is_some_and(|name| {
            overrides
                .iter()
                .any(|(o, _)| o.as_bytes().eq_ignore_ascii_case(name))
        });
        if !owned && !node.iter().any(|(n, _)| *n == name) {
            node.push((name, &part[pair[1].clone()]));
        }
    }
    encode::map_header(out, protocol, node.len() + overrides.len());
    for (name, value) in node {
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    for (name, value) in overrides {
        encode::bulk(out, name.as_bytes());
        encode::bulk(out, value.as_bytes());
    }
}

/// EXEC's reply with the proxy's answers put in at their positions (see [`MergePlan::Exec`]).
/// An EXEC that did not run the transaction (an error, the null reply of a failed WATCH) is
/// answered as the master answered it.
fn exec(parts: &[Bytes], answers: Vec<(usize, TxAnswer)>, protocol: Protocol) -> Bytes {
    let Some(node) = parts.first() else {
        return UNEXPECTED.to_reply();
    };
    let Some(elements) = reply::aggregate_elements(node) else {
        return node.clone();
    };
    let total = elements.len()
        + answers
            .iter()
            .filter(|(_, a)| !matches!(a, TxAnswer::ConfigGet(_)))
            .count();
    let mut out = BytesMut::with_capacity(node.len() + 64);
    encode::array_header(&mut out, total);
    let mut from_node = elements.into_iter();
    let mut answers = answers.into_iter().peekable();
    for position in 0..total {
        let answer = answers.next_if(|(at, _)| *at == position).map(|(_, a)| a);
        match answer {
            Some(TxAnswer::Reply(bytes)) => out.extend_from_slice(&bytes),
            Some(TxAnswer::Info(text, nodes)) => {
                out.extend_from_slice(&super::info::with_nodes(text, nodes, &parts[1..], protocol));
            }
            Some(TxAnswer::ConfigGet(overrides)) => match from_node.next() {
                Some(range) => config_get(&node[range], &overrides, protocol, &mut out),
                None => return UNEXPECTED.to_reply(),
            },
            None => match from_node.next() {
                Some(range) => out.extend_from_slice(&node[range]),
                None => return UNEXPECTED.to_reply(),
            },
        }
    }
    out.freeze()
}

fn mget(parts: &[Bytes], order: &[u32], buf: &mut BytesMut) {
    let mut elements = Vec::with_capacity(parts.len());
    for part in parts {
        match reply::aggregate_elements(part) {
            Some(e) => elements.push(e.into_iter()),
            None => return UNEXPECTED.encode(buf),
        }
    }
    encode::array_header(buf, order.len());
    for &part in order {
        let index = part as usize;
        match elements.get_mut(index).and_then(Iterator::next) {
            Some(range) => buf.extend_from_slice(&parts[index][range]),
            None => {
                buf.clear();
                return UNEXPECTED.encode(buf);
            }
        }
    }
}

fn sum_pairs(parts: &[Bytes], buf: &mut BytesMut) {
    let Some(first) = parts.first() else {
        return encode::array_header(buf, 0);
    };
    let Some(layout) = reply::aggregate_elements(first) else {
        return UNEXPECTED.encode(buf);
    };
    let mut sums = vec![0i64; layout.len()];
    for part in parts {
        let Some(elements) = reply::aggregate_elements(part).filter(|e| e.len() == layout.len())
        else {
            return UNEXPECTED.encode(buf);
        };
        for (i, range) in elements.into_iter().enumerate().skip(1).step_by(2) {
            sums[i] += reply::integer(&part[range]).unwrap_or(0);
        }
    }
    encode::array_header(buf, layout.len());
    for (i, range) in layout.into_iter().enumerate() {
        if i % 2 == 0 {
            buf.extend_from_slice(&first[range]);
        } else {
            encode::integer(buf, sums[i]);
        }
    }
}

fn and_arrays(parts: &[Bytes], buf: &mut BytesMut) {
    let mut result: Option<Vec<i64>> = None;
    for part in parts {
        let Some(elements) = reply::aggregate_elements(part) else {
            return UNEXPECTED.encode(buf);
        };
        let values: Option<Vec<i64>> = elements
            .into_iter()
            .map(|r| reply::integer(&part[r]))
            .collect();
        let Some(values) = values else {
            return UNEXPECTED.encode(buf);
        };
        result = Some(match result {
            None => values,
            Some(acc) if acc.len() == values.len() => acc
                .iter()
                .zip(&values)
                .map(|(a, b)| i64::from(*a != 0 && *b != 0))
                .collect(),
            Some(_) => return UNEXPECTED.encode(buf),
        });
    }
    let result = result.unwrap_or_default();
    encode::array_header(buf, result.len());
    for v in result {
        encode::integer(buf, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn merged(parts: &[&'static [u8]], plan: MergePlan) -> Vec<u8> {
        let parts: Vec<Bytes> = parts.iter().map(|p| Bytes::from_static(p)).collect();
        let mut out = OutBuf::new();
        merge(&parts, plan, &mut out);
        let mut sink = Vec::new();
        out.write_all(&mut sink).await.unwrap();
        sink
    }

    #[tokio::test]
    async fn mget_restores_key_order() {
        let got = merged(
            &[b"*2\r\n$1\r\na\r\n$-1\r\n", b"*1\r\n$1\r\nb\r\n"],
            MergePlan::Mget {
                order: vec![0, 1, 0],
            },
        )
        .await;
        assert_eq!(got, b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n");
    }

    #[tokio::test]
    async fn sums_and_errors() {
        assert_eq!(
            merged(&[b":2\r\n", b":3\r\n"], MergePlan::SumIntegers).await,
            b":5\r\n"
        );
        assert_eq!(
            merged(&[b":2\r\n", b"-ERR down\r\n"], MergePlan::SumIntegers).await,
            b"-ERR down\r\n"
        );
        assert_eq!(
            merged(&[b"+OK\r\n", b"+OK\r\n"], MergePlan::AllOk).await,
            b"+OK\r\n"
        );
    }

    #[tokio::test]
    async fn the_oldest_time_is_the_smallest() {
        assert_eq!(
            merged(
                &[b":1700000100\r\n", b":1700000000\r\n", b":1700000200\r\n"],
                MergePlan::Oldest
            )
            .await,
            b":1700000000\r\n"
        );
        assert_eq!(
            merged(&[b":1\r\n", b"+OK\r\n"], MergePlan::Oldest).await,
            ClientError::UnexpectedSplitReply.to_reply().to_vec()
        );
    }

    #[tokio::test]
    async fn config_get_puts_the_proxy_s_parameters_in_once() {
        let overrides = vec![("databases", "1".to_owned())];
        let node: &[u8] = b"*6\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$9\r\ndatabases\r\n$2\r\n16\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n";
        let plan = |protocol| MergePlan::ConfigGet {
            overrides: overrides.clone(),
            protocol,
        };
        assert_eq!(
            merged(&[node], plan(Protocol::Resp2)).await,
            b"*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
        );
        let map: &[u8] = b"%2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$9\r\ndatabases\r\n$2\r\n16\r\n";
        assert_eq!(
            merged(&[map], plan(Protocol::Resp3)).await,
            b"%2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
        );
        // No master could answer: the proxy's own.
        assert_eq!(
            merged(&[b"-ERR backend down\r\n"], plan(Protocol::Resp2)).await,
            b"*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
        );
    }

    #[tokio::test]
    async fn exec_gets_the_proxy_s_answers_at_their_places() {
        let plan = |answers| MergePlan::Exec {
            answers,
            protocol: Protocol::Resp2,
        };
        let answers = vec![
            (0, TxAnswer::Reply(Bytes::from_static(b"+first\r\n"))),
            (2, TxAnswer::Reply(Bytes::from_static(b"+third\r\n"))),
            (4, TxAnswer::Reply(Bytes::from_static(b"+last\r\n"))),
        ];
        assert_eq!(
            merged(&[b"*2\r\n:1\r\n:2\r\n"], plan(answers.clone())).await,
            b"*5\r\n+first\r\n:1\r\n+third\r\n:2\r\n+last\r\n"
        );
        // A transaction that did not run is answered as the master answered.
        assert_eq!(
            merged(&[b"*-1\r\n"], plan(answers.clone())).await,
            b"*-1\r\n"
        );
        assert_eq!(
            merged(&[b"-EXECABORT x\r\n"], plan(answers)).await,
            b"-EXECABORT x\r\n"
        );
    }

    #[tokio::test]
    async fn concat_and_and() {
        assert_eq!(
            merged(
                &[b"*1\r\n$1\r\na\r\n", b"*0\r\n", b"*1\r\n$1\r\nb\r\n"],
                MergePlan::ConcatArrays
            )
            .await,
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            merged(
                &[b"*2\r\n:1\r\n:1\r\n", b"*2\r\n:0\r\n:1\r\n"],
                MergePlan::AndArrays
            )
            .await,
            b"*2\r\n:0\r\n:1\r\n"
        );
    }
}
