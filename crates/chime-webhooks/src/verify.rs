//! Checking Standard Webhooks signatures: [`Verifier`], its keys and the free [`verify`].
//!
//! The order of checks is fixed: headers present and readable, timestamp within tolerance, then
//! signatures. The timestamp comes first so a replayed request is refused without any
//! cryptography, and its message says "too old" rather than something vaguer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

use crate::body_change::diagnose;
use crate::ed25519::{KeyError, PUBLIC_KEY_PREFIX, PublicKey, SIGNING_KEY_PREFIX, SigningKey};
use crate::error::VerifyError;
use crate::headers::Headers;
use crate::secret::{Secret, decode_base64_lenient};
use crate::sign::{content_prefix, v1_mac};

/// How far a timestamp may be from now, either way, unless a verifier is told otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The message id header.
pub const HEADER_ID: &str = "webhook-id";
/// The unix-seconds timestamp header.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The space-separated signature list header.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Svix's name for [`HEADER_ID`], accepted when the standard one is absent.
pub const SVIX_HEADER_ID: &str = "svix-id";
/// Svix's name for [`HEADER_TIMESTAMP`], accepted when the standard one is absent.
pub const SVIX_HEADER_TIMESTAMP: &str = "svix-timestamp";
/// Svix's name for [`HEADER_SIGNATURE`], accepted when the standard one is absent.
pub const SVIX_HEADER_SIGNATURE: &str = "svix-signature";

/// One key a [`Verifier`] checks signatures with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// Checks `v1,` (HMAC-SHA256) signatures.
    Secret(Secret),
    /// Checks `v1a,` (Ed25519) signatures.
    PublicKey(PublicKey),
}

impl VerifyKey {
    /// Parses any key text a receiver may be given: `whpk_…` is a public key, `whsk_…` is used
    /// through its public key, and anything else is a symmetric secret (`whsec_` optional).
    ///
    /// ```
    /// use chime_webhooks::{SigningKey, VerifyKey};
    /// assert!(matches!(VerifyKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Ok(VerifyKey::Secret(_))));
    /// let public = SigningKey::generate().public_key().to_whpk();
    /// assert!(matches!(VerifyKey::parse(&public), Ok(VerifyKey::PublicKey(_))));
    /// ```
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.starts_with(PUBLIC_KEY_PREFIX) {
            Ok(VerifyKey::PublicKey(PublicKey::parse(s)?))
        } else if s.starts_with(SIGNING_KEY_PREFIX) {
            Ok(VerifyKey::PublicKey(SigningKey::parse(s)?.public_key()))
        } else {
            Ok(VerifyKey::Secret(Secret::parse(s)?))
        }
    }
}

impl From<Secret> for VerifyKey {
    fn from(secret: Secret) -> Self {
        VerifyKey::Secret(secret)
    }
}

impl From<PublicKey> for VerifyKey {
    fn from(key: PublicKey) -> Self {
        VerifyKey::PublicKey(key)
    }
}

/// A webhook whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedMessage {
    /// The `webhook-id`: the same on every retry, so it is the de-duplication key.
    pub id: String,
    /// The signed unix timestamp of this attempt.
    pub timestamp: i64,
    /// Which of the verifier's keys matched, in the order they were added: during a rotation
    /// this tells when the old key stops being used.
    pub key_index: usize,
}

