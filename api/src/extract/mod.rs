//! What handlers take from a request before they do their own work, parsed
//! in one place so every route answers the same way:
//!
//! * [`PathId`]: a resource's id in the URL path. A malformed id names no
//!   resource, so it is answered like an unknown one: 404 problem+json
//!   ("no batch with that id").
//! * [`Cursor`] and [`PageSize`]: the `cursor` and `limit` query parameters
//!   of every list. A cursor is opaque (base64url of the key the page ends
//!   with); one the API did not issue is a 400 naming `cursor`. A page holds
//!   [`PageSize::DEFAULT`] items unless `limit` says otherwise, at most
//!   [`PageSize::MAX`]. [`page`] cuts a page and its `next_cursor` from the
//!   rows a list read.
//! * [`Params`]: a struct of query parameters (a list's filters, its
//!   `cursor` and `limit`) read as one handler argument, each still listed
//!   in the OpenAPI document ([`query`]).
//! * [`Ctx`] ([`AdminCtx`], [`ServiceCtx`], [`UserCtx`]): the
//!   authenticated caller with the state and the request id (the one its
//!   audit rows name), as one argument.
//! * [`idempotency_key`] and [`request_hash`]: the `Idempotency-Key`
//!   header's one rule, and the hash of the request it is stored with.

/// Implements poem-openapi's `Type` for `$ty<T>`, a parameter the document
/// describes as the plain string it is in the URL; `$raw` is the string as
/// sent, when the value keeps it (validators see it).
macro_rules! documented_as_string {
    ($ty:ident, |$value:ident| $raw:expr) => {
        impl<T: Send + Sync> poem_openapi::types::Type for $ty<T> {
            const IS_REQUIRED: bool = true;
            type RawValueType = String;
            type RawElementValueType = String;

            fn name() -> std::borrow::Cow<'static, str> {
                <String as poem_openapi::types::Type>::name()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                <String as poem_openapi::types::Type>::schema_ref()
            }

            fn as_raw_value(&self) -> Option<&String> {
                let $value = self;
                $raw
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}

mod ctx;
pub mod idempotency;
mod page;
mod path_id;
pub mod query;

pub use ctx::{AdminCtx, Ctx, ServiceCtx, UserCtx};
pub use idempotency::{accepted_before, idempotency_key, request_hash};
pub use page::{Cursor, CursorKey, NOT_A_CURSOR, PageSize, page};
pub use path_id::{PathId, id};
pub use query::{Param, Params, QueryParams, Rule, read};
