//! Endpoint payload filters: RFC 9535 JSONPath queries that tenants write. A filter is code a
//! tenant controls, so it is bounded twice:
//!
//! - **when saved** (`compile`): at most one descendant segment (`..`), a bounded product of
//!   union selectors, and few regular-expression functions, so one evaluation visits at most a
//!   small multiple of the document's nodes. `$..*..*..*` (every descendant of every
//!   descendant, …) grows with the nodes to the power of its segments and is refused. The
//!   documents themselves are bounded by `json_rules` (depth) and the body limit (size).
//! - **where it runs**: never inside a store transaction. The publisher evaluates the tenant's
//!   filters against the event first (`publish`), on a blocking thread, and hands the store
//!   only the verdicts (`Verdicts`); the store's matching (`store::subscribers`) asks for the
//!   filters it has no verdict for (`StoreError::FiltersNeeded`), which are evaluated and the
//!   publish tried again. So a costly filter can slow only its own tenant's publishes, never
//!   the SQLite writer or PostgreSQL's publish batches that every tenant shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json_path::JsonPath;

use crate::model::Invalid;
use crate::store::{EventLog, Lease, NewEvent, Published, StoreError};

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 1024;
/// Descendant segments (`..`) allowed in one filter, nested queries included.
pub const MAX_DESCENDANTS: usize = 1;
/// Largest product of the selector counts of a filter's bracketed segments (`[0,1,2]` counts
/// 3): a union of N selectors can select every node N times.
pub const MAX_FANOUT: u64 = 16;
/// `match()` and `search()` calls allowed in one filter: each compiles its pattern for every
/// node it is applied to.
pub const MAX_REGEX_CALLS: usize = 2;

/// Compiles a filter, refusing any whose cost is not bounded as above. The query runs against
/// a one-element array holding the envelope, so `$[?@.data.amount > 100]` reads as a predicate
/// over the event (`@` is the envelope); the event matches when the query selects anything.
pub fn compile(text: &str) -> Result<JsonPath, Invalid> {
    if text.len() > MAX_FILTER_LEN {
        return Err(Invalid(format!(
            "filter must be at most {MAX_FILTER_LEN} bytes"
        )));
    }
    let path = JsonPath::parse(text).map_err(|e| {
        Invalid(format!(
            "filter is not a valid JSONPath (RFC 9535) query: {e}"
        ))
    })?;
    let cost = Cost::of(text);
    if cost.descendants > MAX_DESCENDANTS {
        return Err(Invalid(format!(
            "filter may use at most {MAX_DESCENDANTS} descendant segment ('..'): each one multiplies the work by the size of the event"
        )));
    }
    if cost.fanout > MAX_FANOUT {
        return Err(Invalid(format!(
            "filter's unions select too much: the selector counts of its segments multiply to more than {MAX_FANOUT}"
        )));
    }
    if cost.regex_calls > MAX_REGEX_CALLS {
        return Err(Invalid(format!(
            "filter may call match() and search() at most {MAX_REGEX_CALLS} times"
        )));
    }
    Ok(path)
}

/// What a filter's text says about its cost. Read from the text rather than from the parsed
/// query, whose syntax tree `serde_json_path` keeps private; the filter has already parsed, so
/// the text is a well-formed query and string literals are the only place where its
/// punctuation means something else.
#[derive(Debug, PartialEq, Eq)]
struct Cost {
    descendants: usize,
    fanout: u64,
    regex_calls: usize,
}

impl Cost {
    fn of(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut cost = Cost {
            descendants: 0,
            fanout: 1,
            regex_calls: 0,
        };
        // One entry per open bracket or parenthesis: (is a bracket, commas at its top level).
        let mut open: Vec<(bool, u64)> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                quote @ (b'\'' | b'"') => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b'.' if bytes.get(i + 1) == Some(&b'.') => {
                    cost.descendants += 1;
                    i += 1;
                }
                b'[' => open.push((true, 0)),
                b'(' => open.push((false, 0)),
                b',' => {
                    if let Some((_, commas)) = open.last_mut() {
                        *commas += 1;
                    }
                }
                b']' | b')' => {
                    if let Some((true, commas)) = open.pop() {
                        cost.fanout = cost.fanout.saturating_mul(commas + 1);
                    }
                }
                b'm' | b's' => {
                    let rest = &text[i..];
                    let preceded =
                        i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
                    if !preceded && (rest.starts_with("match(") || rest.starts_with("search(")) {
                        cost.regex_calls += 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        cost
    }
}

/// The verdicts of one event's filters, by filter text: what the store matches with.
#[derive(Debug, Clone, Default)]
pub struct Verdicts(HashMap<Box<str>, bool>);

impl Verdicts {
    /// Whether the filter `text` selected anything; `None` when it was not evaluated.
    pub fn get(&self, text: &str) -> Option<bool> {
        self.0.get(text).copied()
    }

    /// Evaluates `filters` against the envelope `payload` (parsed once, only if a filter
    /// needs it) and adds their verdicts.
    pub fn evaluate<'a>(&mut self, filters: impl IntoIterator<Item = &'a str>, payload: &[u8]) {
        let mut doc = None;
        for text in filters {
            if self.0.contains_key(text) {
                continue;
            }
            let doc = doc.get_or_insert_with(|| {
                serde_json::Value::Array(vec![serde_json::from_slice(payload).unwrap_or_default()])
            });
            let verdict = match compile(text) {
                Ok(path) => !path.query(doc).is_empty(),
                // Saved before a limit it breaks (or by an older chime): it matches nothing
                // rather than everything, and is never run.
                Err(e) => {
                    tracing::warn!(filter = text, error = %e, "a stored filter no longer compiles; it matches nothing");
                    false
                }
            };
            self.0.insert(text.into(), verdict);
        }
    }
}

/// How long a tenant's list of filters is trusted before the store is asked again.
const KNOWN_TTL: Duration = Duration::from_secs(60);
/// Most tenants whose filters are remembered; past it the list starts over.
const KNOWN_TENANTS: usize = 10_000;

/// The filters each tenant's endpoints had at its last publish, so the next publish evaluates
/// them before it reaches the store and usually needs one store call, not two.
#[derive(Default)]
pub struct KnownFilters {
    by_tenant: RwLock<HashMap<String, Known>>,
}

/// When a tenant's filters were learned, and what they were.
type Known = (Instant, Arc<Vec<String>>);

impl KnownFilters {
    fn get(&self, tenant: &str) -> Option<Arc<Vec<String>>> {
        let map = self.by_tenant.read().expect("known filters");
        map.get(tenant)
            .filter(|(at, _)| at.elapsed() < KNOWN_TTL)
            .map(|(_, filters)| filters.clone())
    }