/// Checks Standard Webhooks signatures against one or more keys.
///
/// Several keys cover rotation: a message is valid if any signature in its header matches any
/// key. Cloning is cheap (the keys are shared), so a verifier can live in server state.
///
/// ```
/// use std::time::Duration;
/// use chime_webhooks::{Headers, Secret, Verifier, VerifyError, sign};
///
/// let old = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// let new = Secret::generate();
/// let verifier = Verifier::new(new.clone())
///     .with_key(old.clone())
///     .with_tolerance(Duration::from_secs(60));
///
/// let body = br#"{"event":"order_created"}"#;
/// let headers = Headers::new()
///     .with("webhook-id", "evt_1")
///     .with("webhook-timestamp", "1700000000")
///     .with("webhook-signature", sign(&old, "evt_1", 1_700_000_000, body));
///
/// let msg = verifier.verify_at(&headers, body, 1_700_000_030).unwrap();
/// assert_eq!((msg.id.as_str(), msg.timestamp, msg.key_index), ("evt_1", 1_700_000_000, 1));
///
/// let err = verifier.verify_at(&headers, body, 1_700_000_100).unwrap_err();
/// assert_eq!(err.to_string(), "timestamp is 100 s in the past; tolerance is 60 s");
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Arc<Vec<VerifyKey>>,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier with one key and the [`DEFAULT_TOLERANCE`].
    pub fn new(key: impl Into<VerifyKey>) -> Self {
        Self::from_keys([key.into()])
    }

    /// A verifier with these keys (possibly none, in which case every check fails with
    /// [`VerifyError::NoKeys`]).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyKey>) -> Self {
        Self {
            keys: Arc::new(keys.into_iter().collect()),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// Adds a key, e.g. the previous secret while a rotation overlaps.
    pub fn with_key(mut self, key: impl Into<VerifyKey>) -> Self {
        Arc::make_mut(&mut self.keys).push(key.into());
        self
    }

    /// Sets how far a timestamp may be from now, either way. `Duration::MAX` turns the check
    /// off, which only makes sense for replaying captured requests by hand.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The keys, in the order added.
    pub fn keys(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// The timestamp tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies `body` as received against `headers`, using the system clock.
    pub fn verify(&self, headers: &Headers, body: &[u8]) -> Result<VerifiedMessage, VerifyError> {
        self.verify_at(headers, body, now_unix())
    }

    /// [`verify`](Self::verify) with `now` (unix seconds) given, for tests and for checking a
    /// captured request as of the time it arrived.
    pub fn verify_at(
        &self,
        headers: &Headers,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedMessage, VerifyError> {
        if self.keys.is_empty() {
            return Err(VerifyError::NoKeys);
        }
        let (id_header, id) = first_of(headers, HEADER_ID, SVIX_HEADER_ID)?;
        let (ts_header, ts_text) = first_of(headers, HEADER_TIMESTAMP, SVIX_HEADER_TIMESTAMP)?;
        let (sig_header, sig_text) = all_of(headers, HEADER_SIGNATURE, SVIX_HEADER_SIGNATURE)?;

        if id.is_empty() {
            return Err(VerifyError::malformed(id_header, "it is empty"));
        }
        let timestamp = parse_timestamp(ts_header, ts_text)?;
        check_timestamp(timestamp, now, self.tolerance)?;

        let entries = parse_signatures(sig_header, &sig_text)?;
        let has_secret = self.keys.iter().any(|k| matches!(k, VerifyKey::Secret(_)));
        let has_public = self
            .keys
            .iter()
            .any(|k| matches!(k, VerifyKey::PublicKey(_)));
        let usable: Vec<UsableSignature> = entries
            .iter()
            .filter_map(|&(version, sig)| {
                let scheme = match version {
                    "v1" if has_secret => Scheme::Hmac,
                    "v1a" if has_public => Scheme::Ed25519,
                    _ => return None,
                };
                Some(UsableSignature {
                    scheme,
                    raw: decode_base64_lenient(sig),
                })
            })
            .collect();
        if usable.is_empty() {
            return Err(VerifyError::NoUsableSignature {
                header: sig_header,
                found: distinct_versions(&entries),
                checks: checked_schemes(has_secret, has_public),
            });
        }

        let prefix = content_prefix(id, timestamp);
        if let Some(key_index) = self.find_key(prefix.as_bytes(), body, &usable) {
            return Ok(VerifiedMessage {
                id: id.to_owned(),
                timestamp,
                key_index,
            });
        }
        let keys_tried = self
            .keys
            .iter()
            .filter(|key| usable.iter().any(|sig| sig.scheme == Scheme::of(key)))
            .count();
        Err(mismatch(body, usable.len(), keys_tried, |original| {
            self.find_key(prefix.as_bytes(), original, &usable)
                .is_some()
        }))
    }

    /// The index of the first key that any usable signature matches.
    fn find_key(
        &self,
        prefix: &[u8],
        body: &[u8],
        signatures: &[UsableSignature],
    ) -> Option<usize> {
        // Built only if a public key is present: Ed25519 needs the content in one piece.
        let mut content: Option<Vec<u8>> = None;
        self.keys.iter().position(|key| match key {
            VerifyKey::Secret(secret) => {
                // One MAC per key, however many signatures the header lists.
                let expected = v1_mac(secret.as_bytes(), prefix, body);
                signatures.iter().any(|sig| {
                    sig.scheme == Scheme::Hmac
                        && sig
                            .raw
                            .as_deref()
                            .is_some_and(|raw| bool::from(expected[..].ct_eq(raw)))
                })
            }
            VerifyKey::PublicKey(public) => {
                let content = content.get_or_insert_with(|| [prefix, body].concat());
                signatures.iter().any(|sig| {
                    sig.scheme == Scheme::Ed25519
                        && sig
                            .raw
                            .as_deref()
                            .is_some_and(|raw| public.verifies(content, raw))
                })
            }
        })
    }
}

fn checked_schemes(has_secret: bool, has_public: bool) -> String {
    match (has_secret, has_public) {
        (true, true) => "v1 (symmetric secret) and v1a (Ed25519 public key)",
        (true, false) => "v1 (symmetric secret)",
        (false, _) => "v1a (Ed25519 public key)",
    }
    .to_owned()
}

/// Verifies a Standard Webhooks request with one secret, the system clock and the
/// [`DEFAULT_TOLERANCE`]. Use a [`Verifier`] for several keys, Ed25519 or another tolerance.
///
/// ```
/// use chime_webhooks::{Headers, Secret, VerifyError, sign, verify};
/// let secret = Secret::generate();
/// let now = std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH)
///     .unwrap()
///     .as_secs() as i64;
/// let body = br#"{"event":"ping"}"#;
/// let headers = Headers::from_pairs([
///     ("svix-id", "msg_1".to_string()),
///     ("svix-timestamp", now.to_string()),
///     ("svix-signature", sign(&secret, "msg_1", now, body)),
/// ]);
/// assert_eq!(verify(&secret, &headers, body).unwrap().id, "msg_1");
///
/// let other = Secret::generate();
/// assert!(matches!(
///     verify(&other, &headers, body),
///     Err(VerifyError::NoMatchingSignature { .. })
/// ));
/// ```
pub fn verify(
    secret: &Secret,
    headers: &Headers,
    body: &[u8],
) -> Result<VerifiedMessage, VerifyError> {
    Verifier::new(secret.clone()).verify(headers, body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Hmac,
    Ed25519,
}

impl Scheme {
    fn of(key: &VerifyKey) -> Self {
        match key {
            VerifyKey::Secret(_) => Scheme::Hmac,
            VerifyKey::PublicKey(_) => Scheme::Ed25519,
        }
    }
}

/// A signature of a scheme the verifier has keys for; `raw` is `None` when it is not base64,
/// which then simply never matches.
struct UsableSignature {
    scheme: Scheme,
    raw: Option<Vec<u8>>,
}

/// The current unix time in seconds; a clock before 1970 reads as 0.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Refuses a timestamp further than `tolerance` from `now` in either direction.
pub(crate) fn check_timestamp(
    timestamp: i64,
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    // i128 because the timestamp comes from the request and may be anywhere in i64.
    let age = i128::from(now) - i128::from(timestamp);
    let tolerance_secs = tolerance.as_secs();
    let clamp = |x: i128| u64::try_from(x).unwrap_or(u64::MAX);
    if age > i128::from(tolerance_secs) {
        Err(VerifyError::TimestampTooOld {
            age_secs: clamp(age),
            tolerance_secs,
        })
    } else if -age > i128::from(tolerance_secs) {
        Err(VerifyError::TimestampInFuture {
            ahead_secs: clamp(-age),
            tolerance_secs,
        })
    } else {
        Ok(())
    }
}

pub(crate) fn parse_timestamp(header: &'static str, text: &str) -> Result<i64, VerifyError> {
    // Digits only: i64's parser would also take a sign, which senders never write.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::malformed(
            header,
            format!(
                "{} is not a whole number of seconds since 1970",
                preview(text)
            ),
        ));
    }
    text.parse().map_err(|_| {
        VerifyError::malformed(
            header,
            format!("{} is too large to be a time", preview(text)),
        )
    })
}

