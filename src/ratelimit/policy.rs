//! Operation classes and their quotas: which limit a request counts against.

use super::Quota;

/// One operation class: a name, its quota, and the HTTP methods that fall into
/// it when a route declares no class of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpClass {
    name: String,
    quota: Quota,
    methods: Vec<String>,
}

impl OpClass {
    /// The class name, e.g. `read`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quota every key gets for this class unless it carries an override.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The HTTP methods (upper case) mapped to this class.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }
}

/// A profile's rate limits: per-key quotas by operation class. A request
/// consumes exactly one class: the one its route declares (e.g. `send`,
/// `mcp`), or else the one its HTTP method maps to.
///
/// ```
/// use keygate::ratelimit::RatePolicy;
/// use keygate::Quota;
/// use std::num::NonZeroU32;
///
/// // Constants, so a zero limit would not compile.
/// const READ: NonZeroU32 = NonZeroU32::new(100).unwrap();
/// const WRITE: NonZeroU32 = NonZeroU32::new(30).unwrap();
/// const SEND: NonZeroU32 = NonZeroU32::new(10).unwrap();
///
/// let policy = RatePolicy::new()
///     .method_class("read", Quota::per_minute(READ), ["GET", "HEAD"])
///     .method_class("write", Quota::per_minute(WRITE), ["POST", "PUT", "PATCH", "DELETE"])
///     .class("send", Quota::per_minute(SEND));
/// assert_eq!(policy.class_for_method("get"), policy.index_of("read"));
/// assert_eq!(policy.class_for_method("DELETE"), policy.index_of("write"));
/// assert_eq!(policy.get(policy.index_of("send").unwrap()).unwrap().quota().limit(), 10);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RatePolicy {
    classes: Vec<OpClass>,
}

impl RatePolicy {
    /// A policy with no classes: nothing is rate limited.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a class that routes declare by name (e.g. `send`, `mcp`).
    pub fn class(self, name: impl Into<String>, quota: Quota) -> Self {
        self.method_class(name, quota, std::iter::empty::<&str>())
    }

    /// Adds a class that requests with one of `methods` fall into by default.
    pub fn method_class<I, S>(mut self, name: impl Into<String>, quota: Quota, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.classes.push(OpClass {
            name: name.into(),
            quota,
            methods: methods
                .into_iter()
                .map(|m| m.as_ref().to_ascii_uppercase())
                .collect(),
        });
        self
    }

    /// The classes, in definition order (their index is their position).
    pub fn classes(&self) -> &[OpClass] {
        &self.classes
    }

    /// The class at `index`.
    pub fn get(&self, index: usize) -> Option<&OpClass> {
        self.classes.get(index)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// True when nothing is rate limited.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The index of the class called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }

    /// The index of the class an HTTP method falls into (case-insensitive).
    ///
    /// A method no class names (OPTIONS, TRACE, PROPFIND, …) is never
    /// unlimited when the policy maps any method: it falls into the class
    /// that lists `*`, or else into the most restrictive method class (the
    /// slowest refill, then the smallest burst). `None` only when no class
    /// maps methods at all.
    ///
    /// ```
    /// use keygate::{Quota, RatePolicy};
    /// use std::num::NonZeroU32;
    ///
    /// let (read, write) = (NonZeroU32::new(100).unwrap(), NonZeroU32::new(30).unwrap());
    /// let policy = RatePolicy::new()
    ///     .method_class("read", Quota::per_minute(read), ["GET"])
    ///     .method_class("write", Quota::per_minute(write), ["POST"]);
    /// assert_eq!(policy.class_for_method("PROPFIND"), policy.index_of("write"));
    /// ```
    pub fn class_for_method(&self, method: &str) -> Option<usize> {
        let named = |m: &str| {
            self.classes
                .iter()
                .position(|c| c.methods.iter().any(|x| x.eq_ignore_ascii_case(m)))
        };
        named(method).or_else(|| named("*")).or_else(|| {
            self.classes
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.methods.is_empty())
                .max_by(|(_, a), (_, b)| {
                    a.quota
                        .emission_interval()
                        .cmp(&b.quota.emission_interval())
                        .then(b.quota.burst().cmp(&a.quota.burst()))
                })
                .map(|(i, _)| i)
        })
    }

    /// A class name or HTTP method defined twice, if any.
    pub fn duplicate(&self) -> Option<&str> {
        for (i, c) in self.classes.iter().enumerate() {
            if self.classes[..i].iter().any(|o| o.name == c.name) {
                return Some(&c.name);
            }
            for m in &c.methods {
                if self.classes[..i].iter().any(|o| o.methods.contains(m)) {
                    return Some(m);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::nz;

    #[test]
    fn duplicates_are_reported() {
        let q = Quota::per_minute(nz(1));
        let p = RatePolicy::new().class("a", q).class("a", q);
        assert_eq!(p.duplicate(), Some("a"));
        let p = RatePolicy::new()
            .method_class("a", q, ["GET"])
            .method_class("b", q, ["get"]);
        assert_eq!(p.duplicate(), Some("GET"));
        let p = RatePolicy::new()
            .method_class("a", q, ["GET"])
            .class("b", q);
        assert_eq!(p.duplicate(), None);
        // An unnamed method is limited by the only method class, never free.
        assert_eq!(p.class_for_method("POST"), Some(0));
        let named_only = RatePolicy::new().class("send", q);
        assert_eq!(named_only.class_for_method("POST"), None);
    }

    #[test]
    fn a_star_class_catches_unnamed_methods() {
        let q = Quota::per_minute(nz(1));
        let slow = Quota::per_hour(nz(1));
        let p = RatePolicy::new()
            .method_class("slow", slow, ["POST"])
            .method_class("rest", q, ["GET", "*"]);
        assert_eq!(p.class_for_method("PROPFIND"), p.index_of("rest"));
        let p = RatePolicy::new()
            .method_class("fast", q, ["GET"])
            .method_class("slow", slow, ["POST"]);
        assert_eq!(p.class_for_method("PROPFIND"), p.index_of("slow"));
    }
}
