//! Bounded work and early refusals (RFC 8607 §7; RFC 9110 §11.6.1; docs/security.md
//! "Limits"): rid checks within one budget and off the I/O thread, `body_idle_timeout`
//! on every body calattach reads or forwards, each user's share of the upload slots,
//! cross-site attachment POSTs refused, lingering close after early answers, and
//! `401`s carrying the upstream's challenge. Each on Radicale and Xandikos.

use crate::attach::{assert_precondition, Backend, Env, USER};
use crate::harness::{basic, loopback, unique, Kind};
use crate::transparency::on_each;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const USER2: &str = "user2";

/// A `FREQ=SECONDLY` series from 2025-01-01 00:00 UTC with `extra` lines in its master.
fn secondly_event(uid: &str, extra: &[String]) -> String {
    let mut s = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250101T000000Z\r\n\
         DURATION:PT1S\r\nRRULE:FREQ=SECONDLY\r\n"
    );
    for l in extra {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("SUMMARY:Every second\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
    s
}

/// `n` instance rids of [`secondly_event`], one second apart from 00:00:01.
fn secondly_rids(n: u32) -> String {
    (1..=n)
        .map(|s| format!("20250101T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60))
        .collect::<Vec<_>>()
        .join(",")
}

// === finding 5: bounded rid work ===

/// Thousands of rids against a `FREQ=SECONDLY` series, and one rid against a series with
/// 100 `EXRULE` lines, are refused with `403 CALDAV:valid-rid` at once (the
/// rid count before any work, the expansion by the request's instance budget); the
/// attachment they aimed at stays in the object and downloadable.
async fn rid_work_past_the_bounds_is_refused_at_once(kind: Kind) {
    let env = Env::start(kind, Backend::Local, "").await;
    let href = env.new_object(&secondly_event(&unique("uid"), &[])).await;
    let added = env
        .add(&href, "kept", "text/plain", "attachment; filename=k.txt")
        .await;

    let started = Instant::now();
    let many = env
        .post(
            &href,
            &format!(
                "action=attachment-remove&managed-id={}&rid={}",
                added.id,
                secondly_rids(3000)
            ),
        )
        .send()
        .await;
    let took = started.elapsed();
    assert_precondition(&many, "valid-rid", "3000 rids");
    // Milliseconds of work in a release build; the margin is for debug builds on a
    // loaded machine (before the bounds: tens of seconds).
    assert!(
        took < Duration::from_secs(2),
        "3000 rids refused after {took:?}"
    );

    let exrules: Vec<String> = (0..100)
        .map(|i| format!("EXRULE:FREQ=MINUTELY;COUNT=1440;BYSECOND={}", i % 60))
        .collect();
    let heavy = env
        .new_object(&secondly_event(&unique("uid"), &exrules))
        .await;
    let on_heavy = env
        .add(
            &heavy,
            "kept too",
            "text/plain",
            "attachment; filename=h.txt",
        )
        .await;
    let started = Instant::now();
    let one = env
        .post(
            &heavy,
            &format!(
                "action=attachment-remove&managed-id={}&rid=20250102T000000Z",
                on_heavy.id
            ),
        )
        .send()
        .await;
    let took = started.elapsed();
    assert_precondition(&one, "valid-rid", "a rid behind 100 EXRULEs");
    assert!(took < Duration::from_secs(2), "refused after {took:?}");

    for (href, added) in [(&href, &added), (&heavy, &on_heavy)] {
        let (ics, _) = env.object(href).await;
        assert!(
            ics.contains(&added.id),
            "{}: {href} lost the attachment",
            env.name()
        );
        env.download(&added.location).await;
    }
}
on_each!(rid_work_past_the_bounds_is_refused_at_once: rid_lists_and_expansions_past_the_bounds_are_refused_at_once);

/// With one worker thread and a raised budget, a POST whose rid check takes seconds of
/// CPU runs beside an unrelated `OPTIONS /`, which is answered in well under a second
/// meanwhile; the slow POST then succeeds.
async fn slow_rid_check_runs_beside_other_requests(kind: Kind) {
    let env = Env::start(
        kind,
        Backend::Local,
        "[server]\nthreads = 1\n[attachments]\nmax_expanded_instances = 50000000\n\
         max_expansion_time = \"120s\"\n",
    )
    .await;
    let href = env.new_object(&secondly_event(&unique("uid"), &[])).await;
    // Nine days in: ~780,000 instances per check, seconds in a debug build.
    let post = env
        .post(&href, "action=attachment-add&rid=20250110T000000Z")
        .header("Content-Type", "text/plain")
        .header("Content-Disposition", "attachment; filename=slow.txt")
        .body("slow but allowed");
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let reply = post.send_with_timeout(Duration::from_secs(300)).await;
        (reply, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let reply = env.req("OPTIONS", "/").send().await;
        assert_eq!(reply.status, 200, "{reply:?}");
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let options_done = started.elapsed();
    let (reply, took) = slow.await.expect("slow POST");
    env.added(&reply);
    assert!(
        took > options_done,
        "{}: the POST ({took:?}) ended before the OPTIONS requests ({options_done:?}); \
         nothing ran beside it",
        env.name()
    );
    assert!(
        worst < Duration::from_millis(500),
        "{}: OPTIONS / took {worst:?} while the rid check ran",
        env.name()
    );
}
on_each!(slow_rid_check_runs_beside_other_requests: slow_rid_check_does_not_delay_other_requests_on_the_same_worker);

// === finding 6: body_idle_timeout on every body ===

/// 400 unauthenticated connections send the head of a 4 MB PROPFIND (300) or PUT (100,
/// forwarded because larger than `max_object_size`) and a few body bytes, then stall:
/// calattach closes every one of them within `body_idle_timeout` (1 s) plus a margin.
async fn trickling_bodies_are_closed(kind: Kind) {
    let env = Env::start(
        kind,
        Backend::Local,
        "[server]\nbody_idle_timeout = \"1s\"\n",
    )
    .await;
    let port = env.proxy.port();
    let cal = env.cal.clone();
    let name = env.name();
    let open = tokio::task::spawn_blocking(move || {
        let mut conns = Vec::new();
        for i in 0..400 {
            let mut s = TcpStream::connect(loopback(port)).expect("connect");
            let len = 4 * 1024 * 1024 + 1;
            let head = if i % 4 == 0 {
                format!(
                    "PUT {cal}t{i}.ics HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                     Content-Type: text/calendar\r\nContent-Length: {len}\r\n\r\n"
                )
            } else {
                format!(
                    "PROPFIND {cal} HTTP/1.1\r\nHost: 127.0.0.1\r\nDepth: 0\r\n\
                     Content-Type: application/xml\r\nContent-Length: {len}\r\n\r\n"
                )
            };
            s.write_all(head.as_bytes()).expect("head");
            s.write_all(b"<?xml ").expect("a few body bytes");
            conns.push(s);
        }
        let sent = Instant::now();
        let mut open = 0;
        for mut s in conns {
            let left = Duration::from_secs(6).saturating_sub(sent.elapsed());
            s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .expect("timeout");
            let mut sink = Vec::new();
            // Closed: EOF (after any answer) or a reset. Still open: the read times out.
            match s.read_to_end(&mut sink) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    open += 1
                }
                _ => {}
            }
        }
        open
    })
    .await
    .expect("join");
    assert_eq!(
        open,
        0,
        "{name}: connections still open 6 s after they stalled (body_idle_timeout 1s)\n{}",
        env.proxy
            .stderr()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
on_each!(trickling_bodies_are_closed: trickling_request_bodies_are_closed_after_body_idle_timeout);

// === finding 7: each user's share of the upload slots ===

/// An upload that sends its head and a few body bytes, then stalls.
fn stalled_upload(port: u16, user: &str, password: &str, href: &str) -> TcpStream {
    let mut s = TcpStream::connect(loopback(port)).expect("connect");
    let head = format!(
        "POST {href}?action=attachment-add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: {}\r\nContent-Type: text/plain\r\n\
         Content-Disposition: attachment; filename=\"slow.txt\"\r\n\
         Content-Length: 100000\r\n\r\n",
        basic(user, password)
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(b"slow").expect("some body");
    s
}

/// With 8 upload slots (each user's share: 2), user1 starts 8 trickling uploads: two
/// hold slots, the others get `503` with `Retry-After`; user2's upload meanwhile
/// succeeds.
async fn one_users_uploads_leave_slots_for_others(kind: Kind) {
    let env = Env::start(
        kind,
        Backend::Local,
        "[server]\nbody_idle_timeout = \"30s\"\n[attachments]\nmax_concurrent_uploads = 8\n",
    )
    .await;
    let href = env.new_event().await;
    let port = env.proxy.port();
    let pw = env.pw();
    let (h, p) = (href.clone(), pw);
    let stalled = tokio::task::spawn_blocking(move || {
        (0..8)
            .map(|_| stalled_upload(port, USER, p, &h))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let third = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/plain")
        .body("user1 again")
        .send()
        .await;
    assert_eq!(third.status, 503, "{}: {third:?}", env.name());
    assert!(third.header("retry-after").is_some(), "{third:?}");

    let cal2 = env.up.new_calendar(USER2, "share").await;
    let href2 = format!("{cal2}{}.ics", unique("ev"));
    let ics = crate::transparency::event(&unique("uid"), "Other user", "20250714T170000Z");
    env.up.put_event(USER2, &href2, &ics).await;
    let other = env
        .http
        .request(
            "POST",
            &env.proxy.url(&format!("{href2}?action=attachment-add")),
        )
        .basic(USER2, env.up.password(USER2))
        .header("Content-Type", "text/plain")
        .body("user2's upload")
        .send()
        .await;
    assert_eq!(
        other.status,
        201,
        "{}: user2's upload while user1's trickle: {other:?}",
        env.name()
    );
    drop(stalled);
}
on_each!(one_users_uploads_leave_slots_for_others: one_users_trickling_uploads_do_not_block_another_users_upload);

// === finding 8: cross-site attachment POSTs ===

/// A form POST from another site (`Origin: http://evil.example`, `Sec-Fetch-Site:
/// cross-site`, `Origin: null`) is refused with 403 and changes nothing: the attachment
/// stays and downloads, no blob is stored. The same POST without those headers (a
/// CalDAV client) works, and so do POSTs from an allowed origin and from calattach's
/// own origin.
async fn cross_site_posts_are_refused(kind: Kind) {
    let env = Env::start(
        kind,
        Backend::Local,
        "[server]\nallowed_origins = [\"http://infcloud.example\"]\n",
    )
    .await;
    let href = env.new_event().await;
    let added = env
        .add(&href, "victim", "text/plain", "attachment; filename=v.txt")
        .await;
    let blobs = env.blob_keys();
    let remove = format!("action=attachment-remove&managed-id={}", added.id);
    for headers in [
        &[("Origin", "http://evil.example")][..],
        &[("Sec-Fetch-Site", "cross-site")][..],
        &[("Sec-Fetch-Site", "same-site")][..],
        &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")][..],
    ] {
        for query in [remove.as_str(), "action=attachment-add"] {
            let mut req = env
                .post(&href, query)
                .header("Content-Type", "application/x-www-form-urlencoded");
            for (k, v) in headers {
                req = req.header(k, *v);
            }
            let reply = req.body("a=b").send().await;
            assert_eq!(
                reply.status,
                403,
                "{}: {headers:?} {query}: {reply:?}",
                env.name()
            );
        }
    }
    let (ics, _) = env.object(&href).await;
    assert!(
        ics.contains(&added.id),
        "{}: the attachment was removed",
        env.name()
    );
    env.download(&added.location).await;
    assert_eq!(
        env.blob_keys(),
        blobs,
        "{}: a refused POST stored a blob",
        env.name()
    );

    let own = env.proxy.origin();
    for headers in [
        &[
            ("Origin", "http://infcloud.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ][..],
        &[("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")][..],
        &[("Sec-Fetch-Site", "none")][..],
    ] {
        let mut req = env
            .post(&href, "action=attachment-add")
            .header("Content-Type", "text/plain");
        for (k, v) in headers {
            req = req.header(k, *v);
        }
        let reply = req.body("allowed").send().await;
        env.added(&reply);
    }
    let reply = env.post(&href, &remove).send().await;
    assert_eq!(
        reply.status,
        204,
        "{}: CalDAV client remove: {reply:?}",
        env.name()
    );
}
on_each!(cross_site_posts_are_refused: cross_site_attachment_posts_are_refused_and_caldav_client_posts_work);

// === finding 9: lingering close ===

/// Python's `http.client` (no `Expect: 100-continue`) writes its whole body before it
/// reads: it hears the `403 max-attachment-size` for a 3 MiB upload over a 1 MiB limit,
/// and the upstream's `401` for an upload with a wrong password, instead of a reset.
async fn early_refusals_reach_clients_that_send_everything_first(kind: Kind) {
    let env = Env::start(
        kind,
        Backend::Local,
        "[attachments]\nmax_attachment_size = \"1MiB\"\n",
    )
    .await;
    let href = env.new_event().await;
    let script = r#"
import http.client, sys
port, path, auth, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
c.request("POST", path, body=b"x" * size,
          headers={"Authorization": auth, "Content-Type": "text/plain"})
r = c.getresponse()
print(r.status)
print(r.read().decode("utf-8", "replace"))
"#;
    let path = format!("{href}?action=attachment-add");
    for (auth, size, status, text) in [
        (basic(USER, env.pw()), 3 << 20, "403", "max-attachment-size"),
        (basic(USER, "wrong"), 512 << 10, "401", ""),
    ] {
        let args = [
            "-c".to_string(),
            script.to_string(),
            env.proxy.port().to_string(),
            path.clone(),
            auth,
            size.to_string(),
        ];
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::harness::python())
                .args(&args)
                .output()
                .expect("run python")
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with(status) && stdout.contains(text),
            "{}: http.client upload of {size} bytes: {}\nstdout: {stdout}\nstderr: {}",
            env.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
on_each!(early_refusals_reach_clients_that_send_everything_first: oversized_upload_without_expect_reads_the_403_instead_of_a_reset);

// === finding 12: 401s carry the upstream's challenge ===

/// calattach's own `401`s — Digest credentials on an attachment POST and on a download,
/// an anonymous download — carry the `WWW-Authenticate` challenge the upstream sends
/// for an unauthenticated request (RFC 9110 §11.6.1).
async fn own_401s_carry_the_upstream_challenge(kind: Kind) {
    let env = Env::start(kind, Backend::Local, "").await;
    let href = env.new_event().await;
    let added = env
        .add(&href, "x", "text/plain", "attachment; filename=x.txt")
        .await;
    let direct = env
        .http
        .request("PROPFIND", &env.up.url(&href))
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(
        direct.status,
        401,
        "{}: direct anonymous: {direct:?}",
        env.name()
    );
    let expected = direct
        .header("www-authenticate")
        .expect("upstream challenge")
        .to_string();
    let digest = "Digest username=\"user1\", realm=\"r\", nonce=\"n\", uri=\"/\", response=\"0\"";
    let post = env
        .http
        .request(
            "POST",
            &env.proxy.url(&format!("{href}?action=attachment-add")),
        )
        .header("Authorization", digest)
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await;
    let get_digest = env
        .http
        .request("GET", &added.location)
        .header("Authorization", digest)
        .send()
        .await;
    let anonymous = env.http.request("GET", &added.location).send().await;
    for (what, reply) in [
        ("Digest POST", &post),
        ("Digest download", &get_digest),
        ("anonymous download", &anonymous),
    ] {
        assert_eq!(reply.status, 401, "{}: {what}: {reply:?}", env.name());
        assert_eq!(
            reply.header("www-authenticate"),
            Some(expected.as_str()),
            "{}: {what}: {reply:?}",
            env.name()
        );
    }
}
on_each!(own_401s_carry_the_upstream_challenge: calattach_401s_carry_the_upstreams_challenge);
