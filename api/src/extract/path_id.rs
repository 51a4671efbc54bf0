//! A resource's id in the URL path.

use std::str::FromStr;

use poem_openapi::types::{ParseFromParameter, ParseResult};

use crate::error::ApiError;

/// An id in the path (`/{id}`), of any id type that parses from text
/// ([`shared::domain::TemplateId`], [`shared::domain::TenantId`], a plain
/// [`uuid::Uuid`], …): `id: Path<PathId<BatchId>>`.
///
/// Extracting it never fails, so the handler decides when the id matters
/// (after authentication and permission checks, as for an unknown id);
/// [`PathId::get`] answers a malformed id with the same 404 as an id that
/// names nothing. The document describes it as the plain string it is in
/// the URL.
#[derive(Debug, Clone)]
pub struct PathId<T> {
    raw: String,
    id: Option<T>,
}

impl<T: Copy> PathId<T> {
    /// The id, or 404 `no {what} with that id` when it is not one.
    pub fn get(&self, what: &'static str) -> Result<T, ApiError> {
        self.id.ok_or(ApiError::NotFound(what))
    }

    /// The id, when it is one.
    pub fn parsed(&self) -> Option<T> {
        self.id
    }
}

impl<T> PathId<T> {
    /// The path segment as sent.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

documented_as_string!(PathId, |id| Some(&id.raw));

impl<T: FromStr + Send + Sync> ParseFromParameter for PathId<T> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self {
            raw: value.to_owned(),
            id: value.parse().ok(),
        })
    }
}

/// `raw` as an id of type `T`, or 404 `no {what} with that id`: an id that
/// arrives elsewhere than in the path (a body field, a segment a route reads
/// itself) is answered as [`PathId::get`] answers one in the path.
pub fn id<T: FromStr>(raw: &str, what: &'static str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(what))
}

#[cfg(test)]
mod tests {
    use shared::domain::BatchId;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_malformed_id_is_not_found_and_a_well_formed_one_parses() {
        let bad = PathId::<BatchId>::parse_from_parameter("nope").unwrap();
        assert!(matches!(bad.get("batch"), Err(ApiError::NotFound("batch"))));
        assert_eq!(bad.raw(), "nope");
        let id = Uuid::now_v7();
        let good = PathId::<BatchId>::parse_from_parameter(&id.to_string()).unwrap();
        assert_eq!(good.get("batch").unwrap(), BatchId(id));
        let plain = PathId::<Uuid>::parse_from_parameter(&id.to_string()).unwrap();
        assert_eq!(plain.parsed(), Some(id));
        assert!(matches!(
            super::id::<Uuid>("1", "user"),
            Err(ApiError::NotFound("user"))
        ));
        assert_eq!(super::id::<Uuid>(&id.to_string(), "user").unwrap(), id);
    }
}
