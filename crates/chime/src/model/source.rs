//! Inbound sources: how a source checks that a request came from its provider
//! (`SourceVerify`, one scheme per provider, several secrets during a rotation), where it
//! finds the event's name and the provider's delivery id (`Locator`), and what a source event
//! carries to its deliveries besides its bytes (`Inbound`: content type, the provider's
//! identifying headers). The provider algorithms themselves live in `chime-webhooks`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chime_webhooks::providers::{github, shopify, stripe};
use chime_webhooks::{Headers, Verifier, VerifyKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::SourceId;

/// Most secrets one source accepts at once (a rotation needs two).
pub const MAX_SECRETS: usize = 5;
const MAX_SECRET_BYTES: usize = 1024;

/// Keys shared with the provider: one `secret`, or several `secrets` while rotating.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl Secrets {
    fn all(&self) -> impl Iterator<Item = &str> {
        self.secret.iter().chain(&self.secrets).map(String::as_str)
    }

    fn count(&self) -> usize {
        self.all().count()
    }

    /// One list, checked for count and size.
    fn normalized(self) -> Result<Self, String> {
        let secrets: Vec<String> = self.secret.into_iter().chain(self.secrets).collect();
        if secrets.is_empty() {
            return Err("verify: give the provider's secret (\"secret\" or \"secrets\")".into());
        }
        if secrets.len() > MAX_SECRETS {
            return Err(format!("verify: at most {MAX_SECRETS} secrets"));
        }
        if secrets
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_SECRET_BYTES || s.chars().any(char::is_control))
        {
            return Err(format!(
                "verify: each secret must be 1 to {MAX_SECRET_BYTES} bytes, without control characters"
            ));
        }
        Ok(Self {
            secret: None,
            secrets,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    Hex,
    Base64,
}

/// How a source checks its requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceVerify {
    /// `Stripe-Signature`, within `tolerance_s` (default 300) of its timestamp.
    Stripe {
        #[serde(flatten)]
        keys: Secrets,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tolerance_s: Option<u64>,
    },
    /// `X-Hub-Signature-256`.
    Github {
        #[serde(flatten)]
        keys: Secrets,
    },
    /// `X-Shopify-Hmac-Sha256`.
    Shopify {
        #[serde(flatten)]
        keys: Secrets,
    },
    /// Standard Webhooks (`webhook-*` or `svix-*`): `whsec_` secrets (v1) or `whpk_`
    /// public keys (v1a).
    Standard {
        #[serde(flatten)]
        keys: Secrets,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tolerance_s: Option<u64>,
    },
    /// An HMAC of the body in a header of the provider's choosing.
    Hmac {
        header: String,
        algorithm: HmacAlgorithm,
        encoding: HmacEncoding,
        /// Text before the signature in the header, e.g. `sha256=`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        #[serde(flatten)]
        keys: Secrets,
    },
    /// HTTP basic authentication.
    Basic { username: String, password: String },
    /// No check at all, chosen explicitly.
    None,
}

impl SourceVerify {
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Stripe { .. } => "stripe",
            Self::Github { .. } => "github",
            Self::Shopify { .. } => "shopify",
            Self::Standard { .. } => "standard",
            Self::Hmac { .. } => "hmac",
            Self::Basic { .. } => "basic",
            Self::None => "none",
        }
    }

    /// How many secrets it holds (shown instead of them).
    pub fn secret_count(&self) -> usize {
        match self {
            Self::Stripe { keys, .. }
            | Self::Github { keys }
            | Self::Shopify { keys }
            | Self::Standard { keys, .. }
            | Self::Hmac { keys, .. } => keys.count(),
            Self::Basic { .. } => 1,
            Self::None => 0,
        }
    }

    /// Checked and normalized for storing: secrets in one list, keys that parse.
    pub fn checked(self) -> Result<Self, String> {
        Ok(match self {
            Self::Stripe { keys, tolerance_s } => Self::Stripe {
                keys: keys.normalized()?,
                tolerance_s: checked_tolerance(tolerance_s)?,
            },
            Self::Github { keys } => Self::Github {
                keys: keys.normalized()?,
            },
            Self::Shopify { keys } => Self::Shopify {
                keys: keys.normalized()?,
            },
            Self::Standard { keys, tolerance_s } => {
                let keys = keys.normalized()?;
                for k in keys.all() {
                    VerifyKey::parse(k).map_err(|e| format!("verify.secrets: {e}"))?;
                }
                Self::Standard {
                    keys,
                    tolerance_s: checked_tolerance(tolerance_s)?,
                }
            }
            Self::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                keys,
            } => {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(format!("verify.header {header:?} is not a header name"));
                }
                if prefix.as_ref().is_some_and(|p| p.len() > 64) {
                    return Err("verify.prefix must be at most 64 bytes".into());
                }
                Self::Hmac {
                    header,
                    algorithm,
                    encoding,
                    prefix,
                    keys: keys.normalized()?,
                }
            }
            Self::Basic { username, password } => {
                if username.contains(':') || username.is_empty() || password.is_empty() {
                    return Err(
                        "verify: basic needs a username (without ':') and a password".into(),
                    );
                }
                Self::Basic { username, password }
            }
            Self::None => Self::None,
        })
    }

    /// Whether the request came from the provider: `Err` says why not, in words.
    pub fn verify(&self, headers: &http::HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
        let h = || {
            Headers::from_pairs(
                headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?.to_owned()))),
            )
        };
        let any = |keys: &Secrets, check: &dyn Fn(&str) -> Result<(), String>| {
            let mut last = String::from("no secret");
            for k in keys.all() {
                match check(k) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        match self {
            Self::Stripe { keys, tolerance_s } => {
                let h = h();
                let tolerance = tolerance(*tolerance_s);
                any(keys, &|k| {
                    stripe::verify_at(k, &h, body, tolerance, now)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            }
            Self::Github { keys } => {
                let h = h();
                any(keys, &|k| {
                    github::verify(k, &h, body).map_err(|e| e.to_string())
                })
            }
            Self::Shopify { keys } => {
                let h = h();
                any(keys, &|k| {
                    shopify::verify(k, &h, body).map_err(|e| e.to_string())
                })
            }
            Self::Standard { keys, tolerance_s } => {
                let parsed: Vec<VerifyKey> = keys
                    .all()
                    .filter_map(|k| VerifyKey::parse(k).ok())
                    .collect();
                Verifier::from_keys(parsed)
                    .with_tolerance(tolerance(*tolerance_s))
                    .verify_at(&h(), body, now)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Self::Hmac {
                header,
                algorithm,
                encoding,
                prefix,
                keys,
            } => {
                let value = headers
                    .get(header.as_str())
                    .ok_or_else(|| format!("the {header} header is missing"))?
                    .to_str()
                    .map_err(|_| format!("the {header} header is not text"))?;
                let value = match prefix {
                    Some(p) => value
                        .strip_prefix(p.as_str())
                        .ok_or_else(|| format!("the {header} header does not start with {p:?}"))?,
                    None => value,
                };
                let given = match encoding {
                    HmacEncoding::Hex => hex::decode(value.trim()).ok(),
                    HmacEncoding::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(value.trim())
                        .ok(),
                }
                .ok_or_else(|| format!("the {header} header is not {encoding:?}"))?;
                any(keys, &|k| {
                    let ok = match algorithm {
                        HmacAlgorithm::Sha1 => mac_ok::<Hmac<sha1::Sha1>>(k, body, &given),
                        HmacAlgorithm::Sha256 => mac_ok::<Hmac<Sha256>>(k, body, &given),
                        HmacAlgorithm::Sha512 => mac_ok::<Hmac<Sha512>>(k, body, &given),
                    };
                    if ok {
                        Ok(())
                    } else {
                        Err(format!(
                            "the {header} signature does not match the body with any secret: \
                             the body differs from what was signed, or the secret is not the one \
                             the provider signs with"
                        ))
                    }
                })
            }
            Self::Basic { username, password } => {
                // What `store::rows::source` reads back from an unreadable row: accepts nothing
                // (the credentials ":" must not pass).
                if username.is_empty() {
                    return Err("the source's settings are unreadable: save them again".into());
                }
                let given = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Basic "))
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .ok_or("no HTTP basic credentials (Authorization: Basic …)")?;
                // Compared as digests: the time taken says nothing about the expected bytes.
                let expected = Sha256::digest(format!("{username}:{password}"));
                if Sha256::digest(&given) == expected {
                    Ok(())
                } else {
                    Err("the basic credentials are not the source's".into())
                }
            }
            Self::None => Ok(()),
        }
    }

    /// Where the event name is when the source does not say.
    pub fn default_event_name(&self) -> Locator {
        match self {
            Self::Stripe { .. } | Self::Standard { .. } => Locator::Pointer("/type".into()),
            Self::Github { .. } => Locator::GithubEvent,
            Self::Shopify { .. } => Locator::Header("x-shopify-topic".into()),
            _ => Locator::Pointer("/event".into()),
        }
    }

    /// Where the provider's delivery id is when the source does not say.
    pub fn default_dedupe_key(&self) -> Option<Locator> {
        match self {
            Self::Stripe { .. } => Some(Locator::Pointer("/id".into())),
            Self::Github { .. } => Some(Locator::Header("x-github-delivery".into())),
            Self::Shopify { .. } => Some(Locator::Header("x-shopify-webhook-id".into())),
            Self::Standard { .. } => Some(Locator::Header("webhook-id".into())),
            _ => None,
        }
    }

    /// The provider's identifying headers passed on to receivers under their own names
    /// (never its signature).
    pub fn passed_headers(&self) -> &'static [&'static str] {
        match self {
            Self::Github { .. } => &["x-github-event", "x-github-delivery", "x-github-hook-id"],
            Self::Shopify { .. } => &[
                "x-shopify-topic",
                "x-shopify-webhook-id",
                "x-shopify-shop-domain",
            ],
            _ => &[],
        }
    }
}

fn checked_tolerance(t: Option<u64>) -> Result<Option<u64>, String> {
    match t {
        Some(s) if s == 0 || s > 86_400 => {
            Err("verify.tolerance_s must be between 1 and 86400".into())
        }
        other => Ok(other),
    }
}

fn tolerance(t: Option<u64>) -> Duration {
    t.map(Duration::from_secs)
        .unwrap_or(chime_webhooks::DEFAULT_TOLERANCE)
}

fn mac_ok<M: Mac + hmac::digest::KeyInit>(key: &str, body: &[u8], given: &[u8]) -> bool {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(given).is_ok()
}

/// Where a value is in a request: a JSON pointer into the body (`/type`), a header
/// (`header:X-GitHub-Event`), or GitHub's event (its header, then `.action` from the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    Pointer(String),
    Header(String),
    GithubEvent,
}

impl Locator {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(h) = text.strip_prefix("header:") {
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("{h:?} is not a header name"))?;
            return Ok(Self::Header(h.to_ascii_lowercase()));
        }
        if text == "github" {
            return Ok(Self::GithubEvent);
        }
        if text.starts_with('/') && text.len() <= 256 {
            return Ok(Self::Pointer(text.to_owned()));
        }
        Err(format!(
            "{text:?} is neither a JSON pointer (/type) nor a header (header:X-Event-Type)"
        ))
    }

    pub fn text(&self) -> String {
        match self {
            Self::Pointer(p) => p.clone(),
            Self::Header(h) => format!("header:{h}"),
            Self::GithubEvent => "github".into(),
        }
    }

    /// The value in this request, if there is one; `json` is the body when it is JSON.
    pub fn find(
        &self,
        headers: &http::HeaderMap,
        json: Option<&serde_json::Value>,
    ) -> Option<String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let pointer = |p: &str| {
            json.and_then(|j| j.pointer(p)).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        match self {
            Self::Pointer(p) => pointer(p),
            Self::Header(h) => header(h),
            Self::GithubEvent => {
                let event = header("x-github-event")?;
                Some(match pointer("/action") {
                    Some(action) => format!("{event}.{action}"),
                    None => event,
                })
            }
        }
    }
}

