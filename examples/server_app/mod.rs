//! The demo API that `examples/server.rs` serves, one router per product
//! profile. The HTTP tests build the same routers, so what the README's curl
//! session shows is what the tests check.

#[cfg(feature = "sessions")]
pub mod auth;
pub mod keys_page;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keygate::layer::{error_response, ApiKeyLayer, JsonBody};
use keygate::routes::{self, ManagementRoutes};
use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, CredentialKind, Error, ListOptions, Principal,
    Profile, Rotation,
};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

/// The account the printed admin key belongs to.
pub const ADMIN_ACCOUNT: &str = "acct_admin";

/// The four demo products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// `mj_` keys, Bearer, bundles, per-key rate limits.
    MailJawn,
    /// Key pairs over HTTP Basic, secret reset.
    Mailjet,
    /// `X-Api-Key`, sub-account key management.
    MailChannels,
    /// `mk_live_` keys from sign-up, rotation, HTTPS only.
    MailKite,
}

impl Product {
    /// Parses a `--profile` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "mailjawn" => Some(Self::MailJawn),
            "mailjet" => Some(Self::Mailjet),
            "mailchannels" => Some(Self::MailChannels),
            "mailkite" => Some(Self::MailKite),
            _ => None,
        }
    }

    /// The keygate profile the product runs on.
    pub fn profile(self) -> Profile {
        match self {
            Self::MailJawn => profiles::mailjawn(),
            Self::Mailjet => profiles::mailjet(),
            Self::MailChannels => profiles::mailchannels(),
            Self::MailKite => profiles::mailkite(),
        }
    }
}

/// How the router is configured beyond its profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Trust `X-Forwarded-Proto` for the HTTPS-only guard (behind a proxy).
    pub trust_forwarded_proto: bool,
}

/// Creates a Full Access key for [`ADMIN_ACCOUNT`], or makes sure of
/// `import` (a key kept elsewhere, e.g. `KEYGATE_ADMIN_KEY`: every restart
/// finds it already stored), and returns the text a client sends: the
/// token, or `public:secret` for key pairs.
pub async fn admin_key(api: &ApiKeys, import: Option<&str>) -> Result<String, Error> {
    let admin = AccountId::new(ADMIN_ACCOUNT)?;
    let request = if api.profile().one_scope_per_key() {
        // MailChannels: one scope per key; `api` sends and manages keys.
        let first = api.profile().catalog().scope_names().take(1);
        CreateKey::new("admin").scopes(first)
    } else {
        CreateKey::new("admin").all_scopes()
    };
    let key = api
        .operator()
        .bootstrap_key(&admin, import, request)
        .await?;
    Ok(key.key.to_presented().to_string())
}

/// Shared state of the demo: the key service and the demo's own resources.
#[derive(Clone)]
pub struct AppState {
    api: ApiKeys,
    data: Arc<Mutex<Data>>,
    ids: Arc<AtomicU64>,
}

#[derive(Default)]
struct Data {
    subscribers: HashMap<AccountId, Vec<Value>>,
    domains: HashMap<String, (AccountId, Value)>,
}

impl AppState {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The demo router for `product`, authenticating with `api`: the demo's own
/// resources, and keygate's key-management routes
/// ([`keygate::routes::ManagementRoutes`]).
pub fn router(product: Product, api: ApiKeys, options: Options) -> Result<Router, Error> {
    let keys = ApiKeyLayer::new(api.clone()).trust_forwarded_proto(options.trust_forwarded_proto);
    let state = AppState {
        api,
        data: Arc::default(),
        ids: Arc::default(),
    };
    let management = ManagementRoutes::new(&keys);
    let (routes, management) = match product {
        Product::MailJawn => (mailjawn(&keys)?, management.prefix("/v1")),
        Product::Mailjet => (mailjet(&keys)?, management.prefix("/v1")),
        // A sub-account key created with no body may send, as in the seed's curl example.
        Product::MailChannels => (
            mailchannels(&keys)?,
            management.prefix("/v1").default_scopes(["api"]),
        ),
        // One key per account, read and rotated by the key itself or by a
        // signed-in user (a session): the demo's own `/api/api-key` routes;
        // the dashboard's key list, revoke and create (one `mk_live_` and
        // one `mk_test_` per account) at `/api/api-keys`.
        Product::MailKite => (
            mailkite(&keys)?,
            management.prefix("/api").sub_accounts(false),
        ),
    };
    let mut mounted = vec![management];
    if product == Product::MailChannels {
        // The seed's own paths: `/tx/v1/sub-account/{handle}/api-key…`
        // (the same routes also answer under `/v1`).
        mounted.push(
            ManagementRoutes::new(&keys)
                .prefix("/tx/v1")
                .own_keys(false)
                .default_scopes(["api"]),
        );
    }
    let mut router = routes
        .with_state(state)
        .merge(keys_page::routes(product, management_prefix(product)));
    for routes in &mounted {
        router = router.merge(routes.clone().build()?);
    }
    #[cfg(feature = "openapi")]
    {
        router = router.merge(openapi_route(&documented(product, &mounted)));
    }
    let mut router = router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    if let Some(guard) = keys.https_only_layer() {
        // Sign-up and unknown routes take no key: guard them too.
        router = router.layer(guard);
    }
    Ok(router)
}

/// Where the product's own key-management routes (`…/api-keys`) are.
pub fn management_prefix(product: Product) -> &'static str {
    match product {
        Product::MailKite => "/api",
        _ => "/v1",
    }
}

