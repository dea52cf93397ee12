//! The event-type catalog as the publish path sees it: a small cache of compiled JSON Schema
//! validators by event name, so validating `data` costs a map lookup unless a schema applies.
//!
//! Entries live a few seconds (`TTL`), so a change made through another node sharing the
//! store takes effect within that time; a change made through this node takes effect at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{Admin, StoreError};

const TTL: Duration = Duration::from_secs(5);
/// Most schema violations listed in one error.
const MAX_REPORTED: usize = 10;

/// What the catalog knows of one name.
#[derive(Clone)]
enum Known {
    Absent,
    NoSchema,
    Schema(Arc<Compiled>),
    /// A stored schema this chime cannot compile: why.
    Unenforceable(Arc<str>),
}

/// Why an event was refused.
#[derive(Debug)]
pub enum Rejection {
    /// The name is not in the catalog and the server is strict.
    Uncatalogued,
    /// `data` does not satisfy the schema: one line per failing path.
    Invalid(Vec<String>),
    /// The type's stored schema cannot be enforced any more (see `compile`): why.
    Unenforceable(Arc<str>),
    Store(StoreError),
}

pub struct Catalog {
    store: Arc<dyn Admin>,
    strict: bool,
    cache: RwLock<HashMap<String, (Instant, Known)>>,
}

/// Most subschema applications one validation may make (the schema's applications per value
/// times the values of the data, as `schema_cost` counts them): about a second of work. Data
/// over it is refused rather than validated.
pub const VALIDATION_BUDGET: u64 = 20_000_000;
/// Below this many applications every violation is listed (up to `MAX_REPORTED`); above it
/// only the first is, since listing them all keeps every error of every branch in memory.
const LISTING_BUDGET: u64 = 100_000;

/// A compiled schema and the most applications it makes on one value of the data.
pub struct Compiled {
    pub validator: jsonschema::Validator,
    pub per_value: u64,
}

/// Compiles a schema, as saving an event type does (and reports why it cannot). A schema
/// whose validation cost is not bounded (`schema_cost`) is refused; `pattern`s run on the
/// `regex` engine, whose matching time is linear (the default engine backtracks).
pub fn compile(schema: &serde_json::Value) -> Result<Compiled, String> {
    let per_value = crate::schema_cost::check(schema)?;
    let validator = jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(1 << 20))
        .build(schema)
        .map_err(|e| format!("schema is not a valid JSON Schema: {e}"))?;
    Ok(Compiled {
        validator,
        per_value,
    })
}

impl Catalog {
    pub fn new(store: Arc<dyn Admin>, strict: bool) -> Self {
        Self {
            store,
            strict,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Drops what is cached for `name` (after a change through this node).
    pub fn forget(&self, name: &str) {
        self.cache.write().expect("catalog cache").remove(name);
    }

    async fn lookup(&self, name: &str) -> Result<Known, StoreError> {
        if let Some((at, known)) = self.cache.read().expect("catalog cache").get(name)
            && at.elapsed() < TTL
        {
            return Ok(known.clone());
        }
        let known = match self.store.get_event_type(name).await? {
            None => Known::Absent,
            Some(t) => match t
                .schema
                .as_deref()
                .map(serde_json::from_str::<serde_json::Value>)
            {
                None => Known::NoSchema,
                Some(Ok(schema)) => match compile(&schema) {
                    Ok(v) => Known::Schema(Arc::new(v)),
                    // Saved schemas were compiled when saved; a failure here means a newer
                    // chime reads an older schema differently (or refuses its cost). Events
                    // are refused rather than let through unchecked.
                    Err(e) => {
                        tracing::warn!(event_type = name, error = %e, "stored schema no longer compiles; refusing its events");
                        Known::Unenforceable(Arc::from(e))
                    }
                },
                Some(Err(_)) => Known::NoSchema,
            },
        };
        let mut cache = self.cache.write().expect("catalog cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(name.to_owned(), (Instant::now(), known.clone()));
        Ok(known)
    }

    /// Checks an event's `data` (raw JSON) against its type's schema, if it has one.
    pub async fn check(&self, name: &str, data: &str) -> Result<(), Rejection> {
        match self.lookup(name).await.map_err(Rejection::Store)? {
            Known::Absent if self.strict => Err(Rejection::Uncatalogued),
            Known::Absent | Known::NoSchema => Ok(()),
            Known::Unenforceable(why) => Err(Rejection::Unenforceable(why)),
            Known::Schema(validator) => {
                let data = data.to_owned();
                let errors =
                    crate::tenant_work::run(data.len(), move || violations(&validator, &data))
                        .await;
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(Rejection::Invalid(errors))
                }
            }
        }
    }
}

/// The first few ways `data` (raw JSON, already checked by `json_rules`) breaks the schema,
/// with memory and time bounded by the budgets above.
fn violations(schema: &Compiled, data: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
    let work = schema.per_value.saturating_mul(values_in(&value));
    if work > VALIDATION_BUDGET {
        return vec![format!(
            "/: the data is too large to validate against this schema ({work} subschema applications; at most {VALIDATION_BUDGET}): send less data or simplify the schema"
        )];
    }
    if schema.validator.is_valid(&value) {
        return Vec::new();
    }
    if work > LISTING_BUDGET {
        return match schema.validator.validate(&value) {
            Err(e) => vec![describe(&e)],
            Ok(()) => Vec::new(),
        };
    }
    schema
        .validator
        .iter_errors(&value)
        .take(MAX_REPORTED)
        .map(|e| describe(&e))
        .collect()
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().to_string();
    let path = if path.is_empty() { "/" } else { &path };
    format!("{path}: {e}")
}

/// The values in a document: objects, arrays and scalars alike.
fn values_in(v: &serde_json::Value) -> u64 {
    let mut count = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}
