//! How the dashboard and the portal present the product: a name, a logo and an accent
//! colour, set for the whole server (configuration) and overridable per tenant (the API), so
//! a SaaS team's customers see their product in the portal. One set of rules for both.

use serde::{Deserialize, Serialize};

/// The longest product name shown in a page's banner and title.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest logo URL kept.
pub const MAX_LOGO_URL_BYTES: usize = 2048;

/// A tenant's branding; each part absent falls back to the server's.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    /// The product name (at most 64 characters).
    pub name: Option<String>,
    /// An `https://` URL of a logo shown beside the name.
    pub logo_url: Option<String>,
    /// The accent colour, `#rgb` or `#rrggbb`.
    pub accent: Option<String>,
}

impl Branding {
    /// Checks every part, and drops empty ones (an empty string means "the server's").
    pub fn checked(self) -> Result<Self, String> {
        let keep = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let b = Self {
            name: keep(self.name),
            logo_url: keep(self.logo_url),
            accent: keep(self.accent),
        };
        if let Some(n) = &b.name {
            check_name(n)?;
        }
        if let Some(l) = &b.logo_url {
            check_logo_url(l)?;
        }
        if let Some(a) = &b.accent {
            check_accent(a)?;
        }
        Ok(b)
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.logo_url.is_none() && self.accent.is_none()
    }
}

pub fn check_name(n: &str) -> Result<(), String> {
    if n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
        return Err(format!(
            "name must be at most {MAX_NAME_CHARS} characters, without control characters"
        ));
    }
    Ok(())
}

/// An `https://` URL that can sit in an `src` attribute as it is: the pages are served with
/// a strict CSP, so `img-src` allows `https:` and nothing that could smuggle markup.
pub fn check_logo_url(l: &str) -> Result<(), String> {
    let ok = l.len() <= MAX_LOGO_URL_BYTES
        && l.starts_with("https://")
        && l.len() > "https://".len()
        && !l.contains(['"', '\'', '<', '>', ' ', '\\'])
        && !l.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(format!("logo_url {l:?} must be an https:// URL"))
    }
}

/// `#rgb` or `#rrggbb`: the only colours the brand stylesheet is ever built from.
pub fn check_accent(a: &str) -> Result<(), String> {
    let hex = a.strip_prefix('#').unwrap_or("");
    if matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("accent {a:?} must be #rgb or #rrggbb"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_parts_fall_back_and_bad_ones_are_refused() {
        let b = Branding {
            name: Some(" ".into()),
            logo_url: Some(String::new()),
            accent: Some("#0a0".into()),
        }
        .checked()
        .unwrap();
        assert_eq!(b.name, None);
        assert_eq!(b.logo_url, None);
        assert_eq!(b.accent.as_deref(), Some("#0a0"));
        for bad in [
            Branding {
                accent: Some("red".into()),
                ..Default::default()
            },
            Branding {
                accent: Some("#12345".into()),
                ..Default::default()
            },
            Branding {
                logo_url: Some("http://x/logo.png".into()),
                ..Default::default()
            },
            Branding {
                logo_url: Some("https://x/\"onerror=\"x".into()),
                ..Default::default()
            },
            Branding {
                name: Some("x".repeat(65)),
                ..Default::default()
            },
            Branding {
                name: Some("a\nb".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.clone().checked().is_err(), "{bad:?}");
        }
    }
}
