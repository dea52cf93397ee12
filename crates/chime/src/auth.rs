//! API tokens: generation, hashing (only hashes are stored) and a lookup cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Admin, StoreError, TokenScope};

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

/// Creates a token of `scope` and stores its hash; the token itself is returned once, to
/// be shown to whoever asked for it. `NotFound` for a tenant's token if the tenant is gone.
pub async fn issue_token(store: &dyn Admin, scope: TokenScope) -> Result<String, StoreError> {
    let token = generate_token();
    store
        .create_token(&hash_token(&token), scope, crate::model::now_millis())
        .await?;
    Ok(token)
}

/// How long a cached token is trusted without asking the store again. A token dies with its
/// tenant; the node that deletes the tenant forgets it at once, other nodes sharing the store
/// when the deletion's notification arrives (`Store::notifications`), and this bounds how
/// long a token can outlive its tenant on a node that missed the notification.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most tokens cached; past it the cache starts over.
const CACHE_MAX: usize = 100_000;

/// Resolves bearer tokens to scopes. Positive answers are cached for `CACHE_TTL`, since every
/// API call authenticates; entries of a deleted tenant are dropped with it.
pub struct Authenticator {
    store: Arc<dyn Admin>,
    /// Hash of `CHIME_ADMIN_TOKEN` when set; it then replaces any generated admin token.
    fixed_admin: Option<String>,
    cache: RwLock<HashMap<String, (Instant, TokenScope)>>,
    ttl: Duration,
}

/// Whether an entry cached at `at` may still be used at `now`.
fn fresh(at: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(at) < ttl
}

impl Authenticator {
    pub fn new(store: Arc<dyn Admin>, fixed_admin_token: Option<&str>) -> Self {
        Self {
            store,
            fixed_admin: fixed_admin_token.map(hash_token),
            cache: RwLock::new(HashMap::new()),
            ttl: CACHE_TTL,
        }
    }

    pub async fn lookup(&self, token: &str) -> Result<Option<TokenScope>, StoreError> {
        let hash = hash_token(token);
        if self.fixed_admin.as_deref() == Some(hash.as_str()) {
            return Ok(Some(TokenScope::Admin));
        }
        let now = Instant::now();
        if let Some((at, scope)) = self.cache.read().expect("auth cache").get(&hash)
            && fresh(*at, now, self.ttl)
        {
            return Ok(Some(scope.clone()));
        }
        let scope = match self.store.find_token(&hash).await? {
            Some(TokenScope::Admin) if self.fixed_admin.is_some() => None,
            other => other,
        };
        let mut cache = self.cache.write().expect("auth cache");
        match &scope {
            Some(scope) => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                // `now`, from before the store was asked: a deletion that commits meanwhile
                // and is forgotten before this insert still ends the entry within the TTL.
                cache.insert(hash, (now, scope.clone()));
            }
            None => {
                cache.remove(&hash);
            }
        }
        Ok(scope)
    }

    /// Drops the cached tokens of a tenant (deleted here or, as notified, on another node).
    pub fn forget_tenant(&self, tenant_id: &str) {
        self.cache
            .write()
            .expect("auth cache")
            .retain(|_, (_, scope)| !matches!(scope, TokenScope::Tenant(t) if t == tenant_id));
    }

    /// Drops every cached token: notifications of deletions may have been missed.
    pub fn forget_all(&self) {
        self.cache.write().expect("auth cache").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_expire_after_the_ttl() {
        let at = Instant::now();
        assert!(fresh(at, at, CACHE_TTL));
        assert!(fresh(
            at,
            at + CACHE_TTL - Duration::from_millis(1),
            CACHE_TTL
        ));
        assert!(!fresh(at, at + CACHE_TTL, CACHE_TTL));
        // A clock that seems to go back does not extend an entry's life past the TTL.
        assert!(fresh(at + Duration::from_secs(1), at, CACHE_TTL));
        assert!(CACHE_TTL <= Duration::from_secs(5));
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = generate_token();
        assert!(a.starts_with("chime_"));
        assert_ne!(a, generate_token());
        assert_eq!(hash_token("x"), hash_token("x"));
        assert_eq!(hash_token("x").len(), 64);
    }
}
