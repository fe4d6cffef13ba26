//! The handlers behind [`ManagementRoutes`](super::ManagementRoutes): each
//! acts as the calling key ([`ApiKeys::as_key`](crate::ApiKeys::as_key)).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{HeaderValue, CACHE_CONTROL};
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::extract::{PathParams, QueryParams};
use super::{RouteState, SubAccount};
use crate::error::Error;
use crate::identity::{Identity, IdentityId};
use crate::layer::{error_response, JsonBody};
use crate::service::{
    CreateIdentity, CreateKey, IdentityUpdate, KeyInfo, KeyUpdate, ListOptions, Manager, NewKey,
    Page, Principal, Rotation,
};
use crate::store::{AccountId, KeyId};

/// The name of a key created without one.
const DEFAULT_NAME: &str = "API key";

/// The name of a sub-account key created without one.
const DEFAULT_SUB_NAME: &str = "sub-account key";

/// `?after=…&limit=…&include_revoked=…`.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    #[serde(default)]
    after: Option<KeyId>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    limit: Option<usize>,
    #[serde(default)]
    include_revoked: Option<bool>,
}

impl ListParams {
    fn options(self) -> ListOptions {
        let defaults = ListOptions::default();
        ListOptions::default()
            .with_after(self.after)
            .with_limit(self.limit.unwrap_or(defaults.limit))
            .with_include_revoked(self.include_revoked.unwrap_or(false))
    }
}

/// A rotate body: `{}` (or none) for an immediate rotation, or
/// `{"grace_seconds": n}` to keep the old key working for `n` seconds.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

impl RotateBody {
    fn rotation(&self) -> Rotation {
        match self.grace_seconds {
            Some(secs) if secs > 0 => Rotation::Grace(Duration::from_secs(secs)),
            _ => Rotation::Immediate,
        }
    }
}

#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct HandleBody {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
    handle: String,
}

/// A create body: [`CreateKey`]'s JSON, with `default_name` when it names
/// none and, where `defaults` says so (a sub-account key), the routes'
/// default scopes when it grants nothing and the profile has no default
/// bundle. The error is the message of a 400 `invalid_json`.
fn create_request(
    state: &RouteState,
    mut body: Value,
    default_name: &str,
    defaults: bool,
) -> Result<CreateKey, String> {
    let Some(object) = body.as_object_mut() else {
        return Err("a create request is a JSON object".to_owned());
    };
    if !object.contains_key("name") && !object.contains_key("label") {
        object.insert("name".into(), Value::from(default_name));
    }
    let request: CreateKey =
        serde_json::from_value(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let profile = state.api.profile();
    if defaults
        && !request.has_grant()
        && profile.default_bundle().is_none()
        && !state.default_scopes.is_empty()
    {
        return Ok(request.scopes(state.default_scopes.iter().cloned()));
    }
    Ok(request)
}

fn invalid_json(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "invalid_json", message)
}

/// A new key's one-time response: `status`, the key's JSON, and
/// `Cache-Control: no-store` so no cache keeps the secret.
fn one_time(status: StatusCode, new: &NewKey) -> Response {
    let mut response = (status, Json(new.response())).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn manager<'a>(state: &'a RouteState, principal: &Principal) -> Manager<'a> {
    state.api.as_key(principal)
}

/// The caller's sub-account named `handle`: ids derive from their parent, so
/// a path can never name the caller itself, its parent or another tenant.
fn sub_account(principal: &Principal, handle: &str) -> Result<AccountId, Error> {
    Ok(principal.account().child(handle)?)
}

/// Key `id` if it belongs to `account`; [`Error::NotFound`] otherwise, the
/// same answer as for a missing key.
async fn key_in(keys: &Manager<'_>, account: &AccountId, id: &KeyId) -> Result<KeyInfo, Error> {
    let info = keys.get(id).await?;
    if &info.account != account {
        return Err(Error::NotFound);
    }
    Ok(info)
}

/// A get: [`key_in`], and a revoked key is [`Error::NotFound`]: once
/// deleted it is gone from the collection (a list shows it only with
/// `include_revoked=true`).
async fn shown_key(keys: &Manager<'_>, account: &AccountId, id: &KeyId) -> Result<KeyInfo, Error> {
    let info = key_in(keys, account, id).await?;
    if info.revoked_at.is_some() {
        return Err(Error::NotFound);
    }
    Ok(info)
}

