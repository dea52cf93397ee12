//! The dashboard and the portal over plain HTTP, where no browser is needed: session cookie
//! flags, the CSP on every page, CSRF on every form, one-time and expiring links, sign-out,
//! read-only sessions, and that a portal session never reaches another tenant whatever URL,
//! id or form field is edited. (The browser tests are in `ui_browser.rs`.)

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Opts, Receiver, TestServer, on_both_backends};

/// A browser without a browser: one cookie jar (name → value) and no redirects followed.
pub struct Visitor {
    http: reqwest::Client,
    base: String,
    pub cookies: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let at = self
            .text
            .find(r#"name="csrf" value=""#)
            .expect("a form with a CSRF token");
        let rest = &self.text[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Visitor {
    pub fn new(server: &TestServer) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: server.base.clone(),
            cookies: vec![],
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, res: reqwest::Response) -> Page {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        Page {
            status,
            headers,
            text: res.text().await.unwrap(),
        }
    }

    /// `path` may be a whole URL (a link the API handed out).
    pub async fn get(&mut self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let res = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(fields)
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }
}

pub async fn portal_link(server: &TestServer, tenant: &str, body: Value) -> String {
    let (s, b) = server
        .admin(
            "POST",
            &format!("/v1/tenants/{tenant}/portal-sessions"),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["expires_at"].is_string());
    b["url"].as_str().unwrap().to_owned()
}

pub async fn dashboard_link(server: &TestServer) -> String {
    let (s, b) = server.admin("POST", "/v1/dashboard-links", None).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["url"].as_str().unwrap().to_owned()
}

/// A visitor signed in to the dashboard as the admin.
pub async fn admin_visitor(server: &TestServer) -> Visitor {
    let mut v = Visitor::new(server);
    let link = dashboard_link(server).await;
    assert_eq!(v.get(&link).await.status, 200);
    v
}

fn assert_strict_csp(p: &Page, ancestors: &str) {
    let csp = p.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        csp.contains(&format!("frame-ancestors {ancestors}")),
        "{csp}"
    );
    assert_eq!(p.header("x-content-type-options"), "nosniff");
    assert_eq!(p.header("referrer-policy"), "no-referrer");
}

/// Tenants `alpha` and `bravo`, an endpoint each on a receiver, one event each delivered.
pub struct TwoTenants {
    pub _dir: tempfile::TempDir,
    pub server: TestServer,
    pub rx: Receiver,
    pub a_endpoint: String,
    pub b_endpoint: String,
    pub a_delivery: String,
    pub b_delivery: String,
}

pub async fn two_tenants(opts: Opts) -> TwoTenants {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), opts).await;
    let rx = Receiver::start().await;
    let mut made = vec![];
    for t in ["alpha", "bravo"] {
        server.create_tenant(t).await;
        let (ep, _) = server
            .create_endpoint(t, &rx.url(&format!("/{t}-hook")), json!(["*"]))
            .await;
        let published = server.publish(t, "order.created", json!({"n": 1})).await;
        let delivery = published["deliveries"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        server.wait_status(t, &delivery, "succeeded").await;
        made.push((ep, delivery));
    }
    let (b_endpoint, b_delivery) = made.pop().unwrap();
    let (a_endpoint, a_delivery) = made.pop().unwrap();
    TwoTenants {
        _dir: dir,
        server,
        rx,
        a_endpoint,
        b_endpoint,
        a_delivery,
        b_delivery,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_http_only_strict_and_every_page_has_the_csp() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let mut v = Visitor::new(&server);
    // Not signed in: to the sign-in page, which has the CSP too.
    let p = v.get("/ui").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.header("location"), "/ui/login");
    let login = v.get("/ui/login").await;
    assert_eq!(login.status, 200);
    assert_strict_csp(&login, "'none'");
    assert_eq!(login.header("x-frame-options"), "DENY");

    let link = dashboard_link(&server).await;
    assert!(
        link.starts_with(&format!("{}/ui/link?token=", server.base)),
        "{link}"
    );
    let p = v.get(&link).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let cookie = p
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("chime_session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/ui"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    for path in [
        "/ui",
        "/ui/tenants",
        "/ui/event-types",
        "/ui/t/_chime/deliveries",
        "/ui/t/_chime",
        "/ui/t/_chime/events",
        "/ui/t/_chime/replay",
        "/ui/api",
        "/ui/replay-nowhere",
    ] {
        let p = v.get(path).await;
        assert!(p.status == 200 || p.status == 404, "{path}: {}", p.status);
        assert_strict_csp(&p, "'none'");
        assert!(!p.text.contains("<script>"), "{path} has an inline script");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_post_needs_its_sessions_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let mut v = admin_visitor(&server).await;
    let mut other = admin_visitor(&server).await;
    let token = v.get("/ui/tenants").await.csrf();
    let others = other.get("/ui/tenants").await.csrf();
    assert_ne!(token, others);
    for fields in [
        vec![("id", "t1")],
        vec![("id", "t1"), ("csrf", "")],
        vec![("id", "t1"), ("csrf", "AAAA")],
        vec![("id", "t1"), ("csrf", others.as_str())],
    ] {
        let p = v.post("/ui/tenants", &fields).await;
        assert_eq!(p.status, 403, "{fields:?}");
    }
    let (s, _) = server.admin("GET", "/v1/tenants/t1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a refused form changed nothing");
    let p = v
        .post("/ui/tenants", &[("id", "t1"), ("csrf", &token)])
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    assert_eq!(p.header("location"), "/ui/t/t1");
    let (s, _) = server.admin("GET", "/v1/tenants/t1", None).await;
    assert_eq!(s, StatusCode::OK);
    // Sign-out needs it too, and then the session is over.
    assert_eq!(v.post("/ui/logout", &[]).await.status, 403);
    let old = v.cookies.clone();
    assert_eq!(v.post("/ui/logout", &[("csrf", &token)]).await.status, 303);
    v.cookies = old;
    assert_eq!(
        v.get("/ui/tenants").await.status,
        303,
        "a signed-out cookie is refused"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_form_takes_a_token_once_per_form() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    server.create_tenant("alpha").await;
    let (_, t) = server.admin("POST", "/v1/tenants/alpha/tokens", None).await;
    let tenant_token = t["token"].as_str().unwrap();
    let mut v = Visitor::new(&server);
    let form = v.get("/ui/login").await;
    let csrf = form.csrf();
    // Without the form's nonce cookie the token is not even looked at.
    let mut stranger = Visitor::new(&server);
    let p = stranger
        .post("/ui/login", &[("csrf", &csrf), ("token", tenant_token)])
        .await;
    assert_eq!(p.status, 403);
    let p = v
        .post("/ui/login", &[("csrf", &csrf), ("token", "wrong")])
        .await;
    assert_eq!(p.status, 401);
    let p = v
        .post("/ui/login", &[("csrf", &csrf), ("token", tenant_token)])
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    // A tenant's dashboard session sees its tenant, not the others or the tenant list.
    assert_eq!(v.get("/ui/t/alpha").await.status, 200);
    assert_eq!(v.get("/ui/t/_chime").await.status, 403);
    assert_eq!(v.get("/ui/tenants").await.status, 403);
    server.stop().await;
}

async fn links_work_once_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    server.create_tenant("alpha").await;
    for bad in [json!({"expires_in_s": 0}), json!({"expires_in_s": 604801})] {
        let (s, _) = server
            .admin("POST", "/v1/tenants/alpha/portal-sessions", Some(bad))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (s, _) = server
        .admin("POST", "/v1/tenants/nobody/portal-sessions", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let link = portal_link(&server, "alpha", json!({})).await;
    let mut v = Visitor::new(&server);
    let p = v.get(&link).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(
        p.set_cookies()
            .iter()
            .any(|c| c.starts_with("chime_portal=")
                && c.contains("HttpOnly")
                && c.contains("Path=/portal"))
    );
    assert_eq!(v.get("/portal/t/alpha").await.status, 200);
    // Used: refused, for anyone.
    let mut again = Visitor::new(&server);
    let p = again.get(&link).await;
    assert_eq!(p.status, 410);
    assert!(p.text.contains("used already"), "{}", p.text);
    assert!(again.cookies.is_empty());
    // A portal link does not open the dashboard, nor the reverse.
    let link = portal_link(&server, "alpha", json!({})).await;
    let p = again.get(&link.replace("/portal/link", "/ui/link")).await;
    assert_eq!(p.status, 403);
    // Tampered: refused.
    let link = portal_link(&server, "alpha", json!({})).await;
    let p = again.get(&format!("{link}x")).await;
    assert_eq!(p.status, 410);
    // Expired: refused.
    let link = portal_link(&server, "alpha", json!({"expires_in_s": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let p = again.get(&link).await;
    assert_eq!(p.status, 410);
    assert!(p.text.contains("expired"), "{}", p.text);
    // The session of a short link ends with the link.
    let link = portal_link(&server, "alpha", json!({"expires_in_s": 1})).await;
    let mut brief = Visitor::new(&server);
    assert_eq!(brief.get(&link).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(brief.get("/portal/t/alpha").await.status, 401);
    server.stop().await;
}

async fn a_portal_session_never_reaches_another_tenant() {
    let two = two_tenants(Opts::default()).await;
    let (server, b_endpoint, b_delivery) = (
        &two.server,
        two.b_endpoint.as_str(),
        two.b_delivery.as_str(),
    );
    let mut v = Visitor::new(server);
    let link = portal_link(server, "alpha", json!({})).await;
    assert_eq!(v.get(&link).await.status, 200);
    let home = v.get("/portal").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.header("location"), "/portal/t/alpha");
    let page = v.get("/portal/t/alpha").await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains(&two.a_endpoint),
        "its own endpoint is listed"
    );
    let own = v
        .get(&format!("/portal/t/alpha/deliveries/{}", two.a_delivery))
        .await;
    assert_eq!(own.status, 200, "its own delivery and attempts are shown");
    assert!(own.text.contains("Attempts"));
    assert!(!page.text.contains(b_endpoint));
    assert_strict_csp(&page, "'none'");
    let csrf = page.csrf();
    // Edited URLs: the other tenant, its endpoint and delivery under our tenant, encoded ids.
    for (path, status) in [
        ("/portal/t/bravo".to_owned(), 403),
        ("/portal/t/bravo/deliveries".to_owned(), 403),
        (format!("/portal/t/bravo/endpoints/{b_endpoint}"), 403),
        (format!("/portal/t/alpha/endpoints/{b_endpoint}"), 404),
        (format!("/portal/t/alpha/deliveries/{b_delivery}"), 404),
        (format!("/portal/t/bravo/deliveries/{b_delivery}"), 403),
        ("/portal/t/alpha%2F..%2Fbravo".to_owned(), 403),
        ("/portal/t/bravo/deliveries/live".to_owned(), 403),
        ("/portal/tenants".to_owned(), 404),
        (
            "/portal/t/alpha/deliveries?endpoint=".to_owned() + b_endpoint,
            200,
        ),
    ] {
        let p = v.get(&path).await;
        assert_eq!(p.status, status, "{path}");
        assert!(
            !p.text.contains(b_delivery),
            "{path} shows bravo's delivery"
        );
    }
    // Edited forms: the other tenant's endpoint or tenant in the URL or the fields.
    let posts = [
        format!("/portal/t/bravo/endpoints/{b_endpoint}/delete"),
        format!("/portal/t/alpha/endpoints/{b_endpoint}/delete"),
        format!("/portal/t/alpha/endpoints/{b_endpoint}/disable"),
        format!("/portal/t/alpha/endpoints/{b_endpoint}/reveal"),
        format!("/portal/t/bravo/deliveries/{b_delivery}/retry"),
        format!("/portal/t/alpha/deliveries/{b_delivery}/retry"),
        "/portal/t/bravo/endpoints".to_owned(),
        "/portal/t/bravo/replay".to_owned(),
    ];
    for path in &posts {
        let p = v
            .post(
                path,
                &[
                    ("csrf", &csrf),
                    ("confirm", "yes"),
                    ("url", "http://127.0.0.1:9/x"),
                ],
            )
            .await;
        assert!(p.status == 403 || p.status == 404, "{path}: {}", p.status);
    }
    let p = v
        .post(
            "/portal/t/alpha/replay",
            &[
                ("csrf", &csrf),
                ("endpoint_id", b_endpoint),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(p.status, 200);
    assert!(p.text.contains("0 deliveries"), "{}", p.text);
    let (s, ep) = server
        .admin(
            "GET",
            &format!("/v1/tenants/bravo/endpoints/{b_endpoint}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "bravo's endpoint is still there");
    assert_eq!(ep["enabled"], true);
    // The dashboard's pages do not take the portal's cookie, under either name.
    let portal_cookie = v
        .cookies
        .iter()
        .find(|(k, _)| k == "chime_portal")
        .unwrap()
        .1
        .clone();
    let mut forger = Visitor::new(server);
    forger.cookies = vec![("chime_session".into(), portal_cookie)];
    assert_eq!(forger.get("/ui").await.status, 303);
    two.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_portal_changes_nothing() {
    let two = two_tenants(Opts::default()).await;
    let server = &two.server;
    let mut v = Visitor::new(server);
    let link = portal_link(server, "alpha", json!({"read_only": true})).await;
    assert_eq!(v.get(&link).await.status, 200);
    let page = v.get("/portal/t/alpha").await;
    assert_eq!(page.status, 200);
    assert!(!page.text.contains("Add an endpoint"));
    let csrf = page.csrf();
    let p = v
        .post(
            "/portal/t/alpha/endpoints",
            &[("csrf", &csrf), ("url", "http://127.0.0.1:9/new")],
        )
        .await;
    assert_eq!(p.status, 403);
    let (_, eps) = server
        .admin("GET", "/v1/tenants/alpha/endpoints", None)
        .await;
    assert_eq!(eps["data"].as_array().unwrap().len(), 1);
    // Signing out still works.
    assert_eq!(
        v.post("/portal/logout", &[("csrf", &csrf)]).await.status,
        200
    );
    two.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_may_frame_the_portal() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        portal_frame_ancestors: Some("https://app.example.com http://127.0.0.1:1".into()),
        ..Opts::default()
    };
    let server = TestServer::start(dir.path(), opts).await;
    server.create_tenant("alpha").await;
    let mut v = Visitor::new(&server);
    let link = portal_link(&server, "alpha", json!({})).await;
    let p = v.get(&link).await;
    assert_strict_csp(&p, "https://app.example.com http://127.0.0.1:1");
    assert_eq!(p.header("x-frame-options"), "");
    let mut d = admin_visitor(&server).await;
    assert_strict_csp(&d.get("/ui").await, "'none'");
    server.stop().await;
}

on_both_backends!(
    links_work_once_and_expire,
    a_portal_session_never_reaches_another_tenant
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_settings_are_edited_through_the_apis_rules() {
    let two = two_tenants(Opts::default()).await;
    let server = &two.server;
    let mut v = admin_visitor(server).await;
    let page = format!("/ui/t/alpha/endpoints/{}", two.a_endpoint);
    let api = format!("/v1/tenants/alpha/endpoints/{}", two.a_endpoint);
    let csrf = v.get(&page).await.csrf();
    let url = two.rx.url("/alpha-hook");
    let edit_path = format!("{page}/edit");
    let mut edit = async |rate: &str, filter: &str| {
        let fields = [
            ("csrf", csrf.as_str()),
            ("url", url.as_str()),
            ("more_events", "order.*"),
            ("rate_limit_per_s", rate),
            ("filter", filter),
        ];
        v.post(&edit_path, &fields).await.status
    };
    assert_eq!(edit("5", "$.data[?@.n > 1]").await, 303);
    let got = server.admin("GET", &api, None).await.1;
    assert_eq!(got["rate_limit_per_s"], 5);
    assert_eq!(got["filter"], "$.data[?@.n > 1]");
    assert_eq!(got["events"], json!(["order.*"]));
    // What the API refuses, the form cannot do: a rate out of range, text, a bad filter.
    for (rate, filter) in [("0", ""), ("fast", ""), ("", "$[")] {
        let status = edit(rate, filter).await;
        assert!(status == 422 || status == 400, "{rate} {filter}: {status}");
    }
    let got = server.admin("GET", &api, None).await.1;
    assert_eq!(got["rate_limit_per_s"], 5, "nothing changed");
    // Empty clears.
    assert_eq!(edit("", "").await, 303);
    let got = server.admin("GET", &api, None).await.1;
    assert!(got["rate_limit_per_s"].is_null());
    assert!(got["filter"].is_null());
    two.server.stop().await;
}

/// A tenant's branding (set by the admin through the API) names its portal; the other
/// tenant's portal, the dashboard and the stylesheet take nothing from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_branding_shows_in_its_own_portal() {
    let t = two_tenants(Opts::default()).await;
    let server = &t.server;
    let branding = json!({"branding": {"name": "Alpha Hooks", "accent": "#0a7d38",
        "logo_url": "https://alpha.example/logo.png"}});
    let (s, b) = server
        .admin("PATCH", "/v1/tenants/alpha", Some(branding.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["branding"]["name"], "Alpha Hooks");
    // Only the admin may; bad parts are refused and change nothing.
    let (s, b) = server.admin("POST", "/v1/tenants/alpha/tokens", None).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = b["token"].as_str().unwrap().to_owned();
    let (s, _) = server
        .call("PATCH", "/v1/tenants/alpha", Some(&token), Some(branding))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for bad in [
        json!({"accent": "red;}body{display:none"}),
        json!({"logo_url": "javascript:alert(1)"}),
        json!({"name": "x".repeat(65)}),
        json!({"colour": "#fff"}),
    ] {
        let (s, b) = server
            .admin(
                "PATCH",
                "/v1/tenants/alpha",
                Some(json!({ "branding": bad })),
            )
            .await;
        assert!(s.is_client_error(), "{bad}: {s} {b}");
    }
    let (_, b) = server.admin("GET", "/v1/tenants/alpha", None).await;
    assert_eq!(b["branding"]["accent"], "#0a7d38");

    let mut alpha = Visitor::new(server);
    let link = portal_link(server, "alpha", json!({})).await;
    assert_eq!(alpha.get(&link).await.status, 200);
    let p = alpha.get("/portal/t/alpha").await;
    assert_eq!(p.status, 200);
    assert!(p.text.contains("Alpha Hooks"), "{}", p.text);
    assert!(p.text.contains("brand.css?accent=0a7d38"), "{}", p.text);
    assert!(p.text.contains("https://alpha.example/logo.png"));
    let css = alpha.get("/portal/assets/brand.css?accent=0a7d38").await;
    assert_eq!(css.text, ":root { --accent: #0a7d38; }\n");
    let css = alpha
        .get("/portal/assets/brand.css?accent=0a7d38;}body{display:none")
        .await;
    assert_eq!(css.text, "");

    let mut bravo = Visitor::new(server);
    let link = portal_link(server, "bravo", json!({})).await;
    assert_eq!(bravo.get(&link).await.status, 200);
    let p = bravo.get("/portal/t/bravo").await;
    assert_eq!(p.status, 200);
    assert!(!p.text.contains("Alpha Hooks"), "{}", p.text);
    let mut admin = admin_visitor(server).await;
    assert!(!admin.get("/ui").await.text.contains("Alpha Hooks"));

    // The dashboard's form sets it through the same rules; empty fields clear.
    let csrf = admin.get("/ui/t/alpha").await.csrf();
    let p = admin
        .post(
            "/ui/t/alpha/branding",
            &[
                ("csrf", &csrf),
                ("name", "Alpha Portal"),
                ("accent", ""),
                ("logo_url", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    let (_, b) = server.admin("GET", "/v1/tenants/alpha", None).await;
    assert_eq!(b["branding"], json!({"name": "Alpha Portal"}));
    let p = admin
        .post(
            "/ui/t/alpha/branding",
            &[("csrf", &csrf), ("accent", "blue")],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.text);
    let (_, b) = server.admin("GET", "/v1/tenants/alpha", None).await;
    assert_eq!(b["branding"], json!({"name": "Alpha Portal"}), "unchanged");

    // null goes back to the server's branding.
    let (s, b) = server
        .admin(
            "PATCH",
            "/v1/tenants/alpha",
            Some(json!({"branding": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("branding").is_none(), "{b}");
    t.server.stop().await;
}

/// The catalog's types are edited from the dashboard, through the API's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_type_is_edited_from_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let (s, b) = server
        .admin(
            "POST",
            "/v1/event-types",
            Some(json!({"name": "order.created", "description": "first"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let mut v = admin_visitor(&server).await;
    let page = v.get("/ui/event-types").await;
    assert!(page.text.contains("Save order.created"));
    let csrf = page.csrf();
    let schema = r#"{"type": "object", "required": ["id"]}"#;
    let p = v
        .post(
            "/ui/event-types/order.created/edit",
            &[
                ("csrf", &csrf),
                ("description", "An order"),
                ("schema", schema),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    let (_, b) = server
        .admin("GET", "/v1/event-types/order.created", None)
        .await;
    assert_eq!(b["description"], "An order");
    assert_eq!(b["schema"]["required"], json!(["id"]));
    // Not JSON, or a schema the API refuses: nothing changes.
    for bad in ["{", r#"{"type": 12}"#] {
        let p = v
            .post(
                "/ui/event-types/order.created/edit",
                &[("csrf", &csrf), ("description", "x"), ("schema", bad)],
            )
            .await;
        assert_eq!(p.status, 422, "{bad}: {}", p.text);
    }
    let (_, b) = server
        .admin("GET", "/v1/event-types/order.created", None)
        .await;
    assert_eq!(b["description"], "An order");
    // An emptied schema field removes the schema.
    let p = v
        .post(
            "/ui/event-types/order.created/edit",
            &[("csrf", &csrf), ("description", "An order"), ("schema", "")],
        )
        .await;
    assert_eq!(p.status, 303);
    let (_, b) = server
        .admin("GET", "/v1/event-types/order.created", None)
        .await;
    assert!(b["schema"].is_null(), "{b}");
    server.stop().await;
}

/// The dashboard lists a tenant's sources with their ingest URL and what they refused, in
/// words; the portal has no such page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_sources_show_their_ingest_url_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    server.create_tenant("acme").await;
    let (s, src) = server
        .admin(
            "POST",
            "/v1/tenants/acme/sources",
            Some(json!({"name": "stripe-prod", "verify": {"scheme": "stripe", "secret": "whsec_dashboard"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{src}");
    let ingest = src["ingest_url"].as_str().unwrap();
    let path = &ingest[ingest.find("/in/").unwrap()..];
    let refused = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(r#"{"id":"evt_1","type":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let mut v = admin_visitor(&server).await;
    let page = v.get("/ui/t/acme/sources").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("stripe-prod"), "{}", page.text);
    assert!(page.text.contains(ingest), "the ingest URL is shown");
    assert!(page.text.contains("invalid_signature"), "{}", page.text);
    assert!(
        page.text.to_lowercase().contains("stripe-signature"),
        "the reason, in words: {}",
        page.text
    );
    let portal = portal_link(&server, "acme", json!({})).await;
    let mut p = Visitor::new(&server);
    p.get(&portal).await;
    assert_eq!(p.get("/portal/t/acme/sources").await.status, 404);
    server.stop().await;
}

/// The transformation editor: code tried on a sample before saving (the result, the logs and
/// an error's line shown), saved through the API's rules (code that does not compile is
/// refused and nothing changes), and out of reach of another tenant's portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_is_tried_and_saved_from_the_editor() {
    let two = two_tenants(Opts::default()).await;
    let server = &two.server;
    let mut v = admin_visitor(server).await;
    let page = format!("/ui/t/alpha/endpoints/{}/transformation", two.a_endpoint);
    let api = format!("/v1/tenants/alpha/endpoints/{}", two.a_endpoint);
    let shown = v.get(&page).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(
        shown.text.contains("function handler(webhook)"),
        "a starter"
    );
    let csrf = shown.csrf();
    let code = "function handler(w) { console.log('n is', w.data.n); w.data = { doubled: w.data.n * 2 }; return w; }";
    let tried = v
        .post(
            &format!("{page}/try"),
            &[
                ("csrf", &csrf),
                ("code", code),
                ("enabled", "on"),
                ("event", "order.created"),
                ("data", r#"{"n": 21}"#),
            ],
        )
        .await;
    assert_eq!(tried.status, 200, "{}", tried.text);
    assert!(tried.text.contains("doubled"), "{}", tried.text);
    assert!(tried.text.contains("42"), "{}", tried.text);
    assert!(
        tried.text.contains("n is 21"),
        "the log line: {}",
        tried.text
    );
    // Trying changes nothing stored.
    assert!(server.admin("GET", &api, None).await.1["transformation"].is_null());
    let broken = "function handler(w) {\n  return w.data.x.y;\n}";
    let failed = v
        .post(
            &format!("{page}/try"),
            &[
                ("csrf", &csrf),
                ("code", broken),
                ("event", "order.created"),
                ("data", "{}"),
            ],
        )
        .await;
    assert_eq!(failed.status, 200, "{}", failed.text);
    assert!(failed.text.contains("line 2"), "{}", failed.text);
    // Saved.
    let saved = v
        .post(
            &format!("{page}/save"),
            &[("csrf", &csrf), ("code", code), ("enabled", "on")],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    let got = server.admin("GET", &api, None).await.1;
    assert_eq!(got["transformation"], code);
    assert_eq!(got["transformation_enabled"], true);
    // What does not compile is refused, and the saved code stays.
    let refused = v
        .post(
            &format!("{page}/save"),
            &[
                ("csrf", &csrf),
                ("code", "function handler(w) { return w +; }"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(
        server.admin("GET", &api, None).await.1["transformation"],
        code
    );
    // Another tenant's portal cannot see or change it.
    let portal = portal_link(server, "bravo", json!({})).await;
    let mut p = Visitor::new(server);
    p.get(&portal).await;
    let other = format!(
        "/portal/t/alpha/endpoints/{}/transformation",
        two.a_endpoint
    );
    let seen = p.get(&other).await;
    assert!(seen.status == 403 || seen.status == 404, "{}", seen.status);
    assert!(!seen.text.contains("doubled"));
    two.server.stop().await;
}