/// What a source event's deliveries carry besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub source_id: SourceId,
    /// The request's content type, sent with each delivery.
    pub content_type: String,
    /// The provider's identifying headers, passed on under their own names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The event's name, which the provider's bytes may not say where a transformation
    /// would look for it (empty in rows written before transformations).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event: String,
}

impl Inbound {
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("inbound metadata serializes")
    }

    pub fn from_stored(text: Option<String>) -> Option<Arc<Self>> {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn each_scheme_verifies_and_explains() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let now = 1_700_000_000;
        let stripe: SourceVerify =
            serde_json::from_str(r#"{"scheme":"stripe","secrets":["whsec_old","whsec_new"]}"#)
                .unwrap();
        let stripe = stripe.checked().unwrap();
        let signed = stripe::sign("whsec_new", now, body);
        stripe
            .verify(&headers(&[("stripe-signature", &signed)]), body, now)
            .unwrap();
        assert!(
            stripe
                .verify(&headers(&[("stripe-signature", &signed)]), b"{}", now)
                .is_err()
        );
        assert!(
            stripe
                .verify(&headers(&[("stripe-signature", &signed)]), body, now + 3600)
                .is_err()
        );

        let hmac: SourceVerify = serde_json::from_str(
            r#"{"scheme":"hmac","header":"X-Sig","algorithm":"sha256","encoding":"hex","prefix":"sha256=","secret":"k"}"#,
        )
        .unwrap();
        let hmac = hmac.checked().unwrap();
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        hmac.verify(&headers(&[("x-sig", &sig)]), body, now)
            .unwrap();
        let e = hmac.verify(&headers(&[]), body, now).unwrap_err();
        assert!(e.contains("missing"), "{e}");

        let basic = SourceVerify::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        basic
            .verify(&headers(&[("authorization", "Basic dTpw")]), body, now)
            .unwrap();
        assert!(
            basic
                .verify(&headers(&[("authorization", "Basic dTpx")]), body, now)
                .is_err()
        );
        // The fallback of an unreadable row lets nothing in, not even ":".
        let unreadable = SourceVerify::Basic {
            username: String::new(),
            password: String::new(),
        };
        assert!(
            unreadable
                .verify(&headers(&[("authorization", "Basic Og==")]), body, now)
                .is_err()
        );
        SourceVerify::None.verify(&headers(&[]), body, now).unwrap();
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            r#"{"scheme":"stripe"}"#,
            r#"{"scheme":"standard","secret":"not-a-key"}"#,
            r#"{"scheme":"hmac","header":"bad header","algorithm":"sha256","encoding":"hex","secret":"k"}"#,
            r#"{"scheme":"basic","username":"a:b","password":"p"}"#,
            r#"{"scheme":"stripe","secret":"s","tolerance_s":0}"#,
        ] {
            let v: SourceVerify = serde_json::from_str(bad).unwrap();
            assert!(v.checked().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<SourceVerify>(r#"{"scheme":"rot13"}"#).is_err());
    }

    #[test]
    fn locators_find_names_and_ids() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"type":"a.b","action":"opened","id":7}"#).unwrap();
        let h = headers(&[("x-github-event", "issues"), ("x-topic", "orders/create")]);
        assert_eq!(
            Locator::parse("/type")
                .unwrap()
                .find(&h, Some(&json))
                .unwrap(),
            "a.b"
        );
        assert_eq!(
            Locator::parse("/id")
                .unwrap()
                .find(&h, Some(&json))
                .unwrap(),
            "7"
        );
        assert_eq!(
            Locator::parse("header:X-Topic")
                .unwrap()
                .find(&h, None)
                .unwrap(),
            "orders/create"
        );
        assert_eq!(
            Locator::GithubEvent.find(&h, Some(&json)).unwrap(),
            "issues.opened"
        );
        assert!(Locator::parse("type").is_err());
    }
}
