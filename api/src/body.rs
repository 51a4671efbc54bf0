//! [`StrictJson`]: a JSON request body read with serde, so that a wrong type
//! or an unknown field deep inside it is answered 400 with its full path
//! named (`subscribers[17].phone`), as `invalid_params`.
//!
//! poem-openapi's own `Json` names neither the element of an array nor the
//! field; the OpenAPI schema is still the one `T` documents.

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body of type `T`, parsed strictly by `T`'s serde implementation
/// (which should deny unknown fields).
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

impl<T: Type> Payload for StrictJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        <poem_openapi::payload::Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Parses `value` as `T`, naming the offending path on error (`body` for
/// the body as a whole).
pub fn parse<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let name = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(name, e.into_inner().to_string())
    })
}

impl<T: Type + DeserializeOwned + Send> ParsePayload for StrictJson<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        if data.is_empty() {
            return Err(ApiError::invalid("body", "a JSON body is required").into());
        }
        let value: Value = serde_json::from_slice(&data)
            .map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))?;
        Ok(Self(parse(value)?))
    }
}

poem_openapi::impl_apirequest_for_payload!(StrictJson<T>, T: Type + DeserializeOwned + Send);
