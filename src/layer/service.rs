//! [`ApiKeyLayer`]: authenticate, rate-limit and scope-check every request of
//! the routes it wraps.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::Entry;
use http::{HeaderValue, Method, Request, Response};
use tower::{Layer, Service};

use super::extract::Sources;
use super::failures::{FailureLimit, FailureLimiter};
use super::https::{refusal, HttpsOnlyLayer};
use super::response::{
    auth_error_response, challenges, failures_refusal, insert_rate_limit_headers_after_limit,
    limit_number, CREDITS_REMAINING, RATELIMIT_LIMIT,
};
use crate::error::{AuthError, Error};
use crate::ratelimit::Decision;
use crate::scope::Requirement;
use crate::service::{ApiKeys, CredentialKind, Operation, Principal};

/// A tower [`Layer`] that authenticates requests with API keys.
///
/// For each request it
///
/// 1. refuses plain HTTP from anywhere but localhost when the profile is
///    [`https_only`](crate::Profile::https_only) (see [`HttpsOnlyLayer`]);
/// 2. reads the credential where the profile says
///    ([`extract_key`](super::extract_key));
/// 3. verifies it, takes one token from the key's bucket for the route's
///    operation class and checks the route's scope requirement
///    ([`ApiKeys::verify_for`]);
/// 4. puts the [`Principal`](crate::Principal) in the request extensions (read
///    it with the `Principal` extractor) and calls the inner service, adding
///    `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` to its
///    response when the class is rate limited;
///
/// or answers the error as JSON (`401` with `WWW-Authenticate`, `403`, `429`
/// with `Retry-After`, `503`) without calling the inner service.
///
/// The operation class is the route's own when declared with
/// [`operation`](Self::operation) (`send`, `mcp`), else the one the profile
/// maps the request method to (MailJawn: GET/HEAD → `read`, POST/PUT/PATCH/DELETE
/// → `write`). Operations are built once, when the layer is configured.
///
/// Layers compose: an inner layer that finds the request already verified by
/// an outer one only checks its own scope requirement, and takes a token only
/// when its class differs from the one already charged; it never verifies the
/// key again or charges the same bucket twice. With axum, use
/// `Router::route_layer` for a group of routes with method-based classes,
/// and `MethodRouter::route_layer` for a route's own class and scopes.
///
/// **Pitfall:** `MethodRouter::route_layer` wraps only the methods added
/// *before* it: in `get(a).route_layer(keys.require(..)?).post(b)`, POST is
/// not protected. Prefer one layer over the whole router and per-handler
/// requirements with the `Require<R>` extractor (feature `axum`), which
/// travel with the handler; or add every method first, then the layer, or
/// give each method its own `.route(path, method(handler).route_layer(..))`
/// as below. A handler that takes a [`Principal`] or a `Require<R>` on a
/// route no layer covers answers 500 (a configuration error), never serves
/// the request anonymously.
///
#[cfg_attr(feature = "axum", doc = "```")]
#[cfg_attr(not(feature = "axum"), doc = "```ignore")]
/// use axum::{routing::{get, post}, Router};
/// use keygate::layer::ApiKeyLayer;
/// use keygate::{profiles, ApiKeys, Principal};
///
/// # fn main() -> Result<(), keygate::Error> {
/// let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
/// let keys = ApiKeyLayer::new(api.clone());
///
/// async fn whoami(principal: Principal) -> String {
///     principal.name().to_owned()
/// }
///
/// let app: Router = Router::new()
///     // GET counts as `read` and needs `subscribers:read`...
///     .route("/v1/subscribers", get(whoami).route_layer(keys.require("subscribers:read")?))
///     // ...POST on the same path counts as `write` and needs `subscribers:write`.
///     .route("/v1/subscribers", post(whoami).route_layer(keys.require("subscribers:write")?))
///     // A route-declared class: `send`, 10 per minute per key.
///     .route(
///         "/v1/emails/send",
///         post(whoami).route_layer(keys.operation("send")?.require("emails:send")?),
///     )
///     // A group of routes: any valid key, method-based classes.
///     .merge(Router::new().route("/v1/me", get(whoami)).route_layer(keys.clone()));
/// # Ok(()) }
/// ```
///
/// The layer needs no axum: it wraps any tower service whose response body
/// can be made from a `String` (the JSON error text).
///
/// ```
/// use http::{Request, Response};
/// use tower::{service_fn, Layer, ServiceExt};
/// use keygate::layer::ApiKeyLayer;
/// use keygate::{profiles, ApiKeys, Principal};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let api = ApiKeys::in_memory(profiles::mailjawn()).unwrap();
/// let service = ApiKeyLayer::new(api).layer(service_fn(|request: Request<()>| async move {
///     let principal = request.extensions().get::<Principal>().expect("set by the layer");
///     Ok::<_, std::convert::Infallible>(Response::new(principal.name().to_owned()))
/// }));
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 401);
/// assert!(response.body().contains("missing_api_key"));
/// # });
/// ```
#[derive(Clone)]
pub struct ApiKeyLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    api: ApiKeys,
    sources: Sources,
    challenges: Vec<HeaderValue>,
    /// The route-declared class, already checked against the profile.
    route: Option<Operation>,
    requirement: Option<Requirement>,
    https: Option<HttpsOnlyLayer>,
    trust_forwarded_proto: bool,
    operations: Operations,
    /// Whether session tokens are taken (when the service has sessions).
    accept_sessions: bool,
    /// The failure budgets per client address, shared by the layers derived
    /// from the one that set them.
    failures: Option<Arc<FailureLimiter>>,
}

