//! The delivery's HTTP clients: one for endpoints without TLS or proxy settings of their own
//! (nearly all), and one per distinct pair of (TLS settings, egress proxy), built on first use
//! and kept, each with its own pool of kept-alive connections. Two endpoints never share a
//! client whose settings differ, so one's client certificate is never presented to the
//! other's receiver.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

use super::http::GuardedResolver;
use super::proxy::{NoProxy, ProxyConnector};
use crate::model::TlsSettings;

type Direct = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;
type ViaProxy = hyper_rustls::HttpsConnector<ProxyConnector>;

/// Most clients with settings of their own kept at once; past it one is dropped (with its
/// idle connections) to make room.
const MAX_CUSTOM: usize = 1024;

#[derive(Clone)]
pub enum AnyClient {
    Direct(Client<Direct, Full<Bytes>>),
    ViaProxy(Client<ViaProxy, Full<Bytes>>),
}

impl AnyClient {
    pub fn request(&self, req: http::Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Self::Direct(c) => c.request(req),
            Self::ViaProxy(c) => c.request(req),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tls: Option<Arc<TlsSettings>>,
    proxy: Option<http::Uri>,
}

pub struct Clients {
    resolver: GuardedResolver,
    connect_timeout: Duration,
    /// The server's egress proxy (`egress_proxy`) and the hosts that bypass it.
    egress: Option<http::Uri>,
    no_proxy: NoProxy,
    plain: AnyClient,
    custom: Mutex<HashMap<Key, AnyClient>>,
}

impl Clients {
    pub fn new(
        resolver: GuardedResolver,
        connect_timeout: Duration,
        egress: Option<http::Uri>,
        no_proxy: NoProxy,
    ) -> Self {
        let plain = build(&resolver, connect_timeout, None, None)
            .expect("the default TLS configuration builds");
        Self {
            resolver,
            connect_timeout,
            egress,
            no_proxy,
            plain,
            custom: Mutex::default(),
        }
    }

    /// The proxy an attempt to `host` leaves through: the endpoint's own, else the server's
    /// unless `host` is listed in `egress_no_proxy`.
    pub fn proxy_for(&self, own: Option<&http::Uri>, host: &str) -> Option<http::Uri> {
        own.cloned().or_else(|| {
            self.egress
                .clone()
                .filter(|_| !self.no_proxy.bypasses(host))
        })
    }

    /// The client for these settings; an error only for settings never checked at save.
    /// The plain one is lent, not cloned: nearly every attempt takes it.
    pub fn client(
        &self,
        tls: Option<&Arc<TlsSettings>>,
        proxy: Option<&http::Uri>,
    ) -> Result<Cow<'_, AnyClient>, String> {
        if tls.is_none() && proxy.is_none() {
            return Ok(Cow::Borrowed(&self.plain));
        }
        let key = Key {
            tls: tls.cloned(),
            proxy: proxy.cloned(),
        };
        if let Some(c) = self.custom.lock().expect("clients").get(&key) {
            return Ok(Cow::Owned(c.clone()));
        }
        let built = build(
            &self.resolver,
            self.connect_timeout,
            tls.map(|t| t.as_ref()),
            proxy,
        )?;
        if tls.is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(
                "a delivery client without certificate verification was built \
                 (an endpoint has tls.insecure_skip_verify)"
            );
        }
        let mut custom = self.custom.lock().expect("clients");
        if custom.len() >= MAX_CUSTOM
            && let Some(k) = custom.keys().next().cloned()
        {
            custom.remove(&k);
        }
        Ok(Cow::Owned(custom.entry(key).or_insert(built).clone()))
    }

    pub fn resolver(&self) -> &GuardedResolver {
        &self.resolver
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

fn build(
    resolver: &GuardedResolver,
    connect_timeout: Duration,
    tls: Option<&TlsSettings>,
    proxy: Option<&http::Uri>,
) -> Result<AnyClient, String> {
    let config = super::tls::client_config(tls)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2();
    let builder = || {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(90));
        b
    };
    Ok(match proxy {
        None => {
            let mut http = HttpConnector::new_with_resolver(resolver.clone());
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(connect_timeout));
            AnyClient::Direct(builder().build(https.wrap_connector(http)))
        }
        Some(p) => AnyClient::ViaProxy(builder().build(https.wrap_connector(ProxyConnector {
            proxy: p.clone(),
            resolver: resolver.clone(),
            connect_timeout,
        }))),
    })
}
