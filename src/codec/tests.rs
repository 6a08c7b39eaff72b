//! Tests of the codec as a whole: a batch written by hand from the format description, round
//! trips through the builder, and corruption (bit flips, truncation, random bytes, crafted
//! fields) that must always be an error and never a panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::error::{Error, Location};

const MAX: usize = 1 << 20;
const T0: i64 = 1_700_000_000_000;

/// Recomputes the CRC after a test has edited CRC-covered bytes.
fn fix_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The `what` and position of a corruption error.
fn what_at(result: Result<impl std::fmt::Debug, Error>) -> (&'static str, usize) {
    match result {
        Err(Error::Corruption {
            location: Location::Buffer { position },
            what,
            ..
        }) => (what, position),
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Two records written byte by byte from the format description.
fn hand_built() -> Vec<u8> {
    let records: &[u8] = &[
        // record 0: length 13, attributes, tsDelta 0, offsetDelta 0, key "k", value "v1",
        // 1 header ("h", "x")
        0x1A, 0x00, 0x00, 0x00, 0x02, b'k', 0x04, b'v', b'1', 0x02, 0x02, b'h', 0x02, b'x',
        // record 1: length 10, attributes, tsDelta 5, offsetDelta 1, key "k", value null,
        // 1 header ("h", null)
        0x14, 0x00, 0x0A, 0x02, 0x02, b'k', 0x01, 0x02, 0x02, b'h', 0x01,
    ];
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes()); // batchLength
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    b.push(2); // magic
    b.extend_from_slice(&[0; 4]); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&1i32.to_be_bytes()); // lastOffsetDelta
    b.extend_from_slice(&T0.to_be_bytes()); // baseTimestamp
    b.extend_from_slice(&(T0 + 5).to_be_bytes()); // maxTimestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    b.extend_from_slice(&2i32.to_be_bytes()); // recordsCount
    b.extend_from_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A batch with the given records area, count and last offset delta; length and CRC correct.
fn craft(records_area: &[u8], count: i32, last_offset_delta: i32) -> Vec<u8> {
    let mut b = vec![0u8; RECORD_BATCH_OVERHEAD];
    b.extend_from_slice(records_area);
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (b.len() - LOG_OVERHEAD) as i32,
        partition_leader_epoch: -1,
        magic: MAGIC_V2,
        crc: 0,
        attributes: 0,
        last_offset_delta,
        base_timestamp: T0,
        max_timestamp: T0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: count,
    };
    header.write_to(&mut b);
    fix_crc(&mut b);
    b
}

#[test]
fn crc32c_vector() {
    assert_eq!(crc32c::crc32c(b"Some String"), 608_512_271);
}

#[test]
fn builder_matches_hand_built_batch() {
    let mut builder = BatchBuilder::new();
    builder.push(T0, Some(b"k"), Some(b"v1"), &[("h", Some(b"x"))]);
    builder.push(T0 + 5, Some(b"k"), None, &[("h", None)]);
    assert_eq!(builder.len(), 2);
    assert_eq!(builder.size_in_bytes(), 86);
    let built = builder.finish().unwrap().to_vec();
    assert_eq!(built, hand_built());
    assert!(builder.is_empty());
    assert_eq!(builder.finish(), None);
}

#[test]
fn hand_built_batch_decodes() {
    let bytes = hand_built();
    let header = validate_batch(&bytes, MAX).unwrap();
    assert_eq!(header.size(), 86);
    assert_eq!((header.last_offset(), header.next_offset()), (1, 2));
    assert_eq!(header.compression().unwrap(), Compression::None);
    assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    assert!(!header.is_transactional() && !header.is_control());
    assert_eq!(peek_batch_size(&bytes[..17]), Some(86));
    assert_eq!(peek_batch_size(&bytes[..16]), None);

    let views: Vec<RecordView<'_>> = records(&bytes, &header).map(Result::unwrap).collect();
    assert_eq!(views.len(), 2);
    assert_eq!((views[0].offset, views[0].timestamp), (0, T0));
    assert_eq!(views[0].key, Some(&b"k"[..]));
    assert_eq!(views[0].value, Some(&b"v1"[..]));
    let h0: Vec<_> = views[0].headers.iter().map(Result::unwrap).collect();
    assert_eq!(h0, [("h", Some(&b"x"[..]))]);
    assert_eq!(
        (views[1].offset, views[1].timestamp, views[1].value),
        (1, T0 + 5, None)
    );
    let h1: Vec<_> = (&views[1].headers)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(h1, [("h", None)]);

    let batch = Batch::new(Bytes::from(bytes), MAX).unwrap();
    assert_eq!(
        (batch.len(), batch.base_offset(), batch.last_offset()),
        (2, 0, 1)
    );
    let owned: Vec<Record> = batch.records().map(Result::unwrap).collect();
    assert_eq!(
        owned[0].headers,
        [Header {
            key: "h".into(),
            value: Some(Bytes::from_static(b"x"))
        }]
    );
    assert_eq!(owned[1].value, None);
    assert_eq!(owned[1].timestamp_type, TimestampType::CreateTime);
}

