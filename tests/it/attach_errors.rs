//! Refusals of the attachment routes (RFC 8607 §3.3, §3.8–3.12, Appendix A; RFC 8144
//! §3.2; DESIGN §4 steps 1–2, §6): every precondition with its `DAV:error` body,
//! conditional POSTs, `Expect: 100-continue`, and the methods an attachment URL
//! refuses. Every refusal must leave the store and the calendar object as they were.

use crate::attach::{
    assert_precondition, conformance, expect_continue_head, master, recurring_event, Env, Raw,
    AGENDA_LEN, OVERRIDDEN, USER,
};
use bytes::Bytes;
use std::io::Write;

conformance! {
    parameter_preconditions_answer_403_with_the_rfc_element_first => "";
    size_and_count_limits_answer_403_and_keep_nothing =>
        "[attachments]\nmax_attachment_size = \"1MiB\"\nmax_attachments_per_resource = 2\n";
    conditional_posts_answer_412_and_upload_nothing => "";
    expect_100_continue_gets_the_final_status_before_any_upload =>
        "[attachments]\nmax_attachment_size = \"1MiB\"\n";
    attachment_urls_refuse_writes_and_unknown_or_anonymous_reads => "";
}

/// RFC 8607 §3.11 `valid-action`, `valid-managed-id`, `valid-rid` (DESIGN §4 step 1
/// and the rid/managed-id checks of step 2): 403, `application/xml`, `DAV:error`
/// with the RFC element first; nothing stored, the object unchanged.
async fn parameter_preconditions_answer_403_with_the_rfc_element_first(env: &Env) {
    let series = env
        .new_object(&recurring_event(&crate::harness::unique("series")))
        .await;
    let single = env.new_event().await;
    // One real managed attachment, on the master only.
    let reply = env
        .post(&series, "action=attachment-add&rid=M")
        .header("Content-Type", "text/plain")
        .body(Bytes::from_static(b"on the master\n"))
        .send()
        .await;
    let a = env.added(&reply);
    let (_, series_etag) = env.object(&series).await;
    let (_, single_etag) = env.object(&single).await;
    let keys = env.attachment_keys();

    let cases: Vec<(&str, String, &str)> = vec![
        (&series, "action=attachment-nope".into(), "valid-action"),
        (&series, "action=".into(), "valid-action"),
        (
            &series,
            "action=attachment-add&action=attachment-remove".into(),
            "valid-action",
        ),
        (
            &series,
            format!("action=attachment-add&managed-id={}", a.id),
            "valid-managed-id",
        ),
        (
            &series,
            "action=attachment-update".into(),
            "valid-managed-id",
        ),
        (
            &series,
            "action=attachment-remove".into(),
            "valid-managed-id",
        ),
        (
            &series,
            "action=attachment-update&managed-id=AAAAAAAAAAAAAAAAAAAAAA".into(),
            "valid-managed-id",
        ),
        (
            &series,
            "action=attachment-remove&managed-id=not-on-this-object".into(),
            "valid-managed-id",
        ),
        // The id is on the master, not on the existing override.
        (
            &series,
            format!(
                "action=attachment-remove&managed-id={}&rid={OVERRIDDEN}",
                a.id
            ),
            "valid-managed-id",
        ),
        (
            &series,
            format!("action=attachment-update&managed-id={}&rid=M", a.id),
            "valid-rid",
        ),
        (&series, "action=attachment-add&rid=M,m".into(), "valid-rid"),
        (
            &series,
            "action=attachment-add&rid=20240404T090000,20240404T090000".into(),
            "valid-rid",
        ),
        (
            &series,
            "action=attachment-add&rid=M&rid=M".into(),
            "valid-rid",
        ),
        // Not an instance of the series (a Friday; the series is on Thursdays).
        (
            &series,
            "action=attachment-add&rid=20240322T090000".into(),
            "valid-rid",
        ),
        // After the last instance (COUNT=6).
        (
            &series,
            "action=attachment-add&rid=20240502T090000".into(),
            "valid-rid",
        ),
        (
            &series,
            "action=attachment-add&rid=tomorrow".into(),
            "valid-rid",
        ),
        // An instance rid on an object that does not recur.
        (
            &single,
            "action=attachment-add&rid=20250714T170000Z".into(),
            "valid-rid",
        ),
    ];
    for (href, query, element) in &cases {
        let mut req = env.post(href, query);
        if query.contains("attachment-add") || query.contains("attachment-update") {
            req = req
                .header("Content-Type", "text/plain")
                .body(Bytes::from_static(b"never stored\n"));
        }
        let reply = req.send().await;
        assert_precondition(&reply, element, &format!("{}: POST ?{query}", env.name()));
    }
    assert_eq!(
        env.attachment_keys(),
        keys,
        "{}: a refused POST stored something",
        env.name()
    );
    assert_eq!(
        env.object(&series).await.1,
        series_etag,
        "{}: series changed",
        env.name()
    );
    assert_eq!(
        env.object(&single).await.1,
        single_etag,
        "{}: event changed",
        env.name()
    );
}

