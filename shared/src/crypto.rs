//! Secrets at rest: AES-256-GCM with keys from the environment.
//!
//! `ENCRYPTION_KEYS` lists the keys as `id:base64` pairs separated by commas
//! (32 random bytes each, standard or URL-safe base64); `ENCRYPTION_KEY_ID`
//! names the one new secrets are sealed with. Each sealed value stores the id
//! of its key, so old keys keep opening old values after a rotation. The
//! caller binds what the secret belongs to (tenant, purpose) as associated
//! data: a ciphertext moved to another row does not open.

use std::collections::BTreeMap;

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use base64::Engine as _;
use rand::RngCore;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key list is malformed.
    #[error("ENCRYPTION_KEYS: {0}")]
    BadKeys(String),
    /// No key with that id is configured.
    #[error("no encryption key `{0}` is configured")]
    UnknownKey(String),
    /// The ciphertext was altered, or belongs to other associated data.
    #[error("the sealed value does not open: it was altered or belongs elsewhere")]
    Tampered,
}

/// A sealed secret: the key id and `nonce || ciphertext+tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which key sealed it.
    pub key_id: String,
    /// Nonce (12 bytes) then ciphertext and tag.
    pub bytes: Vec<u8>,
}

/// The configured keys.
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, Key<Aes256Gcm>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses `id:base64,…` and the active key id.
    pub fn parse(keys: &str, active: &str) -> Result<Self, CryptoError> {
        let mut parsed = BTreeMap::new();
        for pair in keys.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, b64) = pair
                .split_once(':')
                .ok_or_else(|| CryptoError::BadKeys("each key is `id:base64`".into()))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
                .map_err(|_| CryptoError::BadKeys(format!("key `{id}` is not base64")))?;
            if raw.len() != 32 {
                return Err(CryptoError::BadKeys(format!(
                    "key `{id}` must be 32 bytes, not {}",
                    raw.len()
                )));
            }
            parsed.insert(id.to_owned(), *Key::<Aes256Gcm>::from_slice(&raw));
        }
        if !parsed.contains_key(active) {
            return Err(CryptoError::BadKeys(format!(
                "ENCRYPTION_KEY_ID `{active}` is not among the keys"
            )));
        }
        Ok(Self {
            active: active.to_owned(),
            keys: parsed,
        })
    }

    /// The id new secrets are sealed with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals `plaintext`, bound to `aad`, with the active key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let cipher = Aes256Gcm::new(&self.keys[&self.active]);
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(ciphertext);
        Sealed {
            key_id: self.active.clone(),
            bytes,
        }
    }

    /// Opens a sealed value bound to `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.bytes.len() < 12 + 16 {
            return Err(CryptoError::Tampered);
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(12);
        Aes256Gcm::new(key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_associated_data() {
        let ring = Keyring::parse(&format!("k1:{},k2:{}", key(1), key(2)), "k2").unwrap();
        let sealed = ring.seal(b"s3cret", b"tenant-a/jwt");
        assert_eq!(sealed.key_id, "k2");
        assert!(!sealed.bytes.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(ring.open(&sealed, b"tenant-a/jwt").unwrap(), b"s3cret");
        assert_eq!(
            ring.open(&sealed, b"tenant-b/jwt"),
            Err(CryptoError::Tampered)
        );
        let mut flipped = sealed.clone();
        *flipped.bytes.last_mut().unwrap() ^= 1;
        assert_eq!(
            ring.open(&flipped, b"tenant-a/jwt"),
            Err(CryptoError::Tampered)
        );
        let rotated = Keyring::parse(&format!("k2:{},k3:{}", key(2), key(3)), "k3").unwrap();
        assert_eq!(
            rotated.open(&sealed, b"tenant-a/jwt").unwrap(),
            b"s3cret",
            "old keys still open"
        );
        let gone = Keyring::parse(&format!("k3:{}", key(3)), "k3").unwrap();
        assert_eq!(
            gone.open(&sealed, b"tenant-a/jwt"),
            Err(CryptoError::UnknownKey("k2".into()))
        );
    }

    #[test]
    fn bad_key_lists_are_refused() {
        assert!(Keyring::parse("k1", "k1").is_err());
        assert!(Keyring::parse("k1:not base64!", "k1").is_err());
        assert!(
            Keyring::parse(
                &format!(
                    "k1:{}",
                    base64::engine::general_purpose::STANDARD.encode([0u8; 16])
                ),
                "k1"
            )
            .is_err()
        );
        assert!(Keyring::parse(&format!("k1:{}", key(1)), "k9").is_err());
    }
}