/// The key-management routes `/openapi.json` describes: each resource under
/// one path only. For MailChannels a sub-account key is one resource whether
/// `/v1/sub-account/…` or the seed's `/tx/v1/sub-account/…` names it; a
/// document listing both would present a key revoked through one prefix as
/// a different resource from the one the other answers 404 for. The seed's
/// paths are documented, and `/v1/sub-account/…` is their alias.
#[cfg(feature = "openapi")]
fn documented(product: Product, mounted: &[ManagementRoutes]) -> Vec<ManagementRoutes> {
    match (product, mounted) {
        (Product::MailChannels, [own, seed, ..]) => {
            vec![own.clone().sub_accounts(false), seed.clone()]
        }
        _ => mounted.to_vec(),
    }
}

/// `GET /openapi.json`: the OpenAPI document of the mounted key-management
/// routes, open to anyone (it holds no secret).
#[cfg(feature = "openapi")]
fn openapi_route(mounted: &[ManagementRoutes]) -> Router {
    let mut docs = mounted.iter().map(ManagementRoutes::openapi);
    let mut doc = docs.next().unwrap_or_default();
    for other in docs {
        doc.merge(other);
    }
    let body = serde_json::to_string(&doc).unwrap_or_default();
    Router::new().route(
        "/openapi.json",
        get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }),
    )
}

fn mailjawn(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    Ok(Router::new()
        .route(
            "/v1/subscribers",
            get(list_subscribers).route_layer(keys.require("subscribers:read")?),
        )
        .route(
            "/v1/subscribers",
            post(add_subscriber).route_layer(keys.require("subscribers:write")?),
        )
        .route(
            "/v1/events",
            post(track_event).route_layer(keys.require("events:write")?),
        )
        .route(
            "/v1/campaigns",
            get(list_campaigns).route_layer(keys.require("campaigns:read")?),
        )
        .route(
            "/v1/emails/send",
            post(send_email).route_layer(keys.operation("send")?.require("emails:send")?),
        )
        .route("/mcp", post(mcp).route_layer(mcp_layer(keys)?)))
}

/// MailJawn's MCP server: class `mcp` (60/min), open to keys holding every
/// scope of the MCP bundle (the MCP and Full Access bundles), not to SDK keys.
fn mcp_layer(keys: &ApiKeyLayer) -> Result<ApiKeyLayer, Error> {
    let catalog = keys.api().profile().catalog();
    let mcp = catalog.bundle_set("mcp")?;
    let requirement = catalog.all_of(catalog.names_in(&mcp))?;
    Ok(keys.operation("mcp")?.requirement(requirement))
}

fn mailjet(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    Ok(Router::new().route(
        "/v3/send",
        post(send_email).route_layer(keys.require("send")?),
    ))
}

fn mailchannels(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    Ok(Router::new().route(
        "/tx/v1/send",
        post(send_email).route_layer(keys.require("api")?),
    ))
}