// ----- the caller's own account ----------------------------------------------

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/api-keys", operation_id = "createKey", tag = "api-keys", request_body(content = CreateKey, content_type = "application/json"), responses((status = 201, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn create_key(
    State(state): State<RouteState>,
    principal: Principal,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Response> {
    let request =
        create_request(&state, body, DEFAULT_NAME, false).map_err(|m| invalid_json(&m))?;
    let new = manager(&state, &principal)
        .create(principal.account(), request)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(one_time(StatusCode::CREATED, &new))
}

#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/api-keys", operation_id = "listKeys", tag = "api-keys", params(ListParams), responses((status = 200, body = Page, description = "One page of the account's keys"))))]
pub(super) async fn list_keys(
    State(state): State<RouteState>,
    principal: Principal,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Page>, Error> {
    let page = manager(&state, &principal)
        .list(principal.account(), params.options())
        .await?;
    Ok(Json(page))
}

#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/api-keys/{id}", operation_id = "getKey", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = KeyInfo, description = "The key"))))]
pub(super) async fn get_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
) -> Result<Json<KeyInfo>, Error> {
    let keys = manager(&state, &principal);
    Ok(Json(shown_key(&keys, principal.account(), &id).await?))
}

#[cfg_attr(feature = "openapi", utoipa::path(delete, path = "/api-keys/{id}", operation_id = "revokeKey", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), responses((status = 204, description = "Revoked"))))]
pub(super) async fn revoke_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
) -> Result<StatusCode, Error> {
    let keys = manager(&state, &principal);
    key_in(&keys, principal.account(), &id).await?;
    keys.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/api-keys/{id}/rotate", operation_id = "rotateKey", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), request_body(content = RotateBody, content_type = "application/json"), responses((status = 201, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn rotate_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Response, Error> {
    let keys = manager(&state, &principal);
    key_in(&keys, principal.account(), &id).await?;
    let new = keys.rotate(&id, body.rotation()).await?;
    Ok(one_time(StatusCode::CREATED, &new))
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/api-keys/{id}/reset-secret", operation_id = "resetSecret", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn reset_secret(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
) -> Result<Response, Error> {
    let keys = manager(&state, &principal);
    key_in(&keys, principal.account(), &id).await?;
    let new = keys.reset_secret(&id).await?;
    Ok(one_time(StatusCode::OK, &new))
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/current-key/rotate", operation_id = "rotateCurrentKey", tag = "api-keys", request_body(content = RotateBody, content_type = "application/json"), responses((status = 201, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn rotate_current_key(
    State(state): State<RouteState>,
    principal: Principal,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Response, Error> {
    let new = manager(&state, &principal)
        .rotate(principal.key_id(), body.rotation())
        .await?;
    Ok(one_time(StatusCode::CREATED, &new))
}

// ----- sub-accounts ----------------------------------------------------------

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/sub-account", operation_id = "createSubAccount", tag = "sub-accounts", request_body(content = HandleBody, content_type = "application/json"), responses((status = 201, body = SubAccount, description = "The new sub-account"))))]
pub(super) async fn create_sub_account(
    State(state): State<RouteState>,
    principal: Principal,
    JsonBody(body): JsonBody<HandleBody>,
) -> Result<Response, Error> {
    let account = manager(&state, &principal)
        .create_sub_account(principal.account(), &body.handle)
        .await?;
    let created = SubAccount {
        handle: account.handle().to_owned(),
        parent: principal.account().clone(),
        account,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/sub-account/{handle}/api-key", operation_id = "createSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle")), request_body(content = CreateKey, content_type = "application/json"), responses((status = 201, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn create_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(handle): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Response> {
    let sub = sub_account(&principal, &handle).map_err(IntoResponse::into_response)?;
    let request =
        create_request(&state, body, DEFAULT_SUB_NAME, true).map_err(|m| invalid_json(&m))?;
    let new = manager(&state, &principal)
        .create(&sub, request)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(one_time(StatusCode::CREATED, &new))
}

#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/sub-account/{handle}/api-key", operation_id = "listSubAccountKeys", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ListParams), responses((status = 200, body = Page, description = "One page of the sub-account's keys"))))]
pub(super) async fn list_sub_keys(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(handle): PathParams<String>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Page>, Error> {
    let sub = sub_account(&principal, &handle)?;
    let page = manager(&state, &principal)
        .list(&sub, params.options())
        .await?;
    Ok(Json(page))
}

#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/sub-account/{handle}/api-key/{id}", operation_id = "getSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = KeyInfo, description = "The key"))))]
pub(super) async fn get_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
) -> Result<Json<KeyInfo>, Error> {
    let sub = sub_account(&principal, &handle)?;
    let keys = manager(&state, &principal);
    Ok(Json(shown_key(&keys, &sub, &id).await?))
}

#[cfg_attr(feature = "openapi", utoipa::path(delete, path = "/sub-account/{handle}/api-key/{id}", operation_id = "revokeSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), responses((status = 204, description = "Revoked"))))]
pub(super) async fn revoke_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
) -> Result<StatusCode, Error> {
    let sub = sub_account(&principal, &handle)?;
    let keys = manager(&state, &principal);
    key_in(&keys, &sub, &id).await?;
    keys.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/sub-account/{handle}/api-key/{id}/rotate", operation_id = "rotateSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), request_body(content = RotateBody, content_type = "application/json"), responses((status = 201, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn rotate_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Response, Error> {
    let sub = sub_account(&principal, &handle)?;
    let keys = manager(&state, &principal);
    key_in(&keys, &sub, &id).await?;
    let new = keys.rotate(&id, body.rotation()).await?;
    Ok(one_time(StatusCode::CREATED, &new))
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/sub-account/{handle}/api-key/{id}/reset-secret", operation_id = "resetSubAccountSecret", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = super::openapi::NewKeySchema, description = "The new key; `key` is its secret, shown this once"))))]
pub(super) async fn reset_sub_secret(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
) -> Result<Response, Error> {
    let sub = sub_account(&principal, &handle)?;
    let keys = manager(&state, &principal);
    key_in(&keys, &sub, &id).await?;
    let new = keys.reset_secret(&id).await?;
    Ok(one_time(StatusCode::OK, &new))
}

// ----- changing a key in place: disable, enable, update ----------------------

/// What a disable, enable or update route does to a key it has found.
enum Change {
    Disable,
    Enable,
    Update(KeyUpdate),
}

/// Finds `id` among `account`'s keys and changes it, answering its info.
async fn change_key(
    state: &RouteState,
    principal: &Principal,
    account: &AccountId,
    id: &KeyId,
    change: Change,
) -> Result<Json<KeyInfo>, Error> {
    let keys = manager(state, principal);
    key_in(&keys, account, id).await?;
    let info = match change {
        Change::Disable => keys.disable(id).await?,
        Change::Enable => keys.enable(id).await?,
        Change::Update(update) => keys.update(id, update).await?,
    };
    Ok(Json(info))
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/api-keys/{id}/disable", operation_id = "disableKey", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = KeyInfo, description = "The key, disabled"))))]
pub(super) async fn disable_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
) -> Result<Json<KeyInfo>, Error> {
    change_key(
        &state,
        &principal,
        principal.account(),
        &id,
        Change::Disable,
    )
    .await
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/api-keys/{id}/enable", operation_id = "enableKey", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = KeyInfo, description = "The key, enabled"))))]
pub(super) async fn enable_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
) -> Result<Json<KeyInfo>, Error> {
    change_key(&state, &principal, principal.account(), &id, Change::Enable).await
}

#[cfg_attr(feature = "openapi", utoipa::path(patch, path = "/api-keys/{id}", operation_id = "updateKey", tag = "api-keys", params(("id" = KeyId, Path, description = "A key id")), request_body(content = KeyUpdate, content_type = "application/json"), responses((status = 200, body = KeyInfo, description = "The key, updated"))))]
pub(super) async fn update_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<KeyId>,
    JsonBody(update): JsonBody<KeyUpdate>,
) -> Result<Json<KeyInfo>, Error> {
    let change = Change::Update(update);
    change_key(&state, &principal, principal.account(), &id, change).await
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/sub-account/{handle}/api-key/{id}/disable", operation_id = "disableSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = KeyInfo, description = "The key, disabled"))))]
pub(super) async fn disable_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
) -> Result<Json<KeyInfo>, Error> {
    let sub = sub_account(&principal, &handle)?;
    change_key(&state, &principal, &sub, &id, Change::Disable).await
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/sub-account/{handle}/api-key/{id}/enable", operation_id = "enableSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), responses((status = 200, body = KeyInfo, description = "The key, enabled"))))]
pub(super) async fn enable_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
) -> Result<Json<KeyInfo>, Error> {
    let sub = sub_account(&principal, &handle)?;
    change_key(&state, &principal, &sub, &id, Change::Enable).await
}

