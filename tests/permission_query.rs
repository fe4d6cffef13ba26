//! Permission queries (`ScopeCatalog::query`, `Requirement::parse`): the
//! compiled bitset form agrees with a plain tree evaluator on random queries
//! and random held scopes, and a parsed query's text round-trips.

use std::collections::BTreeSet;

use keygate::scope::ScopeError;
use keygate::{profiles, AccountId, ApiKeys, AuthError, CreateKey, Requirement, ScopeCatalog};
use proptest::prelude::*;

const NAMES: [&str; 6] = ["a:read", "a:write", "b:read", "b:write", "c:x", "d"];

fn catalog() -> ScopeCatalog {
    ScopeCatalog::new().scopes(NAMES).unwrap()
}

/// A query as a plain tree.
#[derive(Debug, Clone)]
enum Query {
    Scope(&'static str),
    Wildcard(&'static str),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
}

impl Query {
    /// The reference: evaluate the tree directly on the set of held names.
    fn holds(&self, held: &BTreeSet<&str>) -> bool {
        match self {
            Self::Scope(s) => held.contains(s),
            Self::Wildcard(stem) => NAMES
                .iter()
                .filter(|n| n.starts_with(stem))
                .all(|n| held.contains(n)),
            Self::And(a, b) => a.holds(held) && b.holds(held),
            Self::Or(a, b) => a.holds(held) || b.holds(held),
        }
    }

    /// Fully parenthesised text, with keywords in a case chosen by `upper`.
    fn render(&self, upper: bool) -> String {
        let (and, or) = if upper { ("AND", "OR") } else { ("and", "or") };
        match self {
            Self::Scope(s) => (*s).to_owned(),
            Self::Wildcard(stem) => format!("{stem}*"),
            Self::And(a, b) => format!("({} {and} {})", a.render(upper), b.render(upper)),
            Self::Or(a, b) => format!("({} {or} {})", a.render(upper), b.render(upper)),
        }
    }
}

fn query() -> impl Strategy<Value = Query> {
    let leaf = prop_oneof![
        4 => proptest::sample::select(&NAMES[..]).prop_map(Query::Scope),
        1 => proptest::sample::select(&["a:", "b:", "c:"][..]).prop_map(Query::Wildcard),
    ];
    leaf.prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Query::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Query::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn held() -> impl Strategy<Value = BTreeSet<&'static str>> {
    proptest::collection::btree_set(proptest::sample::select(&NAMES[..]), 0..=NAMES.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The compiled query agrees with the tree evaluator.
    #[test]
    fn compiled_queries_agree_with_the_tree_evaluator(q in query(), held in held(), upper in any::<bool>()) {
        let c = catalog();
        let text = q.render(upper);
        prop_assume!(text.len() <= keygate::scope::MAX_QUERY_LEN);
        let compiled = c.query(&text).unwrap();
        let set = c.compile(held.iter()).unwrap();
        prop_assert_eq!(set.satisfies(&compiled), q.holds(&held), "{}", text);
    }

    /// Precedence without parentheses: `x AND y OR z` is `(x AND y) OR z`.
    #[test]
    fn and_binds_tighter_than_or(x in 0..6usize, y in 0..6usize, z in 0..6usize, held in held()) {
        let c = catalog();
        let text = format!("{} AND {} OR {}", NAMES[x], NAMES[y], NAMES[z]);
        let expected = (held.contains(NAMES[x]) && held.contains(NAMES[y])) || held.contains(NAMES[z]);
        let set = c.compile(held.iter()).unwrap();
        prop_assert_eq!(set.satisfies(&c.query(&text).unwrap()), expected);
    }

    /// Arbitrary text never panics: it compiles or says where it fails.
    #[test]
    fn any_text_compiles_or_says_where(text in "[a-d:*() ANDORandor]{0,80}") {
        match catalog().query(&text) {
            Ok(_) => {}
            Err(ScopeError::InvalidQuery { at, reason }) => {
                prop_assert!(at >= 1 && at <= text.len() + 1, "{at} for {text:?}");
                prop_assert!(!reason.is_empty());
            }
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }
}

#[test]
fn a_query_longer_than_1000_characters_is_refused() {
    let text = vec!["d"; 600].join(" OR ");
    let err = Requirement::parse(&catalog(), &text).unwrap_err();
    assert!(err.to_string().contains("at most 1000 bytes"), "{err}");
}

#[tokio::test]
async fn an_operation_with_a_query_answers_403_naming_it() {
    let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
    let org = AccountId::new("org_q").unwrap();
    let sdk = api
        .operator()
        .create(&org, CreateKey::new("sdk").bundle("sdk"))
        .await
        .unwrap();
    let query = "emails:send AND (subscribers:read OR subscribers:write)";
    let op = api.operation("send").unwrap().require_query(query).unwrap();
    let err = api
        .verify_for(sdk.key.expose_secret(), &op)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::Forbidden {
            required: query.to_owned()
        }
    );
    let full = api
        .operator()
        .create(&org, CreateKey::new("full").bundle("full_access"))
        .await
        .unwrap();
    api.verify_for(full.key.expose_secret(), &op).await.unwrap();
}
