//! Scopes and bundles, compiled to bitsets so a permission check is one AND. No I/O.
//!
//! A [`ScopeCatalog`] lists the scopes a product defines (`subscribers:read`,
//! `emails:send`, …) and its named bundles (`sdk`, `mcp`, `full_access`). Names,
//! wildcards (`subscribers:*`, `*`) and bundles compile into a [`ScopeSet`]. A
//! bundle defined as *all scopes* also covers scopes added to the catalog later.
//! Requirements are one scope, all or any of several, or a permission query
//! (`emails:send AND (domains:read OR domains:write)`) compiled to the same
//! bitset form.

mod query;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use query::{MAX_QUERY_LEN, MAX_QUERY_TERMS};

/// The largest number of scopes one catalog can define.
pub const MAX_SCOPES: usize = 128;

/// An error naming the scope, bundle or pattern that was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// No scope (and no wildcard match) has this name.
    #[error("unknown scope '{0}'")]
    UnknownScope(String),
    /// No bundle has this name.
    #[error("unknown bundle '{0}'")]
    UnknownBundle(String),
    /// The catalog already has a scope or bundle with this name.
    #[error("'{0}' is defined twice")]
    Duplicate(String),
    /// The catalog would exceed [`MAX_SCOPES`] scopes.
    #[error("a catalog holds at most {MAX_SCOPES} scopes")]
    TooManyScopes,
    /// A scope name is empty, contains `*` or whitespace.
    #[error("invalid scope name '{0}'")]
    InvalidName(String),
    /// A permission query ([`ScopeCatalog::query`]) does not parse, names
    /// an unknown scope, or is too long or complex.
    #[error("invalid permission query at character {at}: {reason}")]
    InvalidQuery {
        /// Where the problem is: a 1-based character (byte) position.
        at: usize,
        /// What is wrong there.
        reason: String,
    },
}

/// A compiled set of scopes. Checking a [`Requirement`] against it is one AND.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet {
    bits: u128,
    all: bool,
}

impl ScopeSet {
    /// The empty set.
    pub const EMPTY: Self = Self {
        bits: 0,
        all: false,
    };

    /// A set that grants every scope, including scopes defined later.
    pub const ALL: Self = Self {
        bits: u128::MAX,
        all: true,
    };

    /// The bits and the grants-all flag, for a compact copy.
    pub(crate) fn into_parts(self) -> (u128, bool) {
        (self.bits, self.all)
    }

    /// The inverse of [`into_parts`](Self::into_parts).
    pub(crate) fn from_parts(bits: u128, all: bool) -> Self {
        Self { bits, all }
    }

    /// True when the set grants every scope, present and future.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// True when this set meets `requirement`.
    #[must_use]
    pub fn satisfies(&self, requirement: &Requirement) -> bool {
        if self.all {
            return true;
        }
        match &requirement.kind {
            Kind::All => self.bits & requirement.bits == requirement.bits,
            Kind::Any => self.bits & requirement.bits != 0,
            Kind::Terms(terms) => terms.iter().any(|t| self.bits & t == *t),
        }
    }

    /// True when every scope this set grants is also granted by `other`.
    /// An all-scopes set is a subset only of another all-scopes set, since it
    /// also covers scopes defined later.
    ///
    /// ```
    /// use keygate::ScopeCatalog;
    /// let catalog = ScopeCatalog::new().scopes(["read", "write"]).unwrap()
    ///     .bundle_all("full_access").unwrap();
    /// let read = catalog.compile(["read"]).unwrap();
    /// let full = catalog.bundle_set("full_access").unwrap();
    /// assert!(read.is_subset_of(&full));
    /// assert!(!full.is_subset_of(&read));
    /// ```
    #[must_use]
    pub fn is_subset_of(&self, other: &Self) -> bool {
        if other.all {
            return true;
        }
        !self.all && self.bits & !other.bits == 0
    }

    /// The union of two sets.
    pub fn union(self, other: Self) -> Self {
        Self {
            bits: self.bits | other.bits,
            all: self.all || other.all,
        }
    }

