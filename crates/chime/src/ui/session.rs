//! Sessions and one-time links without a table: everything is signed with one random key
//! that the first node to start stores in the shared meta table (`ui_session_key`), so every
//! node sharing the store accepts what any node signed.
//!
//! - A **session cookie** carries its own claims (area, tenant or admin, read-only, expiry,
//!   a random id), signed (HMAC-SHA256, purpose `session`). Signing out marks the id revoked
//!   (`ui_session_revoked:<id>`), which every request checks.
//! - A **CSRF token** is the HMAC of the session id (purpose `csrf`): nothing to store, and a
//!   page of one session cannot forge a form of another.
//! - A **one-time link** carries claims signed with purpose `link`; it is used by writing
//!   `ui_link_used:<sha256(token)>` with `put_meta_if_absent`, which is true once, on any node.
//!
//! Both markers hold the expiry of what they mark, so retention deletes them once that has
//! passed (`EXPIRING_META`): an expired link or session is refused without them.
//!
//! Raw tokens are never stored or logged: only their hashes appear in meta keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::model::{Millis, now_millis};
use crate::store::{Admin, StoreError};

const KEY_META: &str = "ui_session_key";
const REVOKED: &str = "ui_session_revoked:";
const USED: &str = "ui_link_used:";
/// The meta prefixes whose rows hold an expiry and can go once it has passed.
pub const EXPIRING_META: [&str; 2] = [REVOKED, USED];

/// Which pages a session or link opens: the operator's dashboard (`/ui`) or a tenant's
/// customer portal (`/portal`). A session of one is refused by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Dashboard,
    Portal,
}

/// What a session or a link grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub area: Area,
    /// `None`: the admin (every tenant); otherwise this tenant only.
    pub tenant: Option<String>,
    pub read_only: bool,
    /// Milliseconds since the epoch.
    pub expires_at: Millis,
    /// Random; names the session for revocation and CSRF, or makes a link unique.
    pub id: String,
}

impl Claims {
    pub fn new(area: Area, tenant: Option<String>, read_only: bool, expires_at: Millis) -> Self {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        Self {
            area,
            tenant,
            read_only,
            expires_at,
            id: B64.encode(id),
        }
    }

    /// The API caller these claims stand for.
    pub fn principal(&self) -> crate::api::Principal {
        match &self.tenant {
            None => crate::api::Principal::Admin,
            Some(t) => crate::api::Principal::Tenant(t.clone()),
        }
    }
}

/// Why a link or cookie is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the link or session is not valid")]
    Invalid,
    #[error("the link or session has expired")]
    Expired,
    #[error("the link was used already; ask for a new one")]
    Used,
    #[error("the session was signed out")]
    Revoked,
    #[error("the store did not answer: {0}")]
    Store(String),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e.to_string())
    }
}

/// The signing key shared by every node.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

impl Keys {
    /// Reads the shared key, creating it first if no node has.
    pub async fn load(store: &dyn Admin) -> Result<Self, StoreError> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        store
            .put_meta_if_absent(KEY_META, &B64.encode(fresh))
            .await?;
        let text = store
            .get_meta(KEY_META)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("{KEY_META} vanished")))?;
        let bytes = B64
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| StoreError::Backend(format!("{KEY_META} is not a 32-byte key")))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self { key })
    }

    #[cfg(test)]
    fn fixed(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, purpose: &str, text: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b".");
        mac.update(text.as_bytes());
        mac
    }

    fn sign(&self, purpose: &str, claims: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let tag = B64.encode(self.mac(purpose, &payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The claims of a signed value, if the signature holds and it has not expired.
    fn open(&self, purpose: &str, signed: &str, now: Millis) -> Result<Claims, Refused> {
        let (payload, tag) = signed.split_once('.').ok_or(Refused::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| Refused::Invalid)?;
        self.mac(purpose, payload)
            .verify_slice(&tag)
            .map_err(|_| Refused::Invalid)?;
        let bytes = B64.decode(payload).map_err(|_| Refused::Invalid)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| Refused::Invalid)?;
        if claims.expires_at <= now {
            return Err(Refused::Expired);
        }
        Ok(claims)
    }

    pub fn session_cookie(&self, claims: &Claims) -> String {
        self.sign("session", claims)
    }

    pub fn link_token(&self, claims: &Claims) -> String {
        self.sign("link", claims)
    }

    /// The session a cookie carries, unless it is forged, expired or signed out.
    pub async fn session(&self, store: &dyn Admin, cookie: &str) -> Result<Claims, Refused> {
        let claims = self.open("session", cookie, now_millis())?;
        if store
            .get_meta(&format!("{REVOKED}{}", claims.id))
            .await?
            .is_some()
        {
            return Err(Refused::Revoked);
        }
        Ok(claims)
    }

    /// Ends a session on every node.
    pub async fn revoke(&self, store: &dyn Admin, claims: &Claims) -> Result<(), StoreError> {
        store
            .put_meta_if_absent(
                &format!("{REVOKED}{}", claims.id),
                &claims.expires_at.to_string(),
            )
            .await
            .map(|_| ())
    }

    /// Uses a one-time link: its claims, the first time only (on any node).
    pub async fn redeem(&self, store: &dyn Admin, token: &str) -> Result<Claims, Refused> {
        let claims = self.open("link", token, now_millis())?;
        let used_key = format!("{USED}{}", crate::auth::hash_token(token));
        if !store
            .put_meta_if_absent(&used_key, &claims.expires_at.to_string())
            .await?
        {
            return Err(Refused::Used);
        }
        Ok(claims)
    }

    /// The CSRF token of a session (or of a sign-in form's nonce).
    pub fn csrf(&self, session_id: &str) -> String {
        B64.encode(self.mac("csrf", session_id).finalize().into_bytes())
    }

    pub fn csrf_ok(&self, session_id: &str, given: &str) -> bool {
        B64.decode(given)
            .is_ok_and(|tag| self.mac("csrf", session_id).verify_slice(&tag).is_ok())
    }
}

/// A random nonce for a sign-in form (its CSRF token is bound to it through a cookie).
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::fixed([7; 32])
    }

    #[test]
    fn signed_claims_round_trip_and_tampering_is_refused() {
        let k = keys();
        let c = Claims::new(
            Area::Portal,
            Some("acme".into()),
            true,
            now_millis() + 60_000,
        );
        let cookie = k.session_cookie(&c);
        assert_eq!(k.open("session", &cookie, now_millis()).unwrap(), c);
        // A link token is not a session cookie, and the reverse.
        assert_eq!(k.open("link", &cookie, now_millis()), Err(Refused::Invalid));
        // Another tenant written into the payload breaks the signature.
        let (_, tag) = cookie.split_once('.').unwrap();
        let other = Claims {
            tenant: Some("other".into()),
            ..c.clone()
        };
        let forged = format!("{}.{tag}", B64.encode(serde_json::to_vec(&other).unwrap()));
        assert_eq!(
            k.open("session", &forged, now_millis()),
            Err(Refused::Invalid)
        );
        // Another key does not accept it.
        let stranger = Keys::fixed([8; 32]);
        assert_eq!(
            stranger.open("session", &cookie, now_millis()),
            Err(Refused::Invalid)
        );
        assert_eq!(
            k.open("session", &cookie, c.expires_at),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let k = keys();
        let t = k.csrf("session-a");
        assert!(k.csrf_ok("session-a", &t));
        assert!(!k.csrf_ok("session-b", &t));
        assert!(!k.csrf_ok("session-a", ""));
        assert!(!k.csrf_ok("session-a", "not base64!"));
    }
}
