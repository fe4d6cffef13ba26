//! `extract_key` over arbitrary header maps and key locations.
//!
//! Asserts: no panic; `Missing` exactly when no header the locations name is
//! present; an extracted key is non-empty, visible ASCII without surrounding
//! whitespace, and no longer than `MAX_PRESENTED_KEY_LEN`.
#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use keygate::layer::{extract_key, MAX_PRESENTED_KEY_LEN};
use keygate::{AuthError, KeyLocation};
use keygate_fuzz::all_profiles;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bit 0: Bearer, bit 1: Basic, bit 2: `x-api-key`, bit 3: `name`;
    /// values 16.. pick a profile's own locations instead.
    sources: u8,
    name: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let profiles = all_profiles();
    let sources: Vec<KeyLocation> = if input.sources >= 16 {
        profiles[usize::from(input.sources) % profiles.len()]
            .key_locations()
            .to_vec()
    } else {
        let mut s = Vec::new();
        if input.sources & 1 != 0 {
            s.push(KeyLocation::Bearer);
        }
        if input.sources & 2 != 0 {
            s.push(KeyLocation::Basic);
        }
        if input.sources & 4 != 0 {
            s.push(KeyLocation::Header("x-api-key".into()));
        }
        if input.sources & 8 != 0 {
            s.push(KeyLocation::Header(input.name.clone()));
        }
        s
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let named = sources.iter().any(|s| match s {
        KeyLocation::Bearer | KeyLocation::Basic => headers.contains_key(AUTHORIZATION),
        KeyLocation::Header(n) => HeaderName::from_bytes(n.as_bytes())
            .is_ok_and(|n| n != AUTHORIZATION && headers.contains_key(n)),
        _ => false,
    });
    match extract_key(&headers, &sources) {
        Ok(key) => {
            assert!(named);
            let k: &str = &key;
            assert!(!k.is_empty());
            assert!(k.len() <= MAX_PRESENTED_KEY_LEN);
            assert!(k.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)));
            assert_eq!(k, k.trim_matches([' ', '\t']), "{k:?}");
            assert_eq!(format!("{key:?}"), "PresentedKey([redacted])");
        }
        Err(AuthError::Missing) => assert!(!named),
        Err(AuthError::Malformed { .. }) => assert!(named),
        Err(e) => panic!("unexpected error {e:?}"),
    }
});
