//! The TLS client configurations deliveries use: the system's trust store (webpki's Mozilla
//! bundle where the system has none), plus an endpoint's own CA and client certificate, or —
//! named as what it is — no verification at all.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::model::TlsSettings;

/// The system's roots, read once. A machine without a trust store (a bare container) gets
/// webpki's bundle rather than no roots at all.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system trust store found; using the webpki root bundle");
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for an endpoint's TLS settings (`None`: the system's roots).
/// Errors only for settings that were never checked (`TlsSettings::check` runs at save).
pub fn client_config(tls: Option<&TlsSettings>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let Some(tls) = tls else {
        return Ok(builder
            .with_root_certificates(system_roots().clone())
            .with_no_client_auth());
    };
    let verified = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = system_roots().clone();
        for ca in tls.ca_certs()? {
            roots.add(ca).map_err(|e| format!("tls.ca_pem: {e}"))?;
        }
        builder.with_root_certificates(roots)
    };
    match tls.client_auth()? {
        None => Ok(verified.with_no_client_auth()),
        Some((chain, key)) => verified
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("tls.client_cert_pem: {e}")),
    }
}

/// `insecure_skip_verify`: accepts any certificate for any name, but still checks that the
/// handshake was signed by the certificate's key (so the connection is at least encrypted
/// to whoever holds that key).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS failure in words an operator acts on: which check failed, not rustls's enum name.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    let why = match e {
        Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the receiver's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the receiver's certificate is not valid yet".to_owned()
            }
            CertificateError::UnknownIssuer => {
                "the receiver's certificate is signed by an unknown issuer (not in the system's \
                 roots nor the endpoint's tls.ca_pem)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the receiver's certificate is not valid for the endpoint's host name".to_owned()
            }
            CertificateError::Revoked => "the receiver's certificate is revoked".to_owned(),
            CertificateError::BadSignature => {
                "the receiver's certificate has a bad signature".to_owned()
            }
            other => format!("the receiver's certificate was refused: {other:?}"),
        },
        Error::AlertReceived(alert) => format!("the receiver refused the handshake ({alert:?})"),
        other => other.to_string(),
    };
    format!("TLS: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_build_for_each_kind_of_setting() {
        client_config(None).unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = TlsSettings {
            ca_pem: Some(c.cert.pem()),
            client_cert_pem: Some(c.cert.pem()),
            client_key_pem: Some(c.signing_key.serialize_pem()),
            insecure_skip_verify: false,
        };
        let cfg = client_config(Some(&tls)).unwrap();
        assert!(cfg.client_auth_cert_resolver.has_certs());
        let insecure = TlsSettings {
            insecure_skip_verify: true,
            ..Default::default()
        };
        client_config(Some(&insecure)).unwrap();
    }

    #[test]
    fn failures_are_explained() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(explain(&e).contains("unknown issuer"));
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(explain(&e).contains("expired"));
    }
}
