//! Key metadata: a small JSON object an application attaches to a key (a
//! customer id, a plan, a note) and reads back on every verified request.
//!
//! [`Metadata`] is always a JSON object of at most [`MAX_METADATA_BYTES`]
//! bytes once serialized, checked wherever one is built (in code or from a
//! request body), so a store never holds an oversized or non-object value.
//! It is kept on the key record, so [`Principal::metadata`](crate::Principal::metadata)
//! costs no store round trip. Never put a secret in it: metadata is shown in
//! listings and serialized responses.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest metadata accepted: 4 KiB of serialized JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A JSON object attached to a key, at most [`MAX_METADATA_BYTES`]
/// serialized. The default is the empty object.
///
/// ```
/// use keygate::Metadata;
/// let meta = Metadata::from_value(serde_json::json!({"plan": "pro", "seats": 5})).unwrap();
/// assert_eq!(meta.get("plan"), Some(&serde_json::json!("pro")));
/// assert!(Metadata::from_value(serde_json::json!([1, 2])).is_err());
/// let big = serde_json::json!({"note": "x".repeat(5000)});
/// assert_eq!(
///     Metadata::from_value(big).unwrap_err().to_string(),
///     "metadata is 5011 bytes serialized; the limit is 4096"
/// );
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Metadata(Map<String, Value>);

/// Why a value is not acceptable as [`Metadata`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The value is not a JSON object (an array, string, number, …).
    #[error("metadata must be a JSON object")]
    NotAnObject,
    /// The serialized object is larger than [`MAX_METADATA_BYTES`].
    #[error("metadata is {size} bytes serialized; the limit is {max}")]
    TooLarge {
        /// Its serialized size in bytes.
        size: usize,
        /// [`MAX_METADATA_BYTES`].
        max: usize,
    },
    /// Stored text that does not parse as JSON.
    #[error("metadata is not valid JSON")]
    Invalid,
}

impl Metadata {
    /// The empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks and wraps a JSON object.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, MetadataError> {
        let size = serialized_len(&map);
        if size > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge {
                size,
                max: MAX_METADATA_BYTES,
            });
        }
        Ok(Self(map))
    }

    /// Checks and wraps a JSON value, which must be an object.
    pub fn from_value(value: Value) -> Result<Self, MetadataError> {
        match value {
            Value::Object(map) => Self::from_map(map),
            _ => Err(MetadataError::NotAnObject),
        }
    }

    /// Parses serialized metadata (as a store keeps it).
    pub fn from_json(text: &str) -> Result<Self, MetadataError> {
        let value: Value = serde_json::from_str(text).map_err(|_| MetadataError::Invalid)?;
        Self::from_value(value)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The object itself.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// True for the empty object.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The object as compact JSON text.
    pub fn to_json(&self) -> String {
        // Serializing a map of JSON values cannot fail.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl TryFrom<Value> for Metadata {
    type Error = MetadataError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// Any JSON object (at most [`MAX_METADATA_BYTES`] serialized).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Metadata {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
            ))
            .description(Some(format!(
                "A JSON object of at most {MAX_METADATA_BYTES} bytes serialized"
            )))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Metadata {
    fn name() -> std::borrow::Cow<'static, str> {
        "Metadata".into()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({})", self.to_json())
    }
}

/// The length of `map` serialized compactly, counted without allocating.
fn serialized_len(map: &Map<String, Value>) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, map) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_limit_is_on_the_serialized_size_inclusive() {
        // `{"a":"…"}` is 8 bytes plus the string.
        let exact = json!({ "a": "x".repeat(MAX_METADATA_BYTES - 8) });
        assert_eq!(
            serialized_len(exact.as_object().unwrap()),
            MAX_METADATA_BYTES
        );
        assert!(Metadata::from_value(exact).is_ok());
        let over = json!({ "a": "x".repeat(MAX_METADATA_BYTES - 7) });
        assert_eq!(
            Metadata::from_value(over),
            Err(MetadataError::TooLarge {
                size: MAX_METADATA_BYTES + 1,
                max: MAX_METADATA_BYTES
            })
        );
    }

    #[test]
    fn only_objects_are_metadata_and_requests_are_checked_too() {
        for bad in [json!(null), json!(1), json!("s"), json!([1])] {
            assert_eq!(Metadata::from_value(bad), Err(MetadataError::NotAnObject));
        }
        let parsed: Result<Metadata, _> = serde_json::from_str("[1]");
        assert!(parsed.unwrap_err().to_string().contains("JSON object"));
        let body = format!(r#"{{"k":"{}"}}"#, "y".repeat(5000));
        let parsed: Result<Metadata, _> = serde_json::from_str(&body);
        assert!(parsed.unwrap_err().to_string().contains("limit is 4096"));
        let round: Metadata = serde_json::from_str(r#"{"a":{"b":[1,true,null]}}"#).unwrap();
        assert_eq!(Metadata::from_json(&round.to_json()).unwrap(), round);
        assert_eq!(Metadata::from_json("{"), Err(MetadataError::Invalid));
    }
}