#[test]
fn patches_keep_the_crc_valid() {
    let mut bytes = hand_built();
    set_base_offset(&mut bytes, 1000);
    set_partition_leader_epoch(&mut bytes, 7);
    let header = validate_batch(&bytes, MAX).unwrap();
    assert_eq!(
        (header.base_offset, header.partition_leader_epoch),
        (1000, 7)
    );
    set_log_append_time(&mut bytes, 42);
    let header = validate_batch(&bytes, MAX).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    let ts: Vec<i64> = records(&bytes, &header)
        .map(|r| r.unwrap().timestamp)
        .collect();
    assert_eq!(ts, [42, 42]);
}

#[test]
fn corruption_names_the_field() {
    let good = hand_built();
    let mut b = good.clone();
    b[MAGIC_OFFSET] = 1;
    assert_eq!(what_at(validate_batch(&b, MAX)), ("batch magic", 16));

    let mut b = good.clone();
    b[40] ^= 1;
    assert_eq!(what_at(validate_batch(&b, MAX)), ("batch CRC", 17));
    assert_eq!(what_at(Batch::new(Bytes::from(b), MAX)), ("batch CRC", 17));

    assert_eq!(
        what_at(validate_batch(&good[..60], MAX)),
        ("batch header", 0)
    );
    assert_eq!(
        what_at(validate_batch(&good[..70], MAX)),
        ("batch length", 8)
    );
    assert_eq!(what_at(validate_batch(&good, 85)), ("batch length", 8));
    assert!(validate_batch(&good, 86).is_ok());

    let mut b = good.clone();
    set_base_offset(&mut b, -5);
    assert_eq!(what_at(validate_batch(&b, MAX)), ("base offset", 0));
    set_base_offset(&mut b, i64::MAX);
    assert_eq!(what_at(validate_batch(&b, MAX)), ("last offset delta", 23));

    let mut b = good.clone();
    b[ATTRIBUTES_OFFSET] = 0x01; // bit 8
    fix_crc(&mut b);
    assert_eq!(what_at(validate_batch(&b, MAX)), ("batch attributes", 21));

    for (count, position) in [(3, 86), (1, 75)] {
        let mut b = good.clone();
        b[RECORDS_COUNT_OFFSET..RECORD_BATCH_OVERHEAD].copy_from_slice(&i32::to_be_bytes(count));
        fix_crc(&mut b);
        assert_eq!(
            what_at(validate_batch(&b, MAX)),
            ("records count", position),
            "{count}"
        );
    }
    let mut b = good.clone();
    b[RECORDS_COUNT_OFFSET..RECORD_BATCH_OVERHEAD].copy_from_slice(&(-1i32).to_be_bytes());
    fix_crc(&mut b);
    assert_eq!(what_at(validate_batch(&b, MAX)), ("records count", 57));
}

#[test]
fn record_corruption_names_the_field() {
    let good = hand_built();
    let edit = |at: usize, byte: u8| {
        let mut b = good.clone();
        b[at] = byte;
        fix_crc(&mut b);
        what_at(validate_batch(&b, MAX))
    };
    assert_eq!(edit(72, 0xFF), ("record header key", 72)); // not UTF-8
    assert_eq!(edit(71, 0x01), ("record header key length", 71)); // -1
    assert_eq!(edit(78, 0x00), ("record offset delta", 78)); // not increasing
    assert_eq!(edit(78, 0x04), ("record offset delta", 78)); // above lastOffsetDelta
    assert_eq!(edit(61, 0x1C), ("record length", 61)); // 14, fields use 13
    assert_eq!(edit(61, 0x18), ("record header value", 74)); // 12: value cut off
    assert_eq!(edit(61, 0x01), ("record length", 61)); // -1
    assert_eq!(edit(65, 0x03), ("record key length", 65)); // -2
    assert_eq!(edit(70, 0x7E), ("record headers count", 70)); // 63 headers in 4 bytes

    // An overlong varint where the record length should be.
    let b = craft(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0, 0, 0, 0], 1, 0);
    assert_eq!(what_at(validate_batch(&b, MAX)), ("record length", 61));
    // A truncated timestamp delta inside a record.
    let b = craft(&[0x04, 0x00, 0x80], 1, 0);
    assert_eq!(
        what_at(validate_batch(&b, MAX)),
        ("record timestamp delta", 63)
    );
    // Trailing bytes after the last record.
    let b = craft(&[0x0C, 0, 0, 0, 1, 1, 0, 0xAA], 1, 0);
    assert_eq!(what_at(validate_batch(&b, MAX)), ("records count", 68));
    // An empty batch is fine (Kafka keeps them after compaction).
    assert_eq!(
        validate_batch(&craft(&[], 0, 0), MAX)
            .unwrap()
            .records_count,
        0
    );
}

