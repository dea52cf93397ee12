//! [`VerifyError`]: every reason a webhook is refused, worded for the person reading the log.

use crate::body_change::BodyChange;

/// Why a webhook was not accepted.
///
/// `Display` explains the cause in words, so it can be logged or shown as is; [`code`] gives a
/// stable machine-readable name for each case.
///
/// [`code`]: VerifyError::code
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("{}", missing_header(header, *also_tried))]
    MissingHeader {
        /// The header looked for.
        header: &'static str,
        /// An alias that was looked for as well (`svix-id` for `webhook-id`, …).
        also_tried: Option<&'static str>,
    },
    /// A header is present but cannot be read.
    #[error("the {header} header is malformed: {reason}")]
    MalformedHeader {
        /// The header, as the scheme names it.
        header: &'static str,
        /// What is wrong with it, in words.
        reason: String,
    },
    /// The signed timestamp is older than the tolerance allows: a replay, a long delay, or a
    /// slow clock on one side.
    #[error("timestamp is {age_secs} s in the past; tolerance is {tolerance_secs} s")]
    TimestampTooOld {
        /// How far in the past it is.
        age_secs: u64,
        /// The tolerance it was checked against.
        tolerance_secs: u64,
    },
    /// The signed timestamp is further ahead than the tolerance allows: usually a clock that
    /// runs fast on one side.
    #[error("timestamp is {ahead_secs} s in the future; tolerance is {tolerance_secs} s")]
    TimestampInFuture {
        /// How far in the future it is.
        ahead_secs: u64,
        /// The tolerance it was checked against.
        tolerance_secs: u64,
    },
    /// The header carries signatures, but none of a kind this verifier has a key for.
    #[error(
        "the {header} header has only {found} signatures, but this verifier checks {checks}; \
         configure the matching key"
    )]
    NoUsableSignature {
        /// The signature header.
        header: &'static str,
        /// The signature versions present, comma separated.
        found: String,
        /// What the verifier's keys can check, in words.
        checks: String,
    },
    /// Signatures were checked and none matched.
    #[error(
        "no signature matched ({}): wrong secret, or the body was changed after signing",
        counted(*signatures, *keys)
    )]
    NoMatchingSignature {
        /// Signatures checked.
        signatures: usize,
        /// Keys they were checked against.
        keys: usize,
    },
    /// No signature matches the body received, but one matches a plausible original of it: the
    /// key is right and the body was rewritten on the way.
    #[error("the body differs from what was signed: {change}")]
    BodyModified {
        /// What seems to have happened to the body.
        change: BodyChange,
    },
    /// The verifier was built without any key.
    #[error("the verifier has no keys to check signatures with")]
    NoKeys,
}

impl VerifyError {
    /// A stable snake_case name for the case, for logs and API answers.
    ///
    /// ```
    /// use chime_webhooks::VerifyError;
    /// assert_eq!(VerifyError::NoKeys.code(), "no_keys");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader { .. } => "missing_header",
            VerifyError::MalformedHeader { .. } => "malformed_header",
            VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
            VerifyError::TimestampInFuture { .. } => "timestamp_in_future",
            VerifyError::NoUsableSignature { .. } => "no_usable_signature",
            VerifyError::NoMatchingSignature { .. } => "no_matching_signature",
            VerifyError::BodyModified { .. } => "body_modified",
            VerifyError::NoKeys => "no_keys",
        }
    }

    pub(crate) fn malformed(header: &'static str, reason: impl Into<String>) -> Self {
        VerifyError::MalformedHeader {
            header,
            reason: reason.into(),
        }
    }
}

fn missing_header(header: &str, also_tried: Option<&str>) -> String {
    match also_tried {
        Some(alias) => format!("the {header} header is missing (and there is no {alias} header)"),
        None => format!("the {header} header is missing"),
    }
}

fn counted(signatures: usize, keys: usize) -> String {
    let s = if signatures == 1 { "" } else { "s" };
    let k = if keys == 1 { "" } else { "s" };
    format!("checked {signatures} signature{s} against {keys} key{k}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(
            VerifyError::TimestampTooOld {
                age_secs: 412,
                tolerance_secs: 300
            }
            .to_string(),
            "timestamp is 412 s in the past; tolerance is 300 s"
        );
        assert_eq!(
            VerifyError::MissingHeader {
                header: "webhook-id",
                also_tried: Some("svix-id")
            }
            .to_string(),
            "the webhook-id header is missing (and there is no svix-id header)"
        );
        assert_eq!(
            VerifyError::NoMatchingSignature {
                signatures: 1,
                keys: 2
            }
            .to_string(),
            "no signature matched (checked 1 signature against 2 keys): wrong secret, or the \
             body was changed after signing"
        );
    }
}
