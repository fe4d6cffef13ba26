//! Reading the presented key from request headers, as a pure function of the
//! headers and the profile's [`KeyLocation`]s.

use std::fmt;
use std::ops::Deref;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use zeroize::Zeroizing;

use crate::error::AuthError;
use crate::key::MalformedReason;
use crate::profiles::KeyLocation;

/// The longest header value read as a credential, in bytes. Keys are far
/// shorter; anything longer is [`MalformedReason::TooLong`] and is not decoded.
pub const MAX_PRESENTED_KEY_LEN: usize = 1024;

/// Standard base64, padded or not (clients differ), for HTTP Basic.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key text a client sent, as read from the request at one of the
/// profile's [`KeyLocation`]s: borrowed from the header where it stands
/// as is (`Bearer`, `X-Api-Key`), or decoded from HTTP Basic into a buffer
/// that is wiped on drop. Its `Debug` output is redacted.
///
/// Pass it to [`ApiKeys::verify`](crate::ApiKeys::verify) (it dereferences to
/// `str`); a Basic credential reads `apikey:secret`, the form key pairs parse.
pub struct PresentedKey<'a>(Presented<'a>);

enum Presented<'a> {
    Borrowed(&'a str),
    Decoded(Zeroizing<String>),
}

impl PresentedKey<'_> {
    /// The presented text. Never log it.
    pub fn expose_secret(&self) -> &str {
        match &self.0 {
            Presented::Borrowed(s) => s,
            Presented::Decoded(s) => s,
        }
    }
}

impl Deref for PresentedKey<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.expose_secret()
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedKey([redacted])")
    }
}

/// Reads the one credential a request presents, looking only where `sources`
/// say (a profile's [`credentials`](crate::Profile::key_locations)).
///
/// - `Authorization: Bearer <key>` and `Authorization: Basic base64(apikey:secret)`
///   when [`KeyLocation::Bearer`] / [`KeyLocation::Basic`] are listed;
///   the scheme name is case-insensitive and whitespace around the value and
///   between scheme and value is ignored.
/// - `<Header>: <key>` for each [`KeyLocation::Header`]; the name is
///   case-insensitive and surrounding whitespace is ignored.
///
/// Headers the sources do not name are ignored (an `Authorization` header is
/// not read by a profile that only takes `X-Api-Key`). Errors, none of which
/// contains any part of the value:
///
/// | request | error |
/// |---|---|
/// | no credential header | [`AuthError::Missing`] |
/// | empty value, or a scheme with no value | `Malformed` [`Empty`](MalformedReason::Empty) |
/// | two `Authorization` headers, a repeated key header, or both kinds | `Malformed` [`Ambiguous`](MalformedReason::Ambiguous) |
/// | a value over [`MAX_PRESENTED_KEY_LEN`] bytes | `Malformed` [`TooLong`](MalformedReason::TooLong) |
/// | bytes outside visible ASCII, bad base64, or Basic that decodes to anything but visible ASCII | `Malformed` [`Encoding`](MalformedReason::Encoding) |
/// | an `Authorization` scheme the sources do not list | `Malformed` [`Scheme`](MalformedReason::Scheme) |
///
/// Whether the key itself is well formed is for [`ApiKeys::verify`](crate::ApiKeys::verify)
/// to say.
///
/// ```
/// use http::{HeaderMap, HeaderValue};
/// use keygate::layer::extract_key;
/// use keygate::{AuthError, KeyLocation, MalformedReason};
///
/// let sources = [KeyLocation::Bearer, KeyLocation::Header("x-api-key".into())];
/// let mut headers = HeaderMap::new();
/// assert_eq!(extract_key(&headers, &sources).unwrap_err(), AuthError::Missing);
///
/// headers.insert("authorization", HeaderValue::from_static("bearer  mj_abc "));
/// assert_eq!(&*extract_key(&headers, &sources)?, "mj_abc");
///
/// headers.insert("x-api-key", HeaderValue::from_static("mj_def"));
/// assert_eq!(
///     extract_key(&headers, &sources).unwrap_err(),
///     AuthError::Malformed { reason: MalformedReason::Ambiguous }
/// );
/// # Ok::<(), AuthError>(())
/// ```
pub fn extract_key<'h>(
    headers: &'h HeaderMap,
    sources: &[KeyLocation],
) -> Result<PresentedKey<'h>, AuthError> {
    Sources::new(sources).extract(headers)
}

