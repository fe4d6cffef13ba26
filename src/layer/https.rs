//! The HTTPS-only guard: plain HTTP is refused except from localhost.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderName, Request, StatusCode};
use tower::{Layer, Service};

use super::response::error_response;

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A tower [`Layer`] that refuses plain HTTP with `403` and the error code
/// `https_required`, except from localhost.
///
/// [`ApiKeyLayer`](super::ApiKeyLayer) applies the same check itself when its
/// profile is [`https_only`](crate::Profile::https_only); add this layer to
/// cover routes without keys too (sign-up, health checks), e.g. with
/// [`ApiKeyLayer::https_only_layer`](super::ApiKeyLayer::https_only_layer).
///
/// # How the scheme is known
///
/// axum serves plain HTTP; TLS is normally terminated by a proxy or load
/// balancer in front. A request counts as HTTPS when
///
/// 1. [`trust_forwarded_proto`](Self::trust_forwarded_proto) is on and the
///    request carries exactly one `X-Forwarded-Proto` header whose first
///    entry is `https`. When trusted and present, this header alone decides:
///    `http` is refused even for a local `Host`, since the client reached the
///    proxy over plain HTTP. Only turn it on behind a proxy that always sets
///    (overwrites) the header, or clients could forge it;
/// 2. otherwise, the request URI carries the scheme `https` (absolute-form
///    request targets, or servers that terminate TLS themselves and record it);
/// 3. otherwise the request is plain HTTP.
///
/// Plain HTTP is still admitted from the local machine: the host the request
/// names (URI authority, else the `Host` header) must be `localhost`, a
/// `127.0.0.0/8` address or `[::1]` (any port), **and**, when the server was
/// started with `into_make_service_with_connect_info::<SocketAddr>()`, the
/// peer address must be a loopback address. Without `ConnectInfo` the host
/// alone decides.
///
/// ```
/// use axum::{routing::post, Router};
/// use keygate::layer::HttpsOnlyLayer;
///
/// let app: Router = Router::new()
///     .route("/api/auth/signup", post(|| async { "welcome" }))
///     .layer(HttpsOnlyLayer::new().trust_forwarded_proto(true));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpsOnlyLayer {
    trust_forwarded_proto: bool,
}

impl HttpsOnlyLayer {
    /// A guard that does not trust `X-Forwarded-Proto`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the `X-Forwarded-Proto` header set by a reverse proxy. Only
    /// behind a proxy that always sets it: a client could send it otherwise.
    pub fn trust_forwarded_proto(mut self, trust: bool) -> Self {
        self.trust_forwarded_proto = trust;
        self
    }

    /// True when the request may proceed: it came over HTTPS, or over plain
    /// HTTP from localhost.
    pub fn admits<B>(&self, request: &Request<B>) -> bool {
        if self.trust_forwarded_proto {
            let mut values = request.headers().get_all(X_FORWARDED_PROTO).iter();
            if let Some(first) = values.next() {
                return values.next().is_none()
                    && first
                        .to_str()
                        .ok()
                        .and_then(|v| v.split(',').next())
                        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            }
        }
        if request.uri().scheme() == Some(&Scheme::HTTPS) {
            return true;
        }
        is_local(request)
    }
}

/// The response to a refused plain-HTTP request.
pub(crate) fn refusal() -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "https_required",
        "plain http is refused: use https",
    )
}

fn is_local<B>(request: &Request<B>) -> bool {
    let peer_is_local = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_none_or(|ConnectInfo(addr)| addr.ip().to_canonical().is_loopback());
    peer_is_local && host_is_local(request)
}

fn host_is_local<B>(request: &Request<B>) -> bool {
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => match request.headers().get(HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => host,
            None => return false,
        },
    };
    let host = host.trim();
    // Drop the port: after the closing bracket for IPv6, else after the colon.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        }
    } else {
        host.split(':').next().unwrap_or_default()
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl<S> Layer<S> for HttpsOnlyLayer {
    type Service = HttpsOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpsOnly {
            inner,
            guard: *self,
        }
    }
}

/// The service [`HttpsOnlyLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct HttpsOnly<S> {
    inner: S,
    guard: HttpsOnlyLayer,
}

impl<S, B> Service<Request<B>> for HttpsOnly<S>
where
    S: Service<Request<B>>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    type Future = HttpsOnlyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.guard.admits(&request) {
            HttpsOnlyFuture {
                state: State::Inner {
                    future: self.inner.call(request),
                },
            }
        } else {
            HttpsOnlyFuture {
                state: State::Refused {
                    response: Some(refusal()),
                },
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`HttpsOnly`].
    #[derive(Debug)]
    pub struct HttpsOnlyFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Inner {
            #[pin]
            future: F,
        },
        Refused {
            response: Option<Response>,
        },
    }
}

impl<F, R, E> Future for HttpsOnlyFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: IntoResponse,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx).map_ok(IntoResponse::into_response),
            StateProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(refusal)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str) -> Request<()> {
        Request::builder()
            .uri("/api/domains")
            .header(HOST, host)
            .body(())
            .unwrap()
    }

    fn with_peer(mut r: Request<()>, peer: &str) -> Request<()> {
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        r
    }

    #[test]
    fn localhost_hosts_are_admitted_over_plain_http() {
        let guard = HttpsOnlyLayer::new();
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:3000",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(guard.admits(&request(host)), "{host}");
        }
        for host in [
            "api.example.com",
            "localhost.example.com",
            "10.0.0.1",
            "[::2]:80",
            "[::1",
            "",
        ] {
            assert!(!guard.admits(&request(host)), "{host}");
        }
        let no_host = Request::builder().uri("/").body(()).unwrap();
        assert!(!guard.admits(&no_host));
    }

    #[test]
    fn a_remote_peer_is_refused_even_with_a_local_host() {
        let guard = HttpsOnlyLayer::new();
        assert!(guard.admits(&with_peer(request("localhost"), "127.0.0.1:5000")));
        assert!(guard.admits(&with_peer(request("localhost"), "[::1]:5000")));
        assert!(!guard.admits(&with_peer(request("localhost"), "203.0.113.7:5000")));
    }

    #[test]
    fn forwarded_proto_counts_only_when_trusted() {
        let https = |host: &str| {
            let mut r = request(host);
            r.headers_mut()
                .insert(X_FORWARDED_PROTO, "https".parse().unwrap());
            r
        };
        assert!(!HttpsOnlyLayer::new().admits(&https("api.example.com")));
        let trusting = HttpsOnlyLayer::new().trust_forwarded_proto(true);
        assert!(trusting.admits(&https("api.example.com")));
        let mut chain = request("api.example.com");
        chain
            .headers_mut()
            .insert(X_FORWARDED_PROTO, "HTTPS, http".parse().unwrap());
        assert!(trusting.admits(&chain));
        // A trusted proxy saying http wins over a local Host.
        let mut plain = request("localhost");
        plain
            .headers_mut()
            .insert(X_FORWARDED_PROTO, "http".parse().unwrap());
        assert!(!trusting.admits(&plain));
        // Two headers: ambiguous, refused.
        let mut two = https("api.example.com");
        two.headers_mut()
            .append(X_FORWARDED_PROTO, "https".parse().unwrap());
        assert!(!trusting.admits(&two));
    }

    #[test]
    fn an_https_uri_is_admitted() {
        let r = Request::builder()
            .uri("https://api.example.com/api/domains")
            .body(())
            .unwrap();
        assert!(HttpsOnlyLayer::new().admits(&r));
    }
}