/// Records whose fields cross the one-, two- and three-byte varint boundaries (value and
/// key lengths around 64 and 8192, offset deltas past 63 and 8191, timestamp deltas of
/// either sign up to 20 s): the fast path yields exactly what the full reader yields.
#[test]
fn the_fast_path_agrees_at_varint_boundaries() {
    let lens: Vec<usize> = (0..=130).chain(8185..=8200).collect();
    let mut builder = BatchBuilder::new();
    for i in 0..8_300usize {
        let n = lens[i % lens.len()];
        let key = (i % 3 != 0).then(|| vec![1u8; (n * 7) % 140]);
        let timestamp = T0 + ((i * 37) % 20_000) as i64 - 10_000;
        builder.push(timestamp, key.as_deref(), Some(&vec![2u8; n]), &[]);
    }
    let b = builder.finish_vec().unwrap();
    let header = BatchHeader::parse(&b, usize::MAX).unwrap();
    let fast: Vec<_> = records(&b, &header).map(shown).collect();
    let mut full = records(&b, &header);
    let full: Vec<_> = std::iter::from_fn(|| full.next_full()).map(shown).collect();
    assert_eq!(fast.len(), 8_300);
    assert!(fast.iter().all(Result::is_ok));
    assert_eq!(fast, full);
}

/// Every two-byte varint encoding (canonical or not, of either sign) in each field the fast
/// path reads as a length (the record length, the offset delta, the key and value lengths),
/// in a record otherwise well formed and sized to fit the decoded value where it can: the
/// fast path yields exactly what the full reader yields.
#[test]
fn the_fast_path_agrees_on_every_two_byte_encoding() {
    let put = |out: &mut Vec<u8>, v: i32| {
        let at = out.len();
        out.resize(at + crate::codec::varint::varint_size(v), 0);
        crate::codec::varint::write_varint_at(out, at, v);
    };
    let decoded = |b0: u8, b1: u8| {
        let z = u64::from(b0 & 0x7F) | (u64::from(b1) << 7);
        (z >> 1) as i64 ^ -((z & 1) as i64)
    };
    // A record from its fields (each already encoded), framed with a one-byte or
    // two-byte canonical length unless `length` is given.
    let record = |length: Option<[u8; 2]>, delta: &[u8], key: &[u8], value: &[u8]| {
        let mut body = vec![0u8, 0]; // attributes, timestamp delta 0
        body.extend_from_slice(delta);
        body.extend_from_slice(key);
        body.extend_from_slice(value);
        body.push(0); // no headers
        let mut out = Vec::new();
        match length {
            Some(encoded) => out.extend_from_slice(&encoded),
            None => put(&mut out, body.len() as i32),
        }
        out.extend_from_slice(&body);
        out
    };
    // A length field: the encoding, then as many bytes as it decodes to (when 0..=300).
    let sized = |b0: u8, b1: u8| {
        let mut field = vec![b0, b1];
        if let Ok(n @ 0..=300) = usize::try_from(decoded(b0, b1)) {
            field.extend(std::iter::repeat_n(7u8, n));
        }
        field
    };
    let check = |area: Vec<u8>| {
        let b = craft(&area, 1, 20_000);
        let header = BatchHeader::parse(&b, MAX).unwrap();
        let fast: Vec<_> = records(&b, &header).map(shown).collect();
        let mut full = records(&b, &header);
        let full: Vec<_> = std::iter::from_fn(|| full.next_full()).map(shown).collect();
        assert_eq!(fast, full, "record area {area:02x?}");
        // The append path's framing check accepts only what the full reader accepts, and
        // finds the same largest timestamp.
        if let Some(max) = crate::codec::record::fast_framing(&b[..header.size()], &header) {
            let mut all = records(&b, &header);
            let read: Vec<_> = std::iter::from_fn(|| all.next_full()).collect();
            assert!(
                read.iter().all(Result::is_ok),
                "framing check accepted record area {area:02x?}"
            );
            let full = read
                .into_iter()
                .map(|r| r.unwrap().timestamp)
                .fold(NO_TIMESTAMP, i64::max);
            assert_eq!(max, full, "record area {area:02x?}");
        }
    };
    let (null, value) = ([1u8], [2u8, 9]);
    for b0 in 0x80..=0xFF_u8 {
        for b1 in 0..=0x7F_u8 {
            // The record length: a body of that many bytes when it can have one.
            let n = usize::try_from(decoded(b0, b1)).unwrap_or(0).clamp(6, 300);
            let filler = vec![9u8; n - 6];
            let mut v = Vec::new();
            put(&mut v, filler.len() as i32);
            v.extend_from_slice(&filler);
            check(record(Some([b0, b1]), &[0], &null, &v));
            check(record(None, &[b0, b1], &null, &value));
            check(record(None, &[0], &sized(b0, b1), &value));
            check(record(None, &[0], &null, &sized(b0, b1)));
        }
    }
}

