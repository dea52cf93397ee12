//! The handler's `data`, a JavaScript value, written as JSON text from Rust.
//!
//! Why not QuickJS's `JSON.stringify`: it is the slowest step of a run. Measured (release,
//! rquickjs 0.14): for a 17 KiB order with 200 line items, `JSON.stringify` took 230 µs and
//! this writer 110 µs; for a 190-byte order, 5.2 µs and 3.2 µs. (`JSON.parse` of the input is
//! as fast as parsing with serde_json and building the objects from Rust, so the input side
//! stays in QuickJS.)
//!
//! The output is what `JSON.stringify` writes, for the values a webhook is made of: plain
//! objects (own enumerable string keys, in property order) and arrays, strings, finite
//! numbers, booleans and null; `undefined`, functions and symbols are left out of objects and
//! are `null` in arrays. Everything else (objects with a `toJSON`, such as `Date`; class
//! instances, `Map`s, boxed primitives, proxies, errors, BigInts, strings that are not valid
//! Unicode) is handed to `JSON.stringify` itself, so its rules hold there exactly. Numbers
//! are written in their shortest round-trip form, as JavaScript does, except that exponents
//! have no `+` (`1e21`): the same value.

use std::fmt::Write;

use rquickjs::{Atom, Ctx, Object, Type, Value};

/// Deepest nesting of objects and arrays written; serde_json, which reads the JSON on the
/// way out, refuses more than 128 by default.
pub(super) const MAX_DEPTH: usize = 128;

/// How many values are written between two looks at the clock: plain Rust loops are not
/// interrupted by QuickJS.
const CLOCK_EVERY: u32 = 4096;

pub(super) enum Failure {
    /// The text grew past the limit.
    TooLarge,
    /// The time limit passed.
    Expired,
    /// The value cannot be written (a cycle, too deep); a sentence saying why.
    Bad(String),
    /// An exception: from `toJSON`, a getter, `JSON.stringify`, or the memory limit.
    Js(rquickjs::Error),
}

impl From<rquickjs::Error> for Failure {
    fn from(e: rquickjs::Error) -> Self {
        Failure::Js(e)
    }
}

pub(super) struct JsonWriter<'js, 'a> {
    ctx: Ctx<'js>,
    out: String,
    limit: usize,
    /// The prototype of object literals and JSON.parse's objects: objects with another one
    /// go to `JSON.stringify`.
    object_prototype: Object<'js>,
    to_json: Atom<'js>,
    /// The objects and arrays being written, outermost first, to refuse cycles.
    path: Vec<Object<'js>>,
    expired: &'a dyn Fn() -> bool,
    countdown: u32,
}

impl<'js, 'a> JsonWriter<'js, 'a> {
    /// A writer of at most `limit` bytes; `expired` says whether the time limit has passed.
    pub(super) fn new(
        ctx: &Ctx<'js>,
        limit: usize,
        expired: &'a dyn Fn() -> bool,
    ) -> rquickjs::Result<Self> {
        // From a fresh literal, not `Object.prototype`: the code may have replaced `Object`.
        let object_prototype = Object::new(ctx.clone())?
            .get_prototype()
            .ok_or(rquickjs::Error::Unknown)?;
        Ok(JsonWriter {
            ctx: ctx.clone(),
            out: String::new(),
            limit,
            object_prototype,
            to_json: Atom::from_str(ctx.clone(), "toJSON")?,
            path: Vec::new(),
            expired,
            countdown: CLOCK_EVERY,
        })
    }

    /// The JSON text of `value`, or `None` if JSON has no text for it (a function, a
    /// symbol, `undefined`).
    pub(super) fn write(mut self, value: Value<'js>) -> Result<Option<String>, Failure> {
        Ok(self.value(value, 0)?.then_some(self.out))
    }

