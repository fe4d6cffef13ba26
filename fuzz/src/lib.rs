//! What the fuzz targets share: one service per profile with a few issued
//! keys, and a runtime to drive the async calls on.

use std::sync::LazyLock;

use keygate::{profiles, AccountId, ApiKeys, CreateKey, KeyFormat, Profile};
use regex::Regex;

/// A current-thread runtime for the async calls (the in-memory store never
/// waits on I/O).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

/// Every profile keygate ships.
pub fn all_profiles() -> Vec<Profile> {
    vec![
        profiles::mailjawn(),
        profiles::mailjet(),
        profiles::mailchannels(),
        profiles::mailkite(),
        profiles::default(),
    ]
}

/// A service on one profile, with one issued key per key format.
pub struct Service {
    pub api: ApiKeys,
    /// The plaintext of each issued key, in the form `verify` takes.
    pub issued: Vec<String>,
    /// Per format, an anchored regex every accepted key must match.
    pub strict: Vec<Regex>,
}

/// One [`Service`] per profile, built once.
pub static SERVICES: LazyLock<Vec<Service>> = LazyLock::new(|| {
    all_profiles()
        .into_iter()
        .map(|profile| RUNTIME.block_on(service(profile)))
        .collect()
});

async fn service(profile: Profile) -> Service {
    let strict = profile
        .formats()
        .iter()
        .map(|f| match f {
            KeyFormat::Token(t) => Regex::new(&format!("^{}$", t.scanner_regex())).unwrap(),
            // The pair format every profile uses: 32 lowercase hex, ':', 32 lowercase hex.
            KeyFormat::Pair(_) => Regex::new("^[0-9a-f]{32}:[0-9a-f]{32}$").unwrap(),
        })
        .collect();
    let labels: Vec<String> = profile
        .formats()
        .iter()
        .map(|f| f.label().to_owned())
        .collect();
    let api = ApiKeys::in_memory(profile).expect("profile builds");
    let mut issued = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let org = AccountId::new(format!("org_{i}")).unwrap();
        let request = grant(&api, CreateKey::new("fuzz").format(label.clone()));
        let created = api
            .operator()
            .create(&org, request)
            .await
            .unwrap_or_else(|e| panic!("creating a {label} key: {e}"));
        let key = &created.key;
        let text = match api.profile().formats()[i] {
            KeyFormat::Pair(_) => format!("{}:{}", key.lookup(), key.expose_secret()),
            KeyFormat::Token(_) => key.expose_secret().to_owned(),
        };
        issued.push(text);
    }
    Service {
        api,
        issued,
        strict,
    }
}

/// `request` granting every scope, or the first one where the profile allows
/// one scope per key.
pub fn grant(api: &ApiKeys, request: CreateKey) -> CreateKey {
    let profile = api.profile();
    if profile.one_scope_per_key() {
        let first = profile.catalog().scope_names().next().unwrap().to_owned();
        request.scopes([first])
    } else {
        request.all_scopes()
    }
}