/// A record length whose zig-zag sign bit is set is negative, whatever the halved value
/// would frame: refused by the fast path's one- and two-byte forms as by the full reader.
#[test]
fn a_negative_record_length_is_refused_in_both_varint_sizes() {
    for value_len in [10, 100] {
        let mut builder = BatchBuilder::new();
        builder.push(T0, None, Some(&vec![7u8; value_len]), &[]);
        let mut b = builder.finish_vec().unwrap();
        assert_eq!(b[RECORD_BATCH_OVERHEAD] >= 0x80, value_len == 100);
        b[RECORD_BATCH_OVERHEAD] |= 1;
        fix_crc(&mut b);
        assert_eq!(
            what_at(validate_batch(&b, MAX)),
            ("record length", RECORD_BATCH_OVERHEAD)
        );
        let header = BatchHeader::parse(&b, MAX).unwrap();
        assert!(records(&b, &header).next().unwrap().is_err());
    }
}

#[test]
fn compressed_batches_are_unsupported() {
    for (bits, name) in [(1, "gzip"), (2, "snappy"), (3, "lz4"), (4, "zstd")] {
        let mut b = hand_built();
        b[ATTRIBUTES_OFFSET + 1] = bits;
        fix_crc(&mut b);
        match validate_batch(&b, MAX) {
            Err(Error::UnsupportedCompression { codec }) => assert_eq!(codec, name),
            other => panic!("{other:?}"),
        }
        let batch = Batch::new(Bytes::from(b), MAX).unwrap();
        let items: Vec<_> = batch.iter().collect();
        assert_eq!(items.len(), 1);
        assert!(matches!(
            items[0],
            Err(Error::UnsupportedCompression { .. })
        ));
        // A cursor cannot skip the error: there is none to take, and with one from another
        // batch the error still comes first.
        assert_eq!(batch.iter().cursor(), None);
        let plain = Batch::new(Bytes::from(hand_built()), MAX).unwrap();
        let mut items = batch.iter().resume(plain.iter().cursor());
        assert!(matches!(
            items.next(),
            Some(Err(Error::UnsupportedCompression { .. }))
        ));
        assert!(items.next().is_none());
    }
    for bits in 5..=7 {
        let mut b = hand_built();
        b[ATTRIBUTES_OFFSET + 1] = bits;
        fix_crc(&mut b);
        assert_eq!(what_at(validate_batch(&b, MAX)), ("batch compression", 21));
    }
}

/// A resumed iterator goes on checking offset deltas against the record before the cursor
/// (deltas 0, 1, 1: the third record is bad however the batch is walked), and a cursor
/// past the batch's end is not applied.
#[test]
fn a_resumed_iterator_keeps_checking_offset_deltas() {
    // Three records: length 6, attributes, timestamp delta 0, the delta, null key and
    // value (1 = -1 zig-zagged), no headers.
    let record = |delta: u8| [0x0C, 0, 0, delta << 1, 1, 1, 0];
    let area: Vec<u8> = [0, 1, 1].into_iter().flat_map(record).collect();
    let batch = Batch::new(Bytes::from(craft(&area, 3, 2)), MAX).unwrap();
    let mut whole: Vec<_> = batch.iter().collect();
    assert_eq!(whole.len(), 3);
    assert_eq!(what_at(whole.pop().unwrap()), ("record offset delta", 78));
    assert!(whole.iter().all(Result::is_ok));
    let mut first = batch.iter();
    first.next().unwrap().unwrap();
    first.next().unwrap().unwrap();
    let mut rest = batch.iter().resume(first.cursor());
    assert_eq!(what_at(rest.next().unwrap()), ("record offset delta", 78));
    assert!(rest.next().is_none());

    let six: Vec<u8> = (0..6).flat_map(record).collect();
    let long = Batch::new(Bytes::from(craft(&six, 6, 5)), MAX).unwrap();
    let mut far = long.iter();
    for _ in 0..4 {
        far.next().unwrap().unwrap();
    }
    // Taken past `batch`'s end: ignored, the iteration starts over.
    let restarted: Vec<_> = batch.iter().resume(far.cursor()).collect();
    assert_eq!(restarted.len(), 3);
    assert!(restarted[0].is_ok());
}

