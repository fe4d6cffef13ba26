//! Signing keys for session tokens, each named by a `kid`, and the key ring
//! that signs with one and verifies with all, so a signing key can rotate
//! while the tokens it signed live out their lifetime.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use hmac::{Hmac, Mac};
use jsonwebtoken::EncodingKey;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::ConfigError;

/// The shortest HS256 secret accepted, in bytes (the hash output size, as
/// RFC 7518 §3.2 asks).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The longest `kid` accepted, in bytes.
pub const MAX_KID_LEN: usize = 64;

/// The algorithm a [`SessionKey`] signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionAlgorithm {
    /// Ed25519 signatures (`EdDSA`), the default: instances that only verify
    /// need only the public key.
    EdDsa,
    /// HMAC-SHA256 (`HS256`) with a shared secret: faster, but every instance
    /// that verifies can also sign.
    Hs256,
}

impl SessionAlgorithm {
    /// The JWS `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    pub(super) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

/// One key for session tokens, named by its `kid`: an Ed25519 key pair, an
/// Ed25519 public key (verify only), or an HS256 secret. The key material
/// never appears in `Debug` output.
///
/// ```
/// use keygate::session::{SessionAlgorithm, SessionKey};
/// let key = SessionKey::generate_ed25519("2026-11")?;
/// assert_eq!(key.kid(), "2026-11");
/// assert_eq!(key.algorithm(), SessionAlgorithm::EdDsa);
/// assert!(!format!("{key:?}").contains(&format!("{:?}", key.public_key())));
/// # Ok::<(), keygate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct SessionKey {
    kid: Arc<str>,
    algorithm: SessionAlgorithm,
    encoding: Option<Arc<EncodingKey>>,
    verifier: Arc<Verifier>,
    public: Option<[u8; 32]>,
}

/// The verification state, prepared once per key: the HMAC state after the
/// key block (cloned per check, so a check costs only the message's
/// compressions), or the decoded Ed25519 point.
enum Verifier {
    Hmac(Hmac<Sha256>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl SessionKey {
    /// A fresh Ed25519 key pair from the OS CSPRNG.
    pub fn generate_ed25519(kid: impl Into<String>) -> Result<Self, ConfigError> {
        let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
        Self::from_ed25519(kid, &signing)
    }

    /// An Ed25519 key pair from its 32-byte seed (the private key), e.g.
    /// read from a secret manager so every instance signs with the same key.
    pub fn ed25519_from_seed(kid: impl Into<String>, seed: &[u8]) -> Result<Self, ConfigError> {
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| ConfigError::Invalid("an Ed25519 seed is 32 bytes".into()))?;
        Self::from_ed25519(kid, &ed25519_dalek::SigningKey::from_bytes(seed))
    }

    fn from_ed25519(
        kid: impl Into<String>,
        signing: &ed25519_dalek::SigningKey,
    ) -> Result<Self, ConfigError> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| ConfigError::Invalid("cannot encode the Ed25519 key".into()))?;
        let verifying = signing.verifying_key();
        Ok(Self {
            kid: checked_kid(kid)?,
            algorithm: SessionAlgorithm::EdDsa,
            encoding: Some(Arc::new(EncodingKey::from_ed_der(der.as_bytes()))),
            verifier: Arc::new(Verifier::Ed25519(verifying)),
            public: Some(verifying.to_bytes()),
        })
    }

    /// An Ed25519 public key that verifies tokens another instance signed
    /// (this one cannot sign with it).
    pub fn ed25519_public(kid: impl Into<String>, public: [u8; 32]) -> Result<Self, ConfigError> {
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| ConfigError::Invalid("not an Ed25519 public key".into()))?;
        Ok(Self {
            kid: checked_kid(kid)?,
            algorithm: SessionAlgorithm::EdDsa,
            encoding: None,
            verifier: Arc::new(Verifier::Ed25519(verifying)),
            public: Some(public),
        })
    }

    /// An HS256 key with a shared secret of at least
    /// [`MIN_HMAC_SECRET_LEN`] bytes.
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(ConfigError::Invalid(format!(
                "an HS256 secret needs at least {MIN_HMAC_SECRET_LEN} bytes"
            )));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| ConfigError::Invalid("unusable HS256 secret".into()))?;
        Ok(Self {
            kid: checked_kid(kid)?,
            algorithm: SessionAlgorithm::Hs256,
            encoding: Some(Arc::new(EncodingKey::from_secret(secret))),
            verifier: Arc::new(Verifier::Hmac(mac)),
            public: None,
        })
    }

    /// A fresh HS256 key with a 32-byte secret from the OS CSPRNG.
    pub fn generate_hs256(kid: impl Into<String>) -> Result<Self, ConfigError> {
        use rand::RngCore as _;
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *secret);
        Self::hs256(kid, &*secret)
    }

    /// The key's id, sent in each token's `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm the key signs and verifies with.
    pub fn algorithm(&self) -> SessionAlgorithm {
        self.algorithm
    }

    /// True when this key can sign (not a public key alone).
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    /// The Ed25519 public key, to give instances that only verify; `None`
    /// for HS256.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.public
    }

    pub(super) fn encoding(&self) -> Option<&EncodingKey> {
        self.encoding.as_deref()
    }

    /// True when `signature` signs `message` under this key; the HMAC
    /// comparison is constant time, Ed25519 verification is strict.
    pub(super) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &*self.verifier {
            Verifier::Hmac(state) => {
                let mut mac = state.clone();
                mac.update(message);
                mac.verify_slice(signature).is_ok()
            }
            Verifier::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.can_sign())
            .finish_non_exhaustive()
    }
}

