//! The dashboard and the portal in a real Chromium (WebDriver), against the real server:
//! what a person does with them, start to end. Screenshots of every page visited go to
//! `target/ui-screenshots/<test>/`.

use std::time::Duration;

use serde_json::json;

use crate::support::browser::Browser;
use crate::support::{ADMIN, Opts, Receiver, TestServer};
use crate::ui_http::{portal_link, two_tenants};

const LIVE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_sets_up_watches_live_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), Opts::default()).await;
    let rx = Receiver::start().await;
    let mut b = Browser::start("dashboard").await;

    // Sign in with the admin token.
    b.goto(&server.url("/ui")).await;
    b.find("#token").await;
    b.shot("sign-in").await;
    b.fill("#token", ADMIN).await;
    b.click("form.card button").await;
    b.find("h1").await;
    assert_eq!(b.text("h1").await, "Overview");

    // Create a tenant and an endpoint through the pages.
    b.goto(&server.url("/ui/tenants")).await;
    b.fill("#tenant-id", "acme").await;
    b.fill("#tenant-name", "Acme Corp").await;
    b.shot("tenants").await;
    b.click("form.card button").await;
    b.wait_for_text("Endpoints of Acme Corp", LIVE).await;
    b.fill("#url", &rx.url("/hook")).await;
    b.fill("#description", "Acme's order service").await;
    b.fill("#more-events", "order.*").await;
    b.click("#add-endpoint button").await;
    b.wait_for_text("Endpoint added", LIVE).await;
    let secret = b
        .find("#secret")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    b.shot("endpoint-added").await;
    let (_, eps) = server
        .admin("GET", "/v1/tenants/acme/endpoints", None)
        .await;
    assert_eq!(eps["data"][0]["url"], rx.url("/hook"));
    assert_eq!(eps["data"][0]["events"], json!(["order.*"]));

    // The delivery log follows a publish made through the API, without a reload.
    rx.set_default(500);
    b.goto(&server.url("/ui/t/acme/deliveries")).await;
    b.find("#deliveries").await;
    let marker = b
        .client
        .execute(
            "window.chimeMarker = 42; return window.chimeMarker;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(marker, json!(42));
    // Let the page's event stream open before publishing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published = server
        .publish("acme", "order.created", json!({"id": 7}))
        .await;
    let delivery = published["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.wait_for_text(&delivery, LIVE).await;
    // The receiver answers 500: after the retry schedule (20ms, 40ms) it has failed.
    b.wait_for_text(r#"class="status failed""#, LIVE).await;
    let still = b
        .client
        .execute("return window.chimeMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(42), "the page was not reloaded");
    b.shot("deliveries-live").await;

    // Open the failed delivery, see its attempts, retry it.
    b.click("#deliveries a").await;
    b.wait_for_text("Attempts", LIVE).await;
    assert_eq!(b.text("#delivery-status").await, "failed");
    assert!(b.source().await.contains("webhook-id"));
    b.shot("delivery-attempts").await;
    rx.set_default(200);
    b.click("#retry").await;
    let ok = crate::support::eventually(LIVE, || async {
        b.client.refresh().await.ok()?;
        (b.text("#delivery-status").await == "succeeded").then_some(())
    })
    .await;
    assert!(ok.is_some(), "the retried delivery never succeeded");
    b.shot("delivery-retried").await;

    // Eight more deliveries, two of which fail: with the retried one, 7 succeeded and 2
    // failed, as the overview shows.
    for (i, status) in [200, 200, 200, 500, 200, 200, 500, 200]
        .into_iter()
        .enumerate()
    {
        rx.set_default(status);
        let p = server.publish("acme", "order.paid", json!({"n": i})).await;
        let id = p["deliveries"][0]["id"].as_str().unwrap().to_owned();
        let want = if status == 200 { "succeeded" } else { "failed" };
        server.wait_status("acme", &id, want).await;
    }
    b.goto(&server.url("/ui")).await;
    b.find("figure.chart svg").await;
    let page = b.source().await;
    assert!(page.contains("Dead letters"));
    assert!(
        page.contains("succeeded 7") && page.contains("failed 2"),
        "{page}"
    );
    b.shot("overview").await;
    b.quit().await;
    server.stop().await;
}

/// A page on another origin that frames the URL given in `?src=`.
async fn framer() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", l.local_addr().unwrap());
    (l, origin)
}

fn serve_framer(l: tokio::net::TcpListener) {
    use axum::extract::Query;
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(
            |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                axum::response::Html(format!(
                    r#"<!doctype html><title>Customer app</title><h1>Customer app</h1><iframe id="portal" src="{}" width="1100" height="700"></iframe>"#,
                    q.get("src").cloned().unwrap_or_default()
                ))
            },
        ),
    );
    tokio::spawn(async move { axum::serve(l, app).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_shows_one_tenant_once_and_only_where_it_may_be_framed() {
    let (listed, listed_origin) = framer().await;
    let (unlisted, _) = framer().await;
    let opts = Opts {
        portal_frame_ancestors: Some(listed_origin.clone()),
        ..Opts::default()
    };
    let two = two_tenants(opts).await;
    let server = &two.server;
    let (a_ep, b_ep) = (two.a_endpoint.as_str(), two.b_endpoint.as_str());
    let (a_dlv, b_dlv) = (two.a_delivery.as_str(), two.b_delivery.as_str());
    let listed_addr = listed.local_addr().unwrap();
    let unlisted_addr = unlisted.local_addr().unwrap();
    serve_framer(listed);
    serve_framer(unlisted);
    let mut b = Browser::start("portal").await;

    // The link opens alpha's portal: its endpoints and log, nothing of bravo's.
    let link = portal_link(server, "alpha", json!({"expires_in_s": 600})).await;
    b.goto(&link).await;
    b.wait_for_text("Endpoints of alpha", LIVE).await;
    let page = b.source().await;
    assert!(page.contains(a_ep) && page.contains("/alpha-hook"));
    assert!(!page.contains(b_ep) && !page.contains("/bravo-hook"));
    b.shot("portal-endpoints").await;
    b.goto(&server.url("/portal/t/alpha/deliveries")).await;
    b.wait_for_text(a_dlv, LIVE).await;
    assert!(!b.source().await.contains(b_dlv));
    b.shot("portal-deliveries").await;
    b.goto(&server.url(&format!("/portal/t/alpha/deliveries/{a_dlv}")))
        .await;
    b.wait_for_text("Attempts", LIVE).await;
    b.shot("portal-delivery").await;

    // In a narrow window (a phone), nothing is wider than the window.
    b.client.set_window_size(400, 860).await.unwrap();
    b.goto(&server.url("/portal/t/alpha")).await;
    b.find("#add-endpoint").await;
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    b.shot("portal-narrow").await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than the window by {overflow}"
    );
    b.client.set_window_size(1280, 900).await.unwrap();

    // Edited URLs: bravo's tenant, endpoint and delivery are refused.
    for (path, says) in [
        ("/portal/t/bravo".to_owned(), "Forbidden"),
        (format!("/portal/t/bravo/deliveries/{b_dlv}"), "Forbidden"),
        (format!("/portal/t/alpha/endpoints/{b_ep}"), "Not Found"),
        (format!("/portal/t/alpha/deliveries/{b_dlv}"), "Not Found"),
    ] {
        b.goto(&server.url(&path)).await;
        assert_eq!(b.text("h1").await, says, "{path}");
        let page = b.source().await;
        assert!(
            !page.contains("/bravo-hook") && !page.contains("order.created"),
            "{path}"
        );
    }
    b.shot("portal-edited-url-refused").await;

    // The link again: used. An expired link: refused.
    b.goto(&link).await;
    b.wait_for_text("used already", LIVE).await;
    b.shot("portal-link-reused").await;
    let short = portal_link(server, "alpha", json!({"expires_in_s": 1})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.goto(&short).await;
    b.wait_for_text("expired", LIVE).await;
    b.shot("portal-link-expired").await;

    // Framed by the listed origin: the portal shows. By another: Chromium refuses it.
    let framed = portal_link(server, "alpha", json!({})).await;
    b.goto(&format!("http://{listed_addr}/?src={framed}")).await;
    b.find("#portal").await;
    b.client.enter_frame(Some(0)).await.unwrap();
    b.wait_for_text("Endpoints of alpha", LIVE).await;
    b.client.enter_parent_frame().await.unwrap();
    b.shot("portal-framed-by-listed-origin").await;
    let framed = portal_link(server, "alpha", json!({})).await;
    b.goto(&format!("http://{unlisted_addr}/?src={framed}"))
        .await;
    b.find("#portal").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.client.enter_frame(Some(0)).await.unwrap();
    let inside = b.source().await;
    assert!(
        !inside.contains("Endpoints of alpha"),
        "framed by an unlisted origin: {inside}"
    );
    b.client.enter_parent_frame().await.unwrap();
    b.shot("portal-framed-by-unlisted-origin").await;
    b.quit().await;
    two.server.stop().await;
}

/// An operator writes a transformation in the dashboard's editor, runs it on a sample from
/// the keyboard, sees what would be sent, saves it, and the next delivery carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_is_written_tried_and_saved_in_the_editor() {
    let two = two_tenants(Opts::default()).await;
    let server = &two.server;
    let mut b = Browser::start("transformation").await;
    b.goto(&crate::ui_http::dashboard_link(server).await).await;
    b.find("h1").await;
    let page = format!("/ui/t/alpha/endpoints/{}", two.a_endpoint);
    b.goto(&server.url(&page)).await;
    b.click(&format!("a[href$=\"{}/transformation\"]", two.a_endpoint))
        .await;
    b.find("#code").await;
    let code = "function handler(webhook) {\n  console.log('order', webhook.data.n);\n  webhook.data = { text: `Order ${webhook.data.n} is in` };\n  return webhook;\n}";
    b.fill("#code", code).await;
    b.fill("#sample-data", r#"{"n": 7}"#).await;
    // From the keyboard: focus the button, press Enter.
    let run = b.find("#try-transformation").await;
    run.send_keys("\u{E007}").await.unwrap();
    b.wait_for_text("Order 7 is in", LIVE).await;
    assert!(b.text("#transformation-result").await.contains("order 7"));
    b.shot("transformation").await;
    b.click("#save-transformation").await;
    // Saved when the API shows it (the editor page looks the same before and after).
    let api = format!("/v1/tenants/alpha/endpoints/{}", two.a_endpoint);
    let saved = crate::support::eventually(LIVE, || async {
        let e = server.admin("GET", &api, None).await.1;
        (e["transformation"] == code).then_some(e)
    })
    .await;
    assert!(saved.is_some(), "the transformation was never saved");
    let before = two.rx.received().len();
    server
        .publish("alpha", "order.created", json!({"n": 8}))
        .await;
    let got = two.rx.wait_count(before + 1).await;
    assert_eq!(&got[before].body[..], br#"{"text":"Order 8 is in"}"#);
    b.quit().await;
    two.server.stop().await;
}
