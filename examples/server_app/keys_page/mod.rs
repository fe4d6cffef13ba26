//! The API-keys page at `/keys`: HTML, a script and a style sheet with no
//! build step, over the key-management routes. The page is sent with a
//! strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline code, no frames, no forms posted elsewhere) and
//! `Cache-Control: no-store`; the script keeps the credential in memory
//! only.

use axum::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keygate::profiles::KeyLocation;
use keygate::Profile;

use super::Product;

const HTML: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("keys.js");
const STYLE: &str = include_str!("keys.css");

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `/keys`, `/keys/keys.js` and `/keys/keys.css` for `product`, whose
/// key-management routes are under `prefix`.
pub fn routes(product: Product, prefix: &str) -> Router {
    let html = page(product, &product.profile(), prefix);
    Router::new()
        .route(
            "/keys",
            get(move || async move { respond("text/html; charset=utf-8", html) }),
        )
        .route(
            "/keys/keys.js",
            get(|| async { respond("text/javascript; charset=utf-8", SCRIPT.to_owned()) }),
        )
        .route(
            "/keys/keys.css",
            get(|| async { respond("text/css; charset=utf-8", STYLE.to_owned()) }),
        )
}

/// The HTML with the product's settings in `data-*` attributes, which the
/// script reads: how it sends the credential and what a new key may be
/// granted.
fn page(product: Product, profile: &Profile, prefix: &str) -> String {
    let auth = if product == Product::MailKite {
        "session"
    } else {
        match profile.key_locations().first() {
            Some(KeyLocation::Basic) => "basic",
            Some(KeyLocation::Header(_)) => "x-api-key",
            _ => "bearer",
        }
    };
    let catalog = profile.catalog();
    let grants: Vec<String> = catalog
        .bundle_names()
        .map(|b| format!("bundle:{b}"))
        .chain(catalog.scope_names().map(|s| format!("scope:{s}")))
        .collect();
    HTML.replace("{profile}", &escape(profile.name()))
        .replace("{product}", &escape(&format!("{product:?}")))
        .replace("{prefix}", &escape(prefix))
        .replace("{auth}", auth)
        .replace("{grants}", &escape(&grants.join(",")))
        .replace(
            "{default_grant}",
            if profile.default_bundle().is_some() {
                "yes"
            } else {
                "no"
            },
        )
}

/// Escapes text for an HTML attribute or element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn respond(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}
