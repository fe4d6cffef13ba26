//! The OpenAPI 3.1 document of the key-management routes (feature
//! `openapi`): paths and JSON schemas come from the handlers' and types'
//! annotations; what depends on the configuration (the prefix, which route
//! groups are mounted) and on the profile (how a key is sent, its scope,
//! bundle, operation-class and key-format names) is filled in by
//! [`ManagementRoutes::openapi`].
//!
//! ```
//! use keygate::layer::ApiKeyLayer;
//! use keygate::routes::ManagementRoutes;
//! use keygate::{profiles, ApiKeys};
//!
//! let api = ApiKeys::in_memory(profiles::mailchannels()).unwrap();
//! let routes = ManagementRoutes::new(&ApiKeyLayer::new(api)).prefix("/v1");
//! let doc = routes.openapi();
//! let json = serde_json::to_value(&doc).unwrap();
//! assert_eq!(json["openapi"], "3.1.0");
//! assert!(json["paths"]["/v1/api-keys/{id}"]["delete"].is_object());
//! assert_eq!(json["components"]["securitySchemes"]["X-Api-Key"]["in"], "header");
//! ```

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use super::handlers;
use super::ManagementRoutes;
use crate::profiles::{KeyLocation, Profile};
use crate::service::KeyInfo;

/// The error body every keygate error answers with:
/// `{"error": {"code": "not_found", "message": "not found"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_api_key`.
    pub code: String,
    /// A human-readable message; never contains a secret.
    pub message: String,
}

/// The schema of a new key's one-time response
/// ([`NewKey::response`](crate::NewKey::response)): the [`KeyInfo`] fields
/// and `key`, the secret.
pub(super) struct NewKeySchema;

impl PartialSchema for NewKeySchema {
    fn schema() -> RefOr<Schema> {
        let secret = utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .property(
                "key",
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(
                        "The secret (for key pairs the secret key), shown this once",
                    )),
            )
            .required("key");
        utoipa::openapi::schema::AllOfBuilder::new()
            .item(Ref::from_schema_name(KeyInfo::name()))
            .item(secret)
            .into()
    }
}

impl ToSchema for NewKeySchema {
    fn name() -> Cow<'static, str> {
        "NewKey".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((KeyInfo::name().into(), KeyInfo::schema()));
        KeyInfo::schemas(schemas);
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::create_key,
        handlers::list_keys,
        handlers::get_key,
        handlers::revoke_key,
        handlers::rotate_key,
        handlers::reset_secret,
        handlers::update_key,
        handlers::disable_key,
        handlers::enable_key,
    ),
    components(schemas(ErrorBody, NewKeySchema))
)]
struct OwnKeys;

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::create_sub_account,
        handlers::create_sub_key,
        handlers::list_sub_keys,
        handlers::get_sub_key,
        handlers::revoke_sub_key,
        handlers::rotate_sub_key,
        handlers::reset_sub_secret,
        handlers::update_sub_key,
        handlers::disable_sub_key,
        handlers::enable_sub_key,
    ),
    components(schemas(ErrorBody, NewKeySchema, handlers::HandleBody, super::SubAccount))
)]
struct SubAccounts;

#[derive(OpenApi)]
#[openapi(
    paths(handlers::list_keys, handlers::rotate_current_key),
    components(schemas(ErrorBody, NewKeySchema))
)]
struct CurrentKey;

/// The errors any management route may answer, besides its own: status,
/// description, and whether a request body makes it possible.
const COMMON_ERRORS: &[(&str, &str, bool)] = &[
    (
        "400",
        "A malformed path, query or body, or a request the profile refuses (`invalid_path`, `invalid_query`, `invalid_json`, `invalid_request`, `invalid_scope`, `unknown_bundle`, `invalid_account`)",
        false,
    ),
    (
        "401",
        "No key, or one that is malformed, unknown, revoked, expired or disabled",
        false,
    ),
    (
        "403",
        "The key lacks the route's scope, or asks for more than it holds",
        false,
    ),
    (
        "404",
        "No such key or sub-account, or not the caller's",
        false,
    ),
    (
        "409",
        "The key is revoked or already rotated, or a limit or an existing account prevents it",
        false,
    ),
    ("413", "The request body is over 64 KiB", true),
    (
        "429",
        "The key's rate limit or usage credits are spent; see `Retry-After`",
        false,
    ),
    ("503", "The key store cannot be reached", false),
];

