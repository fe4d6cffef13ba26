//! Keys a client can choose must never panic the parser: every built-in
//! profile and key format, with multi-byte characters inserted at, or
//! written over, every byte offset of a valid key, is refused as malformed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::LazyLock;

use keygate::{profiles, ApiKeys, AuthError, KeyFormat, Profile};
use proptest::prelude::*;

/// 2-, 3- and 4-byte UTF-8 characters.
const WIDE: [char; 4] = ['é', 'ʚ', '€', '😀'];

fn all_profiles() -> Vec<Profile> {
    vec![
        profiles::mailjawn(),
        profiles::mailjet(),
        profiles::mailchannels(),
        profiles::mailkite(),
        profiles::default(),
    ]
}

static APIS: LazyLock<Vec<ApiKeys>> = LazyLock::new(|| {
    all_profiles()
        .into_iter()
        .map(|p| ApiKeys::in_memory(p).expect("built-in profiles are valid"))
        .collect()
});

/// `valid` (ASCII) with `c` inserted before byte `at`, written over the one
/// byte at `at`, and written over as many bytes as `c` takes, which keeps the
/// byte length of a valid key.
fn variants(valid: &str, at: usize, c: char) -> Vec<String> {
    assert!(valid.is_ascii());
    let mut out = vec![format!("{}{c}{}", &valid[..at], &valid[at..])];
    if at < valid.len() {
        out.push(format!("{}{c}{}", &valid[..at], &valid[at + 1..]));
    }
    if at + c.len_utf8() <= valid.len() {
        out.push(format!(
            "{}{c}{}",
            &valid[..at],
            &valid[at + c.len_utf8()..]
        ));
    }
    out
}

/// Calls `ApiKeys::parse`, turning a panic into a test failure that names the
/// profile and the input.
fn parse_is_malformed(api: &ApiKeys, input: &str) {
    let profile = &api.profile().name();
    let result = catch_unwind(AssertUnwindSafe(|| {
        api.parse(input).map(|c| c.lookup().to_owned())
    }));
    match result {
        Ok(Err(AuthError::Malformed { .. })) => {}
        Ok(other) => panic!("{profile}: {input:?} parsed as {other:?}"),
        Err(_) => panic!("{profile}: parse panicked on {input:?}"),
    }
}

async fn verify_is_malformed(api: &ApiKeys, input: &str) {
    match api.verify(input).await {
        Err(AuthError::Malformed { .. }) => {}
        other => panic!(
            "{}: verify({input:?}) gave {:?}",
            api.profile().name(),
            other.map(|p| p.key_id().clone())
        ),
    }
}

async fn verify_pair_is_malformed(api: &ApiKeys, public: &str, secret: &str) {
    match api.verify_pair(public, secret).await {
        Err(AuthError::Malformed { .. }) => {}
        other => panic!(
            "{}: verify_pair({public:?}, {secret:?}) gave {:?}",
            api.profile().name(),
            other.map(|p| p.key_id().clone())
        ),
    }
}

