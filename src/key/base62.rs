//! Base62 alphabet, uniform random strings and the 6-character checksum encoding.

use rand::RngCore;

/// The base62 alphabet in the order used for encoding: digits, upper, lower.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Bits of entropy carried by one uniformly random base62 character (log2 62).
pub(crate) const BITS_PER_CHAR: f64 = 5.954_196_310_386_876;

/// The random source for secrets: rand's `ThreadRng`, a ChaCha12 CSPRNG per
/// thread, seeded from the OS CSPRNG and reseeded from it every 64 KiB of
/// output. It is as unpredictable as the OS source without a system call per
/// key (a key's 32 characters take about 33 of its bytes).
fn rng() -> rand::rngs::ThreadRng {
    rand::thread_rng()
}

/// Appends `len` uniformly random base62 characters drawn from a CSPRNG
/// seeded by the OS ([`rng`]).
///
/// Bytes >= 248 are rejected so `byte % 62` is unbiased.
pub(crate) fn push_random(out: &mut String, len: usize) {
    let mut rng = rng();
    let mut buf = [0u8; 64];
    // The characters of one batch, appended with one `push_str` rather than
    // a `push` each.
    let mut chars = [0u8; 64];
    out.reserve(len);
    let mut remaining = len;
    while remaining > 0 {
        // Only as many bytes as are still needed, plus a few for rejections.
        let want = (remaining + 4).min(buf.len());
        let buf = &mut buf[..want];
        rng.fill_bytes(buf);
        let mut produced = 0;
        for &b in buf.iter() {
            if produced == remaining {
                break;
            }
            if b < 248 {
                chars[produced] = ALPHABET[usize::from(b % 62)];
                produced += 1;
            }
        }
        out.push_str(std::str::from_utf8(&chars[..produced]).expect("base62 is ASCII"));
        remaining -= produced;
    }
    buf.iter_mut().for_each(|b| *b = 0);
    chars.iter_mut().for_each(|b| *b = 0);
}

/// Appends `len` random lowercase hex characters from the CSPRNG ([`rng`]).
pub(crate) fn push_random_hex(out: &mut String, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rng();
    let mut buf = [0u8; 32];
    let mut produced = 0;
    while produced < len {
        rng.fill_bytes(&mut buf);
        for &b in &buf {
            for nibble in [b >> 4, b & 0x0f] {
                if produced < len {
                    out.push(HEX[usize::from(nibble)] as char);
                    produced += 1;
                }
            }
        }
    }
    buf.iter_mut().for_each(|b| *b = 0);
}

/// True when every byte is in the base62 alphabet.
///
/// Branch-free over the whole input (no early exit): eight bytes at a time
/// as one `u64` (the last word overlapping the one before when the length is
/// not a multiple of eight), byte by byte only for inputs under eight bytes.
/// Inputs are already bounded by the format's length.
pub(crate) fn is_base62(s: &[u8]) -> bool {
    if s.len() < 8 {
        return s.iter().fold(true, |ok, &b| {
            let digit = b.wrapping_sub(b'0') < 10;
            let letter = (b | 0x20).wrapping_sub(b'a') < 26;
            ok & (digit | letter)
        });
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let mut ok = true;
    let mut at = 0;
    while at + 8 <= s.len() {
        ok &= word_is_base62(word(at));
        at += 8;
    }
    if at < s.len() {
        ok &= word_is_base62(word(s.len() - 8));
    }
    ok
}

/// Every byte `b` of `w` with `lo <= b <= hi` gets its high bit set, every
/// other byte a clear one; for bytes under 0x80 no sum carries into the
/// next byte.
#[inline]
fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let at_least_lo = w.wrapping_add(ONES * u64::from(0x80 - lo));
    let above_hi = w.wrapping_add(ONES * u64::from(0x7f - hi));
    at_least_lo & !above_hi & (ONES * 0x80)
}

