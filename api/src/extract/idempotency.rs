//! The `Idempotency-Key` header of the routes that honour it (sends,
//! batches, CSV uploads, broadcasts, topic sends, workflow triggers): one
//! rule for the key, one hash of the request it is stored with.

use std::future::Future;

use sha2::{Digest, Sha256};
use shared::domain::idempotency_key_ok;

use crate::error::ApiError;

/// What a request's idempotency key is stored with: a replay under the key
/// must carry a body of the same hash.
pub fn request_hash(body: &impl serde::Serialize) -> Vec<u8> {
    Sha256::digest(serde_json::to_vec(body).unwrap_or_default()).to_vec()
}

/// Whether a request with idempotency `key` was accepted before, as
/// `accepted` finds; never for a request without a key. Asked only when
/// awaited.
pub async fn accepted_before<'k, F>(
    key: Option<&'k str>,
    accepted: impl FnOnce(&'k str) -> F,
) -> Result<bool, sqlx::Error>
where
    F: Future<Output = Result<bool, sqlx::Error>>,
{
    match key {
        Some(k) => accepted(k).await,
        None => Ok(false),
    }
}

/// Checks an `Idempotency-Key` header with the one rule for it
/// ([`idempotency_key_ok`]). Every route that honours the key uses this.
pub fn idempotency_key(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(k) => match idempotency_key_ok(&k) {
            Ok(()) => Ok(Some(k)),
            Err(reason) => Err(ApiError::BadHeader("Idempotency-Key", reason)),
        },
    }
}

/// `Idempotency-Key` properties: any header value is accepted or refused
/// without a panic, and what is accepted is 1 to 255 printable ASCII
/// characters (no NUL, no spaces), unchanged.
#[cfg(test)]
mod idempotency_key_properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn accepted_keys_are_short_printable_ascii(raw in prop_oneof![
            any::<String>(),
            "[ -~\\x00]{0,300}",
            "[!-~]{250,260}",
        ]) {
            if let Ok(Some(key)) = idempotency_key(Some(raw.clone())) {
                prop_assert!((1..=255).contains(&key.len()));
                prop_assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
                prop_assert_eq!(key, raw);
            }
        }
    }
}
