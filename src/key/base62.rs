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
    let mut produced = 0;
    while produced < len {
        // Only as many bytes as are still needed, plus a few for rejections.
        let want = (len - produced + 4).min(buf.len());
        let buf = &mut buf[..want];
        rng.fill_bytes(buf);
        for &b in buf.iter() {
            if produced == len {
                break;
            }
            if b < 248 {
                out.push(ALPHABET[usize::from(b % 62)] as char);
                produced += 1;
            }
        }
    }
    buf.iter_mut().for_each(|b| *b = 0);
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
/// Branch-free over the whole input (no early exit) so it vectorises; inputs
/// are already bounded by the format's length.
pub(crate) fn is_base62(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        ok & (digit | letter)
    })
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
    fn checksum_is_stable_and_base62() {
        let c = checksum(b"mj_abc");
        assert!(is_base62(&c));
        assert_eq!(c, checksum(b"mj_abc"));
        assert_ne!(c, checksum(b"mj_abd"));
        // crc32("") == 0
        assert_eq!(&checksum(b""), b"000000");
    }
}