/// RFC 8607 §3.11 `max-attachment-size` (from Content-Length before the body, and
/// from the bytes while streaming a chunked body) and `max-attachments-per-resource`
/// (§6.3, counted over the resource): 403 with the element first, nothing kept.
async fn size_and_count_limits_answer_403_and_keep_nothing(env: &Env) {
    let href = env.new_event().await;
    for n in 0..2 {
        env.add(
            &href,
            Bytes::from(format!("file {n}\n")),
            "text/plain",
            "attachment; filename=f.txt",
        )
        .await;
    }
    let (_, etag) = env.object(&href).await;
    let keys = env.attachment_keys();
    assert_eq!(
        keys.len(),
        4,
        "{}: two blobs and two metas: {keys:?}",
        env.name()
    );

    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/plain")
        .body(Bytes::from_static(b"the third\n"))
        .send()
        .await;
    assert_precondition(&reply, "max-attachments-per-resource", &env.name());

    // Over the size limit by Content-Length: answered before the body (none is sent).
    let other = env.new_event().await;
    let mut raw = Raw::connect(env.proxy.port());
    raw.send(
        format!(
            "POST {other}?action=attachment-add HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            crate::harness::basic(USER, env.pw()),
            (1 << 20) + 1
        )
        .as_bytes(),
    );
    let r = raw.read();
    let reply = crate::harness::Reply {
        status: http::StatusCode::from_u16(r.status).unwrap(),
        version: http::Version::HTTP_11,
        headers: to_header_map(&r.headers),
        body: Bytes::from(r.body),
    };
    assert_precondition(
        &reply,
        "max-attachment-size",
        &format!("{}: by Content-Length", env.name()),
    );

    // A chunked body (no Content-Length) that grows past the limit while streaming.
    let mut raw = Raw::connect(env.proxy.port());
    raw.send(
        format!(
            "POST {other}?action=attachment-add HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            crate::harness::basic(USER, env.pw()),
        )
        .as_bytes(),
    );
    let mut writer = raw.writer.try_clone().expect("clone");
    let pump = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..40 {
            // 2.5 MiB offered; calattach stops reading after 1 MiB.
            if writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|_| writer.write_all(&chunk))
                .and_then(|_| writer.write_all(b"\r\n"))
                .is_err()
            {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let r = tokio::task::spawn_blocking(move || raw.read())
        .await
        .expect("join");
    let _ = tokio::task::spawn_blocking(move || pump.join()).await;
    let reply = crate::harness::Reply {
        status: http::StatusCode::from_u16(r.status).unwrap(),
        version: http::Version::HTTP_11,
        headers: to_header_map(&r.headers),
        body: Bytes::from(r.body),
    };
    assert_precondition(
        &reply,
        "max-attachment-size",
        &format!("{}: while streaming", env.name()),
    );

    assert_eq!(
        env.attachment_keys(),
        keys,
        "{}: a refused upload left data",
        env.name()
    );
    assert_eq!(
        env.blob_keys().len(),
        2,
        "{}: staging files left: {:?}",
        env.name(),
        env.store_keys()
    );
    assert_eq!(
        env.object(&href).await.1,
        etag,
        "{}: object changed",
        env.name()
    );
    let (ics, _) = env.object(&other).await;
    assert!(master(&ics).attaches().is_empty(), "{}: {ics}", env.name());
}

pub fn to_header_map(headers: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    map
}

/// DESIGN §4 step 2 and 5, RFC 8607 Appendix A, RFC 8144 §3.2: a POST conditional on
/// a version the object no longer has gets 412 (with the current object, ETag and
/// Content-Location under Prefer) and stores nothing — also when the change lands
/// after calattach's checks, during the upload. The ETag each success returns is the
/// precondition of the next POST, as Apple Calendar chains them.
async fn conditional_posts_answer_412_and_upload_nothing(env: &Env) {
    let (href, uid) = env.new_titled_event("Planning").await;
    let (_, seen) = env.object(&href).await;
    // Another client changes the object after this client's GET.
    env.up
        .put_event(
            USER,
            &href,
            &crate::transparency::event(&uid, "Planning (moved)", "20250715T170000Z"),
        )
        .await;
    let (current, current_etag) = env.object(&href).await;
    assert_ne!(
        seen,
        current_etag,
        "{}: the concurrent PUT kept the ETag",
        env.name()
    );

    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/html")
        .header("If-Match", seen.clone())
        .body(Bytes::from_static(b"<p>agenda</p>"))
        .send()
        .await;
    assert_eq!(
        reply.status,
        412,
        "{}: stale If-Match: {reply:?}",
        env.name()
    );
    assert_eq!(reply.header("cal-managed-id"), None, "{}", env.name());

    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/html")
        .header("If-Match", seen.clone())
        .header("Prefer", "return=representation")
        .body(Bytes::from_static(b"<p>agenda</p>"))
        .send()
        .await;
    assert_eq!(
        reply.status,
        412,
        "{}: stale If-Match + Prefer: {reply:?}",
        env.name()
    );
    assert_eq!(
        reply.text(),
        current,
        "{}: 412 body is not the current object",
        env.name()
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/calendar")),
        "{}: {reply:?}",
        env.name()
    );
    env.assert_fresh_object_headers(&reply, &href).await;

    for (name, value) in [
        ("If-None-Match", "*"),
        ("If-Schedule-Tag-Match", "\"nope\""),
    ] {
        let reply = env
            .post(&href, "action=attachment-add")
            .header("Content-Type", "text/html")
            .header(name, value)
            .body(Bytes::from_static(b"<p>agenda</p>"))
            .send()
            .await;
        assert_eq!(
            reply.status,
            412,
            "{}: {name}: {value}: {reply:?}",
            env.name()
        );
    }
    assert_eq!(
        env.attachment_keys(),
        Vec::<String>::new(),
        "{}: 412 stored data",
        env.name()
    );
    assert_eq!(env.object(&href).await.1, current_etag, "{}", env.name());

    // The change lands while the body is on its way: calattach checked the client's
    // If-Match (it held) and sent 100 Continue; its commit then meets the new version.
    let mut raw = Raw::connect(env.proxy.port());
    raw.send(
        expect_continue_head(
            env,
            &href,
            "action=attachment-add",
            AGENDA_LEN,
            &[("If-Match", &current_etag)],
        )
        .as_bytes(),
    );
    let interim = tokio::task::spawn_blocking(move || (raw.read(), raw))
        .await
        .expect("join");
    let (interim, mut raw) = interim;
    assert_eq!(interim.status, 100, "{}: {interim:?}", env.name());
    env.up
        .put_event(
            USER,
            &href,
            &crate::transparency::event(&uid, "Planning (moved again)", "20250716T170000Z"),
        )
        .await;
    raw.send(&[b'a'; AGENDA_LEN]);
    let last = tokio::task::spawn_blocking(move || raw.read())
        .await
        .expect("join");
    assert_eq!(
        last.status,
        412,
        "{}: a conditional POST was merged over a version the client never saw: {last:?}\n{}",
        env.name(),
        env.proxy.stderr()
    );
    assert_eq!(
        env.attachment_keys(),
        Vec::<String>::new(),
        "{}: upload kept",
        env.name()
    );
    let (ics, _) = env.object(&href).await;
    assert!(master(&ics).attaches().is_empty(), "{}: {ics}", env.name());
    assert!(
        ics.contains("Planning (moved again)"),
        "{}: {ics}",
        env.name()
    );

    // Chained conditional POSTs: each answer's ETag is the next one's If-Match.
    let (_, mut etag) = env.object(&href).await;
    for n in 0..3 {
        let reply = env
            .post(&href, "action=attachment-add")
            .header("Content-Type", "text/plain")
            .header("If-Match", etag.clone())
            .body(Bytes::from(format!("file {n}\n")))
            .send()
            .await;
        env.added(&reply);
        etag = reply
            .header("etag")
            .unwrap_or_else(|| panic!("{}: no ETag: {reply:?}", env.name()))
            .to_string();
    }
    let (ics, _) = env.object(&href).await;
    assert_eq!(master(&ics).attaches().len(), 3, "{}: {ics}", env.name());
}

/// RFC 8607 §3.12.3 (clients SHOULD use `Expect: 100-continue`), DESIGN §4 step 2:
/// a POST that will fail gets its final status without a `100 Continue` first and
/// without the client sending its body; a good one gets `100 Continue`, then 201.
async fn expect_100_continue_gets_the_final_status_before_any_upload(env: &Env) {
    let href = env.new_event().await;
    let port = env.proxy.port();
    let too_big = expect_continue_head(env, &href, "action=attachment-add", (1 << 20) + 1, &[]);
    let stale = expect_continue_head(
        env,
        &href,
        "action=attachment-add",
        AGENDA_LEN,
        &[("If-Match", "\"not-the-etag\"")],
    );
    let good = expect_continue_head(env, &href, "action=attachment-add", AGENDA_LEN, &[]);
    let (first, second, third) = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(port);
        raw.send(too_big.as_bytes());
        let first = raw.read();
        let mut raw = Raw::connect(port);
        raw.send(stale.as_bytes());
        let second = raw.read();
        let mut raw = Raw::connect(port);
        raw.send(good.as_bytes());
        let interim = raw.read();
        assert_eq!(interim.status, 100, "valid POST: {interim:?}");
        raw.send(&[b'a'; AGENDA_LEN]);
        (first, second, raw.read())
    })
    .await
    .expect("join");
    assert_eq!(first.status, 403, "{}: oversized: {first:?}", env.name());
    assert!(
        String::from_utf8_lossy(&first.body).contains("max-attachment-size"),
        "{}: {first:?}",
        env.name()
    );
    assert_eq!(
        second.status,
        412,
        "{}: stale If-Match: {second:?}",
        env.name()
    );
    assert_eq!(third.status, 201, "{}: {third:?}", env.name());
    let id = third
        .header("cal-managed-id")
        .expect("Cal-Managed-ID")
        .to_string();
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        master(&ics).managed_ids(),
        vec![id.clone()],
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        env.blob_keys(),
        vec![format!("blobs/{id}")],
        "{}",
        env.name()
    );
}