impl ManagementRoutes {
    /// The OpenAPI 3.1 document of the routes [`build`](Self::build) mounts:
    /// under this prefix, with the profile's credential locations as
    /// security schemes (`Authorization: Bearer`, a header such as
    /// `X-Api-Key`, or HTTP Basic for key pairs) and its scope, bundle,
    /// operation-class and key-format names in the request schemas. Serve
    /// it as JSON (`serde_json::to_string(&doc)` or `doc.to_json()`); see
    /// the [module docs](crate::routes::openapi).
    pub fn openapi(&self) -> Document {
        let profile = self.layer.api().profile();
        let mut doc = OwnKeys::openapi();
        doc.paths.paths.clear();
        for other in [SubAccounts::openapi(), CurrentKey::openapi()] {
            if let (Some(into), Some(from)) = (doc.components.as_mut(), other.components) {
                into.schemas.extend(from.schemas);
            }
        }
        doc.info.title = format!("{} key management", profile.name());
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.info.description = Some(
            "Create, list, update, rotate and revoke API keys; every error answers `{\"error\": {\"code\", \"message\"}}`.".to_owned(),
        );
        doc.info.license = None;
        doc.info.contact = None;
        let p = &self.prefix;
        if self.own_keys {
            for (path, item) in OwnKeys::openapi().paths.paths {
                doc.paths.paths.insert(format!("{p}{path}"), item);
            }
        }
        if self.sub_accounts {
            for (path, item) in SubAccounts::openapi().paths.paths {
                doc.paths.paths.insert(format!("{p}{path}"), item);
            }
        }
        if let Some(own) = &self.current_key {
            let mut paths = CurrentKey::openapi().paths.paths;
            if let Some(mut list) = paths.remove("/api-keys") {
                if let Some(op) = list.get.as_mut() {
                    op.operation_id = Some("listCurrentAccountKeys".to_owned());
                }
                doc.paths.paths.insert(format!("{p}{own}"), list);
            }
            if let Some(rotate) = paths.remove("/current-key/rotate") {
                doc.paths.paths.insert(format!("{p}{own}/rotate"), rotate);
            }
        }
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                add_common_errors(op);
            }
        }
        add_security(&mut doc, profile);
        profile_names(doc, profile)
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.patch.as_mut(),
        item.delete.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Operations whose body may be left out (it then reads as `{}`).
const OPTIONAL_BODY: &[&str] = &[
    "createKey",
    "rotateKey",
    "rotateCurrentKey",
    "createSubAccountKey",
    "rotateSubAccountKey",
];

fn add_common_errors(op: &mut Operation) {
    let has_body = op.request_body.is_some();
    let optional = op
        .operation_id
        .as_deref()
        .is_some_and(|id| OPTIONAL_BODY.contains(&id));
    if let (true, Some(body)) = (optional, op.request_body.as_mut()) {
        body.required = Some(utoipa::openapi::Required::False);
    }
    for (status, description, needs_body) in COMMON_ERRORS {
        if *needs_body && !has_body {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build();
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert(RefOr::T(response));
    }
}

/// One security scheme per place the profile reads a key from; a request
/// may use any of them.
fn add_security(doc: &mut Document, profile: &Profile) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut requirements = Vec::new();
    for location in profile.key_locations() {
        let (name, scheme) = match location {
            KeyLocation::Bearer => (
                "bearer".to_owned(),
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("`Authorization: Bearer <key>`"))
                        .build(),
                ),
            ),
            KeyLocation::Basic => (
                "basic".to_owned(),
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Basic)
                        .description(Some(
                            "HTTP Basic with the public API key as user name and the secret key as password",
                        ))
                        .build(),
                ),
            ),
            KeyLocation::Header(header) => {
                let header = title_case(header);
                (
                    header.clone(),
                    SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                        header,
                        "The key itself".to_owned(),
                    ))),
                )
            }
        };
        components.security_schemes.insert(name.clone(), scheme);
        requirements.push(SecurityRequirement::new::<_, _, &str>(name, []));
    }
    doc.security = Some(requirements);
}

/// `x-api-key` → `X-Api-Key`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Narrows the request schemas to the names the profile knows: scopes
/// (and their `prefix:*` wildcards), bundles, operation classes and key
/// formats.
fn profile_names(doc: Document, profile: &Profile) -> Document {
    let catalog = profile.catalog();
    let mut scopes: Vec<String> = catalog.scope_names().map(str::to_owned).collect();
    let mut wildcards: Vec<String> = scopes
        .iter()
        .filter_map(|s| s.split_once(':').map(|(prefix, _)| format!("{prefix}:*")))
        .collect();
    wildcards.dedup();
    scopes.extend(wildcards);
    let bundles: Vec<&str> = catalog.bundle_names().collect();
    let classes: Vec<&str> = profile
        .rate_limits()
        .classes()
        .iter()
        .map(|c| c.name())
        .collect();
    let formats: Vec<&str> = profile.formats().iter().map(|f| f.label()).collect();
    let Ok(mut value) = serde_json::to_value(&doc) else {
        return doc;
    };
    for schema in ["CreateKey", "KeyUpdate"] {
        let Some(props) = value
            .pointer_mut(&format!("/components/schemas/{schema}/properties"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        set_enum(props, "bundle", &bundles, true);
        set_enum(props, "format", &formats, true);
        if let Some(items) = props.get_mut("scopes").and_then(|s| s.get_mut("items")) {
            items["enum"] = json!(scopes);
        }
        if let Some(limits) = props.get_mut("rate_limits") {
            limits["propertyNames"] = json!({ "enum": classes });
        }
    }
    serde_json::from_value(value).unwrap_or(doc)
}

fn set_enum(props: &mut Map<String, Value>, field: &str, names: &[&str], nullable: bool) {
    if let Some(schema) = props.get_mut(field) {
        let mut values: Vec<Value> = names.iter().map(|n| json!(n)).collect();
        if nullable {
            values.push(Value::Null);
        }
        schema["enum"] = Value::Array(values);
    }
}
