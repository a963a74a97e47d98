//! Limits where a peer can stall or overload calattach (issue: timeouts and limits
//! everywhere; src/body.rs `IdleTimeout`, src/server.rs): a stalled upload is
//! abandoned after `server.body_idle_timeout` and frees its upload slot; uploads past
//! `attachments.max_concurrent_uploads` get 503 with `Retry-After`; a request head
//! larger than `server.max_header_bytes` or with more than `server.max_headers` fields
//! gets hyper's `431 Request Header Fields Too Large`.
//!
//! These run on Radicale only: every limit here is enforced by calattach before the
//! upstream is asked anything (the stalled body, the upload slots, the request head),
//! so which CalDAV server stands behind it cannot change the outcome.

use crate::attach::USER;
use crate::harness::raw::{blocking_request, read_head};
use crate::harness::{basic, loopback, unique, Calattach, Client, Storage, Upstream};
use bytes::Bytes;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A new event in a new calendar of [`USER`] (directly upstream); returns its path.
async fn event(up: &Upstream) -> String {
    let cal = up.new_calendar(USER, "limits").await;
    let href = format!("{cal}{}.ics", unique("ev"));
    let ics = crate::transparency::event(&unique("uid"), "Limits", "20250714T170000Z");
    up.put_event(USER, &href, &ics).await;
    href
}

/// An upload on a raw connection that sends its head and `sent` of `len` body bytes,
/// then stops (the connection stays open).
fn stalled_upload(port: u16, href: &str, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(loopback(port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "POST {href}?action=attachment-add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: {}\r\nContent-Type: text/plain\r\n\
         Content-Disposition: attachment; filename=\"slow.txt\"\r\n\
         Content-Length: {len}\r\n\r\n",
        basic(USER, crate::harness::upstream::password(USER))
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&vec![b's'; sent]).expect("some body");
    s
}

/// Reads one response status off `s` (None when the connection closed first).
fn status_of(s: &TcpStream) -> Option<u16> {
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let head = read_head(&mut reader).ok()??;
    head.start.split(' ').nth(1).and_then(|v| v.parse().ok())
}

/// Completed blobs (not the staging files of uploads in progress, `<id>#0`).
fn blob_count(proxy: &Calattach) -> usize {
    std::fs::read_dir(proxy.dir().join("data/blobs"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| !e.file_name().to_string_lossy().contains('#'))
            })
            .count()
        })
        .unwrap_or(0)
}

async fn add(proxy: &Calattach, href: &str, body: &'static [u8]) -> crate::harness::Reply {
    Client::new()
        .request("POST", &proxy.url(&format!("{href}?action=attachment-add")))
        .basic(USER, crate::harness::upstream::password(USER))
        .header("Content-Type", "text/plain")
        .body(Bytes::from_static(body))
        .send()
        .await
}

/// A client that sends its head and a few body bytes and then stalls holds the only
/// upload slot (a second upload meanwhile gets 503); after `body_idle_timeout` (1 s)
/// calattach abandons the upload with `400`, keeps no blob, and the slot is free: the
/// next upload succeeds while the stalled connection is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_abandoned_after_idle_timeout_and_frees_its_slot() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        "[server]\nbody_idle_timeout = \"1s\"\n[attachments]\nmax_concurrent_uploads = 1\n",
    );
    let href = event(up).await;
    let started = Instant::now();
    let stalled = stalled_upload(proxy.port(), &href, 100_000, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = add(&proxy, &href, b"while the slot is taken").await;
    assert_eq!(busy.status, 503, "{busy:?}");
    let stalled = tokio::task::spawn_blocking(move || (status_of(&stalled), stalled))
        .await
        .expect("join");
    let elapsed = started.elapsed();
    assert_eq!(stalled.0, Some(400), "stalled upload: {}", proxy.stderr());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(10),
        "abandoned after {elapsed:?}, configured 1s"
    );
    assert_eq!(blob_count(&proxy), 0, "the abandoned upload left a blob");
    let next = add(&proxy, &href, b"after the stall").await;
    assert_eq!(next.status, 201, "{next:?}\n{}", proxy.stderr());
    drop(stalled.1);
}

/// With `max_concurrent_uploads = 2` and two uploads in progress, a third is refused
/// at once with 503 and `Retry-After`, before its body is stored; the two in progress
/// then complete normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_maximum_get_503_with_retry_after() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        // One user makes all three uploads: its share is the whole of the slots here.
        "[server]\nbody_idle_timeout = \"10s\"\n[attachments]\nmax_concurrent_uploads = 2\n\
         max_concurrent_uploads_per_user = 2\n",
    );
    let href = event(up).await;
    let mut first = stalled_upload(proxy.port(), &href, 20, 5);
    let mut second = stalled_upload(proxy.port(), &href, 20, 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = add(&proxy, &href, b"one too many").await;
    assert_eq!(third.status, 503, "{third:?}");
    let retry = third.header("retry-after").expect("Retry-After");
    assert!(retry.parse::<u64>().is_ok(), "Retry-After {retry:?}");
    assert!(third.text().contains("too many uploads"), "{third:?}");
    assert_eq!(blob_count(&proxy), 0);
    first.write_all(&[b'1'; 15]).expect("rest of first");
    second.write_all(&[b'2'; 15]).expect("rest of second");
    let statuses = tokio::task::spawn_blocking(move || (status_of(&first), status_of(&second)))
        .await
        .expect("join");
    // Both edit the same object: one may need a commit retry, both succeed.
    assert_eq!(statuses, (Some(201), Some(201)), "{}", proxy.stderr());
    assert_eq!(blob_count(&proxy), 2);
}

fn propfind_head(port: u16, extra: &str) -> String {
    format!(
        "PROPFIND /{USER}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {}\r\n\
         Depth: 0\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n",
        basic(USER, crate::harness::upstream::password(USER))
    )
}

/// `max_header_bytes = "16KiB"`: a request head of about 12 KiB passes, one of 20 KiB
/// is answered `431` by hyper without reaching the upstream, and the proxy keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_over_max_header_bytes_gets_431() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        "[server]\nmax_header_bytes = \"16KiB\"\n",
    );
    let port = proxy.port();
    let ok = propfind_head(port, &format!("X-Filler: {}\r\n", "a".repeat(12 * 1024)));
    let big = propfind_head(port, &format!("X-Filler: {}\r\n", "a".repeat(20 * 1024)));
    let statuses = tokio::task::spawn_blocking(move || {
        (
            blocking_request(loopback(port), &ok),
            blocking_request(loopback(port), &big),
            blocking_request(loopback(port), &propfind_head(port, "")),
        )
    })
    .await
    .expect("join");
    assert_eq!(
        statuses,
        (Some(207), Some(431), Some(207)),
        "{}",
        proxy.stderr()
    );
}

/// `max_headers = 20`: a request with 10 fields passes, one with 40 is answered `431`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_with_more_than_max_headers_gets_431() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(up, Storage::Local, "[server]\nmax_headers = 20\n");
    let port = proxy.port();
    let fields = |n: usize| {
        (0..n)
            .map(|i| format!("X-Field-{i}: {i}\r\n"))
            .collect::<String>()
    };
    let few = propfind_head(port, &fields(5));
    let many = propfind_head(port, &fields(40));
    let statuses = tokio::task::spawn_blocking(move || {
        (
            blocking_request(loopback(port), &few),
            blocking_request(loopback(port), &many),
        )
    })
    .await
    .expect("join");
    assert_eq!(statuses, (Some(207), Some(431)), "{}", proxy.stderr());
}