/// The operations requests are checked against, built at configuration time.
#[derive(Clone)]
enum Operations {
    /// A route-declared class: one operation whatever the method.
    Route(Operation),
    /// Method-based classes for the standard methods; others are looked up
    /// per request (rare).
    Methods(Box<[(Method, Operation)]>),
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

impl Config {
    /// Builds the operations and the guard from the settings.
    fn rebuild(mut self) -> Self {
        self.operations = match &self.route {
            Some(op) => Operations::Route(self.with_requirement(op.clone())),
            None => Operations::Methods(
                METHODS
                    .iter()
                    .map(|m| {
                        let op = self.api.operation_for_method(m.as_str());
                        (m.clone(), self.with_requirement(op))
                    })
                    .collect(),
            ),
        };
        self.https = self
            .https
            .map(|_| HttpsOnlyLayer::new().trust_forwarded_proto(self.trust_forwarded_proto));
        self
    }

    fn with_requirement(&self, op: Operation) -> Operation {
        match &self.requirement {
            Some(r) => op.with_requirement(r.clone()),
            None => op,
        }
    }

    fn operation(&self, method: &Method) -> Cow<'_, Operation> {
        match &self.operations {
            Operations::Route(op) => Cow::Borrowed(op),
            Operations::Methods(table) => match table.iter().find(|(m, _)| m == method) {
                Some((_, op)) => Cow::Borrowed(op),
                None => Cow::Owned(
                    self.with_requirement(self.api.operation_for_method(method.as_str())),
                ),
            },
        }
    }
}

impl Config {
    /// [`verify`](Self::verify) when it finishes without waiting (see
    /// [`ApiKeys::verify_for_now`]); `None`, with nothing done, when it
    /// cannot.
    fn verify_now(
        &self,
        presented: &str,
        operation: &Operation,
    ) -> Option<Result<Principal, AuthError>> {
        #[cfg(feature = "sessions")]
        if self.api.sessions().is_some() && crate::session::looks_like_jwt(presented) {
            return None;
        }
        self.api.verify_for_now(presented, operation)
    }

    /// The request's answer when it can be had without waiting: its
    /// credential is missing or malformed, or verified by
    /// [`verify_now`](Self::verify_now). `None` leaves the request to the
    /// waiting path: HTTPS refusals, principals from an outer layer, and
    /// whatever `verify_now` cannot answer.
    fn answer_now<B>(&self, request: &Request<B>) -> Option<Result<Principal, AuthError>> {
        // A failure limit is spent ahead of the store and settled after it,
        // so every request under one takes the path that does both.
        if self.failures.is_some() {
            return None;
        }
        if let Some(guard) = &self.https {
            if !guard.admits(request) {
                return None;
            }
        }
        if request.extensions().get::<Principal>().is_some() {
            return None;
        }
        let operation = self.operation(request.method());
        match self.sources.extract(request.headers()) {
            Ok(presented) => self.verify_now(&presented, &operation),
            Err(e) => Some(Err(e)),
        }
    }

