//! Telling "the body was changed" apart from "wrong secret" when no signature matches.
//!
//! HMAC cannot say why a comparison failed, so after a failure the verifier tries a few bodies
//! the sender plausibly signed instead of the one received: the same JSON in the usual layouts
//! (compact, Python's default separators, indented), with keys in received or sorted order,
//! and the body with surrounding whitespace trimmed or a newline restored. A match means the
//! secret is right and something between sender and check rewrote the body: typically a
//! framework that parsed the JSON and the handler serialized it again before verifying.
//!
//! This runs only on the failure path, and only for bodies up to [`DIAGNOSIS_LIMIT`] bytes, so
//! a stream of forged requests costs at most a bounded multiple of one verification.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

/// Bodies larger than this are not re-serialized to explain a failure.
pub(crate) const DIAGNOSIS_LIMIT: usize = 1 << 20;

/// How the body seems to have been changed after it was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyChange {
    /// The signature matches the received JSON re-serialized in `signed_as` layout, keys in the
    /// order received.
    Reformatted {
        /// The layout the sender signed.
        signed_as: JsonLayout,
    },
    /// The signature matches the received JSON with its object keys sorted, in `signed_as`
    /// layout.
    KeysReordered {
        /// The layout the sender signed.
        signed_as: JsonLayout,
    },
    /// The signature matches the body without the whitespace that surrounds it now.
    WhitespaceAdded,
    /// The signature matches the body with a trailing newline, which is now missing.
    TrailingNewlineRemoved,
}

/// A JSON text layout that senders commonly produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonLayout {
    /// No whitespace at all: `{"a":1,"b":[1,2]}` (JavaScript's `JSON.stringify`, serde_json).
    Compact,
    /// `", "` and `": "` separators with non-ASCII escaped: `{"a": 1, "b": [1, 2]}` (Python's
    /// `json.dumps` defaults).
    Spaced,
    /// The same separators with non-ASCII text as it is (Python's
    /// `json.dumps(…, ensure_ascii=False)`).
    SpacedUnicode,
    /// One member per line, indented by this many spaces.
    Indented(u8),
}

impl JsonLayout {
    const TRIED: [JsonLayout; 5] = [
        JsonLayout::Compact,
        JsonLayout::Spaced,
        JsonLayout::SpacedUnicode,
        JsonLayout::Indented(2),
        JsonLayout::Indented(4),
    ];

    fn render(self, value: &Json) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let result = match self {
            JsonLayout::Compact => value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out,
                CompactFormatter,
            )),
            JsonLayout::Spaced => value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out,
                SpacedFormatter { ascii: true },
            )),
            JsonLayout::SpacedUnicode => {
                value.serialize(&mut serde_json::Serializer::with_formatter(
                    &mut out,
                    SpacedFormatter { ascii: false },
                ))
            }
            JsonLayout::Indented(n) => {
                let indent = vec![b' '; usize::from(n)];
                value.serialize(&mut serde_json::Serializer::with_formatter(
                    &mut out,
                    PrettyFormatter::with_indent(&indent),
                ))
            }
        };
        result.ok().map(|()| out)
    }
}

impl fmt::Display for JsonLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonLayout::Compact => f.write_str("compact JSON"),
            JsonLayout::Spaced => f.write_str(r#"JSON with ", " and ": " separators"#),
            JsonLayout::SpacedUnicode => f.write_str(
                r#"JSON with ", " and ": " separators and unescaped non-ASCII text (Python's ensure_ascii=False)"#,
            ),
            JsonLayout::Indented(n) => write!(f, "JSON indented by {n} spaces"),
        }
    }
}

impl fmt::Display for BodyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REPARSED: &str = "a framework probably parsed the JSON and it was serialized \
                                again before verifying; verify the raw request body bytes";
        match self {
            BodyChange::Reformatted { signed_as } => {
                write!(
                    f,
                    "it was signed as {signed_as} and arrived reformatted: {REPARSED}"
                )
            }
            BodyChange::KeysReordered { signed_as } => write!(
                f,
                "it was signed as {signed_as} with sorted keys and arrived with keys in another \
                 order: {REPARSED}"
            ),
            BodyChange::WhitespaceAdded => f.write_str(
                "whitespace was added around it after signing (a proxy, a tool or a test \
                 fixture added a newline?); verify the exact bytes received",
            ),
            BodyChange::TrailingNewlineRemoved => f.write_str(
                "it was signed with a trailing newline that is now missing (a tool trimmed \
                 the body?); verify the exact bytes received",
            ),
        }
    }
}

/// Finds a plausible original body that `matches`, if any.
pub(crate) fn diagnose(body: &[u8], matches: impl Fn(&[u8]) -> bool) -> Option<BodyChange> {
    if body.len() > DIAGNOSIS_LIMIT {
        return None;
    }
    // Whitespace first: it is the narrower explanation, and the JSON layouts would also match a
    // compact body that merely gained a newline.
    let trimmed = body.trim_ascii();
    if trimmed.len() != body.len() && matches(trimmed) {
        return Some(BodyChange::WhitespaceAdded);
    }
    if !body.ends_with(b"\n") {
        let mut with_newline = body.to_vec();
        with_newline.push(b'\n');
        if matches(&with_newline) {
            return Some(BodyChange::TrailingNewlineRemoved);
        }
    }

    let Ok(value) = serde_json::from_slice::<Json>(body) else {
        return None;
    };
    let tried = |value: &Json| {
        JsonLayout::TRIED.into_iter().find(|layout| {
            layout
                .render(value)
                .is_some_and(|candidate| candidate != body && matches(&candidate))
        })
    };
    if let Some(signed_as) = tried(&value) {
        return Some(BodyChange::Reformatted { signed_as });
    }
    let mut sorted = value.clone();
    sorted.sort_keys();
    if sorted == value {
        return None;
    }
    tried(&sorted).map(|signed_as| BodyChange::KeysReordered { signed_as })
}

