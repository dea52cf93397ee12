//! What one node keeps in memory for its inbound sources: the sources by ingest-key hash
//! (briefly, so a flood of provider requests is not a flood of store reads), each source's
//! rate limit, and its recent rejections.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::model::{SourceId, format_time, now_millis};
use crate::store::{Source, Sources};

/// How long a looked-up source is reused; a change made on another node shows within it.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most sources cached at once.
const CACHE_MAX: usize = 10_000;
/// Rejections kept per source.
pub const REJECTIONS_KEPT: usize = 100;

/// One refused request, as `GET …/sources/{id}/rejections` shows it.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub at: String,
    pub code: &'static str,
    pub detail: String,
}

/// A token bucket: `rate` per second, bursts of at most `rate`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A lookup's answer (a source, or none for that key) and when it was read.
type Cached = (Option<Arc<Source>>, Instant);

#[derive(Default)]
pub struct Inbox {
    cache: Mutex<HashMap<String, Cached>>,
    buckets: Mutex<HashMap<SourceId, Bucket>>,
    rejections: Mutex<HashMap<SourceId, VecDeque<Rejection>>>,
}

/// The hash a source is looked up by.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new ingest key: 32 random bytes (256 bits), URL-safe.
pub fn new_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Inbox {
    /// The source whose ingest key is `key`, from the cache when fresh.
    pub async fn source(
        &self,
        store: &dyn Sources,
        key: &str,
    ) -> crate::store::Result<Option<Arc<Source>>> {
        let hash = key_hash(key);
        if let Some((s, at)) = self.cache.lock().expect("inbox cache").get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(s.clone());
        }
        let found = store.find_source(&hash).await?.map(Arc::new);
        let mut cache = self.cache.lock().expect("inbox cache");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(hash, (found.clone(), Instant::now()));
        Ok(found)
    }

    /// Drops what this node cached of a source (it changed or was deleted here).
    pub fn forget(&self, source: &Source) {
        self.cache
            .lock()
            .expect("inbox cache")
            .remove(&source.ingest_key_hash);
    }

    /// Whether the source may take one more request now; if not, in how long.
    pub fn admit(&self, id: &SourceId, rate: u32) -> Result<(), Duration> {
        let rate = f64::from(rate.max(1));
        let mut buckets = self.buckets.lock().expect("inbox buckets");
        let now = Instant::now();
        let b = buckets.entry(id.clone()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    pub fn reject(&self, id: &SourceId, code: &'static str, detail: String) {
        let mut all = self.rejections.lock().expect("inbox rejections");
        let list = all.entry(id.clone()).or_default();
        if list.len() >= REJECTIONS_KEPT {
            list.pop_front();
        }
        list.push_back(Rejection {
            at: format_time(now_millis()),
            code,
            detail,
        });
    }

    /// Newest first.
    pub fn rejections(&self, id: &SourceId) -> Vec<Rejection> {
        self.rejections
            .lock()
            .expect("inbox rejections")
            .get(id)
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_holds_and_rejections_are_capped() {
        let inbox = Inbox::default();
        let id = SourceId::new();
        for _ in 0..5 {
            inbox.admit(&id, 5).unwrap();
        }
        let wait = inbox.admit(&id, 5).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        for i in 0..(REJECTIONS_KEPT + 5) {
            inbox.reject(&id, "invalid_signature", i.to_string());
        }
        let kept = inbox.rejections(&id);
        assert_eq!(kept.len(), REJECTIONS_KEPT);
        assert_eq!(kept[0].detail, (REJECTIONS_KEPT + 4).to_string());
        assert_eq!(new_key().len(), 43);
    }
}
