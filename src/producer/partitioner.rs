//! Choosing a partition for a record, as Kafka's producer does (`KafkaProducer.partition`,
//! `BuiltInPartitioner`, `Utils.murmur2`).
//!
//! Order of rules: an explicit partition on the record wins; else a custom [`Partitioner`]
//! when one is configured; else a key hashes with murmur2 to `toPositive(hash) % partitions`
//! (over all partitions); else (no key) the sticky rule: stay on one partition until about
//! `batch_size` bytes went to it, then move to another chosen at random.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

use parking_lot::Mutex;

/// Kafka's `Utils.murmur2`: 32-bit `MurmurHash2` with seed `0x9747b28c`, Java `int` overflow
/// semantics and Kafka's tail handling. Keys hash to the same partition as in Kafka.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows).
pub fn to_positive(hash: i32) -> u32 {
    (hash & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner gives a key among `partitions`.
///
/// # Panics
/// When `partitions` is 0 (a topic always has at least one).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions
}

/// A user's partitioning rule (Kafka's `partitioner.class`). It sees every record without
/// an explicit partition, keyed or not, and must return a partition below `partitions`
/// (anything else fails the send with `UnknownPartition`).
pub trait Partitioner: Send + Sync + fmt::Debug {
    /// The partition for a record of `topic`, which has `partitions` partitions.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partitions: u32,
    ) -> u32;
}

/// Kafka's `RoundRobinPartitioner`: records go to partitions in turn per topic, keys
/// ignored.
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    next: Mutex<HashMap<String, u32>>,
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, _value: Option<&[u8]>, n: u32) -> u32 {
        let mut next = self.next.lock();
        let counter = match next.get_mut(topic) {
            Some(counter) => counter,
            None => next.entry(topic.to_owned()).or_insert(0),
        };
        let partition = *counter % n;
        *counter = counter.wrapping_add(1);
        partition
    }
}

/// The sticky choice for records without a key (KIP-480/794): one partition per topic
/// until `batch_size` bytes went to it, then a random other one. Kept under the producer's
/// accumulator lock, which the record takes anyway.
#[derive(Debug, Default)]
pub(crate) struct Sticky {
    /// Per topic (by the producer's id for it): the current partition and the bytes sent
    /// to it since the switch.
    current: HashMap<u32, (u32, usize), BuildHasherDefault<super::IdHasher>>,
    rng: u64,
}

impl Sticky {
    pub(crate) fn new(seed: u64) -> Sticky {
        Sticky {
            current: HashMap::default(),
            rng: seed | 1,
        }
    }

    /// The partition for a record of `size` bytes without a key.
    pub(crate) fn partition(
        &mut self,
        topic: u32,
        partitions: u32,
        size: usize,
        batch_size: usize,
    ) -> u32 {
        let Sticky { current, rng } = self;
        let entry = current.entry(topic).or_insert((u32::MAX, 0));
        if entry.0 >= partitions {
            // New, or the topic was recreated with fewer partitions.
            *entry = (random_below(rng, partitions), 0);
        }
        if entry.1 >= batch_size.max(1) && partitions > 1 {
            // Another partition, uniformly among the others.
            let step = 1 + random_below(rng, partitions - 1);
            entry.0 = (entry.0 + step) % partitions;
            entry.1 = 0;
        }
        entry.1 += size;
        entry.0
    }
}

/// xorshift64*: cheap, and good enough to spread partitions.
fn random_below(state: &mut u64, n: u32) -> u32 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % u64::from(n)) as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `UtilsTest.testMurmur2` vectors (reference §5.1).
    #[test]
    fn murmur2_matches_kafka() {
        let vectors: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, expected) in vectors {
            assert_eq!(murmur2(input.as_bytes()), expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(5), 5);
        // "foobar" hashes negative; Kafka puts it in 0x7fff_ffff & h, not |h|.
        let hash: i32 = -790_332_482;
        assert_eq!(partition_for_key(b"foobar", 7), to_positive(hash) % 7);
        assert_eq!(to_positive(hash), hash.cast_unsigned() & 0x7fff_ffff);
    }

    #[test]
    fn round_robin_cycles_per_topic() {
        let p = RoundRobinPartitioner::default();
        let a: Vec<u32> = (0..5).map(|_| p.partition("a", None, None, 3)).collect();
        assert_eq!(a, [0, 1, 2, 0, 1]);
        assert_eq!(p.partition("b", Some(b"k"), None, 3), 0);
    }

    #[test]
    fn sticky_stays_until_batch_size_then_moves() {
        let mut sticky = Sticky::new(42);
        let first = sticky.partition(0, 4, 100, 250);
        assert_eq!(sticky.partition(0, 4, 100, 250), first);
        assert_eq!(sticky.partition(0, 4, 100, 250), first);
        // 300 bytes went to `first`, at least batch_size: the next record moves.
        let second = sticky.partition(0, 4, 100, 250);
        assert_ne!(second, first);
        assert_eq!(sticky.partition(0, 4, 100, 250), second);
        // One partition: always 0.
        for _ in 0..10 {
            assert_eq!(sticky.partition(1, 1, 1000, 10), 0);
        }
    }

    #[test]
    fn sticky_spreads_over_all_partitions() {
        let mut sticky = Sticky::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[sticky.partition(0, 5, 100, 100) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "uneven: {seen:?}");
    }
}