    /// Verifies a key, or a session token where the service takes them.
    async fn verify(&self, presented: &str, operation: &Operation) -> Result<Principal, AuthError> {
        #[cfg(feature = "sessions")]
        if self.api.sessions().is_some() && crate::session::looks_like_jwt(presented) {
            let principal = self.api.verify_session(presented).await?;
            return self.refine(principal, operation).await;
        }
        self.api.verify_for(presented, operation).await
    }

    /// Checks and charges an already verified principal for this route.
    async fn refine(
        &self,
        principal: Principal,
        operation: &Operation,
    ) -> Result<Principal, AuthError> {
        if !self.accept_sessions && principal.credential() == CredentialKind::Session {
            return Err(AuthError::SessionNotAccepted);
        }
        self.api.refine(principal, operation).await
    }
}

impl ApiKeyLayer {
    /// A layer for `api`'s profile: its credential sources, its HTTPS policy,
    /// method-based operation classes and no scope requirement.
    pub fn new(api: ApiKeys) -> Self {
        let profile = api.profile();
        let config = Config {
            sources: Sources::new(&profile.key_locations),
            challenges: challenges(&profile.key_locations),
            route: None,
            requirement: None,
            https: profile.https_only.then(HttpsOnlyLayer::new),
            trust_forwarded_proto: false,
            operations: Operations::Methods(Box::new([])),
            accept_sessions: true,
            failures: None,
            api,
        };
        Self {
            config: Arc::new(config.rebuild()),
        }
    }

    fn with(&self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = (*self.config).clone();
        change(&mut config);
        Self {
            config: Arc::new(config.rebuild()),
        }
    }

    /// The same layer with a route-declared operation class (e.g. `send`,
    /// `mcp`) instead of the method-based one. An unknown class is an error
    /// (unless the profile has no rate limits), so a typo cannot switch
    /// limiting off.
    pub fn operation(&self, class: &str) -> Result<Self, Error> {
        let op = self.config.api.operation(class)?;
        Ok(self.with(|c| c.route = Some(op)))
    }

    /// The same layer requiring one scope from the profile's catalog
    /// (403 without it); replaces any earlier requirement. An unknown scope is
    /// an error.
    pub fn require(&self, scope: &str) -> Result<Self, Error> {
        let requirement = self.config.api.requirement(scope)?;
        Ok(self.requirement(requirement))
    }

    /// The same layer requiring a prepared requirement, e.g. all or any of
    /// several scopes from [`ScopeCatalog`](crate::ScopeCatalog); replaces any
    /// earlier requirement.
    pub fn requirement(&self, requirement: Requirement) -> Self {
        self.with(|c| c.requirement = Some(requirement))
    }

    /// Turns the HTTPS-only guard on or off (default: the profile's
    /// [`https_only`](crate::Profile::https_only)).
    pub fn https_only(&self, on: bool) -> Self {
        self.with(|c| c.https = on.then(HttpsOnlyLayer::new))
    }

    /// Accepts or refuses session tokens on these routes (default: accepted
    /// when the service has [`sessions`](crate::ApiKeysBuilder) configured).
    /// A credential shaped like a JWT (three base64url segments starting
    /// `eyJ`) goes to the session verifier, anything else to the key
    /// verifier; a valid session on a route that refuses sessions is
    /// [`AuthError::SessionNotAccepted`](crate::AuthError::SessionNotAccepted)
    /// (403).
    pub fn accept_sessions(&self, accept: bool) -> Self {
        self.with(|c| c.accept_sessions = accept)
    }

    /// Trusts `X-Forwarded-Proto` from a reverse proxy for the HTTPS-only
    /// guard (default: off). See [`HttpsOnlyLayer`] for how the scheme is
    /// determined.
    pub fn trust_forwarded_proto(&self, trust: bool) -> Self {
        self.with(|c| c.trust_forwarded_proto = trust)
    }

