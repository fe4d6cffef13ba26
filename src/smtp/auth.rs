//! Decoding of SMTP `AUTH PLAIN` and `AUTH LOGIN` responses into a key pair.
//! No I/O: the functions take the base64 text a client sent and return
//! [`SmtpCredentials`] or an [`AuthDecodeError`] that says which reply to
//! send.

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::Reply;
use crate::{ApiKeys, AuthError, Principal};

/// The longest AUTH command or response line accepted, in bytes (RFC 4954,
/// section 4: 12,288 octets).
pub const MAX_AUTH_LINE: usize = 12_288;

/// Why an AUTH response could not be decoded. Each maps to one SMTP reply
/// ([`reply`](Self::reply)); none echoes what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthDecodeError {
    /// Longer than [`MAX_AUTH_LINE`]. `501 5.5.6`.
    #[error("authentication response too long")]
    TooLong,
    /// Not valid base64. `501 5.5.2`.
    #[error("cannot decode the base64 response")]
    Base64,
    /// The decoded text is not UTF-8. `501 5.5.2`.
    #[error("the response is not UTF-8")]
    NotUtf8,
    /// An `AUTH PLAIN` message without exactly two NUL separators
    /// (`[authzid] NUL authcid NUL passwd`). `501 5.5.2`.
    #[error("the PLAIN response needs two NUL separators")]
    MissingSeparator,
    /// An empty username or password. `501 5.5.2`.
    #[error("empty username or password")]
    EmptyField,
    /// An authorization identity other than the username: acting as
    /// someone else is not supported. `535 5.7.8`.
    #[error("authorization identity must be empty or the username")]
    AuthzidMismatch,
    /// The client cancelled the exchange with `*`. `501 5.7.0`.
    #[error("authentication cancelled")]
    Cancelled,
}

impl AuthDecodeError {
    /// The reply to send for this error.
    ///
    /// ```
    /// use keygate::smtp::auth::{decode_plain, AuthDecodeError};
    /// let err = decode_plain(b"not base64!").unwrap_err();
    /// assert_eq!(err, AuthDecodeError::Base64);
    /// assert_eq!(err.reply().code(), 501);
    /// ```
    pub fn reply(&self) -> Reply {
        match self {
            Self::TooLong => Reply::new(501, "5.5.6 Authentication response too long"),
            Self::Base64 => Reply::new(501, "5.5.2 Cannot decode base64 response"),
            Self::NotUtf8 | Self::MissingSeparator | Self::EmptyField => {
                Reply::new(501, format!("5.5.2 Syntax error: {self}"))
            }
            Self::AuthzidMismatch => Reply::new(535, "5.7.8 Authentication credentials invalid"),
            Self::Cancelled => Reply::new(501, "5.7.0 Authentication cancelled"),
        }
    }
}

/// A username and password from an AUTH exchange: for a key pair, the
/// public API key and the secret key. The password is wiped on drop and
/// never printed.
#[derive(Clone)]
pub struct SmtpCredentials {
    username: String,
    password: Zeroizing<String>,
}

impl SmtpCredentials {
    /// Credentials from a decoded username and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    /// The username (the public API key).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password (the secret key). Hand it to verification only.
    pub fn expose_password(&self) -> &str {
        &self.password
    }

    /// Verifies the pair with [`ApiKeys::verify_pair`].
    pub async fn verify(&self, api: &ApiKeys) -> Result<Principal, AuthError> {
        api.verify_pair(&self.username, &self.password).await
    }
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Decodes one base64 response line (an `AUTH LOGIN` username or password,
/// or the `AUTH PLAIN` message) into UTF-8 text. `*` is a cancellation.
///
/// ```
/// use keygate::smtp::auth::decode_field;
/// assert_eq!(decode_field(b"dXNlcg==").unwrap().as_str(), "user");
/// ```
pub fn decode_field(response: &[u8]) -> Result<Zeroizing<String>, AuthDecodeError> {
    if response.len() > MAX_AUTH_LINE {
        return Err(AuthDecodeError::TooLong);
    }
    let response = response.trim_ascii();
    if response == b"*" {
        return Err(AuthDecodeError::Cancelled);
    }
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(response)
            .map_err(|_| AuthDecodeError::Base64)?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| AuthDecodeError::NotUtf8)?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Decodes an `AUTH PLAIN` response (RFC 4616): base64 of
/// `[authzid] NUL username NUL password`. The authorization identity must be
/// empty or the username.
///
/// ```
/// use keygate::smtp::auth::decode_plain;
/// // base64("\0apikey\0secret")
/// let creds = decode_plain(b"AGFwaWtleQBzZWNyZXQ=").unwrap();
/// assert_eq!(creds.username(), "apikey");
/// assert_eq!(creds.expose_password(), "secret");
/// assert_eq!(format!("{creds:?}"), r#"SmtpCredentials { username: "apikey", password: "[redacted]" }"#);
/// ```
pub fn decode_plain(response: &[u8]) -> Result<SmtpCredentials, AuthDecodeError> {
    let text = decode_field(response)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthDecodeError::MissingSeparator);
    };
    if username.is_empty() || password.is_empty() {
        return Err(AuthDecodeError::EmptyField);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(AuthDecodeError::AuthzidMismatch);
    }
    Ok(SmtpCredentials::new(username, password))
}