/// A JSON value that keeps object members in the order received.
///
/// `serde_json::Value` sorts keys unless its `preserve_order` feature is on somewhere in the
/// build, so it cannot reproduce a sender's key order reliably.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn sort_keys(&mut self) {
        match self {
            Json::Array(items) => items.iter_mut().for_each(Json::sort_keys),
            Json::Object(members) => {
                // Byte order of UTF-8 is code point order, which is what Python and Go sort by.
                members.sort_by(|a, b| a.0.cmp(&b.0));
                members.iter_mut().for_each(|(_, v)| v.sort_keys());
            }
            Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_) => {}
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Python's `json.dumps` output: `", "` / `": "` separators, and with `ascii` (its
/// `ensure_ascii` default) every non-ASCII character escaped.
struct SpacedFormatter {
    ascii: bool,
}

impl Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if !self.ascii {
            return writer.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(layout: JsonLayout, text: &str) -> String {
        let value: Json = serde_json::from_str(text).unwrap();
        String::from_utf8(layout.render(&value).unwrap()).unwrap()
    }

    #[test]
    fn layouts_match_what_common_serializers_write() {
        let text = r#"{ "b": [1, 2.5, null], "a": {"é": true, "x": "q\"" } }"#;
        assert_eq!(
            render(JsonLayout::Compact, text),
            r#"{"b":[1,2.5,null],"a":{"é":true,"x":"q\""}}"#
        );
        // What python3 -c 'import json; print(json.dumps({"b": [1, 2.5, None], "a": {"é": True, "x": "q\""}}))' prints.
        assert_eq!(
            render(JsonLayout::Spaced, text),
            r#"{"b": [1, 2.5, null], "a": {"\u00e9": true, "x": "q\""}}"#
        );
        assert_eq!(
            render(JsonLayout::Indented(2), r#"{"a":[1]}"#),
            "{\n  \"a\": [\n    1\n  ]\n}"
        );
        // Characters outside the BMP become a surrogate pair, as Python writes them.
        assert_eq!(
            render(JsonLayout::Spaced, r#"["😀"]"#),
            r#"["\ud83d\ude00"]"#
        );
    }

    #[test]
    fn key_order_is_kept_and_sorting_is_recursive() {
        let mut value: Json =
            serde_json::from_str(r#"{"z":{"b":1,"a":2},"y":[{"d":0,"c":0}]}"#).unwrap();
        assert_eq!(
            String::from_utf8(JsonLayout::Compact.render(&value).unwrap()).unwrap(),
            r#"{"z":{"b":1,"a":2},"y":[{"d":0,"c":0}]}"#
        );
        value.sort_keys();
        assert_eq!(
            String::from_utf8(JsonLayout::Compact.render(&value).unwrap()).unwrap(),
            r#"{"y":[{"c":0,"d":0}],"z":{"a":2,"b":1}}"#
        );
    }

    #[test]
    fn diagnose_names_the_change() {
        let original = br#"{"b":1,"a":2}"#;
        let is_original = |candidate: &[u8]| candidate == original;
        assert_eq!(
            diagnose(br#"{"b": 1, "a": 2}"#, is_original),
            Some(BodyChange::Reformatted {
                signed_as: JsonLayout::Compact
            })
        );
        assert_eq!(
            diagnose(b"{\"b\":1,\"a\":2}\n", is_original),
            Some(BodyChange::WhitespaceAdded)
        );
        let sorted = br#"{"a":2,"b":1}"#;
        assert_eq!(
            diagnose(br#"{"b": 1, "a": 2}"#, |c: &[u8]| c == sorted),
            Some(BodyChange::KeysReordered {
                signed_as: JsonLayout::Compact
            })
        );
        assert_eq!(
            diagnose(b"plain", |c: &[u8]| c == b"plain\n"),
            Some(BodyChange::TrailingNewlineRemoved)
        );
        // Signed from Python with ensure_ascii=False, then pretty-printed on the way.
        let python = r#"{"name": "Zoë", "tags": ["ü", "x"]}"#.as_bytes();
        assert_eq!(
            diagnose(
                "{\n  \"name\": \"Zoë\",\n  \"tags\": [\n    \"ü\",\n    \"x\"\n  ]\n}".as_bytes(),
                |c: &[u8]| c == python
            ),
            Some(BodyChange::Reformatted {
                signed_as: JsonLayout::SpacedUnicode
            })
        );
        assert_eq!(diagnose(br#"{"b":1,"a":3}"#, is_original), None);
        assert_eq!(diagnose(b"not json", is_original), None);
    }

    #[test]
    fn oversized_bodies_are_not_diagnosed() {
        let body = vec![b' '; DIAGNOSIS_LIMIT + 1];
        assert_eq!(diagnose(&body, |_| true), None);
    }
}
