#![allow(missing_docs, clippy::unwrap_used)]
use std::time::Instant;
use tarnlog::{BatchBuilder, Log, TopicConfig};
fn main() {
    let n: usize = std::env::args().nth(1).map_or(1024, |s| s.parse().unwrap());
    let batches = 20_000_000 / n;
    let v = [7u8; 100];
    let mut b = BatchBuilder::with_capacity(n * 120 + 128);
    let only_append = std::env::var("ONLY_APPEND").is_ok();
    let batches_pre = if only_append { 1 } else { batches };
    let t = Instant::now();
    for _ in 0..batches_pre {
        for _ in 0..n {
            b.push(1, None, Some(&v), &[]);
        }
        std::hint::black_box(b.finish());
    }
    let build = t.elapsed();
    for _ in 0..n {
        b.push(1, None, Some(&v), &[]);
    }
    let batch = b.finish_vec().unwrap();
    let t = Instant::now();
    for _ in 0..batches_pre {
        std::hint::black_box(tarnlog::codec::validate_batch(&batch, 1 << 30).unwrap());
    }
    let validate = t.elapsed();
    let t = Instant::now();
    for _ in 0..batches_pre {
        std::hint::black_box(tarnlog::codec::compute_crc(&batch));
    }
    let crc = t.elapsed();
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = log
        .create_topic(
            "t",
            TopicConfig::default()
                .segment_bytes(1 << 30)
                .max_message_bytes(1 << 24),
        )
        .unwrap()
        .partition(0)
        .unwrap();
    let t = Instant::now();
    for _ in 0..batches {
        p.append(&batch).unwrap();
    }
    let append = t.elapsed();
    let recs = (batches * n) as f64;
    println!(
        "n={n}: build {:.1} ns/rec, validate {:.1}, crc {:.1}, append(prebuilt) {:.1} ns/rec => {:.1} M rec/s append-only",
        build.as_nanos() as f64 / recs,
        validate.as_nanos() as f64 / recs,
        crc.as_nanos() as f64 / recs,
        append.as_nanos() as f64 / recs,
        recs / append.as_secs_f64() / 1e6
    );
    log.simulate_crash();
}
