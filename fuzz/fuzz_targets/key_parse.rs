//! Key parsing and verification for every key format of every profile:
//! arbitrary text, and issued keys with a few bytes changed.
//!
//! Asserts: parsing never panics; every accepted key matches its format's
//! strict pattern (the scanner regex, anchored; for pairs lowercase hex
//! `public:secret`); `verify` and `verify_pair` succeed only for the exact
//! issued text and otherwise give the same answer as `parse` where it refused.
#![no_main]

use keygate::{AuthError, KeyFormat};
use keygate_fuzz::{RUNTIME, SERVICES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    for service in SERVICES.iter() {
        let text: String = if mode & 1 == 0 {
            match std::str::from_utf8(rest) {
                Ok(t) => t.to_owned(),
                Err(_) => return,
            }
        } else {
            // Edit an issued key: (position, byte) pairs.
            let key = &service.issued[usize::from(mode >> 1) % service.issued.len()];
            let mut bytes = key.clone().into_bytes();
            for edit in rest.chunks_exact(2) {
                let at = usize::from(edit[0]) % bytes.len();
                bytes[at] = edit[1];
            }
            match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => continue,
            }
        };
        check(service, &text);
    }
});

fn check(service: &keygate_fuzz::Service, text: &str) {
    let api = &service.api;
    let parsed = api.parse(text);
    match &parsed {
        Ok(p) => {
            let i = p.format_index();
            assert!(
                service.strict[i].is_match(text),
                "accepted a key its format's pattern refuses: {text:?}"
            );
            match &api.profile().formats()[i] {
                KeyFormat::Token(_) => {
                    assert_eq!(p.expose_secret(), text);
                    assert!(text.starts_with(p.lookup()));
                    assert!(p.lookup().len() < text.len());
                }
                KeyFormat::Pair(_) => {
                    assert_eq!(format!("{}:{}", p.lookup(), p.expose_secret()), text);
                }
            }
        }
        Err(e) => assert!(matches!(e, AuthError::Malformed { .. }), "{e:?}"),
    }
    let issued = service.issued.iter().any(|k| k == text);
    let verified = RUNTIME.block_on(api.verify(text));
    assert_eq!(verified.is_ok(), issued, "verify of {text:?}: {verified:?}");
    if let Err(e) = &parsed {
        assert_eq!(verified.as_ref().unwrap_err(), e);
    }
    if let Some((public, secret)) = text.split_once(':') {
        let pair = RUNTIME.block_on(api.verify_pair(public, secret));
        let is_pair_profile = api
            .profile()
            .formats()
            .iter()
            .any(|f| matches!(f, KeyFormat::Pair(_)));
        assert_eq!(
            pair.is_ok(),
            issued && is_pair_profile,
            "verify_pair of {text:?}"
        );
    }
}
