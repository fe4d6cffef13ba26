//! Secret hashing: HMAC-SHA256 keyed with a server-side pepper. No I/O.
//!
//! keygate stores only a hash of each key's secret. API keys are generated with
//! at least 128 bits of entropy from the OS CSPRNG, so nobody can guess or
//! brute-force one from its hash: a fast keyed hash is enough, and it lets a
//! verify finish in well under a microsecond. Passwords are different: people
//! pick them, they are guessable, and they need a deliberately slow hash
//! (Argon2, scrypt, bcrypt) — never use this module for passwords.
//!
//! The pepper (a server secret kept outside the database) means a leaked
//! database alone cannot even confirm a guessed key. Each stored hash records
//! its pepper version, so peppers can be rotated: add the new pepper as current,
//! keep the old ones for verification, and re-hash keys as they are used.
//! Version 0 is plain SHA-256, for importing keys from systems that stored that.
//!
//! The keyed MAC state is prepared once per pepper and cloned per check, so a
//! verify costs two SHA-256 compressions. Comparisons are constant time.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Version number stored with hashes made by plain SHA-256 (imports).
pub const SHA256_VERSION: u32 = 0;

/// Minimum pepper length in bytes.
pub const MIN_PEPPER_LEN: usize = 32;

/// Errors building a [`Hasher`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The pepper is shorter than [`MIN_PEPPER_LEN`] bytes.
    #[error("pepper must be at least {MIN_PEPPER_LEN} bytes")]
    PepperTooShort,
    /// Pepper version 0 is reserved for plain SHA-256 imports.
    #[error("pepper version 0 is reserved for sha-256 imports")]
    ReservedVersion,
    /// Two peppers were given the same version.
    #[error("pepper version {0} is defined twice")]
    DuplicateVersion(u32),
}

/// A server-side secret mixed into every key hash, with its version.
#[derive(Clone)]
pub struct Pepper {
    version: u32,
    bytes: Zeroizing<Vec<u8>>,
}

impl Pepper {
    /// A pepper with `version` (>= 1) and at least 32 bytes of secret material.
    pub fn new(version: u32, bytes: impl Into<Vec<u8>>) -> Result<Self, HashError> {
        let bytes = Zeroizing::new(bytes.into());
        if version == SHA256_VERSION {
            return Err(HashError::ReservedVersion);
        }
        if bytes.len() < MIN_PEPPER_LEN {
            return Err(HashError::PepperTooShort);
        }
        Ok(Self { version, bytes })
    }

    /// A fresh random 32-byte pepper. Hashes made with it cannot be verified after
    /// the process exits, so use it only with an in-memory store or in tests.
    pub fn random(version: u32) -> Result<Self, HashError> {
        let mut bytes = vec![0u8; MIN_PEPPER_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self::new(version, bytes)
    }

    /// This pepper's version.
    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pepper(v{}, [redacted])", self.version)
    }
}

/// A stored hash of a key's secret and the version that made it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretHash {
    version: u32,
    digest: [u8; 32],
}

impl SecretHash {
    /// Rebuilds a hash from stored parts.
    pub fn from_parts(version: u32, digest: [u8; 32]) -> Self {
        Self { version, digest }
    }

    /// Rebuilds a hash from stored parts, checking the digest length.
    pub fn from_slice(version: u32, digest: &[u8]) -> Option<Self> {
        Some(Self {
            version,
            digest: digest.try_into().ok()?,
        })
    }

    /// A plain SHA-256 hash (version 0), for importing keys from a system that
    /// stored `sha256(key)`.
    pub fn sha256(secret: &str) -> Self {
        Self {
            version: SHA256_VERSION,
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// The pepper version (0 for plain SHA-256).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The 32-byte digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash(v{}, [redacted])", self.version)
    }
}

/// Hashes and verifies secrets with the current pepper and any older ones.
///
/// ```
/// use keygate::hash::{Hasher, Pepper};
///
/// let hasher = Hasher::new(Pepper::new(1, [7u8; 32]).unwrap());
/// let stored = hasher.hash("mj_secret");
/// assert!(hasher.verify("mj_secret", &stored));
/// assert!(!hasher.verify("mj_secreT", &stored));
/// ```
#[derive(Clone)]
pub struct Hasher {
    current: u32,
    macs: Vec<(u32, HmacSha256)>,
}

impl Hasher {
    /// A hasher whose current pepper is `pepper`.
    pub fn new(pepper: Pepper) -> Self {
        let mac = prepare(&pepper);
        Self {
            current: pepper.version,
            macs: vec![(pepper.version, mac)],
        }
    }

    /// A hasher with a fresh random pepper (version 1). See [`Pepper::random`].
    pub fn ephemeral() -> Self {
        Self::new(Pepper::random(1).expect("a 32-byte random pepper is valid"))
    }

