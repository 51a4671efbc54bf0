//! Pages of a list: the `cursor` and `limit` query parameters, and the page
//! a list answers.

use std::borrow::Cow;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromParameter, ParseResult, Type},
};
use uuid::Uuid;

use crate::error::ApiError;

/// Why a `cursor` is refused (400 naming `cursor`), on every list.
pub const NOT_A_CURSOR: &str = "is not a cursor this API returned";

/// The longest cursor text read; none the API issues comes near it.
const MAX_CURSOR_CHARS: usize = 400;

/// The key a list's page ends with, as the text its cursor carries.
///
/// Keys of several parts are written `a|b`; only the last part may hold a
/// `|`.
pub trait CursorKey: Sized {
    /// The key as text.
    fn write(&self) -> String;

    /// The key `text` names, if it is one a page could end with.
    fn read(text: &str) -> Option<Self>;

    /// The opaque cursor of the page after this key.
    fn cursor(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.write())
    }
}

impl CursorKey for i64 {
    fn write(&self) -> String {
        self.to_string()
    }

    fn read(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl CursorKey for Uuid {
    fn write(&self) -> String {
        self.to_string()
    }

    fn read(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok()
    }
}

macro_rules! uuid_cursor_keys {
    ($($id:ty),*) => {$(
        impl CursorKey for $id {
            fn write(&self) -> String {
                self.0.write()
            }

            fn read(text: &str) -> Option<Self> {
                Uuid::read(text).map(Self)
            }
        }
    )*};
}

uuid_cursor_keys!(
    shared::domain::TenantId,
    shared::domain::NotificationId,
    shared::domain::TemplateId,
    shared::domain::ShipmentId,
    shared::domain::ReportTemplateId,
    shared::domain::WorkflowRunId,
    shared::domain::ErrorGroupId,
    shared::domain::InvitationId,
    shared::domain::PermissionSetId,
    shared::domain::UserId,
    shared::domain::AlertId
);

/// A key of text (a template's or topic's key): 1 to 200 bytes, no control
/// characters (a NUL would fail the query).
impl CursorKey for String {
    fn write(&self) -> String {
        self.clone()
    }

    fn read(text: &str) -> Option<Self> {
        ((1..=200).contains(&text.len()) && !text.chars().any(char::is_control))
            .then(|| text.to_owned())
    }
}

/// A time, in microseconds; only times Postgres can store.
impl CursorKey for DateTime<Utc> {
    fn write(&self) -> String {
        self.timestamp_micros().to_string()
    }

    fn read(text: &str) -> Option<Self> {
        text.parse().ok().and_then(crate::input::cursor_time)
    }
}

impl<A: CursorKey, B: CursorKey> CursorKey for (A, B) {
    fn write(&self) -> String {
        format!("{}|{}", self.0.write(), self.1.write())
    }

    fn read(text: &str) -> Option<Self> {
        let (a, b) = text.split_once('|')?;
        Some((A::read(a)?, B::read(b)?))
    }
}

/// The `cursor` query parameter: the `next_cursor` of the page before,
/// read back into the key that page ended with (`cursor:
/// Query<Option<Cursor<(DateTime<Utc>, Uuid)>>>`). Anything else is refused
/// with 400 naming `cursor` by [`Cursor::get`], which handlers call after
/// the caller and the ids in the path are checked: a caller who may not
/// list gets 403, and a list under an id that names nothing 404, whatever
/// cursor they sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor<K>(Option<K>);

impl<K> Cursor<K> {
    /// The key the cursor carries; 400 naming `cursor` if the API did not
    /// issue it.
    pub fn get(self) -> Result<K, ApiError> {
        self.0
            .ok_or_else(|| ApiError::invalid("cursor", NOT_A_CURSOR))
    }
}

impl<K: CursorKey> Cursor<K> {
    /// The key `raw` carries, if the API issued it.
    pub fn decode(raw: &str) -> Option<K> {
        if raw.len() > MAX_CURSOR_CHARS {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        K::read(std::str::from_utf8(&bytes).ok()?)
    }
}

documented_as_string!(Cursor, |_cursor| None);

impl<K: CursorKey + Send + Sync> ParseFromParameter for Cursor<K> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(Self::decode(value)))
    }
}

