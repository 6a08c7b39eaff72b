//! CRC-32C (Castagnoli), the checksum of every batch (Kafka's `Crc32C`).
//!
//! Computed with the `crc-fast` crate, which folds 64 bytes at a time with carry-less
//! multiplication (VPCLMULQDQ on AVX-512 CPUs, PCLMULQDQ on older x86, PMULL on ARM) and picks
//! the code path at run time. On this project's machine it checks a 113 KiB batch at about
//! twice the rate of the `crc32c` crate's SSE4.2 instruction loop (55 against 24 GB/s from
//! cache, 18.6 against 10.4 GB/s from memory), and is no slower for a bare 61-byte header.
//! The read path checks every batch it hands out, so this rate bounds read throughput.

use crc_fast::{CrcAlgorithm, Digest};

/// CRC-32C of `bytes`.
#[inline]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    // CRC-32C is a 32-bit CRC: the upper half of the crate's `u64` is always zero.
    crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// CRC-32C of the concatenation of `parts`, without joining them.
pub(crate) fn crc32c_parts(parts: &[&[u8]]) -> u32 {
    let mut digest = Digest::new(CrcAlgorithm::Crc32Iscsi);
    for part in parts {
        digest.update(part);
    }
    digest.finalize() as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 (iSCSI) B.4 and the "check" value of the CRC catalogue.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    proptest! {
        /// Every length and alignment (crc-fast switches code paths at several lengths up to
        /// a few hundred bytes) agrees with the `crc32c` crate, whole and in parts.
        #[test]
        fn agrees_with_the_crc32c_crate(
            bytes in prop::collection::vec(any::<u8>(), 0..5000),
            skip in 0usize..64,
            split in any::<prop::sample::Index>(),
        ) {
            let bytes = &bytes[skip.min(bytes.len())..];
            let expected = ::crc32c::crc32c(bytes);
            prop_assert_eq!(crc32c(bytes), expected);
            let (a, b) = bytes.split_at(split.index(bytes.len() + 1));
            prop_assert_eq!(crc32c_parts(&[a, b]), expected);
        }
    }
}
