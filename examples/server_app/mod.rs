//! The demo API that `examples/server.rs` serves, one router per product
//! profile. The HTTP tests build the same routers, so what the README's curl
//! session shows is what the tests check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keygate::http::{error_response, ApiKeyLayer, JsonBody};
use keygate::{
    profiles, AccountId, ApiKeys, CreateKey, Error, KeyId, ListOptions, NewKey, Principal, Profile,
    Rotation,
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

/// Creates a Full Access key for [`ADMIN_ACCOUNT`], or imports `import` (a key
/// kept elsewhere, e.g. `KEYGATE_ADMIN_KEY`), and returns the text a client
/// sends: the token, or `public:secret` for key pairs.
pub async fn admin_key(api: &ApiKeys, import: Option<&str>) -> Result<String, Error> {
    let admin = AccountId::new(ADMIN_ACCOUNT)?;
    let request = CreateKey::new("admin").all_scopes();
    match import {
        Some(key) => {
            // Idempotent: a restart finds the key already stored.
            let key = key.trim();
            api.operator().ensure_key(&admin, key, request).await?;
            Ok(key.to_owned())
        }
        None => {
            let new = api.operator().create(&admin, request).await?;
            Ok(new.key.to_presented().to_string())
        }
    }
}

/// Shared state of the demo: the key service and the demo's own resources.
#[derive(Clone)]
pub struct AppState {
    api: ApiKeys,
    data: Arc<Mutex<Data>>,
    ids: Arc<AtomicU64>,
    /// Scopes for sub-account keys created without any (MailChannels: `api`).
    sub_account_scopes: &'static [&'static str],
}

#[derive(Default)]
struct Data {
    subscribers: HashMap<AccountId, Vec<Value>>,
    domains: HashMap<String, (AccountId, Value)>,
    signups: HashMap<String, AccountId>,
}

impl AppState {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The demo router for `product`, authenticating with `api`.
pub fn router(product: Product, api: ApiKeys, options: Options) -> Result<Router, Error> {
    let keys = ApiKeyLayer::new(api.clone()).trust_forwarded_proto(options.trust_forwarded_proto);
    let state = AppState {
        api,
        data: Arc::default(),
        ids: Arc::default(),
        sub_account_scopes: if product == Product::MailChannels {
            &["api"]
        } else {
            &[]
        },
    };
    let routes = match product {
        Product::MailJawn => mailjawn(&keys)?,
        Product::Mailjet => mailjet(&keys)?,
        Product::MailChannels => mailchannels(&keys)?,
        Product::MailKite => mailkite(&keys)?,
    };
    let mut router = routes
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state);
    if let Some(guard) = keys.https_only_layer() {
        // Sign-up and unknown routes take no key: guard them too.
        router = router.layer(guard);
    }
    Ok(router)
}

/// Key management on the caller's own account.
fn own_keys(keys: &ApiKeyLayer, read: &str, write: &str) -> Result<Router<AppState>, Error> {
    Ok(Router::new()
        .route(
            "/v1/api-keys",
            post(create_key).route_layer(keys.require(write)?),
        )
        .route(
            "/v1/api-keys",
            get(list_keys).route_layer(keys.require(read)?),
        )
        .route(
            "/v1/api-keys/{id}",
            delete(revoke_key).route_layer(keys.require(write)?),
        )
        .route(
            "/v1/api-keys/{id}/rotate",
            post(rotate_key).route_layer(keys.require(write)?),
        )
        .merge(key_changes(keys, write)?))
}

/// A parent's management of its sub-accounts' keys.
fn sub_account_keys(keys: &ApiKeyLayer, scope: &str) -> Result<Router<AppState>, Error> {
    let layer = keys.require(scope)?;
    Ok(Router::new()
        .route("/v1/sub-account", post(create_sub_account))
        .route(
            "/v1/sub-account/{handle}/api-key",
            post(create_sub_key).get(list_sub_keys),
        )
        .route(
            "/v1/sub-account/{handle}/api-key/{id}",
            delete(revoke_sub_key),
        )
        .route_layer(layer))
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
        .route("/mcp", post(mcp).route_layer(keys.operation("mcp")?))
        .merge(own_keys(keys, "api_keys:read", "api_keys:write")?))
}

fn mailjet(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    Ok(Router::new()
        .route(
            "/v3/send",
            post(send_email).route_layer(keys.require("send")?),
        )
        .route(
            "/v1/api-keys/{id}/reset-secret",
            post(reset_secret).route_layer(keys.require("account")?),
        )
        .merge(own_keys(keys, "account", "account")?)
        .merge(sub_account_keys(keys, "account")?))
}

fn mailchannels(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    Ok(Router::new()
        .route(
            "/tx/v1/send",
            post(send_email).route_layer(keys.require("api")?),
        )
        .merge(own_keys(keys, "api", "api")?)
        .merge(sub_account_keys(keys, "api")?))
}

fn mailkite(keys: &ApiKeyLayer) -> Result<Router<AppState>, Error> {
    let domains = keys.require("domains")?;
    Ok(Router::new()
        .route("/api/auth/signup", post(signup))
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
            post(send_email).route_layer(keys.require("send")?),
        ))
}

// ----- request bodies ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default, alias = "label")]
    name: Option<String>,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    metadata: keygate::Metadata,
    #[serde(default)]
    credits: Option<u64>,
    #[serde(default)]
    refill: Option<keygate::Refill>,
}

