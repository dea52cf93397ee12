//! How much work a JSON Schema can make one validation do, read from the schema alone, so an
//! event type's schema whose validation could take seconds or gigabytes is refused when saved.
//!
//! The measure is the most subschema applications that can land on any one value of the data.
//! In-place applicators (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `$ref`, …) apply
//! subschemas to the same value, and they multiply: 20 levels of `anyOf` over two `$ref`s each
//! apply 2^20 subschemas to one string. Child applicators (`properties`, `items`, …) apply
//! theirs to the values below, where in-place applicators multiply again, up to the depth
//! `json_rules` allows. A validation then costs at most that number times the values in the
//! data, and the data is bounded by the body limit.
//!
//! `$ref`s resolve to JSON pointers (`#/$defs/x`), `$anchor`s and the `$id`s of the same
//! document; anything else (a remote document) is refused, since its cost cannot be read. A
//! schema that applies itself to the same value through references, without descending into
//! the data (`{"$ref": "#"}`), is refused too: its validation never ends.

use std::collections::HashMap;

use serde_json::Value;

use crate::json_rules::MAX_DEPTH;

/// Most subschema applications one value of the data may receive.
pub const MAX_APPLICATIONS: u64 = 1_000;

/// Keywords whose subschemas apply to the same value, by how they hold them.
const IN_PLACE_ONE: &[&str] = &["not", "if", "then", "else"];
const IN_PLACE_LIST: &[&str] = &["allOf", "anyOf", "oneOf"];
const IN_PLACE_MAP: &[&str] = &["dependentSchemas", "dependencies"];
/// Keywords whose subschemas apply to the values below.
const CHILD_ONE: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "items",
];
const CHILD_LIST: &[&str] = &["prefixItems", "items"];
const CHILD_MAP: &[&str] = &["properties", "patternProperties"];
/// References that apply another subschema to the same value.
const REFS: &[&str] = &["$ref", "$dynamicRef", "$recursiveRef"];

/// Deepest chain of in-place applications followed before the schema is refused.
const MAX_CHAIN: usize = 1_000;

/// Checks a schema: the most applications it can make on one value of the data, or why it is
/// refused.
pub fn check(schema: &Value) -> Result<u64, String> {
    let mut walk = Walk::new(schema);
    let mut worst = 0;
    for depth in 0..=MAX_DEPTH as u32 {
        worst = worst.max(walk.applications(schema, depth, 0)?);
        if worst > MAX_APPLICATIONS {
            return Err(format!(
                "schema may apply more than {MAX_APPLICATIONS} subschemas to one value of the data (through anyOf, allOf, oneOf, $ref and the like); simplify it"
            ));
        }
    }
    Ok(worst)
}

struct Walk<'a> {
    root: &'a Value,
    /// `$id`s (whole and last segment) and `#anchor`s of the document's subschemas.
    named: HashMap<String, &'a Value>,
    memo: HashMap<(*const Value, u32), u64>,
    /// Subschemas whose in-place expansion is being computed (a cycle refuses the schema).
    open: Vec<(*const Value, u32)>,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Value) -> Self {
        let mut named = HashMap::new();
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(id)) = map.get("$id") {
                        named.insert(id.clone(), v);
                        if let Some(last) = id.rsplit('/').next() {
                            named.insert(last.to_owned(), v);
                        }
                    }
                    for key in ["$anchor", "$dynamicAnchor", "$recursiveAnchor"] {
                        if let Some(Value::String(a)) = map.get(key) {
                            named.insert(format!("#{a}"), v);
                        }
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        Self {
            root,
            named,
            memo: HashMap::new(),
            open: Vec::new(),
        }
    }

    fn resolve(&self, reference: &str) -> Result<&'a Value, String> {
        let refused = || {
            Err(format!(
                "schema's $ref {reference:?} does not point into the schema itself (a JSON pointer such as \"#/$defs/name\", an $anchor or an $id of the same document)"
            ))
        };
        if let Some(pointer) = reference.strip_prefix('#')
            && (pointer.is_empty() || pointer.starts_with('/'))
        {
            let decoded = percent_decode(pointer);
            return self.root.pointer(&decoded).map_or_else(refused, Ok);
        }
        if let Some(v) = self.named.get(reference) {
            return Ok(v);
        }
        // `other.json#/$defs/x` within the document named `other.json`.
        if let Some((doc, pointer)) = reference.split_once('#')
            && let Some(base) = self.named.get(doc)
            && let Some(v) = base.pointer(&percent_decode(pointer))
        {
            return Ok(v);
        }
        refused()
    }

    /// Most applications that applying `schema` to one value makes on one value `depth`
    /// levels below it (0: the value itself, counting `schema`).
    fn applications(&mut self, schema: &'a Value, depth: u32, chain: usize) -> Result<u64, String> {
        let Value::Object(map) = schema else {
            return Ok(u64::from(depth == 0));
        };
        let key = (schema as *const Value, depth);
        if let Some(&n) = self.memo.get(&key) {
            return Ok(n);
        }
        if chain > MAX_CHAIN {
            return Err("schema's references nest too deeply".into());
        }
        if self.open.contains(&key) {
            return Err(
                "schema applies itself to the same value through references without descending into the data, so its validation never ends"
                    .into(),
            );
        }
        self.open.push(key);
        let mut total: u64 = u64::from(depth == 0);
        let mut add = |n: u64| total = total.saturating_add(n);
        for (name, value) in map {
            let name = name.as_str();
            if REFS.contains(&name) {
                let target = match value.as_str() {
                    Some(r) => self.resolve(r)?,
                    None => continue,
                };
                let target = if name == "$recursiveRef" {
                    self.root
                } else {
                    target
                };
                add(self.applications(target, depth, chain + 1)?);
            }
            let in_place: Vec<&'a Value> =
                subschemas(name, value, IN_PLACE_ONE, IN_PLACE_LIST, IN_PLACE_MAP);
            for sub in in_place {
                add(self.applications(sub, depth, chain + 1)?);
            }
            if depth > 0 {
                for sub in subschemas(name, value, CHILD_ONE, CHILD_LIST, CHILD_MAP) {
                    add(self.applications(sub, depth - 1, chain + 1)?);
                }
            }
        }
        self.open.pop();
        self.memo.insert(key, total);
        Ok(total)
    }
}

