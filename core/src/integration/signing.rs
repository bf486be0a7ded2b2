//! Standard Webhooks signing (<https://www.standardwebhooks.com>): secrets of the form
//! `whsec_<base64 key>` and the `webhook-signature` header `v1,<base64 HMAC-SHA256(key,
//! "{webhook-id}.{webhook-timestamp}.{body}")>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret prefix.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes a secret may hold (the spec's minimum).
pub const MIN_KEY_BYTES: usize = 24;
/// Most key bytes a secret may hold.
pub const MAX_KEY_BYTES: usize = 64;

/// A new secret: 32 random bytes (from the OS, through UUIDv4) behind the prefix.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key inside a secret, or why the secret is not acceptable.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or_else(|| format!("must start with `{SECRET_PREFIX}`"))?;
    let key = STANDARD.decode(encoded).map_err(|_| format!("must be `{SECRET_PREFIX}` followed by base64"))?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        return Err(format!("must hold {MIN_KEY_BYTES}–{MAX_KEY_BYTES} key bytes, got {}", key.len()));
    }
    Ok(key)
}

/// The `webhook-signature` header value for one attempt.
pub fn sign(key: &[u8], message_id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks spec and its reference libraries.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_generated_valid_and_checked() {
        // A generated secret parses; a bad prefix, bad base64 or short key is refused.
        let secret = generate_secret();
        assert_eq!(secret_key(&secret).unwrap().len(), 32);
        assert_ne!(secret, generate_secret());
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err().contains("whsec_"));
        assert!(secret_key("whsec_!!!").unwrap_err().contains("base64"));
        assert!(secret_key("whsec_c2hvcnQ=").unwrap_err().contains("key bytes"));
    }
}