#[test]
fn records_ignores_bytes_after_the_batch_and_rejects_short_buffers() {
    let mut buf = hand_built();
    let header = BatchHeader::parse(&buf, MAX).unwrap();
    buf.extend_from_slice(&[0xEE; 10]);
    assert_eq!(records(&buf, &header).flatten().count(), 2);
    let mut iter = records(&buf[..80], &header);
    assert_eq!(what_at(iter.next().unwrap()), ("batch length", 8));
    assert!(iter.next().is_none());
}

/// A batch that fills exactly the capacity its builder was given never grows the buffer
/// (the producer sizes its buffers by `batch_size` and accounts for them), with or without
/// keys, values and headers, and its bytes are the ones a builder with room to spare
/// writes. The last records leave less room than a whole two-word prefix copy.
#[test]
fn a_batch_filling_its_capacity_exactly_keeps_its_buffer() {
    /// Builds `count` records with `capacity`; the builder's capacity and the batch.
    fn build_with(
        capacity: usize,
        count: i64,
        timestamp: impl Fn(i64) -> i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> (usize, Vec<u8>) {
        let mut builder = BatchBuilder::with_capacity(capacity);
        for i in 0..count {
            builder.push(timestamp(i), key, value, headers);
        }
        let capacity = builder.buffer_capacity();
        (capacity, builder.finish().unwrap().to_vec())
    }
    let check = |count: i64,
                 timestamp: &dyn Fn(i64) -> i64,
                 key: Option<&[u8]>,
                 value: Option<&[u8]>,
                 headers: &[(&str, Option<&[u8]>)]| {
        let (_, want) = build_with(1 << 22, count, timestamp, key, value, headers);
        let (capacity, got) = build_with(want.len(), count, timestamp, key, value, headers);
        assert_eq!(capacity, want.len(), "{count} records");
        assert_eq!(got, want, "{count} records");
        assert_eq!(decode(&got).unwrap().len(), count as usize);
    };
    let header = [("h", Some(&[1u8][..]))];
    for count in 1..20 {
        for key in [None, Some(&[5u8; 3][..])] {
            for value in [
                None,
                Some(&[][..]),
                Some(&[9u8; 7][..]),
                Some(&[9u8; 40][..]),
            ] {
                for headers in [&[][..], &header[..]] {
                    check(count, &|i| T0 + i, key, value, headers);
                }
            }
        }
    }
    // Prefixes of 17 bytes (a three-byte offset delta, a ten-byte timestamp delta) ahead of
    // a 5-byte value: the second word, copied byte by byte at the end of the capacity.
    let extreme = |i: i64| if i % 2 == 0 { 0 } else { i64::MAX };
    check(8200, &extreme, None, Some(&[4u8; 5]), &[]);
}

#[test]
fn builder_is_reusable_and_sets_producer_fields() {
    let mut builder = BatchBuilder::with_capacity(4096);
    builder.set_producer(77, 3, 1000);
    builder.push(5, None, Some(b"a"), &[]);
    let first = builder.finish_vec().unwrap();
    let header = validate_batch(&first, MAX).unwrap();
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (77, 3, 1000)
    );
    assert_eq!(builder.finish_vec(), None);

    builder.push(T0, Some(b"k"), Some(b"v1"), &[("h", Some(b"x"))]);
    builder.push(T0 + 5, Some(b"k"), None, &[("h", None)]);
    assert_eq!(builder.finish().unwrap(), hand_built().as_slice());

    builder.push(1, None, None, &[]);
    builder.clear();
    assert_eq!((builder.len(), builder.size_in_bytes()), (0, 61));
    assert_eq!(builder.finish(), None);
    let mut fresh = BatchBuilder::default();
    fresh.push(NO_TIMESTAMP, None, None, &[]);
    let b = fresh.finish().unwrap();
    let header = validate_batch(b, MAX).unwrap();
    assert_eq!(
        (header.base_timestamp, header.max_timestamp),
        (NO_TIMESTAMP, NO_TIMESTAMP)
    );
}

