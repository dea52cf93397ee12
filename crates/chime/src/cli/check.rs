//! Signature checking for `chime listen` and `chime verify`: one `Checker` over the
//! chime-webhooks verifiers (never a re-implementation), and a `Verdict` that explains a
//! failure in words and says what to try next.

use std::time::Duration;

use chime_webhooks::providers::{github, shopify, stripe};
use chime_webhooks::{
    HEADER_SIGNATURE, Headers, SVIX_HEADER_SIGNATURE, Verifier, VerifyError, VerifyKey,
};
use clap::ValueEnum;
use serde::Serialize;

/// Which signature scheme the sender uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Standard Webhooks (chime, Svix and others): webhook-* or svix-* headers, v1 HMAC with
    /// a whsec_ secret or v1a Ed25519 with a whpk_ public key.
    Standard,
    /// GitHub: X-Hub-Signature-256 with the webhook's secret text.
    Github,
    /// Stripe: Stripe-Signature (t=…,v1=…) with the endpoint's whsec_ text.
    Stripe,
    /// Shopify: X-Shopify-Hmac-Sha256 with the app's client secret.
    Shopify,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Shopify => "shopify",
        }
    }
}

/// Parses `--tolerance`: a duration such as `5m`, or `off` for captured requests checked
/// long after they were sent.
pub fn parse_tolerance(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "off" | "none" => Ok(Duration::MAX),
        other => humantime::parse_duration(other).map_err(|e| format!("{e} (try 5m, 30s or off)")),
    }
}

/// Checks webhooks against one or more keys (several during a secret rotation).
pub struct Checker {
    scheme: Scheme,
    tolerance: Duration,
    /// For the standard scheme.
    verifier: Option<Verifier>,
    /// For provider schemes: the secret texts, used as raw bytes as the providers do.
    raw_secrets: Vec<String>,
}