    /// The same layer with a budget of failed verifications per client
    /// address, spent ahead of the key store: a defence against floods of
    /// made-up keys, which are cheap to make well formed (valid checksum)
    /// and would each cost a store query.
    ///
    /// Each request that presents a credential takes one token from its
    /// address's budget (a GCRA bucket with `limit`'s [`Quota`](crate::Quota))
    /// before it is verified. The token is given back when the verification
    /// succeeds, and also when the credential was good but refused for
    /// another reason (missing scope, the key's own rate limit or credits);
    /// it is kept when the credential is no good: unknown, wrong secret,
    /// revoked, expired, disabled, malformed, or an invalid session token.
    /// It is also kept when the store could not answer (503): a struggling
    /// store is the last thing to send an unthrottled flood to, though a
    /// good client retrying through an outage spends its budget too. A
    /// request that is cancelled while being verified keeps its token as
    /// well. Taking the token first means concurrent requests cannot overrun
    /// the budget: from one address, the store sees at most `burst` failed
    /// lookups at once and then one per emission interval. Requests without a credential (401 `missing_api_key`) and
    /// requests already verified by an outer layer take nothing.
    ///
    /// While an address has no budget left, every request from it that
    /// presents a credential is answered `429` with the error code
    /// `too_many_failures` and `Retry-After`, and the store is not asked,
    /// **valid keys included**: telling a valid key apart would take the
    /// very lookup the limit saves, so a client that shares an address with
    /// an attacker (behind one NAT, or one IPv6 /64) is refused until the
    /// budget refills. Choose the burst with that in mind.
    ///
    /// The client address is the connection's peer: axum's
    /// `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`) or a
    /// `SocketAddr` request extension; behind reverse proxies, see
    /// [`FailureLimit::trust_forwarded_for`]. IPv6 addresses share one budget
    /// per /64 prefix, since one subscriber usually holds a whole /64.
    /// Requests whose address is unknown are not limited (a warning is
    /// logged once). At most [`FailureLimit::max_addresses`] addresses are
    /// tracked, so a flood from many addresses cannot grow memory without
    /// bound.
    ///
    /// The budget is kept by this layer and the layers made from it
    /// afterwards (with [`require`](Self::require),
    /// [`operation`](Self::operation), ...), in this process; it reads the
    /// service's [`Clock`](crate::Clock). Calling this again starts a new,
    /// separate budget.
    ///
    #[cfg_attr(feature = "axum", doc = "```")]
    #[cfg_attr(not(feature = "axum"), doc = "```ignore")]
    /// use std::net::SocketAddr;
    /// use std::num::NonZeroU32;
    /// use axum::{routing::get, Router};
    /// use keygate::layer::ApiKeyLayer;
    /// use keygate::{profiles, ApiKeys, Principal, Quota};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let api = ApiKeys::in_memory(profiles::mailjawn())?;
    /// // 10 failed verifications at once per address, then one per 6 s.
    /// let failures = Quota::per_minute(NonZeroU32::new(10).unwrap());
    /// let keys = ApiKeyLayer::new(api).limit_failures(failures);
    /// let app: Router = Router::new()
    ///     .route("/v1/me", get(|p: Principal| async move { p.name().to_owned() }))
    ///     .route_layer(keys);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let _ = || async move {
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    /// # Ok::<(), std::io::Error>(()) };
    /// # Ok(()) }
    /// ```
    pub fn limit_failures(&self, limit: impl Into<FailureLimit>) -> Self {
        let limiter = Arc::new(FailureLimiter::new(limit.into()));
        self.with(|c| c.failures = Some(limiter))
    }

    /// The failure limit set with [`limit_failures`](Self::limit_failures),
    /// if any.
    pub fn failure_limit(&self) -> Option<FailureLimit> {
        self.config.failures.as_ref().map(|f| *f.limit())
    }

    /// How many client addresses the failure limiter holds state for (at
    /// most [`FailureLimit::max_addresses_held`]); `None` without a failure
    /// limit.
    pub fn failure_limited_addresses(&self) -> Option<usize> {
        self.config.failures.as_ref().map(|f| f.addresses())
    }

    /// An [`HttpsOnlyLayer`] with this layer's forwarded-proto setting, for
    /// routes that take no key (sign-up, health checks); `None` when the
    /// guard is off.
    pub fn https_only_layer(&self) -> Option<HttpsOnlyLayer> {
        self.config.https
    }

    /// The service whose keys this layer checks.
    pub fn api(&self) -> &ApiKeys {
        &self.config.api
    }

    /// The operation a request with `method` is checked against: the route's
    /// class if declared, else the method's, with the layer's requirement.
    pub fn operation_for(&self, method: &Method) -> Operation {
        self.config.operation(method).into_owned()
    }
}

