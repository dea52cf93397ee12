//! API tokens: generation, hashing (only hashes are stored) and a lookup cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, TokenScope};

/// A new random token: `chime_` + 32 random bytes in URL-safe base64.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "chime_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token. Tokens are long random strings, so one unsalted SHA-256 is
/// enough: there is nothing to brute-force.
pub fn hash_token(token: &str) -> String {
    // Every API call hashes its token: hex by hand, not one `format!` per byte.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Resolves bearer tokens to scopes. Positive answers are cached, since every API call
/// authenticates; entries of a deleted tenant are dropped with it.
pub struct Authenticator {
    store: Arc<dyn Store>,
    /// Hash of `CHIME_ADMIN_TOKEN` when set; it then replaces any generated admin token.
    fixed_admin: Option<String>,
    cache: RwLock<HashMap<String, TokenScope>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, fixed_admin_token: Option<&str>) -> Self {
        Self {
            store,
            fixed_admin: fixed_admin_token.map(hash_token),
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub async fn lookup(&self, token: &str) -> Result<Option<TokenScope>, StoreError> {
        let hash = hash_token(token);
        if self.fixed_admin.as_deref() == Some(hash.as_str()) {
            return Ok(Some(TokenScope::Admin));
        }
        if let Some(scope) = self.cache.read().expect("auth cache").get(&hash) {
            return Ok(Some(scope.clone()));
        }
        let scope = match self.store.find_token(&hash).await? {
            Some(TokenScope::Admin) if self.fixed_admin.is_some() => None,
            other => other,
        };
        if let Some(scope) = &scope {
            self.cache
                .write()
                .expect("auth cache")
                .insert(hash, scope.clone());
        }
        Ok(scope)
    }

    pub fn forget_tenant(&self, tenant_id: &str) {
        self.cache
            .write()
            .expect("auth cache")
            .retain(|_, scope| !matches!(scope, TokenScope::Tenant(t) if t == tenant_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = generate_token();
        assert!(a.starts_with("chime_"));
        assert_ne!(a, generate_token());
        assert_eq!(hash_token("x"), hash_token("x"));
        assert_eq!(hash_token("x").len(), 64);
    }
}
