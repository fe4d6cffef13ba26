//! Permission queries: `emails:send AND (domains:read OR domains:write)`,
//! parsed once and compiled to the bitset form, so a check stays a few ANDs.
//!
//! Grammar (keywords in any case; `AND` binds tighter than `OR`):
//!
//! ```text
//! query := and ("OR" and)*
//! and   := atom ("AND" atom)*
//! atom  := "(" query ")" | scope | wildcard
//! ```
//!
//! A scope is a name from the catalog; a wildcard (`subscribers:*`, `*`)
//! requires every scope it matches, as a grant of the same wildcard would
//! hold them. The compiled form is a list of terms, each the bits of scopes
//! that must all be held; the query is met when one term is. Terms that
//! contain another term are dropped, and a query whose terms would exceed
//! [`MAX_QUERY_TERMS`] is refused rather than blowing up.

use std::sync::Arc;

use super::{Kind, Requirement, ScopeCatalog, ScopeError};

/// The longest permission query accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 1000;

/// The most alternatives (AND-terms) a compiled query may have.
pub const MAX_QUERY_TERMS: usize = 256;

/// How deeply parentheses may nest.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    And,
    Or,
    Scope(&'a str),
}

/// Splits a query into tokens with their byte offsets.
fn tokenize(text: &str) -> Vec<(usize, Token<'_>)> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            chars.next();
            tokens.push((start, if c == '(' { Token::Open } else { Token::Close }));
        } else {
            let mut end = text.len();
            while let Some(&(i, c)) = chars.peek() {
                if c.is_whitespace() || c == '(' || c == ')' {
                    end = i;
                    break;
                }
                chars.next();
            }
            let word = &text[start..end];
            let token = if word.eq_ignore_ascii_case("and") {
                Token::And
            } else if word.eq_ignore_ascii_case("or") {
                Token::Or
            } else {
                Token::Scope(word)
            };
            tokens.push((start, token));
        }
    }
    tokens
}

/// A set of alternatives: the query holds when every bit of one term is held.
type Terms = Vec<u128>;

struct Parser<'c, 'a> {
    catalog: &'c ScopeCatalog,
    tokens: Vec<(usize, Token<'a>)>,
    next: usize,
    end: usize,
}

/// An error at byte offset `at` (reported 1-based, as a column).
fn error(at: usize, reason: impl Into<String>) -> ScopeError {
    ScopeError::InvalidQuery {
        at: at + 1,
        reason: reason.into(),
    }
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<(usize, Token<'a>)> {
        self.tokens.get(self.next).copied()
    }

    fn offset(&self) -> usize {
        self.peek().map_or(self.end, |(at, _)| at)
    }

    fn query(&mut self, depth: usize) -> Result<Terms, ScopeError> {
        let mut terms = self.and(depth)?;
        while let Some((_, Token::Or)) = self.peek() {
            self.next += 1;
            let more = self.and(depth)?;
            terms = or(terms, more, self.offset())?;
        }
        Ok(terms)
    }

    fn and(&mut self, depth: usize) -> Result<Terms, ScopeError> {
        let mut terms = self.atom(depth)?;
        while let Some((_, Token::And)) = self.peek() {
            self.next += 1;
            let more = self.atom(depth)?;
            terms = and(&terms, &more, self.offset())?;
        }
        Ok(terms)
    }

    fn atom(&mut self, depth: usize) -> Result<Terms, ScopeError> {
        let Some((at, token)) = self.peek() else {
            return Err(error(
                self.end,
                "expected a scope or '(' but the query ended",
            ));
        };
        self.next += 1;
        match token {
            Token::Scope(name) => {
                let set = self
                    .catalog
                    .compile_pattern(name)
                    .map_err(|_| error(at, format!("unknown scope '{name}'")))?;
                // `*` needs every scope, present and future: only an
                // all-scopes grant meets it (all bits set).
                Ok(vec![if set.all { u128::MAX } else { set.bits }])
            }
            Token::Open => {
                if depth >= MAX_DEPTH {
                    return Err(error(
                        at,
                        format!("parentheses nest deeper than {MAX_DEPTH}"),
                    ));
                }
                let terms = self.query(depth + 1)?;
                match self.peek() {
                    Some((_, Token::Close)) => {
                        self.next += 1;
                        Ok(terms)
                    }
                    _ => Err(error(at, "this '(' is never closed")),
                }
            }
            Token::Close => Err(error(at, "unexpected ')'")),
            Token::And | Token::Or => {
                Err(error(at, "expected a scope or '(' before this operator"))
            }
        }
    }
}

/// Either side: the union of both sides' terms, minimal.
fn or(mut a: Terms, b: Terms, at: usize) -> Result<Terms, ScopeError> {
    a.extend(b);
    minimal(a, at)
}

/// Both sides: every pairing of a term from each, minimal.
fn and(a: &Terms, b: &Terms, at: usize) -> Result<Terms, ScopeError> {
    if a.len().saturating_mul(b.len()) > MAX_QUERY_TERMS * MAX_QUERY_TERMS {
        return Err(too_complex(at));
    }
    let product = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| x | y))
        .collect();
    minimal(product, at)
}

/// Drops duplicate terms and terms that contain another (they add nothing).
fn minimal(mut terms: Terms, at: usize) -> Result<Terms, ScopeError> {
    terms.sort_unstable_by_key(|t| (t.count_ones(), *t));
    terms.dedup();
    let mut kept: Terms = Vec::with_capacity(terms.len());
    for t in terms {
        if !kept.iter().any(|k| k & t == *k) {
            kept.push(t);
        }
    }
    if kept.len() > MAX_QUERY_TERMS {
        return Err(too_complex(at));
    }
    Ok(kept)
}