/// The subschemas that keyword `name` holds, if it is one of the given kinds.
fn subschemas<'a>(
    name: &str,
    value: &'a Value,
    one: &[&str],
    list: &[&str],
    map: &[&str],
) -> Vec<&'a Value> {
    match value {
        Value::Object(_) | Value::Bool(_) if one.contains(&name) => vec![value],
        Value::Array(items) if list.contains(&name) => items.iter().collect(),
        Value::Object(entries) if map.contains(&name) => entries.values().collect(),
        _ => Vec::new(),
    }
}

/// `%25` and friends in a URI fragment, as `$ref` pointers may carry them.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `levels` levels of `anyOf` over two `$ref`s to the level below, ending in a string.
    pub fn any_of_tower(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        defs.insert("l0".into(), json!({"type": "string", "minLength": 2}));
        for l in 1..=levels {
            let below = format!("#/$defs/l{}", l - 1);
            defs.insert(
                format!("l{l}"),
                json!({"anyOf": [{"$ref": below}, {"$ref": below}]}),
            );
        }
        json!({"$defs": defs, "$ref": format!("#/$defs/l{levels}")})
    }

    #[test]
    fn multiplying_in_place_applicators_are_refused() {
        assert_eq!(check(&any_of_tower(5)), Ok(126));
        assert!(check(&any_of_tower(10)).is_err());
        assert!(check(&any_of_tower(22)).is_err());
    }

    #[test]
    fn multiplication_through_the_data_counts_too() {
        // Each level of the data doubles the applications on the level below.
        let schema = json!({
            "$defs": {
                "x": {"anyOf": [{"$ref": "#/$defs/y"}, {"$ref": "#/$defs/y"}]},
                "y": {"items": {"$ref": "#/$defs/x"}}
            },
            "$ref": "#/$defs/x"
        });
        assert!(check(&schema).is_err());
        // A recursive schema that does not multiply is fine at any depth.
        let tree = json!({
            "$defs": {"node": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"
        });
        assert!(check(&tree).is_ok_and(|n| n <= 5));
    }

    #[test]
    fn ordinary_schemas_pass() {
        let order = json!({
            "type": "object",
            "required": ["amount"],
            "properties": {
                "amount": {"type": "number", "maximum": 100},
                "currency": {"enum": ["EUR", "USD"]},
                "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                "customer": {"oneOf": [{"$ref": "#/$defs/person"}, {"$ref": "#/$defs/company"}]}
            },
            "$defs": {
                "item": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}}},
                "person": {"$anchor": "person", "type": "object", "required": ["name"]},
                "company": {"type": "object", "allOf": [{"$ref": "#person"}, {"required": ["vat"]}]}
            }
        });
        assert!(check(&order).is_ok_and(|n| n < 20));
        assert_eq!(check(&json!(true)), Ok(1));
        assert_eq!(check(&json!({})), Ok(1));
    }

    #[test]
    fn self_application_and_foreign_refs_are_refused() {
        assert!(check(&json!({"$ref": "#"})).is_err());
        assert!(check(&json!({"allOf": [{"$ref": "#/allOf/0"}]})).is_err());
        assert!(check(&json!({"$ref": "https://example.com/schema.json"})).is_err());
        assert!(check(&json!({"$ref": "#/$defs/missing"})).is_err());
    }
}
