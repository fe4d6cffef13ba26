//! Key formats: generating, parsing and redacting API keys. No I/O.
//!
//! A [`KeyFormat`] describes one product's keys. Single-token keys
//! ([`TokenFormat`], e.g. `mj_…`, `mk_live_…`) carry a prefix, a random base62
//! body and an optional 6-character CRC32 checksum; their lookup id is the first
//! few characters of the token. Key pairs ([`PairFormat`], Mailjet style) are a
//! public API key (the lookup id, always visible) plus a secret key shown once.
//!
//! Names for the key text, by where it stands:
//!
//! | type | what it is |
//! |---|---|
//! | [`IssuedKey`] | the text of a key just generated, shown to its owner once; wiped on drop, never printed |
//! | `layer::PresentedKey` | the text a client sent in a request, as read from a header (feature `tower`) |
//! | [`ParsedKey`] | a presented key split by its format into lookup id and secret |
//! | [`KeyLocation`](crate::KeyLocation) | where in a request the presented key is read (a profile setting) |

mod base62;
mod secret;

pub use secret::IssuedKey;

use std::fmt;

/// Why a presented key was rejected before any hashing or store access.
///
/// The reason is safe to log: it never contains any part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedReason {
    /// The key is empty or only whitespace.
    Empty,
    /// The key does not have the length this format produces.
    Length,
    /// The key does not start with a prefix this format produces.
    Prefix,
    /// The key contains a character outside the format's alphabet.
    Alphabet,
    /// The trailing checksum does not match: a typo, truncation or garbage.
    Checksum,
    /// A key pair was not given as `public:secret`.
    Separator,
    /// The credential is longer than any key could be (over 1 KiB in an HTTP
    /// header); it was not read further.
    TooLong,
    /// More than one credential was presented (two `Authorization` headers, an
    /// `Authorization` header and an API-key header, or a repeated API-key
    /// header), so which one to check is ambiguous.
    Ambiguous,
    /// The credential contains characters outside ASCII (outside visible
    /// ASCII, when read from an HTTP header or decoded from HTTP Basic), or
    /// HTTP Basic credentials are not valid base64.
    Encoding,
    /// The `Authorization` header uses a scheme this profile does not accept
    /// (e.g. `Basic` where keys are bearer tokens).
    Scheme,
}

impl MalformedReason {
    /// A short lowercase description, suitable for an error message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty key",
            Self::Length => "wrong key length",
            Self::Prefix => "unknown key prefix",
            Self::Alphabet => "invalid character in key",
            Self::Checksum => "key checksum mismatch",
            Self::Separator => "expected public key and secret separated by ':'",
            Self::TooLong => "credential too long",
            Self::Ambiguous => "more than one credential presented",
            Self::Encoding => "credential is not valid text",
            Self::Scheme => "unsupported authorization scheme",
        }
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format definition that cannot produce safe keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The random part not covered by the lookup id carries fewer than 128 bits.
    #[error("key secret carries {bits} bits of entropy, at least 128 are required")]
    TooLittleEntropy {
        /// The entropy the format would provide, in whole bits.
        bits: u32,
    },
    /// The prefix contains characters other than ASCII letters, digits and `_`/`-`.
    #[error("key prefix may only contain ASCII letters, digits, '_' and '-'")]
    InvalidPrefix,
    /// The lookup id length does not fit inside the key.
    #[error("lookup length must include the prefix and at least one random character")]
    InvalidLookupLength,
    /// A profile defines no key format at all.
    #[error("a profile needs at least one key format")]
    NoFormat,
}

/// A presented key parsed by its [`KeyFormat`]: the lookup id used to find
/// stored candidates and the secret that is hashed and compared. It borrows
/// the presented text; its `Debug` output hides the secret.
///
/// For single-token keys the secret is the whole token and the lookup id its
/// first characters; for key pairs the lookup id is the public API key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    lookup: &'a str,
    secret: &'a str,
    format: usize,
}