impl Checker {
    /// Builds a checker; an unusable key is a usage error, reported with its flag.
    pub fn new(scheme: Scheme, secrets: &[String], tolerance: Duration) -> Result<Self, String> {
        if secrets.is_empty() {
            return Err("--secret is required".into());
        }
        let mut checker = Checker {
            scheme,
            tolerance,
            verifier: None,
            raw_secrets: Vec::new(),
        };
        match scheme {
            Scheme::Standard => {
                let keys = secrets
                    .iter()
                    .map(|s| {
                        VerifyKey::parse(s).map_err(|e| {
                            format!(
                                "--secret: {e} (expected whsec_… or, for Ed25519, whpk_…; \
                                 for GitHub, Stripe or Shopify secrets pass --scheme)"
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                checker.verifier = Some(Verifier::from_keys(keys).with_tolerance(tolerance));
            }
            _ => {
                for s in secrets {
                    let s = s.trim();
                    if s.is_empty() {
                        return Err("--secret is empty".into());
                    }
                    checker.raw_secrets.push(s.to_owned());
                }
            }
        }
        Ok(checker)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Checks one webhook as of `now` (unix seconds).
    pub fn check(&self, headers: &Headers, body: &[u8], now: i64) -> Verdict {
        let result = match (&self.verifier, self.scheme) {
            (Some(v), _) => {
                // The verifier reports the first missing header (webhook-id); when there is
                // no signature at all, "no signature header" is the truer explanation.
                if headers.get(HEADER_SIGNATURE).is_none()
                    && headers.get(SVIX_HEADER_SIGNATURE).is_none()
                {
                    Err(VerifyError::MissingHeader {
                        header: HEADER_SIGNATURE,
                        also_tried: Some(SVIX_HEADER_SIGNATURE),
                    })
                } else {
                    v.verify_at(headers, body, now).map(|m| Some(m.key_index))
                }
            }
            (None, scheme) => self.check_provider(scheme, headers, body, now),
        };
        match result {
            Ok(key_index) => Verdict::valid(self.scheme, key_index, self.raw_or_keys() > 1),
            Err(e) => {
                let mut verdict = Verdict::invalid(self.scheme, &e);
                if matches!(e, VerifyError::MissingHeader { .. })
                    && let Some(other) = sent_with(headers).filter(|s| *s != self.scheme)
                {
                    verdict.hint = Some(match other {
                        Scheme::Standard => {
                            "this looks like a Standard Webhooks request: drop --scheme"
                        }
                        Scheme::Github => "this looks like a GitHub webhook: pass --scheme github",
                        Scheme::Stripe => "this looks like a Stripe webhook: pass --scheme stripe",
                        Scheme::Shopify => {
                            "this looks like a Shopify webhook: pass --scheme shopify"
                        }
                    });
                }
                verdict
            }
        }
    }

    fn raw_or_keys(&self) -> usize {
        self.verifier
            .as_ref()
            .map_or(self.raw_secrets.len(), |v| v.keys().len())
    }

    /// Tries each secret; the first match wins. On failure, a body-change diagnosis from any
    /// secret is the most useful report (it proves that secret right), else the first error.
    fn check_provider(
        &self,
        scheme: Scheme,
        headers: &Headers,
        body: &[u8],
        now: i64,
    ) -> Result<Option<usize>, VerifyError> {
        let mut first_err = None;
        for (i, secret) in self.raw_secrets.iter().enumerate() {
            let r = match scheme {
                Scheme::Github => github::verify(secret, headers, body),
                Scheme::Shopify => shopify::verify(secret, headers, body),
                Scheme::Stripe => {
                    stripe::verify_at(secret, headers, body, self.tolerance, now).map(|_| ())
                }
                Scheme::Standard => unreachable!("the standard scheme has a verifier"),
            };
            match r {
                Ok(()) => return Ok(Some(i)),
                Err(e @ VerifyError::BodyModified { .. }) => return Err(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(VerifyError::NoKeys))
    }
}

/// The scheme whose signature header a request carries, if any.
fn sent_with(headers: &Headers) -> Option<Scheme> {
    [
        (HEADER_SIGNATURE, Scheme::Standard),
        (SVIX_HEADER_SIGNATURE, Scheme::Standard),
        (github::HEADER, Scheme::Github),
        (stripe::HEADER, Scheme::Stripe),
        (shopify::HEADER, Scheme::Shopify),
    ]
    .into_iter()
    .find(|(name, _)| headers.get(name).is_some())
    .map(|(_, scheme)| scheme)
}

/// The outcome of a signature check, as printed and recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `valid`, `invalid` or `unchecked` (no --secret).
    pub status: &'static str,
    pub scheme: Option<&'static str>,
    /// Which --secret matched (0-based), when several were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_index: Option<usize>,
    /// A stable name of the failure (chime-webhooks' `VerifyError::code`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Why it failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to try next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'static str>,
}

impl Verdict {
    pub fn unchecked() -> Self {
        Verdict {
            status: "unchecked",
            scheme: None,
            key_index: None,
            code: None,
            reason: None,
            hint: None,
        }
    }

    fn valid(scheme: Scheme, key_index: Option<usize>, several_keys: bool) -> Self {
        Verdict {
            status: "valid",
            scheme: Some(scheme.as_str()),
            key_index: key_index.filter(|_| several_keys),
            code: None,
            reason: None,
            hint: None,
        }
    }

    fn invalid(scheme: Scheme, e: &VerifyError) -> Self {
        Verdict {
            status: "invalid",
            scheme: Some(scheme.as_str()),
            key_index: None,
            code: Some(e.code()),
            reason: Some(reason(e)),
            hint: hint(scheme, e),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.status == "valid"
    }

    pub fn is_invalid(&self) -> bool {
        self.status == "invalid"
    }
}

/// The error's own sentence, with the missing-signature case named plainly first.
fn reason(e: &VerifyError) -> String {
    match e {
        VerifyError::MissingHeader { header, .. }
            if header.eq_ignore_ascii_case(HEADER_SIGNATURE)
                || header.eq_ignore_ascii_case(github::HEADER)
                || header.eq_ignore_ascii_case(stripe::HEADER)
                || header.eq_ignore_ascii_case(shopify::HEADER) =>
        {
            format!("no signature header: {e}")
        }
        _ => e.to_string(),
    }
}

fn hint(scheme: Scheme, e: &VerifyError) -> Option<&'static str> {
    Some(match e {
        VerifyError::MissingHeader { .. } => match scheme {
            Scheme::Standard => {
                "is the sender using Standard Webhooks? For GitHub, Stripe or Shopify pass \
                 --scheme"
            }
            _ => "is the sender the provider named by --scheme?",
        },
        VerifyError::TimestampTooOld { .. } => {
            "a replay or a long-delayed delivery, or a slow clock on one side; `chime replay \
             --secret` re-signs recorded webhooks with fresh timestamps, and --tolerance \
             widens the window"
        }
        VerifyError::TimestampInFuture { .. } => {
            "one side's clock runs fast; check that both sync their time (NTP)"
        }
        VerifyError::NoMatchingSignature { .. } => match scheme {
            Scheme::Standard => {
                "check --secret: it must be this endpoint's current secret (`chime endpoint \
                 show ID --tenant T --secret`)"
            }
            Scheme::Github => {
                "check --secret: it must be the webhook's secret as set in the GitHub \
                 repository or organisation settings (Settings → Webhooks)"
            }
            Scheme::Stripe => {
                "check --secret: it must be the endpoint's signing secret (whsec_…) from the \
                 Stripe dashboard (Developers → Webhooks)"
            }
            Scheme::Shopify => {
                "check --secret: it must be the app's client secret (Shopify Partners → \
                 your app → API credentials)"
            }
        },
        VerifyError::BodyModified { .. } => {
            "the secret is right but the bytes are not: verify the raw request body before any \
             JSON parsing or re-serializing"
        }
        VerifyError::NoUsableSignature { .. } => {
            "pass the kind of key the sender signs with (whsec_… for v1, whpk_… for v1a)"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chime_webhooks::{Secret, sign};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(body: &[u8], ts: i64) -> Headers {
        let secret = Secret::parse(SECRET).unwrap();
        Headers::new()
            .with("webhook-id", "msg_1")
            .with("webhook-timestamp", ts.to_string())
            .with("webhook-signature", sign(&secret, "msg_1", ts, body))
    }

    fn checker() -> Checker {
        Checker::new(
            Scheme::Standard,
            &[SECRET.to_owned()],
            Duration::from_secs(300),
        )
        .unwrap()
    }

    #[test]
    fn a_wrong_secret_hint_names_where_that_schemes_secret_lives() {
        let e = VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1,
        };
        assert!(
            hint(Scheme::Standard, &e)
                .unwrap()
                .contains("chime endpoint show")
        );
        for scheme in [Scheme::Github, Scheme::Stripe, Scheme::Shopify] {
            let h = hint(scheme, &e).unwrap();
            assert!(!h.contains("chime endpoint"), "{h}");
        }
        assert!(hint(Scheme::Github, &e).unwrap().contains("GitHub"));
    }

    #[test]
    fn standard_valid_and_reasons() {
        let body = br#"{"a": 1}"#;
        let h = signed(body, 1000);
        assert!(checker().check(&h, body, 1010).is_valid());

        let old = checker().check(&h, body, 2000);
        assert_eq!(old.code, Some("timestamp_too_old"));
        assert!(old.reason.unwrap().contains("1000 s in the past"));

        let reparsed = checker().check(&h, br#"{"a":1}"#, 1010);
        assert_eq!(reparsed.code, Some("body_modified"));
        assert!(
            reparsed
                .reason
                .unwrap()
                .contains("body differs from what was signed")
        );

        let none = checker().check(&Headers::new(), body, 1010);
        assert!(none.reason.unwrap().starts_with("no signature header"));
        let github = Headers::new().with(github::HEADER, github::sign("s", body));
        let v = checker().check(&github, body, 1010);
        assert_eq!(
            v.hint,
            Some("this looks like a GitHub webhook: pass --scheme github")
        );
    }

    #[test]
    fn provider_secrets_are_tried_in_turn() {
        let body = b"{}";
        let h = Headers::new().with(github::HEADER, github::sign("second", body));
        let c = Checker::new(
            Scheme::Github,
            &["first".into(), "second".into()],
            Duration::from_secs(300),
        )
        .unwrap();
        let v = c.check(&h, body, 0);
        assert!(v.is_valid());
        assert_eq!(v.key_index, Some(1));
        let wrong = Checker::new(Scheme::Github, &["x".into()], Duration::from_secs(1)).unwrap();
        assert_eq!(wrong.check(&h, body, 0).code, Some("no_matching_signature"));
    }

    #[test]
    fn bad_keys_are_usage_errors() {
        assert!(
            Checker::new(Scheme::Standard, &["whsec_!!".into()], Duration::ZERO)
                .err()
                .expect("an unusable key is refused")
                .starts_with("--secret:")
        );
        assert!(Checker::new(Scheme::Standard, &[], Duration::ZERO).is_err());
    }
}
