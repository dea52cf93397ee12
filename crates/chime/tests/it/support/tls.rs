//! TLS for tests: a certificate authority made in the test (rcgen), leaf and client
//! certificates it signs (or an expired one), and an HTTPS receiver on 127.0.0.1:0 that
//! records what it gets and may require a client certificate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;

/// A test CA.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `names`, valid now, or one that expired yesterday.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Pem {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        let now = time::OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - time::Duration::days(30);
            params.not_after = now - time::Duration::days(1);
        } else {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(30);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// One request as the HTTPS receiver got it.
#[derive(Debug, Clone)]
pub struct TlsReceived {
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<TlsReceived>>,
    arrived: Notify,
}

/// An HTTPS receiver answering 200 to every POST.
pub struct TlsReceiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl TlsReceiver {
    /// Serves `server` (its chain and key); with `client_ca`, requires a client certificate
    /// that CA signed.
    pub async fn start(server: &Pem, client_ca: Option<&str>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(server.cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
        // A receiver that requires a client certificate speaks TLS 1.2, where its verdict on
        // the certificate is part of the handshake. In TLS 1.3 the client's handshake is over
        // before the server judges its certificate, and the refusal reaches the client as a
        // closed connection or as an alert, depending on timing: the test of a missing
        // certificate would then see either a protocol or a TLS failure.
        let versions: &[&rustls::SupportedProtocolVersion] = match client_ca {
            Some(_) => &[&rustls::version::TLS12],
            None => rustls::DEFAULT_VERSIONS,
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let config = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        }
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, inner) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    // A refused handshake (the client's choice or ours) just ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let inner = inner.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                inner.received.lock().unwrap().push(TlsReceived {
                                    headers: parts.headers,
                                    body,
                                });
                                inner.arrived.notify_waiters();
                                Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, inner }
    }

    /// `https://<host>:<port><path>`; `host` must resolve to 127.0.0.1 (`localhost`).
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    pub fn received(&self) -> Vec<TlsReceived> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (20 s at most).
    pub async fn wait_count(&self, n: usize) -> Vec<TlsReceived> {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                panic!("the HTTPS receiver got {} requests, not {n}", got.len());
            }
        }
    }
}
