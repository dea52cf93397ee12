//! Building a delivery `Target` (URL, signers, headers, limits, TLS, authentication, proxy,
//! or a broker) from an endpoint row.

use std::sync::Arc;

use base64::Engine;

use super::broker::{BrokerTarget, Credentials};
use super::http::{Signer, Target};
use super::oauth::OAuthConfig;
use crate::model::EndpointAuth;
use crate::store::Endpoint;

/// The target an endpoint row describes, or `None` when its URL or secret no longer parse
/// (rows written by an older version); `endpoint_concurrency` is the default cap.
pub fn target_of(row: &Endpoint, endpoint_concurrency: u32) -> Option<Arc<Target>> {
    let uri: ::http::Uri = row.url.parse().ok()?;
    let mut signers = vec![(Signer::parse(&row.secret)?, None)];
    if let (Some(prev), Some(until)) = (&row.previous_secret, row.previous_secret_expires_at)
        && let Some(prev) = Signer::parse(prev)
    {
        signers.push((prev, Some(until)));
    }
    let mut headers = ::http::HeaderMap::new();
    for (name, value) in &row.settings.headers {
        if let (Ok(n), Ok(v)) = (
            ::http::HeaderName::from_bytes(name.as_bytes()),
            ::http::HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    let mut oauth = None;
    let broker = row.settings.destination.clone().map(|destination| {
        let credentials = match &row.settings.auth {
            Some(EndpointAuth::Basic { username, password }) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        Arc::new(BrokerTarget {
            url: uri.clone(),
            credentials,
            destination,
        })
    });
    match &row.settings.auth {
        // A broker's credentials go in its own handshake, above.
        _ if broker.is_some() => {}
        None => {}
        Some(EndpointAuth::Basic { username, password }) => {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut value = ::http::HeaderValue::from_str(&format!("Basic {token}")).ok()?;
            value.set_sensitive(true);
            headers.insert(::http::header::AUTHORIZATION, value);
        }
        Some(EndpointAuth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            audience,
        }) => {
            oauth = Some(Arc::new(OAuthConfig {
                token_url: token_url.parse().ok()?,
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                scope: scope.clone(),
                audience: audience.clone(),
            }));
        }
    }
    let max_in_flight = if row.settings.ordered {
        1
    } else {
        row.settings
            .max_in_flight
            .unwrap_or(endpoint_concurrency)
            .clamp(1, 100)
    };
    Some(Arc::new(Target {
        endpoint_id: Arc::from(row.id.as_str()),
        tenant_id: Arc::from(row.tenant_id.as_str()),
        uri,
        signers,
        headers,
        enabled: row.enabled,
        max_in_flight,
        rate_limit_per_s: row.settings.rate_limit_per_s.filter(|r| *r > 0),
        ordered: row.settings.ordered,
        failing_since: row.failing_since,
        tls: row
            .settings
            .tls
            .clone()
            .filter(|t| !t.is_empty())
            .map(Arc::new),
        proxy: match &row.settings.proxy {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        },
        oauth,
        broker,
        transformation: super::transformed::Spec::of(row),
    }))
}