/// True when all eight bytes of `w` are base62 characters (SWAR: one word
/// of arithmetic instead of eight comparisons).
#[inline]
fn word_is_base62(w: u64) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of 0x80 or more is never base62, and would break the
    // carry-free sums below: such a word is refused on its own account.
    let ascii = w & HIGH == 0;
    let digit = in_range(w, b'0', b'9');
    let letter = in_range(w | 0x2020_2020_2020_2020, b'a', b'z');
    ascii & ((digit | letter) == HIGH)
}

/// True when every byte is a lowercase hex digit.
pub(crate) fn is_lower_hex(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6))
    })
}

/// Length of a checksum: a CRC32 fits in 6 base62 digits (62^6 > 2^32).
pub(crate) const CHECKSUM_LEN: usize = 6;

/// CRC32 of `data` as 6 base62 characters, most significant digit first.
pub(crate) fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// The value of a base62 digit (in [`ALPHABET`] order); 0 for other bytes.
const DIGIT_VALUE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// True when `sum`, six base62 characters, is the [`checksum`] of `data`.
///
/// Decodes `sum` to a number and compares it with the CRC32 instead of
/// encoding the CRC32: a fixed-width base62 number has exactly one spelling,
/// so this is the same test as `checksum(data) == sum` for base62 input
/// (which the caller has checked), in fewer steps. Six base62 digits reach
/// past `u32::MAX`, and most random suffixes do: those are refused before
/// the CRC32 is computed.
#[inline]
pub(crate) fn checksum_matches(data: &[u8], sum: &[u8]) -> bool {
    let Ok(sum) = <&[u8; CHECKSUM_LEN]>::try_from(sum) else {
        return false;
    };
    let value = sum.iter().fold(0u64, |n, &c| {
        n * 62 + u64::from(DIGIT_VALUE[usize::from(c)])
    });
    match u32::try_from(value) {
        Ok(value) => value == crc32fast::hash(data),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_use_only_the_alphabet_and_have_the_requested_length() {
        let mut s = String::new();
        push_random(&mut s, 500);
        assert_eq!(s.len(), 500);
        assert!(is_base62(s.as_bytes()));
        let mut h = String::new();
        push_random_hex(&mut h, 33);
        assert_eq!(h.len(), 33);
        assert!(is_lower_hex(h.as_bytes()));
    }

    #[test]
    fn random_strings_differ() {
        let mut a = String::new();
        let mut b = String::new();
        push_random(&mut a, 32);
        push_random(&mut b, 32);
        assert_ne!(a, b);
    }

    #[test]
    fn checksum_matches_exactly_the_encoded_checksum() {
        for data in [&b""[..], b"mj_abc", b"mj_0123456789abcdefghijABCDEFGHIJ"] {
            let sum = checksum(data);
            assert!(checksum_matches(data, &sum));
            // Every other value of every digit is refused.
            for i in 0..CHECKSUM_LEN {
                for &c in ALPHABET.iter().filter(|&&c| c != sum[i]) {
                    let mut other = sum;
                    other[i] = c;
                    assert!(!checksum_matches(data, &other), "{other:?}");
                }
            }
            assert!(!checksum_matches(data, &sum[..5]));
        }
        // The largest six-digit value is past u32::MAX, so never a CRC32.
        assert!(!checksum_matches(b"x", b"zzzzzz"));
    }

    #[test]
    fn is_base62_refuses_every_other_byte_at_every_position() {
        for len in [1, 3, 8, 13, 16, 38] {
            let valid: Vec<u8> = (0..len).map(|i| ALPHABET[(i * 7) % 62]).collect();
            assert!(is_base62(&valid), "{len}");
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut s = valid.clone();
                    s[pos] = b;
                    assert_eq!(
                        is_base62(&s),
                        ALPHABET.contains(&b),
                        "len {len} pos {pos} byte {b}"
                    );
                }
            }
        }
        assert!(is_base62(b""));
    }

    #[test]
    fn checksum_is_stable_and_base62() {
        let c = checksum(b"mj_abc");
        assert!(is_base62(&c));
        assert_eq!(c, checksum(b"mj_abc"));
        assert_ne!(c, checksum(b"mj_abd"));
        // crc32("") == 0
        assert_eq!(&checksum(b""), b"000000");
    }
}