fn checked_kid(kid: impl Into<String>) -> Result<Arc<str>, ConfigError> {
    let kid = kid.into();
    if kid.is_empty() || kid.len() > MAX_KID_LEN || !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid(format!(
            "a session key id is 1 to {MAX_KID_LEN} visible ASCII characters"
        )));
    }
    Ok(kid.into())
}

/// The signing key and every key still accepted for verification.
#[derive(Debug, Clone)]
pub(super) struct KeyRing {
    pub(super) signing: SessionKey,
    pub(super) verifying: HashMap<Arc<str>, SessionKey>,
}

impl KeyRing {
    pub(super) fn new(signing: SessionKey) -> Result<Self, ConfigError> {
        if !signing.can_sign() {
            return Err(ConfigError::Invalid(
                "the session signing key is a public key only".into(),
            ));
        }
        let mut verifying = HashMap::new();
        verifying.insert(Arc::clone(&signing.kid), signing.clone());
        Ok(Self { signing, verifying })
    }

    /// Adds a key that verifies only; a `kid` already present is replaced.
    pub(super) fn accept(&mut self, key: SessionKey) -> Result<(), ConfigError> {
        if key.kid == self.signing.kid {
            return Err(ConfigError::Invalid(format!(
                "session key id '{}' is the signing key's",
                key.kid
            )));
        }
        self.verifying.insert(Arc::clone(&key.kid), key);
        Ok(())
    }

    /// Signs with `key` from now on, keeping the previous signing key for
    /// verification.
    pub(super) fn rotate(&mut self, key: SessionKey) -> Result<(), ConfigError> {
        if !key.can_sign() {
            return Err(ConfigError::Invalid(
                "the session signing key is a public key only".into(),
            ));
        }
        self.verifying.insert(Arc::clone(&key.kid), key.clone());
        self.signing = key;
        Ok(())
    }

    /// Stops accepting tokens signed with `kid`; the signing key stays.
    pub(super) fn retire(&mut self, kid: &str) -> bool {
        if *self.signing.kid == *kid {
            return false;
        }
        self.verifying.remove(kid).is_some()
    }
}