fn too_complex(at: usize) -> ScopeError {
    error(
        at,
        format!("the query has more than {MAX_QUERY_TERMS} alternatives; simplify it"),
    )
}

impl ScopeCatalog {
    /// Parses and compiles a permission query such as
    /// `emails:send AND (domains:read OR domains:write)`: `AND`, `OR` (any
    /// case; `AND` binds tighter), parentheses, scope names and wildcards, at
    /// most [`MAX_QUERY_LEN`] bytes. A syntax error or unknown scope is
    /// [`ScopeError::InvalidQuery`], which says at which character.
    ///
    /// ```
    /// use keygate::ScopeCatalog;
    /// let catalog = ScopeCatalog::new()
    ///     .scopes(["emails:send", "domains:read", "domains:write"]).unwrap();
    /// let query = catalog.query("emails:send AND (domains:read OR domains:write)").unwrap();
    /// assert!(catalog.compile(["emails:send", "domains:write"]).unwrap().satisfies(&query));
    /// assert!(!catalog.compile(["emails:send"]).unwrap().satisfies(&query));
    /// let err = catalog.query("emails:send AND (domains:read").unwrap_err();
    /// assert_eq!(err.to_string(), "invalid permission query at character 17: this '(' is never closed");
    /// ```
    pub fn query(&self, text: &str) -> Result<Requirement, ScopeError> {
        if text.len() > MAX_QUERY_LEN {
            return Err(error(
                MAX_QUERY_LEN,
                format!("a query is at most {MAX_QUERY_LEN} bytes"),
            ));
        }
        let mut parser = Parser {
            catalog: self,
            tokens: tokenize(text),
            next: 0,
            end: text.len(),
        };
        if parser.tokens.is_empty() {
            return Err(error(0, "the query is empty"));
        }
        let terms = parser.query(0)?;
        if let Some((at, token)) = parser.peek() {
            let what = match token {
                Token::Close => "unexpected ')'",
                _ => "expected AND, OR or the end of the query",
            };
            return Err(error(at, what));
        }
        let label = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(match terms.as_slice() {
            [one] => Requirement {
                bits: *one,
                kind: Kind::All,
                label,
            },
            _ => Requirement {
                bits: terms.iter().fold(0, |acc, t| acc | t),
                kind: Kind::Terms(Arc::from(terms)),
                label,
            },
        })
    }
}

impl Requirement {
    /// Parses a permission query against `catalog`; the same as
    /// [`ScopeCatalog::query`].
    ///
    /// ```
    /// use keygate::{profiles, Requirement};
    /// let profile = profiles::mailjawn();
    /// let req = Requirement::parse(profile.catalog(), "emails:send AND (subscribers:read OR subscribers:write)").unwrap();
    /// assert_eq!(req.label(), "emails:send AND (subscribers:read OR subscribers:write)");
    /// ```
    pub fn parse(catalog: &ScopeCatalog, query: &str) -> Result<Self, ScopeError> {
        catalog.query(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::ScopeSet;

    fn catalog() -> ScopeCatalog {
        ScopeCatalog::new()
            .scopes(["a:read", "a:write", "b:read", "b:write", "c"])
            .unwrap()
            .bundle_all("all")
            .unwrap()
    }

    fn held(names: &[&str]) -> ScopeSet {
        catalog().compile(names).unwrap()
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let q = catalog().query("a:read OR b:read AND c").unwrap();
        assert!(held(&["a:read"]).satisfies(&q));
        assert!(!held(&["b:read"]).satisfies(&q));
        assert!(held(&["b:read", "c"]).satisfies(&q));
        let q = catalog().query("(a:read or b:read) and c").unwrap();
        assert!(!held(&["a:read"]).satisfies(&q));
        assert!(held(&["a:read", "c"]).satisfies(&q));
    }

    #[test]
    fn wildcards_need_every_match_and_star_needs_an_all_grant() {
        let q = catalog().query("a:*").unwrap();
        assert!(!held(&["a:read"]).satisfies(&q));
        assert!(held(&["a:read", "a:write"]).satisfies(&q));
        let star = catalog().query("*").unwrap();
        assert!(!held(&["a:read", "a:write", "b:read", "b:write", "c"]).satisfies(&star));
        assert!(catalog().bundle_set("all").unwrap().satisfies(&star));
    }

    #[test]
    fn errors_say_where() {
        let c = catalog();
        let at = |q: &str| match c.query(q).unwrap_err() {
            ScopeError::InvalidQuery { at, reason } => (at, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(at("").0, 1);
        assert_eq!(at("a:read AND").0, 11);
        assert_eq!(at("a:read AND nope").0, 12);
        assert!(at("a:read AND nope").1.contains("unknown scope 'nope'"));
        assert_eq!(at("(a:read").0, 1);
        assert_eq!(at("a:read)").0, 7);
        assert_eq!(at("a:read c").0, 8);
        assert_eq!(at("OR c").0, 1);
        assert_eq!(at(&"(".repeat(70)).0, 65);
        assert_eq!(at(&"c ".repeat(600)).0, MAX_QUERY_LEN + 1);
    }

    #[test]
    fn exponential_queries_are_refused_not_expanded() {
        // (x1 OR y1) AND (x2 OR y2) AND … doubles the terms each time.
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let c = ScopeCatalog::new().scopes(names.iter()).unwrap();
        let query = (0..20)
            .map(|i| format!("(s{} OR s{})", 2 * i, 2 * i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        assert!(query.len() <= MAX_QUERY_LEN);
        let err = c.query(&query).unwrap_err();
        assert!(err.to_string().contains("alternatives"), "{err}");
    }
}