    /// Adds an older pepper that existing hashes may still use.
    pub fn with_previous(mut self, pepper: Pepper) -> Result<Self, HashError> {
        if self.macs.iter().any(|(v, _)| *v == pepper.version) {
            return Err(HashError::DuplicateVersion(pepper.version));
        }
        let mac = prepare(&pepper);
        self.macs.push((pepper.version, mac));
        Ok(self)
    }

    /// The version new hashes are made with.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Hashes `secret` with the current pepper.
    pub fn hash(&self, secret: &str) -> SecretHash {
        let mac = &self.macs[0].1;
        SecretHash {
            version: self.current,
            digest: mac_digest(mac, secret),
        }
    }

    /// Checks `secret` against `stored` in constant time, using the pepper version
    /// recorded with it. An unknown version never verifies.
    pub fn verify(&self, secret: &str, stored: &SecretHash) -> bool {
        let computed = if stored.version == SHA256_VERSION {
            Sha256::digest(secret.as_bytes()).into()
        } else {
            match self.macs.iter().find(|(v, _)| *v == stored.version) {
                Some((_, mac)) => mac_digest(mac, secret),
                None => return false,
            }
        };
        digests_equal(&computed, &stored.digest)
    }

    /// True when `stored` was made with something other than the current pepper.
    pub fn needs_rehash(&self, stored: &SecretHash) -> bool {
        stored.version != self.current
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<u32> = self.macs.iter().map(|(v, _)| *v).collect();
        f.debug_struct("Hasher")
            .field("current", &self.current)
            .field("versions", &versions)
            .finish_non_exhaustive()
    }
}

/// Compares two digests in constant time: the XOR of each 8-byte word is
/// OR-ed together without a branch, and only the final word goes through
/// `subtle` (its comparison resists the optimiser turning it into an early
/// exit). Same guarantee as a byte-wise `ct_eq`, in a tenth of the work.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u64;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_ne_bytes(x.try_into().expect("8-byte chunk"));
        let y = u64::from_ne_bytes(y.try_into().expect("8-byte chunk"));
        diff |= x ^ y;
    }
    diff.ct_eq(&0).into()
}

fn prepare(pepper: &Pepper) -> HmacSha256 {
    HmacSha256::new_from_slice(&pepper.bytes).expect("hmac accepts keys of any length")
}

fn mac_digest(prepared: &HmacSha256, secret: &str) -> [u8; 32] {
    let mut mac = prepared.clone();
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_differing_in_any_bit_are_unequal() {
        let a = [0x5au8; 32];
        assert!(digests_equal(&a, &a));
        for byte in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[byte] ^= 1 << bit;
                assert!(!digests_equal(&a, &b), "byte {byte} bit {bit}");
            }
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    // RFC 4231 test cases 1, 2, 6 and 7 (HMAC-SHA-256).
    #[test]
    fn rfc4231_vectors() {
        assert_eq!(
            hmac_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            hmac_hex(
                &[0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."
            ),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
    }

    #[test]
    fn the_prepared_path_matches_rfc4231_case_6() {
        // The Hasher's cloned-state path must agree with a fresh HMAC.
        let pepper = Pepper::new(3, vec![0xaa; 131]).unwrap();
        let h = Hasher::new(pepper);
        let msg = "Test Using Larger Than Block-Size Key - Hash Key First";
        let got = h.hash(msg);
        assert_eq!(
            got.digest().to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
        assert_eq!(got.version(), 3);
    }

    #[test]
    fn rotated_peppers_still_verify_old_hashes() {
        let old = Pepper::new(1, [1u8; 32]).unwrap();
        let new = Pepper::new(2, [2u8; 32]).unwrap();
        let before = Hasher::new(old.clone()).hash("k");
        let after = Hasher::new(new).with_previous(old).unwrap();
        assert!(after.verify("k", &before));
        assert!(after.needs_rehash(&before));
        assert!(!after.needs_rehash(&after.hash("k")));
        let unknown = Hasher::new(Pepper::new(9, [9u8; 32]).unwrap());
        assert!(!unknown.verify("k", &before));
    }

    #[test]
    fn sha256_imports_verify() {
        let h = Hasher::ephemeral();
        let imported = SecretHash::sha256("legacy_key");
        assert_eq!(
            imported.digest().to_vec(),
            hex(&format!("{:x}", Sha256::digest(b"legacy_key")))
        );
        assert!(h.verify("legacy_key", &imported));
        assert!(!h.verify("legacy_kez", &imported));
    }

    #[test]
    fn bad_peppers_are_refused_and_never_printed() {
        assert_eq!(
            Pepper::new(1, [0u8; 8]).unwrap_err(),
            HashError::PepperTooShort
        );
        assert_eq!(
            Pepper::new(0, [0u8; 32]).unwrap_err(),
            HashError::ReservedVersion
        );
        let p = Pepper::new(1, [0x41u8; 32]).unwrap();
        assert!(!format!("{p:?}").contains("AAAA"));
        let dup = Hasher::new(p.clone()).with_previous(p);
        assert!(matches!(dup, Err(HashError::DuplicateVersion(1))));
    }
}