/// [`KeyLocation`]s compiled once: which `Authorization` schemes to
/// accept and the parsed names of key headers.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    bearer: bool,
    basic: bool,
    headers: Vec<HeaderName>,
}

impl Sources {
    pub(crate) fn new(sources: &[KeyLocation]) -> Self {
        let mut compiled = Self {
            bearer: false,
            basic: false,
            headers: Vec::new(),
        };
        for source in sources {
            match source {
                KeyLocation::Bearer => compiled.bearer = true,
                KeyLocation::Basic => compiled.basic = true,
                KeyLocation::Header(name) => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(name) if name != AUTHORIZATION => compiled.headers.push(name),
                    Ok(_) => {
                        tracing::warn!(target: "keygate",
                            "credential header 'authorization' ignored: use Bearer or Basic");
                    }
                    Err(_) => {
                        tracing::warn!(target: "keygate", header = %name,
                            "credential header name is not a valid HTTP header name; ignored");
                    }
                },
            }
        }
        compiled
    }

    pub(crate) fn extract<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<PresentedKey<'h>, AuthError> {
        let mut found = None;
        if self.bearer || self.basic {
            if let Some(value) = single(headers, &AUTHORIZATION)? {
                found = Some(self.authorization(value)?);
            }
        }
        for name in &self.headers {
            if let Some(value) = single(headers, name)? {
                if found.is_some() {
                    return Err(malformed(MalformedReason::Ambiguous));
                }
                found = Some(PresentedKey(Presented::Borrowed(text(value)?)));
            }
        }
        found.ok_or(AuthError::Missing)
    }

    fn authorization<'h>(&self, value: &'h HeaderValue) -> Result<PresentedKey<'h>, AuthError> {
        let value = text(value)?;
        let (scheme, rest) = match value.bytes().position(|b| b == b' ' || b == b'\t') {
            Some(i) => (&value[..i], trim(&value[i..])),
            None => (value, ""),
        };
        if self.bearer && scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err(malformed(MalformedReason::Empty));
            }
            return Ok(PresentedKey(Presented::Borrowed(rest)));
        }
        if self.basic && scheme.eq_ignore_ascii_case("basic") {
            if rest.is_empty() {
                return Err(malformed(MalformedReason::Empty));
            }
            let bytes = Zeroizing::new(
                BASIC
                    .decode(rest)
                    .map_err(|_| malformed(MalformedReason::Encoding))?,
            );
            // Decoded text gets the rule header values get from `to_str`, so
            // Basic cannot carry characters a bearer token or key header could not.
            if !bytes.iter().copied().all(is_visible_ascii) {
                return Err(malformed(MalformedReason::Encoding));
            }
            let decoded =
                std::str::from_utf8(&bytes).map_err(|_| malformed(MalformedReason::Encoding))?;
            if decoded.is_empty() {
                return Err(malformed(MalformedReason::Empty));
            }
            return Ok(PresentedKey(Presented::Decoded(Zeroizing::new(
                decoded.to_owned(),
            ))));
        }
        Err(malformed(MalformedReason::Scheme))
    }
}

fn malformed(reason: MalformedReason) -> AuthError {
    AuthError::Malformed { reason }
}

/// The header's only value; two or more is ambiguous.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(malformed(MalformedReason::Ambiguous));
    }
    Ok(first)
}

/// The value as trimmed visible ASCII, checked for length first.
fn text(value: &HeaderValue) -> Result<&str, AuthError> {
    let bytes = value.as_bytes();
    if bytes.len() > MAX_PRESENTED_KEY_LEN {
        return Err(malformed(MalformedReason::TooLong));
    }
    // The bytes `HeaderValue::to_str` accepts, checked a word at a time.
    if !all_visible_ascii(bytes) {
        return Err(malformed(MalformedReason::Encoding));
    }
    let value = std::str::from_utf8(bytes).map_err(|_| malformed(MalformedReason::Encoding))?;
    let value = trim(value);
    if value.is_empty() {
        return Err(malformed(MalformedReason::Empty));
    }
    Ok(value)
}

/// The bytes [`HeaderValue::to_str`] accepts: visible ASCII, space and tab.
fn is_visible_ascii(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b)
}

