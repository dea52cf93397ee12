//! What JSON chime accepts, one rule for every body that arrives: I-JSON (RFC 7493) with a
//! depth limit.
//!
//! - nested at most `MAX_DEPTH` arrays and objects deep (the envelope counts as one level);
//! - numbers of at most `MAX_NUMBER_LEN` characters whose value fits a double (`1e999` does
//!   not; `1e-999` reads as 0 and is accepted);
//! - strings without unpaired surrogate escapes (`"\ud800"`);
//! - objects without a member name given twice (`{"amount": 1, "amount": 5000}` would be
//!   read one way by the schema check and maybe another by the receiver).
//!
//! Everything that reads the JSON later (JSON Schema validation, filters, receivers) then sees
//! the same document, and none of them can be made to recurse or allocate without bound. The
//! check is one pass without recursion, so any input, valid JSON or not, is safe to give it;
//! JSON syntax itself is left to the parser that runs after it.

use std::borrow::Cow;
use std::collections::HashSet;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest number accepted, in characters (a double has 17 significant digits).
pub const MAX_NUMBER_LEN: usize = 64;

/// Why a body is not JSON as chime accepts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("JSON is nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    #[error("a number is longer than {MAX_NUMBER_LEN} characters")]
    LongNumber,
    #[error("the number {0} is out of the range of a double")]
    OutOfRange(String),
    #[error("a string has an unpaired surrogate escape (\\u{0:04x})")]
    LoneSurrogate(u16),
    #[error("an object has the member {0:?} twice")]
    DuplicateName(String),
}

/// Objects with at most this many members are checked for duplicates by a linear scan.
const LINEAR_KEYS: usize = 16;

/// The member names of one open object.
#[derive(Default)]
struct Names<'a> {
    list: Vec<Cow<'a, str>>,
    set: Option<HashSet<Cow<'a, str>>>,
}

impl<'a> Names<'a> {
    /// Adds a name; gives it back when it was there already.
    fn insert(&mut self, name: Cow<'a, str>) -> Result<(), Cow<'a, str>> {
        if let Some(set) = &mut self.set {
            if set.contains(&name) {
                return Err(name);
            }
            set.insert(name);
            return Ok(());
        }
        if self.list.contains(&name) {
            return Err(name);
        }
        self.list.push(name);
        if self.list.len() > LINEAR_KEYS {
            self.set = Some(self.list.drain(..).collect());
        }
        Ok(())
    }
}

enum Frame<'a> {
    Array,
    Object { names: Names<'a>, expect_name: bool },
}

/// Checks `text` against the rules above. Input that is not JSON at all may pass: the parser
/// that runs next reports it.
pub fn check(text: &str) -> Result<(), Refused> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Refused::TooDeep);
                }
                stack.push(if bytes[i] == b'[' {
                    Frame::Array
                } else {
                    Frame::Object {
                        names: Names::default(),
                        expect_name: true,
                    }
                });
                i += 1;
            }
            b']' | b'}' => {
                stack.pop();
                i += 1;
            }
            b',' | b':' => {
                if let Some(Frame::Object { expect_name, .. }) = stack.last_mut() {
                    *expect_name = bytes[i] == b',';
                }
                i += 1;
            }
            b'"' => {
                let (end, decoded) = string(text, i)?;
                if let Some(Frame::Object { names, expect_name }) = stack.last_mut()
                    && *expect_name
                {
                    *expect_name = false;
                    // The decoded name, not a slice of the text: an unterminated string
                    // ends the input, where `end - 1` is not the name's end.
                    if let Err(name) = names.insert(decoded) {
                        // At most 100 characters of it in the message.
                        let shown = name.chars().take(100).collect();
                        return Err(Refused::DuplicateName(shown));
                    }
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                number(&text[start..i])?;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn number(token: &str) -> Result<(), Refused> {
    if token.len() > MAX_NUMBER_LEN {
        return Err(Refused::LongNumber);
    }
    match token.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err(Refused::OutOfRange(token.to_owned())),
        // Not a number the grammar allows: the parser reports it.
        _ => Ok(()),
    }
}

/// Reads the string starting at the quote `start`: returns the index after its closing quote
/// (or the end of the text) and its decoded value (borrowed when it has no escape).
fn string(text: &str, start: usize) -> Result<(usize, Cow<'_, str>), Refused> {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    let mut decoded: Option<String> = None;
    let mut plain_from = i;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = match decoded {
                    None => Cow::Borrowed(&text[start + 1..i]),
                    Some(mut s) => {
                        s.push_str(&text[plain_from..i]);
                        Cow::Owned(s)
                    }
                };
                return Ok((i + 1, value));
            }
            b'\\' => {
                let out = decoded.get_or_insert_with(String::new);
                out.push_str(&text[plain_from..i]);
                let Some(&escape) = bytes.get(i + 1) else {
                    return Ok((bytes.len(), Cow::Owned(std::mem::take(out))));
                };
                if !escape.is_ascii() {
                    // Not an escape JSON has (the parser reports it); stay on a char boundary.
                    i += 1;
                    plain_from = i;
                    continue;
                }
                i += 2;
                match escape {
                    b'u' => {
                        let (c, next) = unicode_escape(bytes, i)?;
                        out.extend(c);
                        i = next;
                    }
                    b'n' => out.push('\n'),
                    b't' => out.push('\t'),
                    b'r' => out.push('\r'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    other => out.push(char::from(other)),
                }
                plain_from = i;
            }
            _ => i += 1,
        }
    }
    Ok((bytes.len(), Cow::Borrowed(&text[start + 1..])))
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

