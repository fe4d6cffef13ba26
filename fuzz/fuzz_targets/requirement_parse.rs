//! `Requirement::parse` (permission queries) against a small catalog and
//! every profile's catalog.
//!
//! Asserts: no panic; an accepted query's label parses again to a requirement
//! that every one of the small catalog's 2^5 scope sets satisfies exactly when
//! it satisfies the original.
#![no_main]

use keygate::{Requirement, ScopeCatalog};
use keygate_fuzz::all_profiles;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

const SCOPES: [&str; 5] = ["a:read", "a:write", "b:read", "b:write", "c"];

static CATALOG: LazyLock<ScopeCatalog> = LazyLock::new(|| {
    ScopeCatalog::new()
        .scopes(SCOPES)
        .unwrap()
        .bundle("ab", ["a:read", "b:read"])
        .unwrap()
        .bundle_all("all")
        .unwrap()
});

static PROFILES: LazyLock<Vec<keygate::Profile>> = LazyLock::new(all_profiles);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = Requirement::parse(&CATALOG, text) {
        let again = Requirement::parse(&CATALOG, req.label()).expect("a label parses");
        assert_eq!(again.label(), req.label());
        for mask in 0u32..32 {
            let held: Vec<&str> = SCOPES
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, s)| *s)
                .collect();
            let set = CATALOG.compile(held).unwrap();
            assert_eq!(set.satisfies(&req), set.satisfies(&again), "{text:?}");
        }
    }
    for profile in PROFILES.iter() {
        if let Ok(req) = Requirement::parse(profile.catalog(), text) {
            Requirement::parse(profile.catalog(), req.label()).expect("a label parses");
        }
    }
});