#[tokio::test]
async fn multi_byte_characters_at_every_offset_are_malformed() {
    for api in APIS.iter() {
        for format in api.profile().formats() {
            let key = format.generate();
            let valid = key.to_presented();
            // The unmodified key parses, so each variant tests one change.
            assert!(api.parse(&valid).is_ok(), "{}", api.profile().name());
            for at in 0..=valid.len() {
                for c in WIDE {
                    for input in variants(&valid, at, c) {
                        parse_is_malformed(api, &input);
                        verify_is_malformed(api, &input).await;
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn multi_byte_characters_in_either_half_of_a_pair_are_malformed() {
    let mut pairs = 0;
    for api in APIS.iter() {
        for format in api.profile().formats() {
            let KeyFormat::Pair(_) = format else { continue };
            pairs += 1;
            let key = format.generate();
            let public = key.public_key().expect("a pair has a public key");
            let secret = key.expose_secret();
            for at in 0..=public.len() {
                for c in WIDE {
                    for bad in variants(public, at, c) {
                        verify_pair_is_malformed(api, &bad, secret).await;
                    }
                }
            }
            for at in 0..=secret.len() {
                for c in WIDE {
                    for bad in variants(secret, at, c) {
                        verify_pair_is_malformed(api, public, &bad).await;
                    }
                }
            }
        }
    }
    assert!(pairs > 0, "no built-in profile issues key pairs");
}

/// The input that dropped connections: 65 bytes, the length of a Mailjet
/// `public:secret`, with byte 32 (where `:` belongs) inside a character.
fn split_character_pair() -> String {
    format!("{}ʚ{}", "a".repeat(31), "b".repeat(32))
}

#[tokio::test]
async fn a_character_across_the_pair_separator_is_malformed() {
    let input = split_character_pair();
    assert_eq!(input.len(), 65);
    assert!(!input.is_char_boundary(32));
    for api in APIS.iter() {
        parse_is_malformed(api, &input);
        verify_is_malformed(api, &input).await;
    }
}

#[cfg(feature = "tower")]
mod over_http {
    use base64::Engine as _;
    use http::{HeaderMap, HeaderValue};
    use keygate::layer::extract_key;
    use keygate::{profiles, AuthError, KeyLocation, MalformedReason};

    fn basic(decoded: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(decoded);
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    fn encoding_error() -> AuthError {
        AuthError::Malformed {
            reason: MalformedReason::Encoding,
        }
    }

    #[test]
    fn basic_credentials_that_decode_to_non_ascii_are_encoding_errors() {
        let sources = profiles::mailjet().key_locations().to_vec();
        let headers = basic(&super::split_character_pair());
        assert_eq!(
            extract_key(&headers, &sources).unwrap_err(),
            encoding_error()
        );
        for c in super::WIDE {
            let headers = basic(&format!("{}:{c}", "a".repeat(32)));
            assert_eq!(
                extract_key(&headers, &sources).unwrap_err(),
                encoding_error(),
                "{c}"
            );
        }
    }

    #[test]
    fn basic_credentials_with_control_characters_are_encoding_errors() {
        let sources = [KeyLocation::Basic];
        for decoded in ["pub\0:sec", "pub:sec\n", "pub:\x1bsec", "pub:sec\x7f"] {
            let headers = basic(decoded);
            assert_eq!(
                extract_key(&headers, &sources).unwrap_err(),
                encoding_error(),
                "{decoded:?}"
            );
        }
        let headers = basic("pub:sec");
        assert_eq!(&*extract_key(&headers, &sources).unwrap(), "pub:sec");
    }
}

/// Characters likely to sit next to a format's alphabet or split it badly.
fn near_key_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(
            "0123456789abcdefABCXYZxyz_:-".chars().collect::<Vec<_>>()
        ),
        2 => prop::sample::select(WIDE.to_vec()),
        1 => any::<char>(),
    ]
}

/// Strings of exactly `target` bytes made of `chars`, padded with `a` where
/// the next character would overshoot.
fn exact_len(chars: &[char], target: usize) -> String {
    let mut s = String::with_capacity(target);
    for &c in chars {
        if s.len() + c.len_utf8() > target {
            break;
        }
        s.push(c);
    }
    while s.len() < target {
        s.push('a');
    }
    s
}

/// Every format's presented length, and one less and one more.
fn lengths_near_formats() -> Vec<usize> {
    let mut lens: Vec<usize> = APIS
        .iter()
        .flat_map(|api| api.profile().formats().iter())
        .map(|f| f.generate().to_presented().len())
        .flat_map(|l| [l - 1, l, l + 1])
        .collect();
    lens.sort_unstable();
    lens.dedup();
    lens
}

fn check_never_panics(input: &str) -> Result<(), TestCaseError> {
    for api in APIS.iter() {
        let result = catch_unwind(AssertUnwindSafe(|| api.parse(input).map(|_| ())));
        prop_assert!(
            result.is_ok(),
            "{}: parse panicked on {:?}",
            api.profile().name(),
            input
        );
        if !input.is_ascii() {
            prop_assert!(
                matches!(result, Ok(Err(AuthError::Malformed { .. }))),
                "{}: non-ASCII {:?} was not malformed",
                api.profile().name(),
                input
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn parse_never_panics_on_any_string(input in any::<String>()) {
        check_never_panics(&input)?;
    }

    #[test]
    fn parse_never_panics_on_mixed_strings_of_key_lengths(
        chars in prop::collection::vec(near_key_char(), 0..80),
        target in prop::sample::select(lengths_near_formats()),
    ) {
        check_never_panics(&exact_len(&chars, target))?;
    }

    #[test]
    fn parse_never_panics_with_a_character_written_into_a_valid_key(
        profile in 0..5usize,
        format in 0..2usize,
        at in 0..80usize,
        c in near_key_char(),
    ) {
        let api = &APIS[profile];
        let formats = &api.profile().formats();
        let valid = formats[format % formats.len()].generate().to_presented();
        let at = at % (valid.len() + 1);
        for input in variants(&valid, at, c) {
            check_never_panics(&input)?;
        }
    }
}
