//! SMTP AUTH decoding: `AUTH PLAIN` messages and `AUTH LOGIN` username and
//! password lines, then verifying what decoded as a Mailjet key pair.
//!
//! Asserts: no panic; a field is accepted only when it is the canonical
//! base64 of the text it decodes to (re-encoding gives the trimmed input
//! back); PLAIN and LOGIN credentials re-encode to messages that decode to the
//! same username and password; a random pair never verifies.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keygate::smtp::auth::{decode_field, decode_login, decode_plain};
use keygate_fuzz::{RUNTIME, SERVICES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = decode_field(data) {
        assert_eq!(
            STANDARD.encode(text.as_bytes()).as_bytes(),
            data.trim_ascii()
        );
    }
    if let Ok(creds) = decode_plain(data) {
        assert!(!creds.username().is_empty() && !creds.expose_password().is_empty());
        let message = format!("\0{}\0{}", creds.username(), creds.expose_password());
        let again = decode_plain(STANDARD.encode(message).as_bytes()).unwrap();
        assert_eq!(again.username(), creds.username());
        assert_eq!(again.expose_password(), creds.expose_password());
        assert_eq!(
            format!("{creds:?}"),
            format!(
                "SmtpCredentials {{ username: {:?}, password: \"[redacted]\" }}",
                creds.username()
            )
        );
        verify(creds.username(), creds.expose_password());
    }
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (user, pass) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    if let Ok(creds) = decode_login(user, pass) {
        let again = decode_login(
            STANDARD.encode(creds.username()).as_bytes(),
            STANDARD.encode(creds.expose_password()).as_bytes(),
        )
        .unwrap();
        assert_eq!(again.username(), creds.username());
        assert_eq!(again.expose_password(), creds.expose_password());
        verify(creds.username(), creds.expose_password());
    }
});

fn verify(public: &str, secret: &str) {
    let mailjet = &SERVICES[1];
    let issued = mailjet
        .issued
        .iter()
        .any(|k| *k == format!("{public}:{secret}"));
    let result = RUNTIME.block_on(mailjet.api.verify_pair(public, secret));
    assert_eq!(result.is_ok(), issued);
}
