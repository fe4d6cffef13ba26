//! The HTTPS-only guard: plain HTTP is refused except from localhost.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderName, Request, Response, StatusCode};
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
/// A server usually speaks plain HTTP; TLS is normally terminated by a proxy or load
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
/// `127.0.0.0/8` address or `[::1]` (any port), **and**, when the request
/// extensions carry the peer address, it must be a loopback address. The peer
/// address is read from a [`SocketAddr`] extension (any server can insert
/// one) or, with the `axum` feature, from axum's `ConnectInfo<SocketAddr>`
/// (a server started with `into_make_service_with_connect_info::<SocketAddr>()`).
/// Without either, the host alone decides.
///
/// ```
/// use http::{Request, Response};
/// use tower::{service_fn, Layer, ServiceExt};
/// use keygate::layer::HttpsOnlyLayer;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let signup = HttpsOnlyLayer::new().trust_forwarded_proto(true).layer(service_fn(
///     |_: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new("welcome".to_owned())) },
/// ));
/// let plain = Request::builder().uri("/signup").header("host", "api.example.com")
///     .header("x-forwarded-proto", "http").body(()).unwrap();
/// let response = signup.oneshot(plain).await.unwrap();
/// assert_eq!(response.status(), 403);
/// assert!(response.body().contains("https_required"));
/// # });
/// ```
///
/// With axum: `Router::new().route(..).layer(HttpsOnlyLayer::new())`.
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
pub(crate) fn refusal<B: From<String>>() -> Response<B> {
    error_response(
        StatusCode::FORBIDDEN,
        "https_required",
        "plain http is refused: use https",
    )
}

fn is_local<B>(request: &Request<B>) -> bool {
    let peer_is_local = peer(request).is_none_or(|addr| addr.ip().to_canonical().is_loopback());
    peer_is_local && host_is_local(request)
}

/// The peer address the server recorded in the request extensions, if any.
pub(super) fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    request.extensions().get::<SocketAddr>().copied()
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

/// Refusals are built in the inner service's response body type, which must
/// be constructible from a `String` (the JSON error body).
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpsOnly<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HttpsOnlyFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
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
    pub struct HttpsOnlyFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
        },
        Refused {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B, E> Future for HttpsOnlyFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<String>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
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
            .insert(peer.parse::<SocketAddr>().unwrap());
        r
    }

    #[cfg(feature = "axum")]
    fn with_connect_info(mut r: Request<()>, peer: &str) -> Request<()> {
        r.extensions_mut().insert(axum::extract::ConnectInfo(
            peer.parse::<SocketAddr>().unwrap(),
        ));
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

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_names_the_peer() {
        let guard = HttpsOnlyLayer::new();
        assert!(guard.admits(&with_connect_info(request("localhost"), "127.0.0.1:5000")));
        assert!(!guard.admits(&with_connect_info(request("localhost"), "203.0.113.7:5000")));
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