/// True when every byte [`is_visible_ascii`]: eight bytes at a time as one
/// `u64` (the last word overlapping the one before), byte by byte only for
/// inputs under eight bytes.
fn all_visible_ascii(s: &[u8]) -> bool {
    if s.len() < 8 {
        return s.iter().all(|&b| is_visible_ascii(b));
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let mut ok = true;
    let mut at = 0;
    while at + 8 <= s.len() {
        ok &= word_is_visible_ascii(word(at));
        at += 8;
    }
    if at < s.len() {
        ok &= word_is_visible_ascii(word(s.len() - 8));
    }
    ok
}

/// True when all eight bytes of `w` are visible ASCII, space or tab (SWAR).
#[inline]
fn word_is_visible_ascii(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    const LOW7: u64 = ONES * 0x7f;
    // A byte of 0x80 or more is never accepted, and would break the
    // carry-free sums below: such a word is refused on its own account.
    let ascii = w & HIGH == 0;
    // High bit set for bytes from 0x20 (space) to 0x7e ('~').
    let printable = w.wrapping_add(ONES * 0x60) & !w.wrapping_add(ONES) & HIGH;
    // High bit set for tab bytes: the bytes that are zero after `^ 0x09`.
    let x = w ^ (ONES * 0x09);
    let tab = !(((x & LOW7).wrapping_add(LOW7)) | x) & HIGH;
    ascii & ((printable | tab) == HIGH)
}

/// `s` without leading and trailing spaces and tabs.
fn trim(s: &str) -> &str {
    let bytes = s.as_bytes();
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    // Both ends are next to ASCII bytes, so on character boundaries.
    s.get(start..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    fn reason(r: Result<PresentedKey<'_>, AuthError>) -> MalformedReason {
        match r {
            Err(AuthError::Malformed { reason }) => reason,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    const BEARER: &[KeyLocation] = &[KeyLocation::Bearer];
    const BASIC_ONLY: &[KeyLocation] = &[KeyLocation::Basic];

    #[test]
    fn bearer_scheme_is_case_insensitive_and_whitespace_tolerant() {
        for v in [
            "Bearer mj_abc",
            "bearer mj_abc",
            "BEARER mj_abc",
            "  Bearer \t mj_abc  ",
        ] {
            let h = headers(&[("authorization", v.as_bytes())]);
            assert_eq!(
                extract_key(&h, BEARER).unwrap().expose_secret(),
                "mj_abc",
                "{v}"
            );
        }
    }

    #[test]
    fn basic_decodes_to_apikey_colon_secret_padded_or_not() {
        for v in [
            "Basic cHViOnNlYw==",
            "basic cHViOnNlYw",
            "BASIC   cHViOnNlYw== ",
        ] {
            let h = headers(&[("authorization", v.as_bytes())]);
            assert_eq!(&*extract_key(&h, BASIC_ONLY).unwrap(), "pub:sec");
        }
    }

    #[test]
    fn basic_errors_are_encoding_errors() {
        let bad_b64 = headers(&[("authorization", b"Basic !!!not base64")]);
        assert_eq!(
            reason(extract_key(&bad_b64, BASIC_ONLY)),
            MalformedReason::Encoding
        );
        // base64 of the bytes ff fe fd: not UTF-8.
        let not_utf8 = headers(&[("authorization", b"Basic //79")]);
        assert_eq!(
            reason(extract_key(&not_utf8, BASIC_ONLY)),
            MalformedReason::Encoding
        );
        // base64 of "a"×31 + "ʚ" + "b"×32: UTF-8, but not ASCII.
        let value = format!(
            "Basic {}",
            BASIC.encode(format!("{}ʚ{}", "a".repeat(31), "b".repeat(32)))
        );
        let non_ascii = headers(&[("authorization", value.as_bytes())]);
        assert_eq!(
            reason(extract_key(&non_ascii, BASIC_ONLY)),
            MalformedReason::Encoding
        );
        for decoded in ["pub:sec\n", "pub\0:sec", "pub:sec\x7f"] {
            let value = format!("Basic {}", BASIC.encode(decoded));
            let control = headers(&[("authorization", value.as_bytes())]);
            assert_eq!(
                reason(extract_key(&control, BASIC_ONLY)),
                MalformedReason::Encoding,
                "{decoded:?}"
            );
        }
        let empty = headers(&[("authorization", b"Basic")]);
        assert_eq!(
            reason(extract_key(&empty, BASIC_ONLY)),
            MalformedReason::Empty
        );
    }

    #[test]
    fn unlisted_schemes_are_refused() {
        let h = headers(&[("authorization", b"Basic cHViOnNlYw==")]);
        assert_eq!(reason(extract_key(&h, BEARER)), MalformedReason::Scheme);
        let h = headers(&[("authorization", b"Bearer mj_abc")]);
        assert_eq!(reason(extract_key(&h, BASIC_ONLY)), MalformedReason::Scheme);
        let h = headers(&[("authorization", b"mj_abc")]);
        assert_eq!(reason(extract_key(&h, BEARER)), MalformedReason::Scheme);
        let h = headers(&[("authorization", b"Bearer")]);
        assert_eq!(reason(extract_key(&h, BEARER)), MalformedReason::Empty);
        let h = headers(&[("authorization", b"   ")]);
        assert_eq!(reason(extract_key(&h, BEARER)), MalformedReason::Empty);
    }

    #[test]
    fn missing_is_missing_and_unread_headers_are_ignored() {
        let h = headers(&[("x-api-key", b"mj_abc")]);
        assert_eq!(extract_key(&h, BEARER).unwrap_err(), AuthError::Missing);
        let h = headers(&[("authorization", b"Bearer mj_abc")]);
        let header_only = [KeyLocation::Header("X-Api-Key".into())];
        assert_eq!(
            extract_key(&h, &header_only).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            extract_key(&HeaderMap::new(), &[]).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn two_credentials_are_ambiguous() {
        let both = [KeyLocation::Bearer, KeyLocation::Header("x-api-key".into())];
        let h = headers(&[
            ("authorization", b"Bearer a"),
            ("authorization", b"Bearer a"),
        ]);
        assert_eq!(reason(extract_key(&h, &both)), MalformedReason::Ambiguous);
        let h = headers(&[("x-api-key", b"a"), ("X-API-KEY", b"b")]);
        assert_eq!(reason(extract_key(&h, &both)), MalformedReason::Ambiguous);
        let h = headers(&[("authorization", b"Bearer a"), ("x-api-key", b"a")]);
        assert_eq!(reason(extract_key(&h, &both)), MalformedReason::Ambiguous);
    }

    #[test]
    fn oversized_and_non_ascii_values_are_refused_unread() {
        let long = format!("Bearer {}", "a".repeat(MAX_PRESENTED_KEY_LEN));
        let h = headers(&[("authorization", long.as_bytes())]);
        assert_eq!(reason(extract_key(&h, BEARER)), MalformedReason::TooLong);
        let exactly = "a".repeat(MAX_PRESENTED_KEY_LEN);
        let h = headers(&[("x-api-key", exactly.as_bytes())]);
        let header_only = [KeyLocation::Header("x-api-key".into())];
        assert_eq!(extract_key(&h, &header_only).unwrap().len(), 1024);
        let h = headers(&[("authorization", "Bearer mj_é".as_bytes())]);
        assert_eq!(reason(extract_key(&h, BEARER)), MalformedReason::Encoding);
        let h = headers(&[("x-api-key", b"\xff\xfe")]);
        assert_eq!(
            reason(extract_key(&h, &header_only)),
            MalformedReason::Encoding
        );
    }

    #[test]
    fn the_word_check_accepts_exactly_what_to_str_accepts() {
        for len in [1, 7, 8, 13, 16, 45] {
            let valid: Vec<u8> = (0..len).map(|i| b' ' + (i * 7 % 95) as u8).collect();
            assert!(all_visible_ascii(&valid), "{len}");
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = valid.clone();
                    v[pos] = b;
                    let expected = HeaderValue::from_bytes(&v).is_ok_and(|h| h.to_str().is_ok());
                    assert_eq!(
                        all_visible_ascii(&v),
                        expected,
                        "len {len} pos {pos} byte {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn trim_removes_spaces_and_tabs_at_both_ends_only() {
        assert_eq!(trim(" \t a b\t "), "a b");
        assert_eq!(trim(" \t "), "");
        assert_eq!(trim(""), "");
        assert_eq!(trim("ab"), "ab");
    }

    #[test]
    fn debug_is_redacted() {
        let h = headers(&[("authorization", b"Bearer mj_secret_value")]);
        let k = extract_key(&h, BEARER).unwrap();
        assert!(!format!("{k:?}").contains("secret_value"));
    }
}
