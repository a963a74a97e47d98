//! Bodies pass through byte for byte, and chunked bodies stream in both
//! directions (DESIGN §3: never collected).

use crate::harness::raw::{self, GatedResponse, ReportingSink};
use crate::harness::{unique, Calattach, Client, Kind, Storage};
use crate::transparency::{on_each, Env, USER};
use bytes::Bytes;
use futures_util::stream;
use http_body_util::BodyExt;
use std::time::Duration;

/// Non-ASCII text folded at 75 octets on character boundaries (RFC 5545
/// §3.1), CRLF line ends, a parameter with a quoted non-ASCII value.
fn folded_non_ascii_event(uid: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250505T100000Z\r\nDURATION:PT1H\r\n\
         SUMMARY;LANGUAGE=de:Überraschungsparty für Jörg – Café Zürich\r\n\
         DESCRIPTION:日本語のテキストと絵文字 😀🎉 を含む長い説明文です。折り返しが必要にな\r\n \
         るほど長い行です。Ελληνικά κείμενα επίσης.\r\n\
         LOCATION:Straße 5\\, Köln\r\n\
         ORGANIZER;CN=\"Müller, Jörg\":mailto:joerg@example.org\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

async fn non_ascii_folded_event(kind: Kind) {
    let env = Env::new(kind);
    let (a, b, subst) = env.calendar_pair("utf8").await;
    let ics = folded_non_ascii_event(&unique("uid"));
    let (ea, eb) = (format!("{a}utf8.ics"), format!("{b}utf8.ics"));
    let headers = [("Content-Type", "text/calendar; charset=utf-8")];
    let put = env
        .write_lockstep(
            "PUT of a folded non-ASCII event",
            "PUT",
            &ea,
            &eb,
            &headers,
            &ics,
            &subst,
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    // The upstream stored what the proxy sent: its GET of the proxied copy
    // equals its GET of the direct copy, byte for byte.
    let direct = env.send(&env.up.url(&ea), "GET", &[], "", true).await;
    let proxied = env.send(&env.proxy.url(&eb), "GET", &[], "", true).await;
    env.assert_same(
        "GET of the folded non-ASCII event",
        &direct,
        &proxied,
        &subst,
        false,
    );
    assert!(
        proxied.text().contains("Jörg"),
        "stored event lost its non-ASCII text: {proxied:?}"
    );
}
on_each!(non_ascii_folded_event: non_ascii_folded_event_round_trips_like_direct);

/// Every byte value, bare CR and LF, and a UTF-8 sequence split by a fold
/// (invalid UTF-8 as raw bytes, common in the wild): the proxy must not
/// touch any of it. An echo upstream is the only way to see the exact bytes
/// that arrived, since real servers re-serialise what they store.
#[tokio::test]
async fn request_and_response_bodies_pass_byte_for_byte() {
    let echo = raw::echo();
    let proxy = Calattach::start(&echo, Storage::Local, "");
    let mut body = b"SUMMARY:caf\xc3\r\n \xa9 au lait\r\nbare LF\nbare CR\r".to_vec();
    body.extend(0u8..=255);
    let reply = Client::new()
        .request("PUT", &proxy.url("/user1/calendar/bytes.ics"))
        .basic(USER, "any")
        .header("Content-Type", "text/calendar")
        .body(body.clone())
        .send()
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.as_ref(), body.as_slice(), "echoed body differs");
}

/// Radicale's WSGI server ignores chunked request bodies (it reads only
/// Content-Length and answers 400), so this runs on Xandikos (aiohttp).
#[tokio::test]
async fn chunked_request_body_reaches_xandikos_like_direct() {
    let env = Env::new(Kind::Xandikos);
    let (a, b, subst) = env.calendar_pair("chunked").await;
    let ics = folded_non_ascii_event(&unique("uid"));
    let pieces: Vec<Bytes> = ics
        .as_bytes()
        .chunks(50)
        .map(Bytes::copy_from_slice)
        .collect();
    let put = |url: String| {
        let pieces = pieces.clone();
        env.http
            .request("PUT", &url)
            .basic(USER, env.password())
            .header("Content-Type", "text/calendar; charset=utf-8")
            .stream(stream::iter(pieces.into_iter().map(Ok)))
            .send()
    };
    let (ea, eb) = (format!("{a}chunked.ics"), format!("{b}chunked.ics"));
    let direct = put(env.up.url(&ea)).await;
    let proxied = put(env.proxy.url(&eb)).await;
    assert_eq!(direct.status, 201, "direct chunked PUT: {direct:?}");
    env.assert_same("chunked PUT", &direct, &proxied, &subst, false);
    let direct = env.send(&env.up.url(&ea), "GET", &[], "", true).await;
    let proxied = env.send(&env.proxy.url(&eb), "GET", &[], "", true).await;
    env.assert_same("GET after chunked PUT", &direct, &proxied, &subst, false);
}

/// The upstream must see the first piece of a chunked upload while the
/// client still holds back the second: a proxy that buffers request bodies
/// cannot pass this. A raw upstream reports what arrived when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_is_forwarded_before_it_ends() {
    let sink = ReportingSink::spawn();
    let proxy = Calattach::start(&sink.server, Storage::Local, "");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let request = Client::new()
        .request("PUT", &proxy.url("/user1/calendar/stream.ics"))
        .basic(USER, "any")
        .header("Content-Type", "application/octet-stream")
        .stream(body)
        .send();
    let reply = tokio::spawn(request);
    tx.send(Bytes::from_static(b"first piece;"))
        .expect("send first");
    let pieces = sink.pieces;
    let (first, pieces) = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        while got.len() < b"first piece;".len() {
            match pieces.recv_timeout(Duration::from_secs(10)) {
                Ok(piece) => got.extend(piece),
                Err(_) => break,
            }
        }
        (got, pieces)
    })
    .await
    .expect("join");
    assert_eq!(
        first, b"first piece;",
        "the upstream did not receive the first piece while the upload was open"
    );
    tx.send(Bytes::from_static(b"second piece"))
        .expect("send second");
    drop(tx);
    let reply = reply.await.expect("join");
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.header("x-body-bytes"), Some("24"), "{reply:?}");
    drop(pieces);
}

/// The client must see the first chunk of a response while the upstream
/// still holds back the rest: a proxy that buffers responses cannot pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_body_is_forwarded_before_it_ends() {
    let upstream = GatedResponse::spawn("first chunk;", "second chunk");
    let proxy = Calattach::start(&upstream.server, Storage::Local, "");
    let http = Client::new();
    let request = http
        .request("GET", &proxy.url("/user1/calendar/"))
        .basic(USER, "any")
        .build();
    let response = http.send_streaming(request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("no first chunk within 5s while the upstream holds the rest back")
        .expect("body ended early")
        .expect("body error");
    let first = first.into_data().expect("data frame");
    assert!(
        b"first chunk;".starts_with(&first),
        "unexpected first bytes {first:?}"
    );
    upstream.go.send(()).expect("release upstream");
    let rest = body.collect().await.expect("rest of body").to_bytes();
    let mut whole = first.to_vec();
    whole.extend_from_slice(&rest);
    assert_eq!(whole, b"first chunk;second chunk");
}
