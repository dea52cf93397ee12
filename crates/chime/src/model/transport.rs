//! How chime reaches an endpoint beyond its URL: whom it trusts over TLS (an extra CA, a
//! client certificate for mutual TLS, or, named as what it is, no verification), how it
//! authenticates (HTTP basic, OAuth2 client credentials) and which egress proxy it leaves
//! through. Parsed and checked once, at the API edge; the dispatcher builds its clients from
//! the checked values.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The largest PEM text kept for a CA bundle or a client certificate chain.
pub const MAX_PEM_BYTES: usize = 64 * 1024;
/// The longest credential (user name, password, client id or secret, scope, audience).
pub const MAX_CREDENTIAL_BYTES: usize = 1024;

/// TLS beyond the system's trust store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificates trusted for this endpoint besides the system roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// PEM certificate chain presented to the receiver (mutual TLS); needs the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate. Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    /// Accept any certificate and host name. Never silent: the endpoint's view and the log
    /// say so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl TlsSettings {
    /// The extra trusted certificates (none when there is no `ca_pem`).
    pub fn ca_certs(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        match &self.ca_pem {
            None => Ok(Vec::new()),
            Some(pem) => certs("tls.ca_pem", pem),
        }
    }

    /// The client certificate chain and its key, when mutual TLS is set.
    #[allow(clippy::type_complexity)]
    pub fn client_auth(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
        match (&self.client_cert_pem, &self.client_key_pem) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let chain = certs("tls.client_cert_pem", cert)?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
                    format!(
                        "tls.client_key_pem: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
                    )
                })?;
                Ok(Some((chain, key)))
            }
            _ => Err("tls.client_cert_pem and tls.client_key_pem go together".into()),
        }
    }

    /// Everything a save must refuse: PEM that does not parse, a key that does not match its
    /// certificate, oversized texts.
    pub fn check(&self) -> Result<(), String> {
        for (field, v) in [
            ("tls.ca_pem", &self.ca_pem),
            ("tls.client_cert_pem", &self.client_cert_pem),
            ("tls.client_key_pem", &self.client_key_pem),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > MAX_PEM_BYTES) {
                return Err(format!("{field} is longer than {MAX_PEM_BYTES} bytes"));
            }
        }
        self.ca_certs()?;
        if let Some((chain, key)) = self.client_auth()? {
            let provider = rustls::crypto::ring::default_provider();
            let signing = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| format!("tls.client_key_pem: unusable key: {e}"))?;
            rustls::sign::CertifiedKey::new(chain, signing)
                .keys_match()
                .map_err(|e| {
                    format!("tls.client_key_pem does not match tls.client_cert_pem: {e}")
                })?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn certs(field: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{field}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{field}: no certificate (-----BEGIN CERTIFICATE-----) in it"
        ));
    }
    // Parsing each as a trust anchor reads its X.509 structure.
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("{field}: a certificate does not parse: {e}"))?;
    }
    Ok(certs)
}

/// How chime authenticates to the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointAuth {
    /// `Authorization: Basic …` on every attempt.
    Basic { username: String, password: String },
    /// A bearer token from the OAuth2 token endpoint (client credentials grant), cached until
    /// shortly before it expires and fetched again after a 401.
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
    },
}

impl EndpointAuth {
    /// Lengths and characters; the token URL is checked by the caller like the endpoint's own
    /// (same rules, same SSRF guard).
    pub fn check(&self) -> Result<(), String> {
        let fields: Vec<(&str, &str)> = match self {
            Self::Basic { username, password } => {
                if username.contains(':') {
                    return Err("auth.username must not contain ':' (RFC 7617)".into());
                }
                vec![("auth.username", username), ("auth.password", password)]
            }
            Self::Oauth2ClientCredentials {
                client_id,
                client_secret,
                scope,
                audience,
                ..
            } => {
                let mut v = vec![
                    ("auth.client_id", client_id.as_str()),
                    ("auth.client_secret", client_secret.as_str()),
                ];
                v.extend(scope.as_deref().map(|s| ("auth.scope", s)));
                v.extend(audience.as_deref().map(|s| ("auth.audience", s)));
                v
            }
        };
        for (field, value) in fields {
            if value.is_empty() && field != "auth.password" {
                return Err(format!("{field} must not be empty"));
            }
            if value.len() > MAX_CREDENTIAL_BYTES || value.chars().any(char::is_control) {
                return Err(format!(
                    "{field} must be at most {MAX_CREDENTIAL_BYTES} bytes, without control characters"
                ));
            }
        }
        Ok(())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Basic { .. } => "basic",
            Self::Oauth2ClientCredentials { .. } => "oauth2_client_credentials",
        }
    }
}

/// An egress proxy URL: `http://host:port` (CONNECT for https targets, absolute-form for
/// http ones); no credentials in it.
pub fn check_proxy_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("proxy {text:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "proxy {text:?} must be an http:// URL (the proxy is reached in plain HTTP; https targets go through it with CONNECT)"
        ));
    }
    let Some(auth) = uri.authority() else {
        return Err(format!("proxy {text:?} has no host"));
    };
    if auth.as_str().contains('@') {
        return Err(format!(
            "proxy {text:?}: credentials in the URL are not supported"
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("proxy {text:?} must have no path"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn pem_is_parsed_and_keys_must_match_their_certificate() {
        let (cert, key) = made();
        let (_, other_key) = made();
        let ok = TlsSettings {
            ca_pem: Some(cert.clone()),
            client_cert_pem: Some(cert.clone()),
            client_key_pem: Some(key.clone()),
            insecure_skip_verify: false,
        };
        ok.check().unwrap();
        let mismatched = TlsSettings {
            client_key_pem: Some(other_key),
            ..ok.clone()
        };
        assert!(mismatched.check().unwrap_err().contains("does not match"));
        let half = TlsSettings {
            client_key_pem: None,
            ..ok.clone()
        };
        assert!(half.check().unwrap_err().contains("go together"));
        for bad in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let t = TlsSettings {
                ca_pem: Some(bad.into()),
                ..Default::default()
            };
            assert!(t.check().is_err(), "{bad:?}");
        }
        let bad_key = TlsSettings {
            client_key_pem: Some(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
            ),
            ..ok
        };
        assert!(bad_key.check().is_err());
    }

    #[test]
    fn auth_and_proxy_are_checked() {
        let basic: EndpointAuth =
            serde_json::from_str(r#"{"type":"basic","username":"u","password":"p"}"#).unwrap();
        basic.check().unwrap();
        assert!(serde_json::from_str::<EndpointAuth>(r#"{"type":"digest"}"#).is_err());
        let colon = EndpointAuth::Basic {
            username: "a:b".into(),
            password: "p".into(),
        };
        assert!(colon.check().is_err());
        let oauth: EndpointAuth = serde_json::from_str(
            r#"{"type":"oauth2_client_credentials","token_url":"https://id.example/token","client_id":"c","client_secret":"s","scope":"hooks"}"#,
        )
        .unwrap();
        oauth.check().unwrap();
        check_proxy_url("http://127.0.0.1:3128").unwrap();
        for bad in [
            "https://proxy:3128",
            "socks5://p:1",
            "http://u:p@proxy:3128",
            "http://p:1/x",
            "proxy",
        ] {
            assert!(check_proxy_url(bad).is_err(), "{bad}");
        }
    }
}
