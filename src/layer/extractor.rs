//! The [`Principal`] as an axum extractor, and [`Require`], a principal
//! that holds a scope named by a type.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::error::AuthError;
use crate::service::{ApiKeys, Principal};

/// Why a [`Principal`] could not be extracted: no [`ApiKeyLayer`](super::ApiKeyLayer)
/// covers the route. The layer answers every unauthenticated request itself,
/// so reaching a handler without a principal is a configuration error: the
/// response is 500 `api_key_layer_missing`, and the request is never served
/// as if it were authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingLayer;

impl IntoResponse for MissingLayer {
    fn into_response(self) -> Response {
        tracing::error!(target: "keygate",
            "a handler takes a Principal but no ApiKeyLayer covers its route");
        super::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_key_layer_missing",
            "this route is not configured for API keys",
        )
    }
}

/// The caller authenticated by [`ApiKeyLayer`](super::ApiKeyLayer), read from
/// the request extensions. On a route the layer does not cover it rejects
/// with [`MissingLayer`] (500, a configuration error); use
/// `Option<Principal>` on routes where a key is optional.
///
/// ```
/// use keygate::Principal;
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} ({})", principal.name(), principal.account())
/// }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(MissingLayer)
    }
}

/// `Option<Principal>`: `None` on routes without a verified key.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// A scope named by a type, for the [`Require`] extractor. Declare one with
/// [`required_scope!`](crate::required_scope) or by hand:
///
/// ```
/// struct SubscribersWrite;
/// impl keygate::layer::RequiredScope for SubscribersWrite {
///     const SCOPE: &'static str = "subscribers:write";
/// }
/// ```
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope, as the profile's [`ScopeCatalog`](crate::ScopeCatalog)
    /// names it. A name the catalog does not define is a configuration
    /// error: [`Require`] answers 500, never 403.
    const SCOPE: &'static str;
}

/// Declares a type naming a scope, for [`Require`](crate::layer::Require):
/// `required_scope!(pub SubscribersWrite = "subscribers:write");` (feature
/// `axum`).
///
/// ```
/// keygate::required_scope!(
///     /// Writing subscribers.
///     pub SubscribersWrite = "subscribers:write"
/// );
/// use keygate::layer::RequiredScope;
/// assert_eq!(SubscribersWrite::SCOPE, "subscribers:write");
/// ```
#[macro_export]
macro_rules! required_scope {
    ($(#[$meta:meta])* $vis:vis $name:ident = $scope:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::layer::RequiredScope for $name {
            const SCOPE: &'static str = $scope;
        }
    };
}

/// The verified [`Principal`], only when its key holds the scope `R` names:
/// a per-handler requirement that cannot be left off a method.
///
/// `MethodRouter::route_layer` wraps only the methods added before it, so in
/// `get(a).route_layer(keys.require("x:read")?).post(b)` POST is served with
/// no check at all. A requirement in the handler's signature travels with the
/// handler instead: put one [`ApiKeyLayer`](super::ApiKeyLayer) over the
/// whole router (authentication, HTTPS policy, method-based rate-limit
/// classes) and let each handler say what it needs.
///
/// It reads the principal the layer verified and only checks the scope (one
/// AND of bitsets): it never verifies the key again or takes another
/// rate-limit token. The service comes from the router state
/// (`ApiKeys: FromRef<S>`, so `.with_state(api)` or a state struct with
/// `#[derive(FromRef)]`). It rejects with
///
/// - 500 `api_key_layer_missing` when no layer of that service covers the
///   route (as [`Principal`] does): a configuration error, never served;
/// - 500 `unknown_scope` when the catalog does not define `R::SCOPE`;
/// - 403 `insufficient_scope` when the key lacks the scope.
///
/// ```
/// use axum::{routing::get, Router};
/// use keygate::layer::{ApiKeyLayer, Require};
/// use keygate::{profiles, required_scope, ApiKeys};
///
/// required_scope!(SubscribersRead = "subscribers:read");
/// required_scope!(SubscribersWrite = "subscribers:write");
///
/// async fn list(caller: Require<SubscribersRead>) -> String {
///     format!("subscribers of {}", caller.account())
/// }
/// async fn add(caller: Require<SubscribersWrite>) -> String {
///     format!("added by {}", caller.name())
/// }
///
/// let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
/// let app: Router = Router::new()
///     // A method added later brings its own requirement with its handler.
///     .route("/v1/subscribers", get(list).post(add))
///     .route_layer(ApiKeyLayer::new(api.clone()))
///     .with_state(api);
/// ```
pub struct Require<R> {
    principal: Principal,
    scope: PhantomData<fn() -> R>,
}

impl<R> Require<R> {
    /// The principal, which holds `R`'s scope.
    pub fn into_principal(self) -> Principal {
        self.principal
    }
}

impl<R> Deref for Require<R> {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<R> Clone for Require<R> {
    fn clone(&self) -> Self {
        Self {
            principal: self.principal.clone(),
            scope: PhantomData,
        }
    }
}

impl<R: RequiredScope> fmt::Debug for Require<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Require")
            .field("scope", &R::SCOPE)
            .field("principal", &self.principal)
            .finish()
    }
}

/// Why a [`Require`] extractor refused the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequireRejection {
    /// No [`ApiKeyLayer`](super::ApiKeyLayer) of the state's service covers
    /// the route: 500 `api_key_layer_missing`.
    MissingLayer(MissingLayer),
    /// The profile's catalog does not define the scope: 500 `unknown_scope`.
    UnknownScope(&'static str),
    /// The key lacks the scope: [`AuthError::Forbidden`] (403).
    Forbidden(AuthError),
}

impl IntoResponse for RequireRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingLayer(missing) => missing.into_response(),
            Self::UnknownScope(scope) => {
                tracing::error!(target: "keygate", scope,
                    "a handler requires a scope the profile's catalog does not define");
                super::error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown_scope",
                    "this route requires a scope the service does not define",
                )
            }
            Self::Forbidden(e) => e.into_response(),
        }
    }
}

impl<S, R> FromRequestParts<S> for Require<R>
where
    S: Send + Sync,
    R: RequiredScope,
    ApiKeys: FromRef<S>,
{
    type Rejection = RequireRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let api = ApiKeys::from_ref(state);
        let principal = parts
            .extensions
            .get::<Principal>()
            .filter(|p| api.issued(p))
            .ok_or(RequireRejection::MissingLayer(MissingLayer))?;
        let requirement = api
            .requirement(R::SCOPE)
            .map_err(|_| RequireRejection::UnknownScope(R::SCOPE))?;
        principal
            .check(&requirement)
            .map_err(RequireRejection::Forbidden)?;
        Ok(Self {
            principal: principal.clone(),
            scope: PhantomData,
        })
    }
}