impl<'a> ParsedKey<'a> {
    /// The lookup id: safe to log and to store in plain text.
    pub fn lookup(&self) -> &'a str {
        self.lookup
    }

    /// The secret to hash. Never log it.
    pub fn expose_secret(&self) -> &'a str {
        self.secret
    }

    /// Index of the matching format in the profile's format list.
    pub fn format_index(&self) -> usize {
        self.format
    }

    pub(crate) fn with_format(mut self, index: usize) -> Self {
        self.format = index;
        self
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("lookup", &self.lookup)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The redacted form shown in key lists: the lookup id and an ellipsis.
///
/// ```
/// assert_eq!(keygate::key::redact("mj_Ab3dE"), "mj_Ab3dE…");
/// ```
pub fn redact(lookup: &str) -> String {
    let mut redacted = String::with_capacity(lookup.len() + '…'.len_utf8());
    redacted.push_str(lookup);
    redacted.push('…');
    redacted
}

/// How one product's keys look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFormat {
    /// A single token such as `mj_…`, sent as a bearer token or header value.
    Token(TokenFormat),
    /// A public API key plus a secret key, sent as HTTP Basic `apikey:secret`.
    Pair(PairFormat),
}

impl KeyFormat {
    /// Checks that the format produces keys with at least 128 bits of secret entropy.
    pub fn validate(&self) -> Result<(), FormatError> {
        match self {
            Self::Token(t) => t.validate(),
            Self::Pair(p) => p.validate(),
        }
    }

    /// A label that names this format in stored records: the token prefix, or `pair`.
    pub fn label(&self) -> &str {
        match self {
            Self::Token(t) => &t.prefix,
            Self::Pair(_) => "pair",
        }
    }

    /// Generates a new random key in this format from a CSPRNG seeded by the OS (rand's `ThreadRng`).
    pub fn generate(&self) -> IssuedKey {
        match self {
            Self::Token(t) => t.generate(),
            Self::Pair(p) => p.generate(),
        }
    }

    /// Parses a presented key. A pair is given as `public:secret`.
    ///
    /// Work is bounded by the format's key length, whatever the input length.
    pub fn parse<'a>(&self, presented: &'a str) -> Result<ParsedKey<'a>, MalformedReason> {
        match self {
            Self::Token(t) => t.parse(presented),
            Self::Pair(p) => p.parse(presented),
        }
    }
}

/// A single-token key: `prefix` + random base62 body + optional checksum.
///
/// ```
/// use keygate::key::TokenFormat;
///
/// let format = TokenFormat::new("mj_").lookup_len(8);
/// let key = format.generate();
/// let credential = format.parse(key.expose_secret()).unwrap();
/// assert_eq!(credential.lookup().len(), 8);
/// assert!(credential.lookup().starts_with("mj_"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFormat {
    prefix: String,
    /// Whether `prefix` is ASCII (it is in every format that passes
    /// `validate`), kept so parsing need not check the input's encoding
    /// when every other check passes.
    ascii_prefix: bool,
    body_len: usize,
    lookup_len: usize,
    checksum: bool,
}

