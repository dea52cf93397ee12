//! OAuth2 client-credentials tokens for endpoints that want `Authorization: Bearer …`:
//! fetched from the endpoint's token URL, cached per endpoint until shortly before they
//! expire, fetched again after the receiver answers 401. One fetch at a time per endpoint,
//! so a burst of attempts does not become a burst of token requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

/// The most of a token answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// Without `expires_in`, a token is used for this long.
const DEFAULT_LIFE: Duration = Duration::from_secs(3600);

/// One endpoint's client-credentials settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OAuthConfig {
    pub token_url: http::Uri,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone)]
struct Cached {
    config: Arc<OAuthConfig>,
    bearer: http::HeaderValue,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// The tokens of every endpoint, by endpoint id.
#[derive(Default)]
pub struct Tokens {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
}

/// Sends the token request; the delivery client's own (guarded, proxied) connection.
pub trait TokenTransport {
    fn post_form(
        &self,
        url: &http::Uri,
        authorization: http::HeaderValue,
        body: String,
    ) -> impl std::future::Future<Output = Result<(u16, Bytes), String>> + Send;
}

impl Tokens {
    fn slot(&self, endpoint: &Arc<str>) -> Slot {
        self.slots
            .lock()
            .expect("token slots")
            .entry(endpoint.clone())
            .or_default()
            .clone()
    }

    /// The `Authorization` value for `endpoint`: the cached token unless it is near its end,
    /// `stale` (the receiver just refused it) or was fetched with other settings.
    pub async fn bearer(
        &self,
        endpoint: &Arc<str>,
        config: &Arc<OAuthConfig>,
        stale: Option<&http::HeaderValue>,
        transport: &impl TokenTransport,
    ) -> Result<http::HeaderValue, String> {
        let slot = self.slot(endpoint);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.config == *config
            && c.refresh_at > Instant::now()
            && stale != Some(&c.bearer)
        {
            return Ok(c.bearer.clone());
        }
        let (bearer, life) = fetch(config, transport).await?;
        // Refresh a little before the end: a tenth of the life, at most a minute.
        let margin = (life / 10).min(Duration::from_secs(60));
        *cached = Some(Cached {
            config: config.clone(),
            bearer: bearer.clone(),
            refresh_at: Instant::now() + life.saturating_sub(margin),
        });
        Ok(bearer)
    }

    /// Forgets an endpoint's token (the endpoint changed or was deleted).
    pub fn forget(&self, endpoint: &str) {
        self.slots.lock().expect("token slots").remove(endpoint);
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token request of RFC 6749 §4.4, the client authenticated with HTTP Basic (§2.3.1).
async fn fetch(
    c: &OAuthConfig,
    transport: &impl TokenTransport,
) -> Result<(http::HeaderValue, Duration), String> {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        enc(&c.client_id),
        enc(&c.client_secret)
    ));
    let authorization = http::HeaderValue::from_str(&format!("Basic {basic}"))
        .map_err(|e| format!("token request: {e}"))?;
    let form = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(s) = &c.scope {
            form.append_pair("scope", s);
        }
        if let Some(a) = &c.audience {
            form.append_pair("audience", a);
        }
        form.finish()
    };
    let (status, body) = transport
        .post_form(&c.token_url, authorization, form)
        .await?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!(
            "the token endpoint answered {status}: {}",
            text.trim()
        ));
    }
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|e| format!("the token endpoint's answer is not a token: {e}"))?;
    if let Some(t) = &answer.token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "the token endpoint gave a {t:?} token, not a bearer token"
        ));
    }
    let bearer = http::HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
        .map_err(|_| "the access token holds characters a header cannot carry".to_owned())?;
    let life = answer
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFE);
    Ok((bearer, life))
}

/// Reads a token answer, at most `MAX_TOKEN_ANSWER` bytes.
pub async fn read_answer(body: hyper::body::Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_TOKEN_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("reading the token answer: {e}"))
}

/// The form body as a request body.
pub fn form_body(body: String) -> Full<Bytes> {
    Full::new(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Fake {
        calls: AtomicU32,
        answer: (u16, &'static str),
    }

    impl TokenTransport for Fake {
        async fn post_form(
            &self,
            _url: &http::Uri,
            authorization: http::HeaderValue,
            body: String,
        ) -> Result<(u16, Bytes), String> {
            assert!(authorization.to_str().unwrap().starts_with("Basic "));
            assert!(body.starts_with("grant_type=client_credentials"));
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok((self.answer.0, Bytes::from_static(self.answer.1.as_bytes())))
        }
    }

    fn config() -> Arc<OAuthConfig> {
        Arc::new(OAuthConfig {
            token_url: "https://id.example/token".parse().unwrap(),
            client_id: "c".into(),
            client_secret: "s:é".into(),
            scope: Some("hooks".into()),
            audience: None,
        })
    }

    #[tokio::test]
    async fn tokens_are_cached_refreshed_when_stale_and_errors_explained() {
        let t = Tokens::default();
        let ep: Arc<str> = Arc::from("ep_1");
        let fake = Fake {
            calls: AtomicU32::new(0),
            answer: (
                200,
                r#"{"access_token":"abc","token_type":"Bearer","expires_in":3600}"#,
            ),
        };
        let b = t.bearer(&ep, &config(), None, &fake).await.unwrap();
        assert_eq!(b, "Bearer abc");
        t.bearer(&ep, &config(), None, &fake).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "cached");
        t.bearer(&ep, &config(), Some(&b), &fake).await.unwrap();
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "refused: fetched again"
        );
        let refused = Fake {
            calls: AtomicU32::new(0),
            answer: (401, r#"{"error":"invalid_client"}"#),
        };
        let e = t
            .bearer(&Arc::from("ep_2"), &config(), None, &refused)
            .await;
        assert!(e.unwrap_err().contains("answered 401"));
        let mac = Fake {
            calls: AtomicU32::new(0),
            answer: (200, r#"{"access_token":"abc","token_type":"mac"}"#),
        };
        let e = t.bearer(&Arc::from("ep_3"), &config(), None, &mac).await;
        assert!(e.unwrap_err().contains("not a bearer"));
    }
}