/// The `limit` query parameter: how many items a page holds, 1 to
/// [`PageSize::MAX`], [`PageSize::DEFAULT`] when left out (`limit:
/// Query<PageSize>`). Anything else is refused with 400 naming `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    /// Items on a page when `limit` is left out.
    pub const DEFAULT: u32 = 50;
    /// The most items a page holds.
    pub const MAX: u32 = 500;

    /// `n` items, if a page may hold that many.
    pub fn new(n: u32) -> Option<Self> {
        (1..=Self::MAX).contains(&n).then_some(Self(n))
    }

    /// How many items the page holds.
    pub fn get(self) -> usize {
        self.0 as usize
    }

    /// How many items the page holds, as SQL's `limit` takes it.
    pub fn as_i64(self) -> i64 {
        i64::from(self.0)
    }

    /// How many rows to read: one more than the page holds, to know whether
    /// another page follows.
    pub fn fetch(self) -> i64 {
        i64::from(self.0) + 1
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

impl Type for PageSize {
    const IS_REQUIRED: bool = false;
    type RawValueType = u32;
    type RawElementValueType = u32;

    fn name() -> Cow<'static, str> {
        u32::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            minimum: Some(1.0),
            maximum: Some(f64::from(Self::MAX)),
            default: Some(Self::DEFAULT.into()),
            ..MetaSchema::new_with_format("integer", "uint32")
        }))
    }

    fn as_raw_value(&self) -> Option<&u32> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a u32> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for PageSize {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value
            .parse()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| ParseError::custom(format!("must be 1 to {}", Self::MAX)))
    }

    fn parse_from_parameters<I: IntoIterator<Item = A>, A: AsRef<str>>(
        iter: I,
    ) -> ParseResult<Self> {
        match iter.into_iter().next() {
            Some(value) => Self::parse_from_parameter(value.as_ref()),
            None => Ok(Self::default()),
        }
    }
}

/// The page of `rows` (read with [`PageSize::fetch`]) and the cursor of the
/// next one: absent when these are the last rows.
pub fn page<T, K: CursorKey>(
    mut rows: Vec<T>,
    size: PageSize,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() > size.get();
    rows.truncate(size.get());
    let next = more.then(|| rows.last().map(|r| key(r).cursor())).flatten();
    (rows, next)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn page_sizes_are_one_to_the_maximum_and_default_when_left_out() {
        let none: [&str; 0] = [];
        assert_eq!(
            PageSize::parse_from_parameters(none).unwrap().get(),
            PageSize::DEFAULT as usize
        );
        assert_eq!(PageSize::parse_from_parameter("1").unwrap().get(), 1);
        assert_eq!(PageSize::parse_from_parameter("500").unwrap().get(), 500);
        for bad in ["0", "501", "-1", "", "ten", "1.5"] {
            assert!(PageSize::parse_from_parameter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_ends_with_the_cursor_of_its_last_row_when_more_follow() {
        let size = PageSize::new(2).unwrap();
        let (rows, next) = page(vec![1_i64, 2, 3], size, |r| *r);
        assert_eq!(rows, [1, 2]);
        assert_eq!(Cursor::<i64>::decode(&next.unwrap()), Some(2));
        let (rows, next) = page(vec![1_i64, 2], size, |r| *r);
        assert_eq!(rows, [1, 2]);
        assert_eq!(next, None);
    }

    #[test]
    fn cursors_the_api_did_not_issue_are_refused() {
        for bad in [
            "",
            "nope",
            "%%%",
            "-1",
            &"9".repeat(101),
            "MS5ub3QtYS11dWlk",
        ] {
            let read = Cursor::<(DateTime<Utc>, Uuid)>::parse_from_parameter(bad)
                .expect("read as given; refused when the handler asks");
            assert!(matches!(read.get(), Err(ApiError::Invalid(_))), "{bad}");
        }
        assert!(Cursor::<String>::decode("").is_none());
        assert!(Cursor::<String>::decode(&"\u{0}".to_owned().cursor()).is_none());
    }

    proptest! {
        #[test]
        fn any_text_decodes_without_a_panic(raw in any::<String>(), bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
            for raw in [raw, forged] {
                let _ = Cursor::<(DateTime<Utc>, Uuid)>::decode(&raw);
                let _ = Cursor::<i64>::decode(&raw);
                if let Some(key) = Cursor::<String>::decode(&raw) {
                    prop_assert!((1..=200).contains(&key.len()));
                    prop_assert!(!key.chars().any(char::is_control), "{key:?}");
                }
            }
        }

        #[test]
        fn keys_round_trip(micros in -62_135_596_800_000_000_i64..253_402_300_799_999_999, id in any::<u128>(), key in "[a-z0-9][a-z0-9._|-]{0,99}") {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let pair = (at, Uuid::from_u128(id));
            prop_assert_eq!(Cursor::decode(&pair.cursor()), Some(pair));
            prop_assert_eq!(Cursor::decode(&key.cursor()), Some(key.clone()));
            prop_assert_eq!(Cursor::decode(&(at, key.clone()).cursor()), Some((at, key)));
            prop_assert_eq!(Cursor::decode(&micros.cursor()), Some(micros));
        }
    }
}
