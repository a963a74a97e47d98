//! calattach's connections to the upstream (src/proxy/pool.rs): kept alive and reused,
//! and an idle connection the upstream closed costs the next request nothing.
//!
//! A fault proxy sits between calattach and a real Xandikos, so the test can count the
//! connections calattach opens and close them all at will. (Radicale's built-in server
//! speaks HTTP/1.0 and closes every connection after one response, so there is nothing
//! to reuse in front of it; every other test runs that case.)

use crate::harness::faultproxy::FaultProxy;
use crate::harness::{loopback, unique, Calattach, Client, Kind, Storage, Upstream};
use crate::transparency::{event, USER};

/// calattach in front of a fault proxy in front of Xandikos, with one event to GET.
async fn lab() -> (FaultProxy, Calattach, String) {
    let up = Upstream::get(Kind::Xandikos);
    let cal = up.new_calendar(USER, "pool").await;
    let href = format!("{cal}{}.ics", unique("ev"));
    let uid = unique("uid");
    up.put_event(USER, &href, &event(&uid, "Pool", "20261201T100000Z"))
        .await
        .expect("seed event");
    let fp = FaultProxy::start(loopback(up.port()));
    let proxy = Calattach::start(&fp.origin(), Storage::Local, "");
    (fp, proxy, href)
}

async fn get(client: &Client, proxy: &Calattach, href: &str) -> u16 {
    let up = Upstream::get(Kind::Xandikos);
    client
        .request("GET", &proxy.url(href))
        .basic(USER, up.password(USER))
        .send()
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (fp, proxy, href) = lab().await;
    let client = Client::new();
    assert_eq!(get(&client, &proxy, &href).await, 200);
    let before = fp.accepted();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy, &href).await, 200);
    }
    // One kept-alive client connection is served by one worker thread, whose pool
    // hands the same upstream connection back after each response.
    let opened = fp.accepted() - before;
    assert!(
        opened <= 1,
        "20 sequential requests opened {opened} upstream connections"
    );
}

#[tokio::test]
async fn upstream_closing_idle_connections_costs_no_request() {
    let (fp, proxy, href) = lab().await;
    let client = Client::new();
    for round in 0..30 {
        assert_eq!(get(&client, &proxy, &href).await, 200, "round {round}");
        // The upstream (here: the proxy in between) drops every kept-alive
        // connection, as servers do after their keep-alive timeout.
        fp.close_all();
        if round % 2 == 1 {
            // Give calattach time to notice the close before the next request, too.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(get(&client, &proxy, &href).await, 200);
}

#[tokio::test]
async fn parallel_requests_get_their_own_upstream_connections_and_all_succeed() {
    let (fp, proxy, href) = lab().await;
    let proxy = std::sync::Arc::new(proxy);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (proxy, href) = (proxy.clone(), href.clone());
        tasks.push(tokio::spawn(async move {
            // A client each: separate client connections, spread over the workers.
            let client = Client::new();
            let mut statuses = Vec::new();
            for _ in 0..5 {
                statuses.push(get(&client, &proxy, &href).await);
            }
            statuses
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), vec![200; 5]);
    }
    // 80 requests, at most 16 at a time: the pools open about that many (plus the
    // startup probe's, plus a few when a connection is not ready again yet on a busy
    // machine), not one per request.
    assert!(
        fp.accepted() < 40,
        "{} upstream connections for 80 requests",
        fp.accepted()
    );
}

#[tokio::test]
async fn upstream_given_by_host_name_is_resolved_and_reached() {
    // `http://localhost:<port>` takes the name-resolution path (compose files name the
    // upstream by service, e.g. `http://radicale:5232`), unlike the IP literals above.
    let up = Upstream::get(Kind::Radicale);
    let origin = format!("http://localhost:{}", up.port());
    let proxy = Calattach::start(&origin, Storage::Local, "");
    let reply = Client::new()
        .request("PROPFIND", &proxy.url(&format!("/{USER}/")))
        .basic(USER, up.password(USER))
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(reply.status, 207, "{reply:?}");
}
