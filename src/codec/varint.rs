//! Zig-zag base-128 varints (protobuf `sint32`/`sint64`), as Kafka's `ByteUtils` writes them.
//!
//! Invariants: an i32 takes at most 5 bytes and an i64 at most 10. The last allowed byte may not
//! carry a continuation bit nor bits beyond the type's width (for i32 the 5th byte is at most
//! `0x0F`, for i64 the 10th is at most `0x01`), so every accepted encoding decodes to exactly one
//! value and no input can make the decoder read further or shift out of range.

/// Zig-zag maps small magnitudes of either sign to small unsigned values.
#[inline]
pub(crate) fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Zig-zag for i64.
#[inline]
pub(crate) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag32`].
#[inline]
pub(crate) fn unzigzag32(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// Inverse of [`zigzag64`].
#[inline]
pub(crate) fn unzigzag64(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Encoded size of `v` as a varint (1..=5).
#[inline]
pub(crate) fn varint_size(v: i32) -> usize {
    let bits = 32 - (zigzag32(v) | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encoded size of `v` as a varlong (1..=10).
#[inline]
pub(crate) fn varlong_size(v: i64) -> usize {
    let bits = 64 - (zigzag64(v) | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `v` as a varint at `out[at..]`, returning the position after it. The caller sized
/// `out` with [`varint_size`]; a short slice panics (a bug, never input-driven).
#[inline]
pub(crate) fn write_varint_at(out: &mut [u8], at: usize, v: i32) -> usize {
    write_unsigned_at(out, at, u64::from(zigzag32(v)))
}

/// Writes `v` as a varlong at `out[at..]`, returning the position after it.
#[inline]
pub(crate) fn write_varlong_at(out: &mut [u8], at: usize, v: i64) -> usize {
    write_unsigned_at(out, at, zigzag64(v))
}

#[inline]
fn write_unsigned_at(out: &mut [u8], mut at: usize, mut z: u64) -> usize {
    while z >= 0x80 {
        out[at] = (z as u8) | 0x80;
        z >>= 7;
        at += 1;
    }
    out[at] = z as u8;
    at + 1
}

/// Why bytes are not a varint; the caller names the field and its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended after `present` bytes, all with the continuation bit set.
    Truncated {
        /// Bytes of the varint that were present.
        present: usize,
    },
    /// The encoding is longer than `max` bytes or its last byte sets bits beyond the width.
    Overlong {
        /// The width limit in bytes (5 or 10).
        max: usize,
    },
}

impl VarintError {
    /// Text for the `detail` of a corruption error.
    pub(crate) fn detail(self) -> String {
        match self {
            VarintError::Truncated { present } => {
                format!("input ends after {present} byte(s) of a varint")
            }
            VarintError::Overlong { max } => {
                let bits = if max == 5 { 32 } else { 64 };
                format!("varint longer than {max} bytes or wider than {bits} bits")
            }
        }
    }
}

/// Reads a varint starting at `buf[pos]`; returns the value and the position after it.
/// A `pos` at or past the end is a truncation.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: usize) -> Result<(i32, usize), VarintError> {
    if let Some(&b) = buf.get(pos)
        && b < 0x80
    {
        return Ok((unzigzag32(u32::from(b)), pos + 1));
    }
    if let Some(z) = two_bytes(buf, pos) {
        return Ok((unzigzag32(z as u32), pos + 2));
    }
    let (z, end) = read_unsigned(buf, pos, 5, 0x0F)?;
    Ok((unzigzag32(z as u32), end))
}

/// Reads a varlong starting at `buf[pos]`; as [`read_varint`] with a 10-byte limit.
#[inline]
pub(crate) fn read_varlong(buf: &[u8], pos: usize) -> Result<(i64, usize), VarintError> {
    if let Some(&b) = buf.get(pos)
        && b < 0x80
    {
        return Ok((unzigzag64(u64::from(b)), pos + 1));
    }
    if let Some(z) = two_bytes(buf, pos) {
        return Ok((unzigzag64(z), pos + 2));
    }
    let (z, end) = read_unsigned(buf, pos, 10, 0x01)?;
    Ok((unzigzag64(z), end))
}

/// The two-byte case (values up to 14 bits: lengths of records and values up to 8 KiB),
/// kept off the general loop because it is the common one for record and value lengths.
#[inline]
fn two_bytes(buf: &[u8], pos: usize) -> Option<u64> {
    match buf.get(pos..pos.checked_add(2)?)? {
        &[b0, b1] if b0 >= 0x80 && b1 < 0x80 => Some(u64::from(b0 & 0x7F) | (u64::from(b1) << 7)),
        _ => None,
    }
}

/// The general loop: at most `max_len` bytes, the last of which must be `<= last_max`
/// (no continuation bit and no bits beyond the target width).
fn read_unsigned(
    buf: &[u8],
    pos: usize,
    max_len: usize,
    last_max: u8,
) -> Result<(u64, usize), VarintError> {
    let mut z = 0u64;
    let mut i = 0;
    loop {
        let Some(&b) = buf.get(pos.saturating_add(i)) else {
            return Err(VarintError::Truncated { present: i });
        };
        if i + 1 == max_len {
            if b > last_max {
                return Err(VarintError::Overlong { max: max_len });
            }
            return Ok((z | (u64::from(b) << (7 * i)), pos + i + 1));
        }
        z |= u64::from(b & 0x7F) << (7 * i);
        if b < 0x80 {
            return Ok((z, pos + i + 1));
        }
        i += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Appends `v` as a varint, sized exactly by `varint_size`.
    fn put_varint(out: &mut Vec<u8>, v: i32) {
        let at = out.len();
        out.resize(at + varint_size(v), 0);
        assert_eq!(write_varint_at(out, at, v), out.len());
    }

    /// Appends `v` as a varlong, sized exactly by `varlong_size`.
    fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let at = out.len();
        out.resize(at + varlong_size(v), 0);
        assert_eq!(write_varlong_at(out, at, v), out.len());
    }

    const VECTORS: &[(i32, &[u8])] = &[
        (0, &[0x00]),
        (-1, &[0x01]),
        (1, &[0x02]),
        (63, &[0x7E]),
        (-64, &[0x7F]),
        (64, &[0x80, 0x01]),
        (-65, &[0x81, 0x01]),
        (8191, &[0xFE, 0x7F]),
        (-8192, &[0xFF, 0x7F]),
        (8192, &[0x80, 0x80, 0x01]),
        (1_048_576, &[0x80, 0x80, 0x80, 0x01]),
        (i32::MAX, &[0xFE, 0xFF, 0xFF, 0xFF, 0x0F]),
        (i32::MIN, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
    ];

    #[test]
    fn varint_vectors_both_directions() {
        for &(v, bytes) in VECTORS {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "encode {v}");
            assert_eq!(varint_size(v), bytes.len(), "size {v}");
            assert_eq!(
                read_varint(bytes, 0).unwrap(),
                (v, bytes.len()),
                "decode {v}"
            );
            // The same bytes are the same number as a varlong.
            assert_eq!(read_varlong(bytes, 0).unwrap(), (i64::from(v), bytes.len()));
            let mut out = Vec::new();
            put_varlong(&mut out, i64::from(v));
            assert_eq!(out, bytes, "encode long {v}");
        }
    }

    #[test]
    fn varlong_extremes_round_trip() {
        for v in [
            i64::MIN,
            i64::MAX,
            i64::MIN + 1,
            i64::MAX - 1,
            1 << 40,
            -(1 << 40),
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_size(v));
            assert_eq!(read_varlong(&out, 0).unwrap(), (v, out.len()));
        }
        let mut out = Vec::new();
        put_varlong(&mut out, i64::MIN);
        assert_eq!(
            out,
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        );
    }

    #[test]
    fn decoding_at_an_offset() {
        assert_eq!(read_varint(&[0, 0, 0x02], 2).unwrap(), (1, 3));
        assert_eq!(
            read_varint(&[0xAA, 0xAA, 0x80, 0x80], 2),
            Err(VarintError::Truncated { present: 2 })
        );
        // Position past the end is a truncation, not a panic.
        assert_eq!(
            read_varint(&[0x00], 5),
            Err(VarintError::Truncated { present: 0 })
        );
        assert_eq!(
            read_varlong(&[0x00], usize::MAX),
            Err(VarintError::Truncated { present: 0 })
        );
    }

    #[test]
    fn truncated_and_overlong_are_rejected() {
        let truncated: &[&[u8]] = &[&[], &[0x80], &[0xFF, 0xFF, 0xFF, 0xFF]];
        for b in truncated {
            assert!(
                matches!(read_varint(b, 0), Err(VarintError::Truncated { .. })),
                "{b:x?}"
            );
        }
        let overlong: &[&[u8]] = &[
            &[0x80, 0x80, 0x80, 0x80, 0x80],       // 5th byte continues
            &[0x80, 0x80, 0x80, 0x80, 0x10],       // bit 32
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // 6 bytes
        ];
        for b in overlong {
            assert_eq!(
                read_varint(b, 0),
                Err(VarintError::Overlong { max: 5 }),
                "{b:x?}"
            );
        }
        assert!(matches!(
            read_varlong(&[0xFF; 9], 0),
            Err(VarintError::Truncated { present: 9 })
        ));
        let overlong_long: &[&[u8]] = &[
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], // bit 64
            &[0x80; 10],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
        ];
        for b in overlong_long {
            assert_eq!(
                read_varlong(b, 0),
                Err(VarintError::Overlong { max: 10 }),
                "{b:x?}"
            );
        }
        assert!(
            VarintError::Overlong { max: 5 }
                .detail()
                .contains("32 bits")
        );
    }

    #[test]
    fn exhaustive_small_and_sampled_round_trip() {
        let mut out = Vec::new();
        let samples =
            (-70_000..70_000).chain((0..32).flat_map(|s| [1i32 << s, (1i32 << s).wrapping_neg()]));
        for v in samples {
            out.clear();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_size(v));
            assert_eq!(read_varint(&out, 0).unwrap(), (v, out.len()));
        }
        for s in 0..64 {
            for v in [
                1i64 << s,
                (1i64 << s).wrapping_neg(),
                (1i64 << s).wrapping_sub(1),
            ] {
                out.clear();
                put_varlong(&mut out, v);
                assert_eq!(out.len(), varlong_size(v));
                assert_eq!(read_varlong(&out, 0).unwrap(), (v, out.len()));
            }
        }
    }
}