impl TokenFormat {
    /// A format with `prefix`, a 32-character body, a lookup id of the prefix plus
    /// 8 characters, and a checksum.
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let lookup_len = prefix.len() + 8;
        Self {
            ascii_prefix: prefix.is_ascii(),
            prefix,
            body_len: 32,
            lookup_len,
            checksum: true,
        }
    }

    /// Sets the number of random base62 characters after the prefix.
    pub fn body_len(mut self, len: usize) -> Self {
        self.body_len = len;
        self
    }

    /// Sets the lookup id length, counted from the start of the token (prefix included).
    pub fn lookup_len(mut self, len: usize) -> Self {
        self.lookup_len = len;
        self
    }

    /// Turns the trailing 6-character CRC32 checksum on or off.
    pub fn checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self
    }

    /// The prefix every key of this format starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Length of a complete token in bytes.
    pub fn token_len(&self) -> usize {
        self.prefix.len()
            + self.body_len
            + if self.checksum {
                base62::CHECKSUM_LEN
            } else {
                0
            }
    }

    /// A regular expression (POSIX ERE / Rust `regex` syntax) that matches keys of
    /// this format, for secret scanners.
    pub fn scanner_regex(&self) -> String {
        let sum = if self.checksum {
            base62::CHECKSUM_LEN
        } else {
            0
        };
        format!(
            "{}[0-9A-Za-z]{{{}}}",
            self.prefix.replace('-', "\\-"),
            self.body_len + sum
        )
    }

    fn validate(&self) -> Result<(), FormatError> {
        if !self
            .prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(FormatError::InvalidPrefix);
        }
        if self.lookup_len <= self.prefix.len()
            || self.lookup_len >= self.prefix.len() + self.body_len
        {
            return Err(FormatError::InvalidLookupLength);
        }
        let hidden = self.prefix.len() + self.body_len - self.lookup_len;
        let bits = (hidden as f64 * base62::BITS_PER_CHAR) as u32;
        if bits < 128 {
            return Err(FormatError::TooLittleEntropy { bits });
        }
        Ok(())
    }

    /// Generates a new key from a CSPRNG seeded by the OS (rand's `ThreadRng`).
    pub fn generate(&self) -> IssuedKey {
        let mut s = String::with_capacity(self.token_len());
        s.push_str(&self.prefix);
        base62::push_random(&mut s, self.body_len);
        if self.checksum {
            let sum = base62::checksum(s.as_bytes());
            s.extend(sum.iter().map(|&b| b as char));
        }
        IssuedKey::token(s, self.lookup_len)
    }

    /// Parses a presented token. A refused token gets the first reason in
    /// the order length, encoding (ASCII), prefix, alphabet, checksum.
    /// Input of the wrong length is rejected without reading it, and nothing
    /// allocates.
    pub fn parse<'a>(&self, presented: &'a str) -> Result<ParsedKey<'a>, MalformedReason> {
        let bytes = presented.as_bytes();
        if bytes.len() != self.token_len() || bytes.is_empty() {
            return Err(if bytes.is_empty() {
                MalformedReason::Empty
            } else {
                MalformedReason::Length
            });
        }
        // Text that passes the prefix and alphabet checks is ASCII (given an
        // ASCII prefix), so the encoding is only looked at once one of them
        // fails, to report it first as the order above says.
        let refuse = |reason| {
            if bytes.is_ascii() {
                reason
            } else {
                MalformedReason::Encoding
            }
        };
        let (prefix, body) = bytes.split_at(self.prefix.len());
        // Byte by byte: prefixes are a few bytes, shorter than a call to memcmp.
        if prefix
            .iter()
            .zip(self.prefix.as_bytes())
            .any(|(a, b)| a != b)
        {
            return Err(refuse(MalformedReason::Prefix));
        }
        if !base62::is_base62(body) {
            return Err(refuse(MalformedReason::Alphabet));
        }
        if !self.ascii_prefix {
            return Err(MalformedReason::Encoding);
        }
        if self.checksum {
            let (data, sum) = bytes.split_at(bytes.len() - base62::CHECKSUM_LEN);
            if !base62::checksum_matches(data, sum) {
                return Err(MalformedReason::Checksum);
            }
        }
        // `get` rather than indexing: a format that skipped `validate` may have
        // a lookup length past the end of the token.
        let lookup = presented
            .get(..self.lookup_len)
            .ok_or(MalformedReason::Length)?;
        Ok(ParsedKey {
            lookup,
            secret: presented,
            format: 0,
        })
    }
}

