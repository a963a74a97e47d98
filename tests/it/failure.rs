//! Failure paths (DESIGN §3, §10): an unreachable upstream gives 502, a
//! silent one 504 after `upstream.response_timeout`, an aborted upload
//! leaves the proxy serving, SIGTERM drains in-flight requests.
//!
//! 502/504 need an upstream that refuses or hangs, and the drain test one
//! that answers exactly when told: raw TCP servers (`harness::raw`).

use crate::harness::raw::{self, Held};
use crate::harness::{unique, Calattach, Client, Kind, Storage, Upstream};
use crate::transparency::{event, USER};
use std::io::Write;
use std::time::{Duration, Instant};

#[tokio::test]
async fn upstream_down_gives_502_with_a_short_body() {
    let proxy = Calattach::start(raw::down_origin().as_str(), Storage::Local, "");
    let reply = Client::new()
        .request("PROPFIND", &proxy.url("/user1/"))
        .basic(USER, "any")
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        !reply.body.is_empty() && reply.body.len() < 1024,
        "502 body should be short text: {reply:?}"
    );
}

#[tokio::test]
async fn upstream_that_never_answers_gives_504_after_response_timeout() {
    let hang = raw::hang();
    let proxy = Calattach::start(
        &hang,
        Storage::Local,
        "[upstream]\nresponse_timeout = \"1s\"\n",
    );
    let started = Instant::now();
    let reply = Client::new()
        .request("GET", &proxy.url("/user1/calendar/x.ics"))
        .basic(USER, "any")
        .send()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "504 after {elapsed:?}, before the configured 1s response_timeout"
    );
    assert!(
        !hang.seen.lock().unwrap().is_empty(),
        "the request never reached the upstream"
    );
}

/// Clients that vanish mid-upload (repeatedly, more often than a small
/// connection pool or worker count) neither wedge the proxy nor leave a
/// half-written object upstream.
#[tokio::test]
async fn client_disconnect_mid_upload_leaves_no_object_and_proxy_keeps_serving() {
    let up = Upstream::get(Kind::Radicale);
    let proxy = Calattach::start(up, Storage::Local, "");
    let cal = up.new_calendar(USER, "abort").await;
    let href = format!("{cal}{}.ics", unique("aborted"));
    let auth = crate::harness::basic(USER, up.password(USER));
    let port = proxy.port();
    let href2 = href.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..12 {
            let mut s =
                std::net::TcpStream::connect(crate::harness::loopback(port)).expect("connect");
            let head = format!(
                "PUT {href2} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\
                 Content-Type: text/calendar\r\nContent-Length: 10000000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).expect("write head");
            let _ = s.write_all(&vec![b'x'; 64 * 1024]);
            std::thread::sleep(Duration::from_millis(50));
            // Dropping the socket closes it with 10 MB still owed.
        }
    })
    .await
    .expect("join");
    let http = Client::new();
    let ics = event(&unique("uid"), "After aborted uploads", "20250606T100000Z");
    let reply = http
        .request("PUT", &proxy.url(&format!("{cal}after.ics")))
        .basic(USER, up.password(USER))
        .header("Content-Type", "text/calendar; charset=utf-8")
        .body(ics)
        .send_with_timeout(Duration::from_secs(20))
        .await;
    assert_eq!(
        reply.status,
        201,
        "{reply:?}\ncalattach stderr:\n{}",
        proxy.stderr()
    );
    let reply = http
        .request("GET", &up.url(&href))
        .basic(USER, up.password(USER))
        .send()
        .await;
    assert_eq!(
        reply.status, 404,
        "a partial upload became an object: {reply:?}"
    );
}

/// SIGTERM stops accepting but lets a request already in flight finish: the
/// upstream answers only after the signal, the client still gets that
/// answer, and the process then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request_then_exits_0() {
    let held = Held::spawn("/user1/calendar/slow.ics", "drained");
    let mut proxy = Calattach::start(
        &held.server,
        Storage::Local,
        "[server]\nshutdown_grace = \"10s\"\n",
    );
    let request = Client::new()
        .request("GET", &proxy.url("/user1/calendar/slow.ics"))
        .basic(USER, "any")
        .send_with_timeout(Duration::from_secs(20));
    let in_flight = tokio::spawn(request);
    let arrived = held.arrived;
    let arrived =
        tokio::task::spawn_blocking(move || arrived.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join");
    assert!(arrived.is_ok(), "request never reached the upstream");
    proxy.proc.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy
        .proc
        .assert_running("while a request was in flight after SIGTERM");
    held.release.send(()).expect("release upstream");
    let reply = in_flight.await.expect("join");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "drained");
    let status = proxy.proc.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "calattach did not exit 0 after draining ({status:?}); stderr:\n{}",
        proxy.stderr()
    );
}
