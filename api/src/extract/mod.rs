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

mod page;
mod path_id;
pub mod query;

pub use page::{Cursor, CursorKey, NOT_A_CURSOR, PageSize, page};
pub use path_id::{PathId, id};
pub use query::{Param, Params, QueryParams, Rule, read};