/// MailKite: the API key and, on the management API (`/api/*`), the
/// dashboard's session tokens; sending (`/v1/send`) takes the key only.
fn mailkite(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    let domains = keys.require("domains")?;
    let router = Router::new()
        .route("/api/api-key", get(list_keys).route_layer(keys.clone()))
        .route(
            "/api/api-key/rotate",
            post(rotate_own_key).route_layer(keys.clone()),
        )
        .route(
            "/api/domains",
            get(list_domains)
                .post(add_domain)
                .route_layer(domains.clone()),
        )
        .route("/api/domains/{id}", get(get_domain).route_layer(domains))
        .route(
            "/v1/send",
            post(send_email).route_layer(keys.require("send")?.accept_sessions(false)),
        );
    // Sign-up, login and logout need the service's sessions.
    #[cfg(feature = "sessions")]
    let router = match auth::routes(keys.api(), keys) {
        Some(auth) => router.merge(auth),
        None => router,
    };
    Ok(router)
}

// ----- request bodies ------------------------------------------------------

#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

#[derive(Deserialize)]
struct DomainBody {
    name: String,
}

// ----- responses -----------------------------------------------------------

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "invalid_request", message)
}

// ----- MailKite's one key ---------------------------------------------------

/// The account's keys, for the calling key or a signed-in user (a session).
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<keygate::Page>, Error> {
    Ok(Json(
        state
            .api
            .as_key(&principal)
            .list(principal.account(), ListOptions::default())
            .await?,
    ))
}

/// Rotates the calling key, or for a signed-in user (a session) the
/// account's live key.
async fn rotate_own_key(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, Error> {
    let manager = state.api.as_key(&principal);
    let id = match principal.credential() {
        CredentialKind::Session => {
            let page = manager
                .list(principal.account(), ListOptions::default())
                .await?;
            page.data
                .into_iter()
                .find(|k| k.format == "mk_live_" && k.revoked_at.is_none())
                .map(|k| k.id)
                .ok_or(Error::NotFound)?
        }
        _ => principal.key_id().clone(),
    };
    let new = manager.rotate(&id, Rotation::Immediate).await?;
    Ok(created(json!(new.response())))
}

// ----- MailKite domains ------------------------------------------------------

async fn list_domains(State(state): State<AppState>, principal: Principal) -> Json<Value> {
    let data = state.data.lock();
    let domains: Vec<&Value> = data
        .domains
        .values()
        .filter(|(owner, _)| owner == principal.account())
        .map(|(_, d)| d)
        .collect();
    Json(json!({ "data": domains }))
}

async fn add_domain(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<DomainBody>,
) -> Response {
    let name = body.name.trim().to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return bad_request("name must be a domain name");
    }
    let id = state.next_id("dom");
    let domain = json!({ "id": id, "name": name, "verified": false });
    state
        .data
        .lock()
        .domains
        .insert(id, (principal.account().clone(), domain.clone()));
    created(domain)
}

async fn get_domain(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    match state.data.lock().domains.get(&id) {
        // Another account's domain is as unknown as a missing one.
        Some((owner, domain)) if owner == principal.account() => Ok(Json(domain.clone())),
        _ => Err(Error::NotFound),
    }
}

// ----- MailJawn resources and sending ----------------------------------------

async fn list_subscribers(State(state): State<AppState>, principal: Principal) -> Json<Value> {
    let data = state.data.lock();
    let subscribers = data
        .subscribers
        .get(principal.account())
        .cloned()
        .unwrap_or_default();
    Json(json!({ "data": subscribers }))
}

async fn add_subscriber(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<EmailBody>,
) -> Response {
    let email = body.email.trim().to_owned();
    if email.len() > 254 || !email.contains('@') {
        return bad_request("email must be an email address");
    }
    let subscriber = json!({ "id": state.next_id("sub"), "email": email });
    state
        .data
        .lock()
        .subscribers
        .entry(principal.account().clone())
        .or_default()
        .push(subscriber.clone());
    created(subscriber)
}

async fn track_event(JsonBody(_event): JsonBody<Value>) -> (StatusCode, Json<Value>) {
    (StatusCode::ACCEPTED, Json(json!({ "accepted": true })))
}

async fn list_campaigns() -> Json<Value> {
    Json(json!({ "data": [] }))
}

async fn send_email(
    State(state): State<AppState>,
    JsonBody(_message): JsonBody<Value>,
) -> (StatusCode, Json<Value>) {
    let id = state.next_id("msg");
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "queued" })),
    )
}

async fn mcp(principal: Principal, JsonBody(call): JsonBody<Value>) -> Json<Value> {
    Json(json!({
        "jsonrpc": "2.0",
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "result": { "key": principal.name(), "bundle": principal.bundle() },
    }))
}