/// The error for signatures that were all checked and all failed, with the body-change
/// diagnosis when one of the plausible originals matches.
pub(crate) fn mismatch(
    body: &[u8],
    signatures: usize,
    keys: usize,
    matches: impl Fn(&[u8]) -> bool,
) -> VerifyError {
    match diagnose(body, matches) {
        Some(change) => VerifyError::BodyModified { change },
        None => VerifyError::NoMatchingSignature { signatures, keys },
    }
}

/// Header text quoted for an error message, cut short so a huge header cannot flood a log.
pub(crate) fn preview(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

fn first_of<'h>(
    headers: &'h Headers,
    name: &'static str,
    alias: &'static str,
) -> Result<(&'static str, &'h str), VerifyError> {
    if let Some(value) = headers.get(name) {
        Ok((name, value))
    } else if let Some(value) = headers.get(alias) {
        Ok((alias, value))
    } else {
        Err(VerifyError::MissingHeader {
            header: name,
            also_tried: Some(alias),
        })
    }
}

/// All values of the header joined by spaces: a proxy may split one list into several lines.
fn all_of(
    headers: &Headers,
    name: &'static str,
    alias: &'static str,
) -> Result<(&'static str, String), VerifyError> {
    for header in [name, alias] {
        let values: Vec<&str> = headers.get_all(header).collect();
        if !values.is_empty() {
            return Ok((header, values.join(" ")));
        }
    }
    Err(VerifyError::MissingHeader {
        header: name,
        also_tried: Some(alias),
    })
}