    /// Writes `value`; false (and nothing written) if it is one that JSON leaves out.
    fn value(&mut self, value: Value<'js>, depth: usize) -> Result<bool, Failure> {
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = CLOCK_EVERY;
            if (self.expired)() {
                return Err(Failure::Expired);
            }
        }
        match value.type_of() {
            Type::Undefined
            | Type::Uninitialized
            | Type::Symbol
            | Type::Function
            | Type::Constructor => return Ok(false),
            Type::Null => self.out.push_str("null"),
            Type::Bool => self.out.push_str(match value.as_bool() {
                Some(true) => "true",
                _ => "false",
            }),
            Type::Int => {
                let _ = write!(self.out, "{}", value.as_int().unwrap_or_default());
            }
            Type::Float => number(&mut self.out, value.as_float().unwrap_or(f64::NAN)),
            Type::String => match value.get::<String>() {
                Ok(text) => escape(&mut self.out, &text),
                // Lone surrogates are not UTF-8; JSON.stringify escapes them.
                Err(rquickjs::Error::Utf8(_)) => return self.stringify(value),
                Err(e) => return Err(e.into()),
            },
            Type::Array => {
                let array = value.into_object().ok_or(rquickjs::Error::Unknown)?;
                if self.has_to_json(&array)? {
                    return self.stringify(array.into_value());
                }
                self.enter(&array, depth)?;
                // Not `Array::len`, which panics on a length that is not an int32.
                let len = array.get::<_, f64>("length")? as u64;
                self.out.push('[');
                for i in 0..len {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let item: Value = array.get(i as u32)?;
                    if !self.value(item, depth + 1)? {
                        self.out.push_str("null");
                    }
                    self.check_size()?;
                }
                self.out.push(']');
                self.path.pop();
            }
            Type::Object => {
                let object = value.into_object().ok_or(rquickjs::Error::Unknown)?;
                let plain = match object.get_prototype() {
                    None => true,
                    Some(proto) => proto == self.object_prototype,
                };
                if !plain || self.has_to_json(&object)? {
                    return self.stringify(object.into_value());
                }
                self.enter(&object, depth)?;
                self.out.push('{');
                let mut first = true;
                for prop in object.props::<Atom, Value>() {
                    let (key, item) = prop?;
                    let mark = self.out.len();
                    if !first {
                        self.out.push(',');
                    }
                    self.key(&key)?;
                    self.out.push(':');
                    if self.value(item, depth + 1)? {
                        first = false;
                    } else {
                        self.out.truncate(mark);
                    }
                    self.check_size()?;
                }
                self.out.push('}');
                self.path.pop();
            }
            // Proxies, errors, promises, BigInts: JSON.stringify's rules, exactly.
            _ => return self.stringify(value),
        }
        self.check_size()?;
        Ok(true)
    }

    fn has_to_json(&self, object: &Object<'js>) -> rquickjs::Result<bool> {
        Ok(object.get::<_, Value>(self.to_json.clone())?.is_function())
    }

    /// Notes that `object` is being written, refusing a cycle or too deep a nesting.
    fn enter(&mut self, object: &Object<'js>, depth: usize) -> Result<(), Failure> {
        if self.path.contains(object) {
            return Err(Failure::Bad(
                "data refers to itself (it has a cycle), which JSON cannot represent".to_owned(),
            ));
        }
        if depth >= MAX_DEPTH {
            return Err(Failure::Bad(format!(
                "data nests objects and arrays more than {MAX_DEPTH} levels deep"
            )));
        }
        self.path.push(object.clone());
        Ok(())
    }

    fn key(&mut self, key: &Atom<'js>) -> Result<(), Failure> {
        match key.to_string() {
            Ok(text) => {
                escape(&mut self.out, &text);
                Ok(())
            }
            Err(rquickjs::Error::Utf8(_)) => {
                if self.stringify(key.to_value()?)? {
                    Ok(())
                } else {
                    Err(rquickjs::Error::Unknown.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes what QuickJS's `JSON.stringify` makes of `value`.
    fn stringify(&mut self, value: Value<'js>) -> Result<bool, Failure> {
        let Some(text) = self.ctx.json_stringify(value)? else {
            return Ok(false);
        };
        self.out.push_str(&text.to_string()?);
        self.check_size()?;
        Ok(true)
    }

    fn check_size(&self) -> Result<(), Failure> {
        if self.out.len() > self.limit {
            return Err(Failure::TooLarge);
        }
        Ok(())
    }
}

/// A number as JavaScript writes it; JSON has no NaN or infinities, so those are `null`.
fn number(out: &mut String, n: f64) {
    if !n.is_finite() {
        out.push_str("null");
    } else if n == 0.0 {
        // Also -0, which JavaScript writes as 0.
        out.push('0');
    } else if (1e-6..1e21).contains(&n.abs()) {
        // Rust's shortest round-trip digits, in plain notation as JavaScript in this range.
        let _ = write!(out, "{n}");
    } else {
        let _ = write!(out, "{n:e}");
    }
}

/// `text` as a JSON string.
fn escape(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a character boundary.
        out.push_str(&text[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_javascript_writes_them() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (3.0, "3"),
            (-42.5, "-42.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e20, "100000000000000000000"),
            (1e21, "1e21"),
            (1.5e-6, "0.0000015"),
            (1.5e-7, "1.5e-7"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ];
        for (n, text) in cases {
            let mut out = String::new();
            number(&mut out, n);
            assert_eq!(out, text, "{n}");
            if n.is_finite() {
                assert_eq!(serde_json::from_str::<f64>(&out).unwrap(), n, "{out}");
            }
        }
    }

    #[test]
    fn strings_escaped() {
        let mut out = String::new();
        escape(&mut out, "a\"b\\c\nd\u{1}é😀");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é😀""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é😀");
    }
}
