//! Memory stays bounded however large the body (DESIGN §3: bodies stream,
//! never collected).

use crate::harness::raw::Sink;
use crate::harness::{Calattach, Client, Storage};
use bytes::Bytes;
use futures_util::stream;
use std::sync::atomic::Ordering;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;
const PEAK_RSS_LIMIT: u64 = 64 << 20;

/// The upstream is a raw sink that reads and discards: Radicale would itself
/// buffer (and refuse, over its 100 MB limit) a 1 GiB body, which tests
/// Radicale, not calattach. The body is generated on the fly from one
/// shared 1 MiB buffer, so the test process holds no copy either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_of_1_gib_through_proxy_keeps_peak_rss_under_64_mib() {
    let sink = Sink::spawn();
    let proxy = Calattach::start(&sink.server, Storage::Local, "");
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let body = stream::iter((0..GIB / CHUNK as u64).map(move |_| Ok(chunk.clone())));
    let reply = Client::new()
        .request("PUT", &proxy.url("/user1/calendar/huge.bin"))
        .basic("user1", "any")
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", GIB.to_string())
        .stream(body)
        .send_with_timeout(std::time::Duration::from_secs(300))
        .await;
    assert_eq!(
        reply.status,
        201,
        "{reply:?}\ncalattach stderr:\n{}",
        proxy.stderr()
    );
    assert_eq!(
        sink.bytes.load(Ordering::SeqCst),
        GIB,
        "the upstream did not receive the whole body"
    );
    let peak = proxy.peak_rss();
    assert!(
        peak < PEAK_RSS_LIMIT,
        "calattach peak RSS {} MiB >= 64 MiB after a 1 GiB PUT",
        peak >> 20
    );
}