/// RFC 8607 §3.8, §3.9 (no PUT/DELETE on attachment URLs) and DESIGN §2, §6: writes
/// to an attachment URL are 405 with `Allow`; an unknown id is 404; an anonymous or
/// wrongly authenticated download is 401 with a challenge.
async fn attachment_urls_refuse_writes_and_unknown_or_anonymous_reads(env: &Env) {
    let href = env.new_event().await;
    let a = env
        .add(
            &href,
            Bytes::from_static(b"keep me\n"),
            "text/plain",
            "attachment; filename=k.txt",
        )
        .await;
    for method in ["PUT", "DELETE", "POST", "PROPPATCH", "MKCOL", "MOVE"] {
        let reply = env
            .req(method, &a.location)
            .header("Content-Type", "text/plain")
            .body(Bytes::from_static(b"overwrite\n"))
            .send()
            .await;
        assert_eq!(reply.status, 405, "{}: {method}: {reply:?}", env.name());
        let allow = reply.header("allow").unwrap_or("");
        assert!(
            allow.contains("GET") && allow.contains("HEAD") && !allow.contains("PUT"),
            "{}: {method}: Allow: {allow:?}",
            env.name()
        );
    }
    let reply = env
        .req("POST", &format!("{}?action=attachment-add", a.location))
        .body(Bytes::from_static(b"x"))
        .send()
        .await;
    assert_eq!(reply.status, 405, "{}: {reply:?}", env.name());
    assert_eq!(
        env.download(&a.location).await.body,
        Bytes::from_static(b"keep me\n")
    );

    for unknown in [
        "/.attachments/AAAAAAAAAAAAAAAAAAAAAA",
        "/.attachments/not-an-id/x.txt",
    ] {
        let reply = env.req("GET", unknown).send().await;
        assert_eq!(reply.status, 404, "{}: {unknown}: {reply:?}", env.name());
    }

    let anonymous = env.http.request("GET", &a.location).send().await;
    assert_eq!(anonymous.status, 401, "{}: {anonymous:?}", env.name());
    assert!(
        anonymous.header("www-authenticate").is_some(),
        "{}: {anonymous:?}",
        env.name()
    );
    assert!(!anonymous.body.starts_with(b"keep me"), "{}", env.name());
    let wrong = env
        .http
        .request("GET", &a.location)
        .basic(USER, "wrong-password")
        .send()
        .await;
    assert_eq!(wrong.status, 401, "{}: {wrong:?}", env.name());
    assert!(
        wrong.header("www-authenticate").is_some(),
        "{}: {wrong:?}",
        env.name()
    );
}