    fn with(mut self, index: usize) -> Self {
        self.bits |= 1u128 << index;
        self
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            f.write_str("ScopeSet(all)")
        } else {
            write!(f, "ScopeSet({:#x})", self.bits)
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Kind {
    /// Every bit.
    All,
    /// At least one bit.
    Any,
    /// Every bit of at least one term (a compiled permission query).
    Terms(Arc<[u128]>),
}

/// What a route or operation needs: one scope, all of several, any of
/// several, or a permission query combining them with `AND`, `OR` and
/// parentheses.
///
/// Build it once from the catalog ([`ScopeCatalog::requirement`],
/// [`ScopeCatalog::all_of`], [`ScopeCatalog::any_of`],
/// [`ScopeCatalog::query`] / [`Requirement::parse`]) and check it per request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Requirement {
    bits: u128,
    kind: Kind,
    label: String,
}

impl Requirement {
    /// A readable description of the requirement, e.g. `subscribers:read`.
    pub fn label(&self) -> &str {
        &self.label
    }
}

#[derive(Clone, Debug)]
enum Bundle {
    All,
    Patterns(Vec<String>),
}

/// The scopes and bundles one product defines.
///
/// ```
/// use keygate::scope::ScopeCatalog;
///
/// let catalog = ScopeCatalog::new()
///     .scopes(["subscribers:read", "subscribers:write", "events:write"]).unwrap()
///     .bundle("sdk", ["subscribers:write", "events:write"]).unwrap()
///     .bundle_all("full_access").unwrap();
///
/// let sdk = catalog.bundle_set("sdk").unwrap();
/// assert!(sdk.satisfies(&catalog.requirement("events:write").unwrap()));
/// assert!(!sdk.satisfies(&catalog.requirement("subscribers:read").unwrap()));
/// assert!(catalog.bundle_set("full_access").unwrap().is_all());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ScopeCatalog {
    names: Vec<String>,
    /// Scope name to position. The names are the catalog's own, fixed once
    /// built (a request only looks them up), so a fast seeded hash is safe.
    index: HashMap<String, usize, foldhash::quality::RandomState>,
    bundles: Vec<(String, Bundle)>,
}