/// A key pair: a public API key (lowercase hex, the lookup id) and a secret key
/// (lowercase hex), as Mailjet issues them.
///
/// ```
/// use keygate::key::PairFormat;
///
/// let format = PairFormat::new();
/// let key = format.generate();
/// assert_eq!(key.lookup().len(), 32);
/// assert_eq!(key.expose_secret().len(), 32);
/// let presented = format!("{}:{}", key.lookup(), key.expose_secret());
/// let credential = format.parse(&presented).unwrap();
/// assert_eq!(credential.lookup(), key.lookup());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFormat {
    public_len: usize,
    secret_len: usize,
}

impl Default for PairFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl PairFormat {
    /// 32 hex characters for the public key and 32 (128 bits) for the secret.
    pub fn new() -> Self {
        Self {
            public_len: 32,
            secret_len: 32,
        }
    }

    /// Sets the public key length in hex characters.
    pub fn public_len(mut self, len: usize) -> Self {
        self.public_len = len;
        self
    }

    /// Sets the secret length in hex characters (4 bits each).
    pub fn secret_len(mut self, len: usize) -> Self {
        self.secret_len = len;
        self
    }

    fn validate(&self) -> Result<(), FormatError> {
        if self.public_len == 0 {
            return Err(FormatError::InvalidLookupLength);
        }
        let bits = u32::try_from(self.secret_len * 4).unwrap_or(u32::MAX);
        if bits < 128 {
            return Err(FormatError::TooLittleEntropy { bits });
        }
        Ok(())
    }

    /// Generates a new public key and secret from a CSPRNG seeded by the OS (rand's `ThreadRng`).
    pub fn generate(&self) -> IssuedKey {
        let mut public = String::with_capacity(self.public_len);
        base62::push_random_hex(&mut public, self.public_len);
        IssuedKey::pair(public, self.generate_secret_text())
    }

    /// A fresh secret only, for resetting a pair's secret under the same public key.
    pub(crate) fn generate_secret_text(&self) -> String {
        let mut secret = String::with_capacity(self.secret_len);
        base62::push_random_hex(&mut secret, self.secret_len);
        secret
    }

    /// Parses `public:secret` (the decoded value of HTTP Basic credentials).
    ///
    /// Text that is not ASCII is [`MalformedReason::Encoding`].
    pub fn parse<'a>(&self, presented: &'a str) -> Result<ParsedKey<'a>, MalformedReason> {
        if presented.is_empty() {
            return Err(MalformedReason::Empty);
        }
        let expected = self
            .public_len
            .checked_add(1)
            .and_then(|n| n.checked_add(self.secret_len));
        if Some(presented.len()) != expected {
            return Err(MalformedReason::Length);
        }
        // The split below is at a byte index; in non-ASCII text it could fall
        // inside a character. Keys are ASCII, so such text is refused first.
        if !presented.is_ascii() {
            return Err(MalformedReason::Encoding);
        }
        let Some((public, rest)) = presented.split_at_checked(self.public_len) else {
            return Err(MalformedReason::Length);
        };
        let Some(secret) = rest.strip_prefix(':') else {
            return Err(MalformedReason::Separator);
        };
        self.parse_parts(public, secret)
    }

    /// Parses a public key and secret given separately (e.g. SMTP username/password).
    ///
    /// Either part not being ASCII is [`MalformedReason::Encoding`].
    pub fn parse_parts<'a>(
        &self,
        public: &'a str,
        secret: &'a str,
    ) -> Result<ParsedKey<'a>, MalformedReason> {
        if public.is_empty() || secret.is_empty() {
            return Err(MalformedReason::Empty);
        }
        if public.len() != self.public_len || secret.len() != self.secret_len {
            return Err(MalformedReason::Length);
        }
        // Same reason as `parse` gives for the same text joined by ':'.
        if !public.is_ascii() || !secret.is_ascii() {
            return Err(MalformedReason::Encoding);
        }
        if !base62::is_lower_hex(public.as_bytes()) || !base62::is_lower_hex(secret.as_bytes()) {
            return Err(MalformedReason::Alphabet);
        }
        Ok(ParsedKey {
            lookup: public,
            secret,
            format: 0,
        })
    }
}