#[cfg_attr(feature = "openapi", utoipa::path(patch, path = "/sub-account/{handle}/api-key/{id}", operation_id = "updateSubAccountKey", tag = "sub-accounts", params(("handle" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The sub-account's handle"), ("id" = KeyId, Path, description = "A key id")), request_body(content = KeyUpdate, content_type = "application/json"), responses((status = 200, body = KeyInfo, description = "The key, updated"))))]
pub(super) async fn update_sub_key(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams((handle, id)): PathParams<(String, KeyId)>,
    JsonBody(update): JsonBody<KeyUpdate>,
) -> Result<Json<KeyInfo>, Error> {
    let sub = sub_account(&principal, &handle)?;
    change_key(&state, &principal, &sub, &id, Change::Update(update)).await
}

// ----- identities of the caller's account ---------------------------------------

/// `?after=…&limit=…` for identity lists.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityListParams {
    #[serde(default)]
    after: Option<IdentityId>,
    #[serde(default)]
    limit: Option<usize>,
}

/// One page of identities.
#[derive(serde::Serialize)]
pub(super) struct IdentityPage {
    data: Vec<Identity>,
    next: Option<IdentityId>,
}

/// Identity `id` if it belongs to the caller's account; [`Error::NotFound`]
/// otherwise, the same answer as for a missing one.
async fn own_identity(
    keys: &Manager<'_>,
    principal: &Principal,
    id: &IdentityId,
) -> Result<Identity, Error> {
    let identity = keys.get_identity(id).await?;
    if &identity.account != principal.account() {
        return Err(Error::NotFound);
    }
    Ok(identity)
}

