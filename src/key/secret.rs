//! The plaintext of a newly created key, which the caller sees exactly once.

use std::fmt;

use zeroize::Zeroizing;

/// The text of a key just issued (created, rotated, reset), returned once
/// inside a [`NewKey`](crate::NewKey): what its owner must store and later
/// present. Its memory is wiped on drop, and
/// its `Debug` output shows only the lookup id. There is no `Display` and no
/// `Serialize`: call [`expose_secret`](Self::expose_secret) where the text must go out.
#[derive(Clone)]
pub struct IssuedKey {
    lookup: String,
    secret: Zeroizing<String>,
    lookup_in_secret: bool,
}

impl IssuedKey {
    pub(crate) fn token(token: String, lookup_len: usize) -> Self {
        let token = Zeroizing::new(token);
        Self {
            lookup: token[..lookup_len].to_owned(),
            secret: token,
            lookup_in_secret: true,
        }
    }

    pub(crate) fn pair(public: String, secret: String) -> Self {
        Self {
            lookup: public,
            secret: Zeroizing::new(secret),
            lookup_in_secret: false,
        }
    }

    /// The text the client must send: the whole token, or a pair's secret key.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// The lookup id: the token's first characters, or a pair's public API key.
    pub fn lookup(&self) -> &str {
        &self.lookup
    }

    /// For key pairs, the public API key; `None` for single-token keys.
    pub fn public_key(&self) -> Option<&str> {
        (!self.lookup_in_secret).then_some(self.lookup.as_str())
    }

    /// The key as a [`ParsedKey`](super::ParsedKey): its lookup id and secret.
    pub fn parsed(&self) -> super::ParsedKey<'_> {
        super::ParsedKey {
            lookup: &self.lookup,
            secret: &self.secret,
            format: 0,
        }
    }

    /// The redacted form: the lookup id and an ellipsis.
    pub fn redacted(&self) -> String {
        super::redact(&self.lookup)
    }

    /// The text the HTTP layer expects for this key: a token as is, a pair as
    /// `public:secret`.
    pub fn to_presented(&self) -> Zeroizing<String> {
        if self.lookup_in_secret {
            self.secret.clone()
        } else {
            Zeroizing::new(format!("{}:{}", self.lookup, self.secret.as_str()))
        }
    }
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedKey({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use crate::key::{PairFormat, TokenFormat};

    #[test]
    fn debug_never_shows_the_secret() {
        let k = TokenFormat::new("mj_").lookup_len(8).generate();
        let dbg = format!("{k:?}");
        assert!(dbg.contains(k.lookup()));
        assert!(!dbg.contains(k.expose_secret()));
        let p = PairFormat::new().generate();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains(p.expose_secret()));
        assert_eq!(p.public_key(), Some(p.lookup()));
    }
}