pub(crate) fn push_random_base62(out: &mut String, len: usize) {
    base62::push_random(out, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mj() -> TokenFormat {
        TokenFormat::new("mj_").lookup_len(8)
    }

    #[test]
    fn generated_tokens_parse_and_round_trip() {
        let f = mj();
        for _ in 0..100 {
            let k = f.generate();
            let c = f.parse(k.expose_secret()).unwrap();
            assert_eq!(c.expose_secret(), k.expose_secret());
            assert_eq!(c.lookup(), &k.expose_secret()[..8]);
            assert_eq!(k.lookup(), c.lookup());
        }
    }

    #[test]
    fn tokens_are_rejected_with_a_specific_reason() {
        let f = mj();
        let k = f.generate();
        let good = k.expose_secret().to_owned();
        assert_eq!(f.parse(""), Err(MalformedReason::Empty));
        assert_eq!(f.parse(&good[1..]), Err(MalformedReason::Length));
        let wrong_prefix = format!("mx_{}", &good[3..]);
        assert_eq!(f.parse(&wrong_prefix), Err(MalformedReason::Prefix));
        let mut bad_char = good.clone().into_bytes();
        bad_char[10] = b'!';
        assert_eq!(
            f.parse(std::str::from_utf8(&bad_char).unwrap()),
            Err(MalformedReason::Alphabet)
        );
        let mut typo = good.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            f.parse(std::str::from_utf8(&typo).unwrap()),
            Err(MalformedReason::Checksum)
        );
    }

    #[test]
    fn huge_and_non_ascii_input_is_rejected_without_panicking() {
        let f = mj();
        let huge = "a".repeat(1 << 20);
        assert_eq!(f.parse(&huge), Err(MalformedReason::Length));
        let len = f.token_len();
        // Multi-byte characters with the right byte length must not split a char.
        let mut s = String::from("mj_");
        while s.len() + 3 <= len {
            s.push('€');
        }
        while s.len() < len {
            s.push('a');
        }
        assert_eq!(s.len(), len);
        assert_eq!(f.parse(&s), Err(MalformedReason::Encoding));
        let p = PairFormat::new();
        let mut pair = "é".repeat(16);
        pair.push(':');
        pair.push_str(&"a".repeat(32));
        assert_eq!(pair.len(), 65);
        assert_eq!(p.parse(&pair), Err(MalformedReason::Encoding));
    }

    #[test]
    fn a_pair_with_a_character_across_the_split_is_an_encoding_error() {
        let p = PairFormat::new();
        // 65 bytes, the length of `public:secret`, with byte 32 inside 'ʚ'.
        let split = format!("{}ʚ{}", "a".repeat(31), "b".repeat(32));
        assert_eq!(split.len(), 65);
        assert!(!split.is_char_boundary(32));
        assert_eq!(p.parse(&split), Err(MalformedReason::Encoding));
        for c in ['é', '€', '😀'] {
            let mut s = "a".repeat(33 - c.len_utf8());
            s.push(c);
            s.push_str(&"b".repeat(32));
            assert_eq!(s.len(), 65);
            assert_eq!(p.parse(&s), Err(MalformedReason::Encoding), "{c}");
        }
        let public = format!("{}é", "a".repeat(30));
        assert_eq!(
            p.parse_parts(&public, &"b".repeat(32)),
            Err(MalformedReason::Encoding)
        );
        assert_eq!(
            p.parse_parts(&"a".repeat(32), &format!("😀{}", "b".repeat(28))),
            Err(MalformedReason::Encoding)
        );
    }

    #[test]
    fn non_ascii_text_is_an_encoding_error_whatever_else_is_wrong() {
        let f = mj();
        let good = f.generate().expose_secret().to_owned();
        // 'é' is two bytes: it replaces two characters, so the length stays.
        for at in 0..good.len() - 1 {
            let mut s = good[..at].to_owned();
            s.push('é');
            s.push_str(&good[at + 2..]);
            assert_eq!(s.len(), good.len());
            assert_eq!(f.parse(&s), Err(MalformedReason::Encoding), "{at}");
            // Also with a wrong prefix, and with a bad character elsewhere.
            let wrong_prefix = s.replacen("mj_", "mx_", 1);
            assert_eq!(f.parse(&wrong_prefix), Err(MalformedReason::Encoding));
        }
        // A format whose prefix is not ASCII (it fails `validate`) parses
        // nothing: every key of it is text outside ASCII.
        let odd = TokenFormat::new("é_").lookup_len(8);
        let body = "é_".to_owned() + &"a".repeat(32);
        let sum = base62::checksum(body.as_bytes());
        let key = body + std::str::from_utf8(&sum).unwrap();
        assert_eq!(odd.parse(&key), Err(MalformedReason::Encoding));
    }

    #[test]
    fn a_checksum_past_u32_max_is_refused() {
        let f = mj();
        let good = f.generate().expose_secret().to_owned();
        let mut bad = good[..good.len() - base62::CHECKSUM_LEN].to_owned();
        bad.push_str("zzzzzz");
        assert_eq!(f.parse(&bad), Err(MalformedReason::Checksum));
    }

    #[test]
    fn formats_that_skipped_validation_do_not_panic_on_input() {
        // Lookup length past the end of the token.
        let long_lookup = TokenFormat::new("mj_").lookup_len(100);
        let body = "mj_".to_owned() + &"a".repeat(32);
        let sum = base62::checksum(body.as_bytes());
        let key = body + std::str::from_utf8(&sum).unwrap();
        assert_eq!(long_lookup.parse(&key), Err(MalformedReason::Length));
        // Lengths whose sum overflows.
        let huge = PairFormat::new().public_len(usize::MAX).secret_len(1);
        assert_eq!(huge.parse("a:b"), Err(MalformedReason::Length));
    }

    #[test]
    fn formats_with_too_little_entropy_are_refused() {
        let weak = KeyFormat::Token(TokenFormat::new("x_").body_len(20).lookup_len(4));
        assert!(matches!(
            weak.validate(),
            Err(FormatError::TooLittleEntropy { .. })
        ));
        let ok = KeyFormat::Token(mj());
        assert_eq!(ok.validate(), Ok(()));
        let bad_prefix = KeyFormat::Token(TokenFormat::new("a b"));
        assert_eq!(bad_prefix.validate(), Err(FormatError::InvalidPrefix));
        let weak_pair = KeyFormat::Pair(PairFormat::new().secret_len(16));
        assert!(weak_pair.validate().is_err());
    }

    #[test]
    fn pairs_parse_both_ways() {
        let f = PairFormat::new();
        let k = f.generate();
        let joined = format!("{}:{}", k.lookup(), k.expose_secret());
        let a = f.parse(&joined).unwrap();
        let b = f.parse_parts(k.lookup(), k.expose_secret()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            f.parse(&joined.replace(':', ";")),
            Err(MalformedReason::Separator)
        );
        assert_eq!(
            f.parse(&joined.to_uppercase()),
            Err(MalformedReason::Alphabet)
        );
    }

    #[test]
    fn scanner_regex_describes_the_token() {
        assert_eq!(mj().scanner_regex(), "mj_[0-9A-Za-z]{38}");
    }

    #[test]
    fn redaction_shows_only_the_lookup() {
        let k = mj().generate();
        let r = redact(k.lookup());
        assert_eq!(r.chars().count(), 9);
        assert!(!r.contains(&k.expose_secret()[8..]));
    }
}
