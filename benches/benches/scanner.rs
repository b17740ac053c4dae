//! Throughput of the request and reply scanners (`redshard_protocol::resp`).
//!
//! Requests: pipelines of N = 1, 16, 128 `SET key:NNN <100-byte value>`, one 1 MiB `SET`
//! delivered in 16 KiB reads (the scanner resumes on each read), and inline commands.
//! Replies: pipelines of bulk, integer and array replies. Throughput is reported in bytes and
//! in requests or replies.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redshard_protocol::resp::encode;
use redshard_protocol::resp::{ReplyScanner, RequestScanner, ScanLimits};

/// `n` pipelined `SET key:NNN <100-byte value>` requests.
fn set_pipeline(n: usize) -> Vec<u8> {
    let value = [b'v'; 100];
    let mut out = BytesMut::new();
    for i in 0..n {
        let key = format!("key:{i:03}");
        encode::request(&mut out, &[b"SET", key.as_bytes(), &value]);
    }
    out.to_vec()
}

/// Scans every request of `buf`; returns how many there were.
fn scan_all_requests(scanner: &mut RequestScanner, buf: &[u8]) -> usize {
    let mut rest = buf;
    let mut count = 0;
    while let Ok(Some(frame)) = scanner.scan(rest) {
        black_box(scanner.args(rest).get(1));
        rest = &rest[frame.len..];
        scanner.reset();
        count += 1;
    }
    count
}

/// Scans every reply of `buf`; returns how many there were.
fn scan_all_replies(scanner: &mut ReplyScanner, buf: &[u8]) -> usize {
    let mut rest = buf;
    let mut count = 0;
    while let Ok(Some(len)) = scanner.scan(rest) {
        rest = &rest[len..];
        count += 1;
    }
    count
}

fn throughput(elements: usize, bytes: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: elements as u64,
        bytes: bytes as u64,
    }
}

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_scanner");
    let mut scanner = RequestScanner::new(ScanLimits::default());

    for n in [1, 16, 128] {
        let input = set_pipeline(n);
        assert_eq!(scan_all_requests(&mut scanner, &input), n);
        group.throughput(throughput(n, input.len()));
        group.bench_with_input(BenchmarkId::new("set_pipeline", n), &input, |b, input| {
            b.iter(|| scan_all_requests(&mut scanner, black_box(input)))
        });
    }

    // One 1 MiB value arriving in 16 KiB reads: the scanner is called after each read with
    // the buffer so far, as a session does.
    let big = {
        let mut out = BytesMut::new();
        encode::request(&mut out, &[b"SET", b"big", &vec![b'x'; 1 << 20]]);
        out.to_vec()
    };
    group.throughput(throughput(1, big.len()));
    group.bench_function("1MiB_bulk_in_16KiB_reads", |b| {
        b.iter(|| {
            let mut end = 0;
            loop {
                end = (end + 16 * 1024).min(big.len());
                if let Ok(Some(frame)) = scanner.scan(black_box(&big[..end])) {
                    scanner.reset();
                    break frame.len;
                }
            }
        })
    });

    let inline: Vec<u8> = (0..64)
        .flat_map(|i| format!("SET key:{i:03} \"some value\\x20with quotes\"\r\n").into_bytes())
        .collect();
    group.throughput(throughput(64, inline.len()));
    group.bench_function("inline_pipeline/64", |b| {
        b.iter(|| scan_all_requests(&mut scanner, black_box(&inline)))
    });
    group.finish();
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply_scanner");
    let mut scanner = ReplyScanner::new(64);
    let n = 128;

    let mut bulks = BytesMut::new();
    let mut integers = BytesMut::new();
    let mut arrays = BytesMut::new();
    for i in 0..n {
        encode::bulk(&mut bulks, &[b'v'; 100]);
        encode::integer(&mut integers, i64::from(i) * 1000);
        encode::array_header(&mut arrays, 10);
        for _ in 0..10 {
            encode::bulk(&mut arrays, b"value:0123456789");
        }
    }
    for (name, input) in [("bulk", bulks), ("integer", integers), ("array10", arrays)] {
        assert_eq!(scan_all_replies(&mut scanner, &input), n as usize);
        group.throughput(throughput(n as usize, input.len()));
        group.bench_with_input(BenchmarkId::new(name, n), &input[..], |b, input| {
            b.iter(|| scan_all_replies(&mut scanner, black_box(input)))
        });
    }
    group.finish();
}

criterion_group!(benches, requests, replies);
criterion_main!(benches);