/// More signatures than any rotation needs. Each `v1a` entry costs an Ed25519 verification
/// (and more when a failure is diagnosed), so a forged header cannot ask for thousands.
const MAX_SIGNATURES: usize = 16;

/// The `version,signature` entries of a signature header. Entries without a comma are skipped,
/// as the spec asks for unknown content, unless nothing else is left.
fn parse_signatures<'t>(
    header: &'static str,
    text: &'t str,
) -> Result<Vec<(&'t str, &'t str)>, VerifyError> {
    let entries: Vec<(&str, &str)> = text
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .collect();
    if entries.len() > MAX_SIGNATURES {
        return Err(VerifyError::malformed(
            header,
            format!(
                "it lists {} signatures; at most {MAX_SIGNATURES} are checked",
                entries.len()
            ),
        ));
    }
    if entries.is_empty() {
        let reason = if text.trim().is_empty() {
            "it is empty".to_owned()
        } else {
            format!("{} has no entry of the form v1,<base64>", preview(text))
        };
        return Err(VerifyError::malformed(header, reason));
    }
    Ok(entries)
}

fn distinct_versions(entries: &[(&str, &str)]) -> String {
    let mut versions: Vec<&str> = Vec::new();
    for &(version, _) in entries {
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    let shown: Vec<String> = versions.iter().map(|v| preview(v)).collect();
    shown.join(", ")
}