/// Decodes the `XXXX` of `\uXXXX` at `at` (and the low half of a surrogate pair after it).
/// Returns the character (None for a malformed escape, left to the parser) and where the
/// string goes on.
fn unicode_escape(bytes: &[u8], at: usize) -> Result<(Option<char>, usize), Refused> {
    let Some(unit) = hex4(bytes, at) else {
        return Ok((None, at));
    };
    match unit {
        0xD800..=0xDBFF => {
            let low = (bytes.get(at + 4..at + 6) == Some(b"\\u"))
                .then(|| hex4(bytes, at + 6))
                .flatten()
                .filter(|l| (0xDC00..=0xDFFF).contains(l))
                .ok_or(Refused::LoneSurrogate(unit))?;
            let c = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
            Ok((char::from_u32(c), at + 10))
        }
        0xDC00..=0xDFFF => Err(Refused::LoneSurrogate(unit)),
        _ => Ok((char::from_u32(u32::from(unit)), at + 4)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_json_passes() {
        for ok in [
            r#"{"event":"order.created","data":{"amount":50,"items":[1,2.5,-3e2,"x"]}}"#,
            r#"{"a":"\ud83d\ude00 \u00e9 \" \\ \n","b":[],"c":{},"d":null,"e":true}"#,
            r#"{"a":1,"b":{"a":2}}"#,
            "1e-999",
            "",
            "\"\\\u{e9}\"",
            "not json at all",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn depth_is_counted_by_arrays_and_objects() {
        let at_limit = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(check(&at_limit), Ok(()));
        let over = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(check(&over), Err(Refused::TooDeep));
        assert_eq!(check(&"[".repeat(100_000)), Err(Refused::TooDeep));
        // Brackets inside strings do not count.
        let quoted = format!("[\"{}\"]", "[".repeat(1000));
        assert_eq!(check(&quoted), Ok(()));
    }

    #[test]
    fn numbers_must_fit_a_double() {
        assert_eq!(
            check(r#"{"pad":1e999}"#),
            Err(Refused::OutOfRange("1e999".into()))
        );
        assert_eq!(check("-1E+400"), Err(Refused::OutOfRange("-1E+400".into())));
        assert_eq!(check(&"9".repeat(100_000)), Err(Refused::LongNumber));
        assert_eq!(check(&"9".repeat(MAX_NUMBER_LEN)), Ok(()));
        assert_eq!(check("1.7976931348623157e308"), Ok(()));
    }

    #[test]
    fn surrogates_must_pair() {
        assert_eq!(check(r#""\ud800""#), Err(Refused::LoneSurrogate(0xd800)));
        assert_eq!(check(r#""\udc00x""#), Err(Refused::LoneSurrogate(0xdc00)));
        assert_eq!(
            check(r#""\ud800\u0041""#),
            Err(Refused::LoneSurrogate(0xd800))
        );
        assert_eq!(check(r#""\ud800\udc00""#), Ok(()));
    }

    #[test]
    fn member_names_are_unique_after_unescaping() {
        assert_eq!(
            check(r#"{"amount":1,"amount":5000}"#),
            Err(Refused::DuplicateName("amount".into()))
        );
        assert!(matches!(
            check(r#"{"amount":1,"\u0061mount":5000}"#),
            Err(Refused::DuplicateName(_))
        ));
        // The same name in different objects, or as a value, is fine.
        assert_eq!(
            check(r#"{"a":"a","b":{"a":1},"c":[{"a":1},{"a":2}]}"#),
            Ok(())
        );
        let many: Vec<String> = (0..100).map(|n| format!("\"k{n}\":{n}")).collect();
        assert_eq!(check(&format!("{{{}}}", many.join(","))), Ok(()));
        let dup = format!("{{{},\"k7\":0}}", many.join(","));
        assert_eq!(check(&dup), Err(Refused::DuplicateName("k7".into())));
        // Found by the fuzz test: a name left open at the very end of the input.
        assert_eq!(
            check(r#"{"a":1,"a"#),
            Err(Refused::DuplicateName("a".into()))
        );
        let _ = check(r#"["a",""#);
        let _ = check("{\"\",\"");
    }
}
