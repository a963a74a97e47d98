//! `/metrics` on the admin listener (DESIGN §10): after a scripted session (an add, a
//! download, a refused add, a remove) the counters show what happened, and the whole
//! exposition parses as Prometheus text.

use crate::harness::{free_port, Calattach, Client, Storage, Upstream};
use prometheus_parse::{Sample, Scrape, Value};
use std::time::{Duration, Instant};

const USER: &str = "user1";

fn value(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map(|b| b.count).unwrap_or(0.0),
        Value::Summary(_) => f64::NAN,
    }
}

/// The value of `metric` with exactly `labels` (missing → 0).
fn get(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

async fn scrape(http: &Client, admin: u16) -> (Scrape, String) {
    let reply = http
        .request("GET", &format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{reply:?}"
    );
    let text = reply.text();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
    (parsed, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_session_and_parse_as_prometheus_text() {
    let up = Upstream::radicale();
    let admin = free_port();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        &format!(
            "[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [attachments]\nmax_attachment_size = \"64KiB\"\n"
        ),
    );
    let http = Client::new();
    let pw = up.password(USER);
    let cal = up.new_calendar(USER, "metrics").await;
    let href = format!("{cal}{}.ics", crate::harness::unique("ev"));
    let uid = crate::harness::unique("uid");
    up.put_event(
        USER,
        &href,
        &crate::transparency::event(&uid, "Metrics", "20261201T100000Z"),
    )
    .await;
    let body = vec![b'x'; 1000];

    let added = http
        .request("POST", &proxy.url(&format!("{href}?action=attachment-add")))
        .basic(USER, pw)
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await;
    assert_eq!(added.status, 201, "{added:?}");
    let location = added.header("location").expect("Location").to_string();
    let id = added.header("cal-managed-id").expect("id").to_string();
    let got = http.request("GET", &location).basic(USER, pw).send().await;
    assert_eq!(got.status, 200, "{got:?}");
    // Its own connection: calattach refuses before reading the body and closes it.
    let too_big = Client::new()
        .request("POST", &proxy.url(&format!("{href}?action=attachment-add")))
        .basic(USER, pw)
        .body(vec![b'y'; 100 * 1024])
        .send()
        .await;
    assert_eq!(too_big.status, 403, "{too_big:?}");
    let removed = http
        .request(
            "POST",
            &proxy.url(&format!("{href}?action=attachment-remove&managed-id={id}")),
        )
        .basic(USER, pw)
        .send()
        .await;
    assert_eq!(removed.status, 204, "{removed:?}");

    // A request is counted when its response body ends, which the server may notice
    // a moment after the client has the whole reply.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (s, text) = loop {
        let (s, text) = scrape(&http, admin).await;
        let settled = get(&s, "calattach_requests_total", &[("route", "attach")]) >= 3.0
            && get(
                &s,
                "calattach_attachment_bytes_total",
                &[("direction", "out")],
            ) >= 1000.0;
        if settled || Instant::now() > deadline {
            break (s, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let ops = "calattach_attachment_operations_total";
    assert_eq!(
        get(&s, ops, &[("action", "add"), ("outcome", "ok")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(&s, ops, &[("action", "add"), ("outcome", "forbidden")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(&s, ops, &[("action", "remove"), ("outcome", "ok")]),
        1.0,
        "{text}"
    );
    let bytes = "calattach_attachment_bytes_total";
    assert_eq!(get(&s, bytes, &[("direction", "in")]), 1000.0, "{text}");
    assert_eq!(get(&s, bytes, &[("direction", "out")]), 1000.0, "{text}");
    let requests = "calattach_requests_total";
    assert_eq!(
        get(&s, requests, &[("route", "attach"), ("status", "201")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(&s, requests, &[("route", "download"), ("status", "200")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(&s, requests, &[("route", "attach"), ("status", "403")]),
        1.0,
        "{text}"
    );
    // Each attachment POST reads the object upstream at least once.
    assert!(
        get(&s, "calattach_upstream_response_seconds", &[]) >= 3.0,
        "{text}"
    );
    assert_eq!(get(&s, "calattach_uploads_in_progress", &[]), 0.0, "{text}");
    // Exported at zero before anything happened.
    for (name, labels) in [
        (
            "calattach_store_errors_total",
            &[("kind", "unavailable")][..],
        ),
        ("calattach_commit_retries_total", &[][..]),
        ("calattach_gc_runs_total", &[("outcome", "ok")][..]),
        ("calattach_gc_last_run_timestamp_seconds", &[][..]),
    ] {
        let present = s
            .samples
            .iter()
            .any(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
        assert!(present, "{name} {labels:?} not exported:\n{text}");
        assert_eq!(get(&s, name, labels), 0.0, "{name}:\n{text}");
    }
}