/// One record as the tests generate it.
#[derive(Debug, Clone)]
struct Input {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn input(max_bytes: usize, base: i64) -> impl Strategy<Value = Input> {
    let bytes = move || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=max_bytes));
    let header = (
        "\\PC{0,6}",
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
    );
    (
        -(1i64 << 40)..=(1i64 << 40),
        bytes(),
        bytes(),
        proptest::collection::vec(header, 0..=3),
    )
        .prop_map(move |(delta, key, value, headers)| Input {
            timestamp: base.wrapping_add(delta),
            key,
            value,
            headers,
        })
}

fn inputs(max_records: usize, max_bytes: usize) -> impl Strategy<Value = Vec<Input>> {
    prop_oneof![Just(0i64), any::<i64>(), Just(T0)].prop_flat_map(move |base| {
        proptest::collection::vec(input(max_bytes, base), 1..=max_records)
    })
}

fn build(inputs: &[Input]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for r in inputs {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let before = builder.size_in_bytes();
        let estimate = BatchBuilder::estimate_record_size(
            r.key.as_ref().map(Vec::len),
            r.value.as_ref().map(Vec::len),
            &headers,
        );
        builder.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        let added = builder.size_in_bytes() - before;
        assert!(
            added <= estimate && estimate <= added + 14,
            "{added} vs {estimate}"
        );
    }
    let size = builder.size_in_bytes();
    let bytes = builder.finish_vec().unwrap();
    assert_eq!(bytes.len(), size);
    bytes
}

fn expected(inputs: &[Input], base_offset: i64, append_time: Option<i64>) -> Vec<Record> {
    let opt = |v: &Option<Vec<u8>>| v.clone().map(Bytes::from);
    inputs
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: base_offset + i as i64,
            timestamp: append_time.unwrap_or(r.timestamp),
            timestamp_type: if append_time.is_some() {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            key: opt(&r.key),
            value: opt(&r.value),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.clone(),
                    value: opt(v),
                })
                .collect(),
        })
        .collect()
}