pub(super) async fn create_identity(
    State(state): State<RouteState>,
    principal: Principal,
    JsonBody(request): JsonBody<CreateIdentity>,
) -> Result<(StatusCode, Json<Identity>), Error> {
    let identity = manager(&state, &principal)
        .create_identity(principal.account(), request)
        .await?;
    Ok((StatusCode::CREATED, Json(identity)))
}

pub(super) async fn list_identities(
    State(state): State<RouteState>,
    principal: Principal,
    QueryParams(params): QueryParams<IdentityListParams>,
) -> Result<Json<IdentityPage>, Error> {
    let limit = params.limit.unwrap_or(100);
    let data = manager(&state, &principal)
        .list_identities(principal.account(), params.after.as_ref(), limit)
        .await?;
    let next = (data.len() == limit)
        .then(|| data.last().map(|i| i.id.clone()))
        .flatten();
    Ok(Json(IdentityPage { data, next }))
}

pub(super) async fn get_identity(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<IdentityId>,
) -> Result<Json<Identity>, Error> {
    let keys = manager(&state, &principal);
    Ok(Json(own_identity(&keys, &principal, &id).await?))
}

pub(super) async fn update_identity(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<IdentityId>,
    JsonBody(update): JsonBody<IdentityUpdate>,
) -> Result<Json<Identity>, Error> {
    let keys = manager(&state, &principal);
    own_identity(&keys, &principal, &id).await?;
    Ok(Json(keys.update_identity(&id, update).await?))
}

pub(super) async fn delete_identity(
    State(state): State<RouteState>,
    principal: Principal,
    PathParams(id): PathParams<IdentityId>,
) -> Result<StatusCode, Error> {
    let keys = manager(&state, &principal);
    own_identity(&keys, &principal, &id).await?;
    keys.delete_identity(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
