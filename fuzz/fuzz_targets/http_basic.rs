//! HTTP Basic decoding, as `extract_key` does it for `Authorization: Basic`,
//! then parsing the result as a Mailjet key pair.
//!
//! Asserts: the decoded value is exactly what base64 (padded or not) of the
//! header carries; bytes encoded by a client come back unchanged when they are
//! visible ASCII and the header is within `MAX_PRESENTED_KEY_LEN`, and are
//! refused otherwise; a pair the parser accepts matches
//! the strict `hex:hex` shape.
#![no_main]

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use keygate::layer::{extract_key, MAX_PRESENTED_KEY_LEN};
use keygate::{AuthError, KeyLocation};
use keygate_fuzz::SERVICES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sources = [KeyLocation::Basic];
    let mut headers = HeaderMap::new();
    // Even modes: `rest` is what a client encoded; odd: the raw header text.
    let value = if mode & 1 == 0 {
        let engine = if mode & 2 == 0 {
            &STANDARD
        } else {
            &STANDARD_NO_PAD
        };
        format!("Basic {}", engine.encode(rest)).into_bytes()
    } else {
        let mut v = b"Basic ".to_vec();
        v.extend_from_slice(rest);
        v
    };
    // A header value over the bound is refused whatever it carries.
    let fits = value.len() <= MAX_PRESENTED_KEY_LEN;
    let Ok(value) = HeaderValue::from_bytes(&value) else {
        return;
    };
    headers.insert(AUTHORIZATION, value);
    let result = extract_key(&headers, &sources);
    if mode & 1 == 0 {
        let visible = !rest.is_empty()
            && rest
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
        match &result {
            Ok(k) => assert_eq!(k.as_bytes(), rest),
            Err(AuthError::Malformed { .. }) => assert!(!visible || !fits, "refused {rest:?}"),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    } else if let Ok(k) = &result {
        let text = std::str::from_utf8(rest).unwrap().trim_matches([' ', '\t']);
        let decoded = STANDARD_NO_PAD
            .decode(text.trim_end_matches('='))
            .expect("accepted text is base64");
        assert_eq!(k.as_bytes(), &decoded[..]);
    }
    if let Ok(k) = result {
        let mailjet = &SERVICES[1];
        if let Ok(p) = mailjet.api.parse(&k) {
            assert!(mailjet.strict[p.format_index()].is_match(&k));
        }
    }
});