impl fmt::Debug for ApiKeyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("ApiKeyLayer")
            .field("profile", &c.api.profile().name)
            .field("class", &c.route.as_ref().and_then(Operation::class))
            .field(
                "requirement",
                &c.requirement.as_ref().map(Requirement::label),
            )
            .field("https_only", &c.https.is_some())
            .field("trust_forwarded_proto", &c.trust_forwarded_proto)
            .field("accept_sessions", &c.accept_sessions)
            .field("failure_limit", &c.failures.as_ref().map(|f| f.limit()))
            .finish()
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`ApiKeyLayer`] wraps around another.
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for ApiKeyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("inner", &self.inner)
            .field(
                "layer",
                &ApiKeyLayer {
                    config: Arc::clone(&self.config),
                },
            )
            .finish()
    }
}

/// The inner service's response body type is kept; error responses are
/// built in it from their JSON text, so it must implement `From<String>`
/// (`axum::body::Body`, `http_body_util::Full<Bytes>` and `String` do).
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Answered without waiting (the usual case with the memory store and
        // the in-process limiter): the inner service `poll_ready` readied is
        // called right here, so it need not be cloned, and the future boxed
        // is only the inner one's.
        if let Some(verified) = self.config.answer_now(&request) {
            let principal = match verified {
                Ok(principal) => principal,
                Err(e) => {
                    let response = auth_error_response(&e, &self.config.challenges);
                    return ResponseFuture {
                        future: Box::pin(async move { Ok(response) }),
                    };
                }
            };
            let decision = principal.rate_limit().copied();
            let credits = principal.spendable_credits();
            request.extensions_mut().insert(principal);
            let future = self.inner.call(request);
            return ResponseFuture {
                future: Box::pin(async move {
                    let mut response = future.await?;
                    add_headers(&mut response, decision, credits);
                    Ok(response)
                }),
            };
        }
        // Use the service poll_ready readied and leave the fresh clone for
        // the next call, as tower asks.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let config = Arc::clone(&self.config);
        ResponseFuture {
            future: Box::pin(async move {
                if let Some(guard) = &config.https {
                    if !guard.admits(&request) {
                        return Ok(refusal());
                    }
                }
                let operation = config.operation(request.method());
                // A principal from an outer layer of the same service is
                // refined, never verified or charged again; one from another
                // service (another profile and catalog) is ignored.
                let already = request
                    .extensions_mut()
                    .remove::<Principal>()
                    .filter(|p| config.api.issued(p));
                let verified = match (already, config.sources.extract(request.headers())) {
                    (Some(principal), _) => config.refine(principal, &operation).await,
                    (None, Err(AuthError::Missing)) => Err(AuthError::Missing),
                    (None, presented) => match &config.failures {
                        None => match presented {
                            Ok(presented) => config.verify(&presented, &operation).await,
                            Err(e) => Err(e),
                        },
                        Some(failures) => {
                            let now = config.api.clock().monotonic_nanos();
                            let reservation = match failures.reserve(&request, now) {
                                Ok(reservation) => reservation,
                                Err(retry_after) => return Ok(failures_refusal(retry_after)),
                            };
                            let verified = match presented {
                                Ok(presented) => config.verify(&presented, &operation).await,
                                Err(e) => Err(e),
                            };
                            if let Some(reservation) = reservation {
                                reservation.settle(&verified, config.api.clock().as_ref());
                            }
                            verified
                        }
                    },
                };
                let principal = match verified {
                    Ok(principal) => principal,
                    Err(e) => return Ok(auth_error_response(&e, &config.challenges)),
                };
                let decision = principal.rate_limit().copied();
                let credits = principal.spendable_credits();
                request.extensions_mut().insert(principal);
                let mut response = inner.call(request).await?;
                add_headers(&mut response, decision, credits);
                Ok(response)
            }),
        }
    }
}

/// Adds the rate-limit and credits headers for a request's decision and
/// remaining credits, unless an inner layer's narrower ones, already on the
/// response, are there: those are the ones the client sees.
fn add_headers<B>(response: &mut Response<B>, decision: Option<Decision>, credits: Option<u64>) {
    if let Some(decision) = decision {
        // One lookup of the name for the check and the insert.
        if let Entry::Vacant(slot) = response.headers_mut().entry(RATELIMIT_LIMIT) {
            slot.insert(limit_number(decision.limit));
            insert_rate_limit_headers_after_limit(response.headers_mut(), &decision);
        }
    }
    if let Some(left) = credits {
        if !response.headers().contains_key(CREDITS_REMAINING) {
            response
                .headers_mut()
                .insert(CREDITS_REMAINING, http::HeaderValue::from(left));
        }
    }
}

/// The response future of [`ApiKeyService`].
pub struct ResponseFuture<B, E> {
    future: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
