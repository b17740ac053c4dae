//! CRC16-XMODEM (Redis Cluster's `crc16`: polynomial 0x1021, initial value 0, not
//! reflected), the hash of every keyed request.
//!
//! Table-driven, eight bytes per step ("slicing by 8"): [`TABLES`]`[k][b]` is the CRC of byte
//! `b` followed by `k` zero bytes, so the CRC of eight bytes is eight independent table loads
//! XORed together instead of eight dependent steps. The tables (4 KiB) are computed at compile
//! time. The result equals the `crc16` crate's `State::<XMODEM>::calculate`, which is what the
//! tests compare it with.

/// The generator polynomial.
const POLY: u16 = 0x1021;

/// `TABLES[0]` is the classic byte table; `TABLES[k][b]` the CRC of `b` followed by `k` zeros.
static TABLES: [[u16; 256]; 8] = tables();

const fn tables() -> [[u16; 256]; 8] {
    let mut t = [[0u16; 256]; 8];
    let mut b = 0;
    while b < 256 {
        // b < 256: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let mut crc = (b as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        t[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev << 8) ^ t[0][(prev >> 8) as usize];
            b += 1;
        }
        k += 1;
    }
    t
}

/// The CRC16-XMODEM of `data`.
#[must_use]
#[inline]
pub fn xmodem(data: &[u8]) -> u16 {
    let t = &TABLES;
    let mut crc: u16 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let [hi, lo] = crc.to_be_bytes();
        crc = t[7][usize::from(c[0] ^ hi)]
            ^ t[6][usize::from(c[1] ^ lo)]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        let [hi, _] = crc.to_be_bytes();
        crc = (crc << 8) ^ t[0][usize::from(hi ^ b)];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(data: &[u8]) -> u16 {
        ::crc16::State::<::crc16::XMODEM>::calculate(data)
    }

    #[test]
    fn check_value() {
        // The catalogue's check value of CRC-16/XMODEM, and Redis's own test vector.
        assert_eq!(xmodem(b"123456789"), 0x31C3);
        assert_eq!(xmodem(b""), 0);
    }

    #[test]
    fn every_length_around_the_step_matches_the_reference() {
        let data: Vec<u8> = (0u8..=255).rev().collect();
        for len in 0..=40 {
            assert_eq!(
                xmodem(&data[..len]),
                reference(&data[..len]),
                "length {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn matches_the_reference(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(xmodem(&data), reference(&data));
        }
    }
}