/// An iterator's item with its error as text, to compare two iterations.
fn shown(item: Result<RecordView<'_>, Error>) -> Result<RecordView<'_>, String> {
    item.map_err(|e| e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Vec<Record>, Error> {
    Batch::new(Bytes::copy_from_slice(bytes), MAX)?
        .records()
        .collect()
}

/// A record whose length covers bytes after its headers count (one record of three, each
/// position in turn) is refused by the append path's check as by the full reader, with
/// the batch's length and CRC made to fit.
#[test]
fn bytes_after_a_records_headers_inside_its_length_are_refused() {
    for damaged in 0..3 {
        let mut builder = BatchBuilder::new();
        let mut starts = Vec::new();
        for i in 0..3 {
            starts.push(builder.size_in_bytes());
            builder.push(T0 + i, None, Some(&[7u8; 10]), &[]);
        }
        let mut b = builder.finish_vec().unwrap();
        starts.push(b.len());
        // One more byte at the end of the damaged record, counted by its length (a
        // one-byte varint here: the record is 17 bytes long).
        let (start, end) = (starts[damaged], starts[damaged + 1]);
        b.insert(end, 0);
        assert_eq!(b[start], 0x20, "a 16-byte body");
        b[start] += 2;
        let length = (b.len() - LOG_OVERHEAD) as i32;
        b[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        fix_crc(&mut b);
        let refused = ("record length", start);
        assert_eq!(
            what_at(validate_batch(&b, MAX)),
            refused,
            "record {damaged}"
        );
        assert_eq!(what_at(decode(&b)), refused, "record {damaged}");
    }
}

/// Records whose small fields before the value take wide forms (a three-byte length, a
/// ten-byte timestamp delta, a two-byte offset delta, a three-byte key length) round-trip:
/// record prefixes past 16 bytes, which take the builder's second word.
#[test]
fn records_with_the_widest_varints_round_trip() {
    let key = vec![3u8; 9000];
    let inputs: Vec<Input> = (0..70)
        .map(|i| Input {
            // From the first record's 0, deltas of i64::MAX and i64::MIN: ten bytes each.
            timestamp: match i {
                0 => 0,
                i if i % 2 == 0 => i64::MIN,
                _ => i64::MAX,
            },
            key: (i % 3 != 0).then(|| key.clone()),
            value: Some(vec![i as u8; 9000 + i]),
            headers: if i % 5 == 0 {
                vec![("h".to_string(), Some(vec![1, 2]))]
            } else {
                Vec::new()
            },
        })
        .collect();
    let bytes = build(&inputs);
    assert_eq!(decode(&bytes).unwrap(), expected(&inputs, 0, None));
}

proptest! {
    #[test]
    fn round_trip(inputs in inputs(8, 300), base_offset in 0i64..(1 << 50), epoch: i32) {
        let mut bytes = build(&inputs);
        let header = validate_batch(&bytes, MAX).unwrap();
        prop_assert_eq!(header.records_count as usize, inputs.len());
        prop_assert_eq!(header.last_offset_delta as usize, inputs.len() - 1);
        prop_assert_eq!(header.base_timestamp, inputs[0].timestamp);
        let max_ts = inputs.iter().map(|r| r.timestamp).fold(NO_TIMESTAMP, i64::max);
        prop_assert_eq!(header.max_timestamp, max_ts);
        prop_assert_eq!(decode(&bytes).unwrap(), expected(&inputs, 0, None));

        set_base_offset(&mut bytes, base_offset);
        set_partition_leader_epoch(&mut bytes, epoch);
        let header = validate_batch(&bytes, MAX).unwrap();
        prop_assert_eq!(header.partition_leader_epoch, epoch);
        prop_assert_eq!(header.last_offset(), base_offset + inputs.len() as i64 - 1);
        prop_assert_eq!(decode(&bytes).unwrap(), expected(&inputs, base_offset, None));
    }

    /// A cursor taken after any number of records resumes a fresh iterator over the same
    /// batch at the next one, whatever the records hold (headers, keys, long varints).
    #[test]
    fn a_cursor_resumes_where_it_was_taken(inputs in inputs(8, 300), at in 0usize..9) {
        let batch = Batch::new(Bytes::from(build(&inputs)), MAX).unwrap();
        let all: Vec<_> = batch.iter().map(Result::unwrap).collect();
        let at = at.min(all.len());
        let mut first = batch.iter();
        for _ in 0..at {
            first.next().unwrap().unwrap();
        }
        let cursor = first.cursor();
        prop_assert!(cursor.is_some());
        let rest: Vec<_> = batch.iter().resume(cursor).map(Result::unwrap).collect();
        prop_assert_eq!(&rest[..], &all[at..]);
        // After the end there is nothing to resume from, and resuming from nothing starts over.
        prop_assert!(first.by_ref().count() == all.len() - at && first.next().is_none());
        prop_assert_eq!(first.cursor(), None);
        prop_assert_eq!(batch.iter().resume(None).count(), all.len());
    }

    #[test]
    fn log_append_time_overrides_timestamps(inputs in inputs(6, 40), ts: i64) {
        let mut bytes = build(&inputs);
        set_log_append_time(&mut bytes, ts);
        prop_assert!(verify_crc(&bytes).is_ok());
        let header = validate_batch(&bytes, MAX).unwrap();
        prop_assert_eq!(header.max_timestamp, ts);
        prop_assert_eq!(decode(&bytes).unwrap(), expected(&inputs, 0, Some(ts)));
    }

    #[test]
    fn every_bit_flip_is_caught(inputs in inputs(3, 8)) {
        let good = build(&inputs);
        let original = decode(&good).unwrap();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let outside_crc = bit / 8 < LENGTH_OFFSET
                || (PARTITION_LEADER_EPOCH_OFFSET..MAGIC_OFFSET).contains(&(bit / 8));
            let validated = validate_batch(&b, MAX);
            let decoded = decode(&b);
            prop_assert_eq!(validated.is_ok(), decoded.is_ok(), "bit {}", bit);
            if !outside_crc {
                prop_assert!(validated.is_err(), "bit {} not caught", bit);
            } else if let Ok(records) = decoded {
                prop_assert_eq!(records.len(), original.len());
                for (got, want) in records.iter().zip(&original) {
                    prop_assert_eq!(
                        (&got.key, &got.value, &got.headers, got.timestamp),
                        (&want.key, &want.value, &want.headers, want.timestamp)
                    );
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_caught(inputs in inputs(3, 20)) {
        let good = build(&inputs);
        for len in 0..good.len() {
            prop_assert!(validate_batch(&good[..len], MAX).is_err());
            prop_assert!(decode(&good[..len]).is_err());
            // Also with the length and CRC made to fit: the record framing must catch it.
            if len >= RECORD_BATCH_OVERHEAD {
                let mut b = good[..len].to_vec();
                b[LENGTH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET]
                    .copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
                fix_crc(&mut b);
                prop_assert!(validate_batch(&b, MAX).is_err(), "len {}", len);
                prop_assert!(decode(&b).is_err(), "len {}", len);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = peek_batch_size(&bytes);
        let _ = validate_batch(&bytes, MAX);
        let _ = decode(&bytes);
        if let Ok(header) = BatchHeader::parse(&bytes, MAX) {
            let _ = header.compression();
            prop_assert!(records(&bytes, &header).count() <= header.records_count as usize + 1);
        }
    }

    /// Random record bytes under a valid header: never a panic, and `validate_batch` accepts
    /// exactly when iteration yields `records_count` records and no error.
    #[test]
    fn random_records_are_framed_consistently(
        area in proptest::collection::vec(any::<u8>(), 0..120),
        count in 0i32..6,
        last_offset_delta in 0i32..8,
    ) {
        let b = craft(&area, count, last_offset_delta);
        let header = BatchHeader::parse(&b, MAX).unwrap();
        let items: Vec<_> = records(&b, &header).collect();
        let all_ok = items.iter().all(Result::is_ok) && items.len() == count as usize;
        prop_assert_eq!(validate_batch(&b, MAX).is_ok(), all_ok);
        prop_assert_eq!(decode(&b).is_ok(), all_ok);
    }

    /// The iterator's fast path yields exactly what the full reader alone yields (records,
    /// then the same error), over valid batches with a few record bytes changed and over
    /// random record areas.
    #[test]
    fn the_fast_path_agrees_with_the_full_reader(
        inputs in inputs(4, 300),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        area in proptest::collection::vec(any::<u8>(), 0..120),
        count in 0i32..6,
    ) {
        let mut b = build(&inputs);
        let len = b.len() - RECORD_BATCH_OVERHEAD;
        for (at, byte) in edits {
            b[RECORD_BATCH_OVERHEAD + at % len] = byte;
        }
        for b in [b, craft(&area, count, 7)] {
            let header = BatchHeader::parse(&b, MAX).unwrap();
            let fast: Vec<_> = records(&b, &header).map(shown).collect();
            let mut full = records(&b, &header);
            let full: Vec<_> = std::iter::from_fn(|| full.next_full()).map(shown).collect();
            prop_assert_eq!(fast, full);
        }
    }

    /// A valid batch with a few bytes changed in the record area and the CRC fixed up.
    #[test]
    fn mutated_records_never_panic(
        inputs in inputs(4, 16),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut b = build(&inputs);
        let area = b.len() - RECORD_BATCH_OVERHEAD;
        for (at, byte) in edits {
            b[RECORD_BATCH_OVERHEAD + at % area] = byte;
        }
        fix_crc(&mut b);
        let header = BatchHeader::parse(&b, MAX).unwrap();
        let items: Vec<_> = records(&b, &header).collect();
        let all_ok = items.iter().all(Result::is_ok) && items.len() == inputs.len();
        prop_assert_eq!(validate_batch(&b, MAX).is_ok(), all_ok);
        prop_assert_eq!(decode(&b).is_ok(), all_ok);
    }
}

/// The largest timestamp the append path finds is the records' largest, at least -1 (as
/// Kafka's `LogValidator` starts), the same on the fast path and on the full reader's
/// (a record header sends a batch there), also where `base + delta` wraps.
#[test]
fn the_largest_timestamp_is_found_alike_on_both_paths() {
    let cases: [&[i64]; 7] = [
        &[5, 3, 9, 1],
        &[9, 3],
        &[-1, i64::MAX],
        &[i64::MAX, -1, 0],
        &[-3],
        &[-5, -2],
        &[1_700_000_000_000, 0, 1_700_000_000_001],
    ];
    for timestamps in cases {
        let expected = timestamps.iter().copied().fold(NO_TIMESTAMP, i64::max);
        for headers in [&[][..], &[("h", Some(&b"v"[..]))][..]] {
            let mut builder = BatchBuilder::new();
            for &ts in timestamps {
                builder.push(ts, None, Some(b"x"), headers);
            }
            let batch = builder.finish_vec().unwrap();
            let (_, max) = crate::codec::validate_batch_timestamps(&batch, MAX).unwrap();
            assert_eq!(max, expected, "{timestamps:?}, headers {headers:?}");
        }
    }
}