    fn set(&self, tenant: &str, filters: Vec<String>) {
        let mut map = self.by_tenant.write().expect("known filters");
        if map.len() >= KNOWN_TENANTS {
            map.clear();
        }
        map.insert(tenant.to_owned(), (Instant::now(), Arc::new(filters)));
    }

    /// Publishes `event` with its filters evaluated outside the store. Only a tenant whose
    /// endpoints change filters between the two steps over and over could see the store ask
    /// three times; that publish then fails as unavailable, and nothing was written.
    pub async fn publish(
        &self,
        store: &dyn EventLog,
        mut event: NewEvent,
        lease: Lease,
    ) -> Result<Published, StoreError> {
        if let Some(known) = self.get(&event.tenant_id) {
            event.filters = evaluated(event.filters, known, event.payload.clone()).await;
        }
        for _ in 0..3 {
            match store.publish(event.clone(), lease.clone()).await {
                Err(StoreError::FiltersNeeded(filters)) => {
                    let filters = Arc::new(filters);
                    self.set(&event.tenant_id, filters.to_vec());
                    event.filters = evaluated(event.filters, filters, event.payload.clone()).await;
                }
                other => return other,
            }
        }
        Err(StoreError::Unavailable(
            "the tenant's endpoint filters kept changing during the publish".into(),
        ))
    }
}

/// `verdicts` with `filters` evaluated too, where tenant work runs (`tenant_work`).
async fn evaluated(
    mut verdicts: Verdicts,
    filters: Arc<Vec<String>>,
    payload: bytes::Bytes,
) -> Verdicts {
    if filters.iter().all(|f| verdicts.get(f).is_some()) {
        return verdicts;
    }
    crate::tenant_work::run(payload.len(), move || {
        verdicts.evaluate(filters.iter().map(String::as_str), &payload);
        verdicts
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(filter: &str, payload: &str) -> bool {
        let mut v = Verdicts::default();
        v.evaluate([filter], payload.as_bytes());
        v.get(filter).unwrap()
    }

    #[test]
    fn filters_are_predicates_over_the_envelope() {
        let payload = r#"{"event":"order.created","data":{"amount":150,"currency":"EUR"}}"#;
        assert!(verdict("$[?@.data.amount > 100]", payload));
        assert!(!verdict("$[?@.data.amount > 200]", payload));
        assert!(verdict("$[?@.data.currency == 'EUR']", payload));
        assert!(verdict("$..amount", payload));
        assert!(!verdict("$..nothing", payload));
        assert!(compile("$[?@.data.amount >").is_err());
        assert!(compile(&"a".repeat(2000)).is_err());
        // A stored filter that no longer compiles matches nothing.
        assert!(!verdict("$..*..*", payload));
    }

    #[test]
    fn costs_are_read_outside_string_literals() {
        assert_eq!(
            Cost::of("$..*[?@.a == '..,[]' && match(@.b, 'x')]"),
            Cost {
                descendants: 1,
                fanout: 1,
                regex_calls: 1
            }
        );
        assert_eq!(Cost::of("$[0,1,2][?@.x, ?@.y]").fanout, 6);
        assert_eq!(Cost::of("$[?length(@.a) > 1]").fanout, 1);
        assert_eq!(Cost::of(r#"$["a\"..",'b\'..']"#).descendants, 0);
        assert_eq!(Cost::of("$[?mismatch(@.a)]").regex_calls, 0);
    }

    #[test]
    fn unbounded_filters_are_refused_when_saved() {
        for bad in [
            "$..*..*",
            "$..*..*..*..*..*",
            "$..a[?@..b]",
            "$[0,0,0,0,0,0,0,0][0,0,0,0,0,0,0,0][0,0]",
            "$[?match(@.a, 'x') && search(@.b, 'y') && match(@.c, 'z')]",
        ] {
            assert!(compile(bad).is_err(), "{bad}");
        }
        for good in [
            "$..*",
            "$[?@.data.amount > 100 && @.data.currency == 'EUR']",
            "$[0,1,2,3][0,1,2,3]",
            "$[?match(@.data.sku, '[A-Z]{3}-[0-9]+')]",
        ] {
            assert!(compile(good).is_ok(), "{good}");
        }
    }
}