impl CreateBody {
    /// The request, with `default_scopes` when it names neither bundle nor scopes.
    fn into_request(self, default_name: &str, default_scopes: &[&str]) -> CreateKey {
        let mut request =
            CreateKey::new(self.name.as_deref().unwrap_or(default_name)).metadata(self.metadata);
        if let Some(credits) = self.credits {
            request = request.credits(credits);
        }
        if let Some(refill) = self.refill {
            request = request.refill(refill);
        }
        match (self.bundle, self.scopes.is_empty()) {
            (Some(bundle), _) => request.bundle(bundle).scopes(self.scopes),
            (None, false) => request.scopes(self.scopes),
            (None, true) => request.scopes(default_scopes.iter().copied()),
        }
    }
}

#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

#[derive(Deserialize)]
struct HandleBody {
    handle: String,
}

#[derive(Deserialize)]
struct DomainBody {
    name: String,
}

// ----- responses -----------------------------------------------------------

/// A new key as JSON, the one time its plaintext is shown.
fn new_key_json(new: &NewKey) -> Value {
    json!(new.response())
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// The caller's sub-account named `handle`: sub-account ids derive from
/// their parent, so a path can never name the caller itself, its parent or
/// another tenant's account.
fn sub_account(principal: &Principal, handle: &str) -> Result<AccountId, Error> {
    Ok(principal.account().child(handle)?)
}

// ----- key management --------------------------------------------------------

async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, Error> {
    let new = state
        .api
        .as_key(&principal)
        .create(principal.account(), body.into_request("API key", &[]))
        .await?;
    Ok(created(new_key_json(&new)))
}

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

async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.api.as_key(&principal).revoke(&KeyId::new(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let new = state
        .api
        .as_key(&principal)
        .rotate(&KeyId::new(id), Rotation::Immediate)
        .await?;
    Ok(created(new_key_json(&new)))
}

async fn reset_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let new = state
        .api
        .as_key(&principal)
        .reset_secret(&KeyId::new(id))
        .await?;
    Ok(Json(new_key_json(&new)))
}

async fn rotate_own_key(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, Error> {
    let new = state
        .api
        .as_key(&principal)
        .rotate(principal.key_id(), Rotation::Immediate)
        .await?;
    Ok(created(new_key_json(&new)))
}

// ----- sub-accounts ----------------------------------------------------------

async fn create_sub_account(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<HandleBody>,
) -> Result<Response, Error> {
    let sub = state
        .api
        .as_key(&principal)
        .create_sub_account(principal.account(), &body.handle)
        .await?;
    Ok(created(
        json!({ "handle": sub.handle(), "account": sub, "parent": principal.account() }),
    ))
}

async fn create_sub_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(handle): Path<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, Error> {
    let sub = sub_account(&principal, &handle)?;
    let request = body.into_request("sub-account key", state.sub_account_scopes);
    let new = state.api.as_key(&principal).create(&sub, request).await?;
    Ok(created(new_key_json(&new)))
}

async fn list_sub_keys(
    State(state): State<AppState>,
    principal: Principal,
    Path(handle): Path<String>,
) -> Result<Response, Error> {
    let sub = sub_account(&principal, &handle)?;
    let page = state
        .api
        .as_key(&principal)
        .list(&sub, ListOptions::default())
        .await?;
    Ok(Json(page).into_response())
}

async fn revoke_sub_key(
    State(state): State<AppState>,
    principal: Principal,
    Path((handle, id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let sub = sub_account(&principal, &handle)?;
    let id = KeyId::new(id);
    let keys = state.api.as_key(&principal);
    if keys.get(&id).await?.account != sub {
        return Err(Error::NotFound);
    }
    keys.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- MailKite sign-up and domains ----------------------------------------

async fn signup(State(state): State<AppState>, JsonBody(body): JsonBody<EmailBody>) -> Response {
    let email = body.email.trim().to_ascii_lowercase();
    if email.len() > 254 || !email.contains('@') {
        return bad_request("email must be an email address");
    }
    let account = {
        let mut data = state.data.lock();
        if data.signups.contains_key(&email) {
            return error_response(StatusCode::CONFLICT, "conflict", "email already registered");
        }
        let Ok(account) = AccountId::new(state.next_id("acct")) else {
            return bad_request("could not create an account");
        };
        data.signups.insert(email.clone(), account.clone());
        account
    };
    // Sign-up is server code creating a new account's first key.
    match state
        .api
        .operator()
        .create(&account, CreateKey::new("live"))
        .await
    {
        Ok(new) => {
            let mut value = new_key_json(&new);
            value["email"] = Value::from(email);
            created(value)
        }
        Err(e) => e.into_response(),
    }
}

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

// ----- changing a key in place: disable, enable, update ----------------------

/// `POST /v1/api-keys/{id}/disable`, `POST /v1/api-keys/{id}/enable` and
/// `PATCH /v1/api-keys/{id}` on the caller's own keys (and its
/// sub-accounts'), answering the key's info.
fn key_changes(keys: &ApiKeyLayer, write: &str) -> Result<Router<AppState>, Error> {
    Ok(Router::new()
        .route("/v1/api-keys/{id}/disable", post(disable_key))
        .route("/v1/api-keys/{id}/enable", post(enable_key))
        .route("/v1/api-keys/{id}", axum::routing::patch(update_key))
        .route_layer(keys.require(write)?))
}

async fn disable_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<keygate::KeyInfo>, Error> {
    let manager = state.api.as_key(&principal);
    Ok(Json(manager.disable(&KeyId::new(id)).await?))
}

async fn enable_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<keygate::KeyInfo>, Error> {
    let manager = state.api.as_key(&principal);
    Ok(Json(manager.enable(&KeyId::new(id)).await?))
}

async fn update_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<keygate::KeyUpdate>,
) -> Result<Json<keygate::KeyInfo>, Error> {
    let manager = state.api.as_key(&principal);
    Ok(Json(manager.update(&KeyId::new(id), update).await?))
}