impl ScopeCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one scope.
    pub fn scope(mut self, name: impl Into<String>) -> Result<Self, ScopeError> {
        let name = name.into();
        if name.is_empty() || name.contains('*') || name.chars().any(char::is_whitespace) {
            return Err(ScopeError::InvalidName(name));
        }
        if self.index.contains_key(&name) {
            return Err(ScopeError::Duplicate(name));
        }
        if self.names.len() == MAX_SCOPES {
            return Err(ScopeError::TooManyScopes);
        }
        self.index.insert(name.clone(), self.names.len());
        self.names.push(name);
        Ok(self)
    }

    /// Adds several scopes.
    pub fn scopes<I, S>(self, names: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        names.into_iter().try_fold(self, |c, n| c.scope(n))
    }

    /// Adds a bundle of scope names and wildcards. Every entry must match at least
    /// one scope already in the catalog.
    pub fn bundle<I, S>(mut self, name: impl Into<String>, patterns: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let name = name.into();
        self.check_new_bundle(&name)?;
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        for p in &patterns {
            self.compile_pattern(p)?;
        }
        self.bundles.push((name, Bundle::Patterns(patterns)));
        Ok(self)
    }

    /// Adds a bundle granting every scope, including scopes added later.
    pub fn bundle_all(mut self, name: impl Into<String>) -> Result<Self, ScopeError> {
        let name = name.into();
        self.check_new_bundle(&name)?;
        self.bundles.push((name, Bundle::All));
        Ok(self)
    }

    fn check_new_bundle(&self, name: &str) -> Result<(), ScopeError> {
        if self.bundles.iter().any(|(n, _)| n == name) {
            return Err(ScopeError::Duplicate(name.to_owned()));
        }
        Ok(())
    }

    /// The scope names, in definition order.
    pub fn scope_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The bundle names, in definition order.
    pub fn bundle_names(&self) -> impl Iterator<Item = &str> {
        self.bundles.iter().map(|(n, _)| n.as_str())
    }

    /// True when a bundle with this name exists.
    pub fn has_bundle(&self, name: &str) -> bool {
        self.bundles.iter().any(|(n, _)| n == name)
    }

    /// The names of the scopes a set grants (every scope for an all-scopes set).
    pub fn names_in(&self, set: &ScopeSet) -> Vec<&str> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| set.all || set.bits & (1u128 << i) != 0)
            .map(|(_, n)| n.as_str())
            .collect()
    }

    /// Compiles a bundle by name.
    pub fn bundle_set(&self, name: &str) -> Result<ScopeSet, ScopeError> {
        match self.bundles.iter().find(|(n, _)| n == name) {
            Some((_, Bundle::All)) => Ok(ScopeSet::ALL),
            Some((_, Bundle::Patterns(ps))) => self.compile(ps),
            None => Err(ScopeError::UnknownBundle(name.to_owned())),
        }
    }

    /// Compiles scope names and wildcards (`subscribers:*`, or `*` for all).
    pub fn compile<I, S>(&self, patterns: I) -> Result<ScopeSet, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        patterns.into_iter().try_fold(ScopeSet::EMPTY, |acc, p| {
            Ok(acc.union(self.compile_pattern(p.as_ref())?))
        })
    }

    /// Compiles a key's grant: its bundle (if any) plus its explicit scopes.
    pub fn compile_grant(
        &self,
        bundle: Option<&str>,
        scopes: &[String],
    ) -> Result<ScopeSet, ScopeError> {
        let base = match bundle {
            Some(b) => self.bundle_set(b)?,
            None => ScopeSet::EMPTY,
        };
        Ok(base.union(self.compile(scopes)?))
    }

    fn compile_pattern(&self, pattern: &str) -> Result<ScopeSet, ScopeError> {
        if pattern == "*" {
            return Ok(ScopeSet::ALL);
        }
        if let Some(stem) = pattern.strip_suffix('*') {
            let set = self
                .names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.starts_with(stem))
                .fold(ScopeSet::EMPTY, |s, (i, _)| s.with(i));
            if set == ScopeSet::EMPTY {
                return Err(ScopeError::UnknownScope(pattern.to_owned()));
            }
            return Ok(set);
        }
        self.index
            .get(pattern)
            .map(|&i| ScopeSet::EMPTY.with(i))
            .ok_or_else(|| ScopeError::UnknownScope(pattern.to_owned()))
    }

    /// A requirement for one scope.
    pub fn requirement(&self, scope: &str) -> Result<Requirement, ScopeError> {
        self.all_of([scope])
    }

    /// A requirement for every one of `scopes`.
    pub fn all_of<I, S>(&self, scopes: I) -> Result<Requirement, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.combine(scopes, Kind::All, " + ")
    }

    /// A requirement for at least one of `scopes`.
    pub fn any_of<I, S>(&self, scopes: I) -> Result<Requirement, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.combine(scopes, Kind::Any, " | ")
    }

    fn combine<I, S>(&self, scopes: I, kind: Kind, sep: &str) -> Result<Requirement, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut bits = 0u128;
        let mut labels = Vec::new();
        for s in scopes {
            let s = s.as_ref();
            let i = *self
                .index
                .get(s)
                .ok_or_else(|| ScopeError::UnknownScope(s.to_owned()))?;
            bits |= 1u128 << i;
            labels.push(s.to_owned());
        }
        Ok(Requirement {
            bits,
            kind,
            label: labels.join(sep),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> ScopeCatalog {
        ScopeCatalog::new()
            .scopes([
                "subscribers:read",
                "subscribers:write",
                "events:write",
                "emails:send",
            ])
            .unwrap()
            .bundle("sdk", ["subscribers:write", "events:write"])
            .unwrap()
            .bundle("subs", ["subscribers:*"])
            .unwrap()
            .bundle_all("full_access")
            .unwrap()
    }

    #[test]
    fn wildcards_expand_to_matching_scopes() {
        let c = catalog();
        let subs = c.bundle_set("subs").unwrap();
        assert_eq!(c.names_in(&subs), ["subscribers:read", "subscribers:write"]);
        assert!(!subs.satisfies(&c.requirement("emails:send").unwrap()));
    }

    #[test]
    fn all_bundle_covers_scopes_added_later() {
        let c = catalog();
        let full = c.bundle_set("full_access").unwrap();
        let bigger = c.scope("domains:write").unwrap();
        assert!(full.satisfies(&bigger.requirement("domains:write").unwrap()));
    }

    #[test]
    fn all_of_and_any_of() {
        let c = catalog();
        let sdk = c.bundle_set("sdk").unwrap();
        assert!(sdk.satisfies(&c.all_of(["subscribers:write", "events:write"]).unwrap()));
        assert!(!sdk.satisfies(&c.all_of(["subscribers:write", "emails:send"]).unwrap()));
        assert!(sdk.satisfies(&c.any_of(["subscribers:write", "emails:send"]).unwrap()));
        assert!(!sdk.satisfies(&c.any_of(["subscribers:read", "emails:send"]).unwrap()));
    }

    #[test]
    fn unknown_names_are_errors_that_name_them() {
        let c = catalog();
        assert_eq!(
            c.compile(["nope:read"]).unwrap_err(),
            ScopeError::UnknownScope("nope:read".into())
        );
        assert_eq!(
            c.bundle_set("admin").unwrap_err().to_string(),
            "unknown bundle 'admin'"
        );
        assert!(c.clone().bundle("x", ["zzz:*"]).is_err());
        assert!(c.clone().scope("bad scope").is_err());
        assert!(c.clone().scope("emails:send").is_err());
    }

    #[test]
    fn catalog_size_is_bounded() {
        let c = ScopeCatalog::new()
            .scopes((0..MAX_SCOPES).map(|i| format!("s{i}")))
            .unwrap();
        assert_eq!(c.scope("one_more").unwrap_err(), ScopeError::TooManyScopes);
    }
}