/// Decodes the two `AUTH LOGIN` responses (base64 username, then base64
/// password).
///
/// ```
/// use keygate::smtp::auth::decode_login;
/// let creds = decode_login(b"YXBpa2V5", b"c2VjcmV0").unwrap();
/// assert_eq!((creds.username(), creds.expose_password()), ("apikey", "secret"));
/// ```
pub fn decode_login(username: &[u8], password: &[u8]) -> Result<SmtpCredentials, AuthDecodeError> {
    let username = decode_field(username)?;
    let password = decode_field(password)?;
    if username.is_empty() || password.is_empty() {
        return Err(AuthDecodeError::EmptyField);
    }
    Ok(SmtpCredentials::new(username.as_str(), password.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b64(bytes: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    }

    #[test]
    fn plain_needs_two_separators_and_non_empty_fields() {
        assert_eq!(
            decode_plain(&b64(b"apikey\0secret")).unwrap_err(),
            AuthDecodeError::MissingSeparator
        );
        assert_eq!(
            decode_plain(&b64(b"\0a\0b\0c")).unwrap_err(),
            AuthDecodeError::MissingSeparator
        );
        assert_eq!(
            decode_plain(&b64(b"\0\0secret")).unwrap_err(),
            AuthDecodeError::EmptyField
        );
        assert_eq!(
            decode_plain(&b64(b"other\0apikey\0secret")).unwrap_err(),
            AuthDecodeError::AuthzidMismatch
        );
        let same = decode_plain(&b64(b"apikey\0apikey\0secret")).unwrap();
        assert_eq!(same.username(), "apikey");
        assert_eq!(
            decode_plain(&b64(&[0, 0xff, 0, b'x'])).unwrap_err(),
            AuthDecodeError::NotUtf8
        );
        assert_eq!(decode_plain(b"*").unwrap_err(), AuthDecodeError::Cancelled);
        let long = vec![b'A'; MAX_AUTH_LINE + 1];
        assert_eq!(decode_plain(&long).unwrap_err(), AuthDecodeError::TooLong);
    }

    #[test]
    fn every_error_maps_to_a_syntax_or_credentials_reply() {
        use AuthDecodeError::*;
        for e in [
            TooLong,
            Base64,
            NotUtf8,
            MissingSeparator,
            EmptyField,
            Cancelled,
        ] {
            assert_eq!(e.reply().code(), 501, "{e}");
        }
        assert_eq!(AuthzidMismatch.reply().code(), 535);
        assert!(AuthzidMismatch.reply().to_wire().starts_with("535 5.7.8 "));
    }

    proptest! {
        #[test]
        fn arbitrary_responses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_plain(&bytes);
            let _ = decode_field(&bytes);
            let _ = decode_login(&bytes, &bytes);
            let _ = decode_plain(&b64(&bytes));
        }

        #[test]
        fn plain_round_trips(user in "[A-Za-z0-9]{1,40}", pass in "[^\\x00]{1,60}") {
            let message = format!("\0{user}\0{pass}");
            let creds = decode_plain(&b64(message.as_bytes())).unwrap();
            prop_assert_eq!(creds.username(), user.as_str());
            prop_assert_eq!(creds.expose_password(), pass.as_str());
            let login = decode_login(&b64(user.as_bytes()), &b64(pass.as_bytes())).unwrap();
            prop_assert_eq!(login.expose_password(), pass.as_str());
        }
    }
}
