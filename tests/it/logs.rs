//! The log a request leaves (DESIGN §10, docs/operations.md "Logs"): one access line with
//! the request id, method, path, status, bytes and duration; the id echoed to the client
//! and kept when the client sent one; credentials never written.

use std::time::{Duration, Instant};

use crate::harness::{unique, Calattach, Client, Kind, Storage, Upstream};
use crate::transparency::{event, USER};

/// Waits until calattach's stderr has a line containing every one of `parts`.
async fn line_with(proxy: &Calattach, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = proxy.stderr();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn access_line_names_the_request_and_its_outcome_but_no_credentials() {
    let up = Upstream::get(Kind::Radicale);
    let proxy = Calattach::start(up, Storage::Local, "");
    let cal = up.new_calendar(USER, "logs").await;
    let href = format!("{cal}{}.ics", unique("ev"));
    let body = event(&unique("uid"), "Logged", "20261201T100000Z");
    up.put_event(USER, &href, &body).await.expect("seed");
    let client_id = unique("client-id");
    let reply = Client::new()
        .request("GET", &proxy.url(&href))
        .basic(USER, up.password(USER))
        .header("X-Request-Id", client_id.clone())
        .send()
        .await;
    assert_eq!(reply.status, 200);
    // A client's (or a front proxy's) id is kept and echoed.
    assert_eq!(reply.header("x-request-id"), Some(client_id.as_str()));
    let line = line_with(&proxy, &["access", &client_id]).await;
    for field in [
        "method=\"GET\"".to_string(),
        format!("path=\"{href}\""),
        "status=200".into(),
        format!("bytes={}", reply.body.len()),
        "route=\"forward\"".into(),
        "complete=true".into(),
        "duration_us=".into(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line}");
    }
    let log = proxy.stderr();
    let credentials = crate::harness::basic(USER, up.password(USER));
    let encoded = credentials.trim_start_matches("Basic ");
    assert!(!log.contains(encoded), "credentials in the log:\n{log}");
    assert!(
        !log.contains(up.password(USER)),
        "password in the log:\n{log}"
    );
}

#[tokio::test]
async fn requests_without_an_id_get_a_fresh_one_each() {
    let up = Upstream::get(Kind::Radicale);
    let proxy = Calattach::start(up, Storage::Local, "");
    let client = Client::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = client.request("OPTIONS", &proxy.url("/")).send().await;
        let id = reply.header("x-request-id").expect("minted id").to_string();
        let (prefix, counter) = id.split_once('-').expect("<prefix>-<counter>");
        assert!(
            prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(counter.parse::<u64>().is_ok(), "{id}");
        line_with(&proxy, &["access", &format!("id=\"{id}\"")]).await;
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids repeat: {ids:?}");
}

#[tokio::test]
async fn requests_calattach_answers_itself_log_inside_a_request_span() {
    let up = Upstream::get(Kind::Radicale);
    let proxy = Calattach::start(up, Storage::Local, "");
    let cal = up.new_calendar(USER, "logs").await;
    let href = format!("{cal}{}.ics", unique("ev"));
    let id = unique("span-id");
    // An attachment POST with an unknown action: refused (and logged why) by calattach.
    let reply = Client::new()
        .request("POST", &proxy.url(&format!("{href}?action=bogus")))
        .basic(USER, up.password(USER))
        .header("X-Request-Id", id.clone())
        .send()
        .await;
    assert!(reply.status.is_client_error(), "{reply:?}");
    let refused = line_with(&proxy, &["request refused", &id]).await;
    assert!(
        refused.contains(&format!(
            "request{{id=\"{id}\" method=POST path=\"{href}\"}}:"
        )),
        "{refused}"
    );
    let access = line_with(&proxy, &["access", &id]).await;
    let status = format!("status={}", reply.status.as_u16());
    assert!(
        access.contains("route=\"attach\"") && access.contains(&status),
        "{access}"
    );
}
