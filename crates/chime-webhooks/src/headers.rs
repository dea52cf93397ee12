//! [`Headers`]: the request headers a verifier reads, independent of any HTTP library.

/// Request headers as a verifier sees them: names compared case-insensitively, values trimmed.
///
/// Build it from an [`http::HeaderMap`], from `(name, value)` pairs, or one header at a time:
///
/// ```
/// use chime_webhooks::Headers;
///
/// let from_pairs = Headers::from_pairs([("Webhook-Id", "msg_1"), ("webhook-timestamp", " 1 ")]);
/// assert_eq!(from_pairs.get("webhook-id"), Some("msg_1"));
/// assert_eq!(from_pairs.get("WEBHOOK-TIMESTAMP"), Some("1"));
///
/// let mut map = http::HeaderMap::new();
/// map.insert("webhook-id", http::HeaderValue::from_static("msg_1"));
/// assert_eq!(Headers::from(&map).get("Webhook-ID"), Some("msg_1"));
///
/// let built = Headers::new().with("webhook-id", "msg_1");
/// assert_eq!(built.get("webhook-id"), Some("msg_1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Names are kept lowercased, as HTTP/2 writes them, so equality and `Debug` output do not
    /// depend on the sender's casing.
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Headers from `(name, value)` pairs, in order; repeated names are all kept.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        pairs.into_iter().collect()
    }

    /// Appends one header; an earlier header of the same name is kept, not replaced.
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.entries.push((
            name.as_ref().trim().to_ascii_lowercase(),
            value.as_ref().trim().to_owned(),
        ));
    }

    /// [`insert`](Self::insert) in builder form.
    pub fn with(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.insert(name, value);
        self
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in the order they were added.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The number of headers held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no header is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Self::new();
        for (name, value) in iter {
            headers.insert(name, value);
        }
        headers
    }
}

impl From<&http::HeaderMap> for Headers {
    /// Copies every header. A value that is not UTF-8 is kept with its invalid bytes replaced,
    /// so a verifier reports it as malformed instead of as missing.
    fn from(map: &http::HeaderMap) -> Self {
        let mut headers = Self {
            entries: Vec::with_capacity(map.len()),
        };
        for (name, value) in map {
            headers.insert(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_are_all_kept() {
        let h = Headers::from_pairs([("a", "1"), ("B", "2"), ("A", "3")]);
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(h.get("b"), Some("2"));
        assert_eq!(h.get("c"), None);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn header_map_keeps_repeated_and_non_utf8_values() {
        let mut map = http::HeaderMap::new();
        map.append("webhook-signature", http::HeaderValue::from_static("v1,a"));
        map.append("webhook-signature", http::HeaderValue::from_static("v1,b"));
        map.append("x-odd", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let h = Headers::from(&map);
        assert_eq!(
            h.get_all("Webhook-Signature").collect::<Vec<_>>(),
            ["v1,a", "v1,b"]
        );
        assert_eq!(h.get("x-odd"), Some("caf\u{fffd}"));
    }
}
