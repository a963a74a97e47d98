//! Attacks by other accounts and by pages on other sites, each asserting what the
//! design promises (docs/security.md, DESIGN §5): a failing test is a successful attack.

use crate::access::{attach_line, event, World as W};
use crate::harness::{unique, Kind, Reply};

fn pw(user: &str) -> &'static str {
    crate::harness::upstream::password(user)
}

/// The organizer uninvites user2, then removes the attachment altogether: user2's
/// download status after the uninvite, then user2's and user1's after the removal.
async fn uninvite_then_remove(w: &W, path: &str, id: &str, url: &str) -> (u16, u16, u16) {
    let current = w.get_text("user1", path).await;
    let r = w.put("user1", path, &without_user2(&current)).await;
    assert!(r.status.is_success(), "{r:?}");
    let after_uninvite = w.download(Some("user2"), url).await.status.as_u16();
    let r = w
        .post(
            "user1",
            path,
            &format!("action=attachment-remove&managed-id={id}"),
            "",
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let user2 = w.download(Some("user2"), url).await.status.as_u16();
    let user1 = w.download(Some("user1"), url).await.status.as_u16();
    (after_uninvite, user2, user1)
}

fn without_user2(ics: &str) -> String {
    ics.replace("\r\n ", "")
        .lines()
        .filter(|l| !l.contains("user2@"))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

macro_rules! on_two {
    ($scenario:ident: $name:ident) => {
        mod $name {
            #[tokio::test]
            async fn radicale() {
                super::$scenario(crate::harness::Kind::Radicale).await;
            }
            #[tokio::test]
            async fn xandikos() {
                super::$scenario(crate::harness::Kind::Xandikos).await;
            }
        }
    };
}

// === R1: an attendee's copy stored without ATTENDEE lines is recorded organizer-side ===

/// user2 (invited) stores "their copy": same UID, user1 as ORGANIZER, but no ATTENDEE
/// lines. may_introduce checks the *recorded* attendees (passes), organizer_side checks
/// the *body's* attendees (so the copy is not an attendee copy → organizer-side holder).
/// Then user1 uninvites user2 and removes the attachment: user2 must lose access.
async fn attendee_copy_without_attendee_lines(kind: Kind) {
    let w = W::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let cal2 = w.up.new_calendar("user2", "copy").await;
    let copy = format!("{cal2}{}.ics", unique("copy"));
    let r = w
        .put(
            "user2",
            &copy,
            &event(&uid, "user1", &[], &attach_line(&id, &url)),
        )
        .await;
    assert!(r.status.is_success(), "copy: {r:?}");
    let (after_uninvite, after_remove_user2, after_remove_user1) =
        uninvite_then_remove(&w, &path, &id, &url).await;
    eprintln!(
        "R1 {kind:?}: user2 after uninvite {after_uninvite}; after remove: user2 {after_remove_user2}, user1 {after_remove_user1}"
    );
    assert_eq!(after_uninvite, 403, "uninvited attendee still downloads");
    assert_eq!(
        after_remove_user1, 410,
        "organizer's removal did not tombstone"
    );
    assert_ne!(
        after_remove_user2, 200,
        "removed attachment still served to ex-attendee"
    );
}
on_two!(attendee_copy_without_attendee_lines: an_attendee_copy_without_attendee_lines_does_not_keep_access);

/// Control for R1: the same copy with the ATTENDEE lines loses access (design works).
async fn attendee_copy_with_attendee_lines(kind: Kind) {
    let w = W::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let cal2 = w.up.new_calendar("user2", "copy").await;
    let copy = format!("{cal2}{}.ics", unique("copy"));
    let r = w
        .put(
            "user2",
            &copy,
            &event(&uid, "user1", &["user1", "user2"], &attach_line(&id, &url)),
        )
        .await;
    assert!(r.status.is_success(), "copy: {r:?}");
    let current = w.get_text("user1", &path).await;
    let r = w.put("user1", &path, &without_user2(&current)).await;
    assert!(r.status.is_success(), "{r:?}");
    assert_eq!(w.download(Some("user2"), &url).await.status, 403);
}
on_two!(attendee_copy_with_attendee_lines: an_attendee_copy_loses_access_when_uninvited_and_removed);

// === R2: planting another user's id past the scanner ===

/// What user3's object looks like after a write, and whether user1's id landed in it.
async fn planted(w: &W, user: &str, path: &str, id: &str) -> (bool, String) {
    let r = w.send(Some(user), "GET", path, &[], "").await;
    let text = r.text();
    (r.status == 200 && text.contains(id), text)
}

fn utf16le_with_bom(s: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// Each variant: user3 (neither organizer nor attendee) writes an object into their
/// own calendar that references user1's id. The guard must refuse (403) every one.
async fn plant_variants(kind: Kind) {
    let w = W::new(kind, "");
    let (_, id, url, _) = w.organizer_event(&["user1", "user2"]).await;
    let cal3 = w.up.new_calendar("user3", "plant").await;
    let mut results = Vec::new();
    let mut paths: Vec<(String, String)> = Vec::new();

    // Control: the plain form is refused.
    let p = format!("{cal3}{}.ics", unique("plain"));
    paths.push(("plain".into(), p.clone()));
    let r = w
        .put(
            "user3",
            &p,
            &event(&unique("u"), "user3", &[], &attach_line(&id, &url)),
        )
        .await;
    results.push((
        "control plain",
        r.status.as_u16(),
        planted(&w, "user3", &p, &id).await.0,
    ));

    // a) charset=utf-16 (Radicale decodes with the Content-Type charset).
    let p = format!("{cal3}{}.ics", unique("u16"));
    paths.push(("u16".into(), p.clone()));
    let body = utf16le_with_bom(&event(&unique("u"), "user3", &[], &attach_line(&id, &url)));
    let r = w
        .send(
            Some("user3"),
            "PUT",
            &p,
            &[("Content-Type", "text/calendar; charset=utf-16")],
            body,
        )
        .await;
    results.push((
        "charset=utf-16",
        r.status.as_u16(),
        planted(&w, "user3", &p, &id).await.0,
    ));

    // b) charset=utf-7: ATTACH spelt with +...- base64 runs.
    let p = format!("{cal3}{}.ics", unique("u7"));
    paths.push(("u7".into(), p.clone()));
    let line = attach_line(&id, &url).replacen("ATTACH", "+AEEAVABUAEEAQwBI-", 1);
    let r = w
        .send(
            Some("user3"),
            "PUT",
            &p,
            &[("Content-Type", "text/calendar; charset=utf-7")],
            event(&unique("u"), "user3", &[], &line),
        )
        .await;
    results.push((
        "charset=utf-7",
        r.status.as_u16(),
        planted(&w, "user3", &p, &id).await.0,
    ));

    // c) Content-Encoding: gzip (aiohttp decompresses request bodies).
    let p = format!("{cal3}{}.ics", unique("gz"));
    paths.push(("gz".into(), p.clone()));
    let body = gzip(event(&unique("u"), "user3", &[], &attach_line(&id, &url)).as_bytes());
    let r = w
        .send(
            Some("user3"),
            "PUT",
            &p,
            &[
                ("Content-Type", "text/calendar; charset=utf-8"),
                ("Content-Encoding", "gzip"),
            ],
            body,
        )
        .await;
    results.push((
        "content-encoding gzip",
        r.status.as_u16(),
        planted(&w, "user3", &p, &id).await.0,
    ));

    // d) quoted-printable URI value without MANAGED-ID (vobject decodes QP values).
    let p = format!("{cal3}{}.ics", unique("qp"));
    paths.push(("qp".into(), p.clone()));
    let qp_uid = unique("u");
    let qp_url = url.replace(':', "=3A").replace('/', "=2F");
    let line = format!("ATTACH;ENCODING=QUOTED-PRINTABLE:{qp_url}\r\n");
    let r = w
        .put("user3", &p, &event(&qp_uid, "user3", &[], &line))
        .await;
    let (ok, text) = planted(&w, "user3", &p, &id).await;
    results.push(("quoted-printable URI", r.status.as_u16(), ok));
    if ok {
        eprintln!("QP stored as:\n{text}");
        // Now the id is "already in the object": the full managed line passes.
        let r = w
            .put(
                "user3",
                &p,
                &event(&qp_uid, "user3", &[], &attach_line(&id, &url)),
            )
            .await;
        results.push((
            "  then PUT MANAGED-ID line",
            r.status.as_u16(),
            planted(&w, "user3", &p, &id).await.0,
        ));
        let txt = w.get_text("user3", &p).await;
        eprintln!("after managed PUT:\n{txt}");
    }

    // e) group prefix (vobject keeps `g.ATTACH`).
    let p = format!("{cal3}{}.ics", unique("grp"));
    paths.push(("grp".into(), p.clone()));
    let line = attach_line(&id, &url).replacen("ATTACH", "g.ATTACH", 1);
    let r = w
        .put("user3", &p, &event(&unique("u"), "user3", &[], &line))
        .await;
    results.push((
        "group prefix g.ATTACH",
        r.status.as_u16(),
        planted(&w, "user3", &p, &id).await.0,
    ));

    // f) POST (RFC 5995 add-member) to the collection, no action (Xandikos).
    let r = w
        .send(
            Some("user3"),
            "POST",
            &cal3,
            &[("Content-Type", "text/calendar; charset=utf-8")],
            event(&unique("u"), "user3", &[], &attach_line(&id, &url)),
        )
        .await;
    // Upstream or public origin alike: the path is what the checks below GET.
    let loc = r.header("location").map(|l| match url::Url::parse(l) {
        Ok(u) => u.path().to_owned(),
        Err(_) => l.to_owned(),
    });
    let got = match &loc {
        Some(l) => planted(&w, "user3", l, &id).await.0,
        None => false,
    };
    results.push(("POST add-member", r.status.as_u16(), got));
    eprintln!("add-member location {loc:?}");

    // g) percent-encoded id segment on the own origin.
    let p = format!("{cal3}{}.ics", unique("pct"));
    paths.push(("pct".into(), p.clone()));
    // The id's first character percent-encoded, in the id segment only.
    let enc_url = url.replacen(
        &format!("/{id}"),
        &format!("/%{:02X}{}", id.as_bytes()[0], &id[1..]),
        1,
    );
    let line = format!("ATTACH:{enc_url}\r\n");
    let r = w
        .put("user3", &p, &event(&unique("u"), "user3", &[], &line))
        .await;
    let dl = w.download(Some("user1"), &enc_url).await.status;
    results.push((
        "percent-encoded id (own origin)",
        r.status.as_u16(),
        dl == 200,
    ));

    // h) non-ASCII lookalike / case: uppercase scheme, dot segments.
    let p = format!("{cal3}{}.ics", unique("dots"));
    paths.push(("dots".into(), p.clone()));
    let dotted = url.replacen("/.attachments/", "/x/../.attachments/", 1);
    let r = w
        .put(
            "user3",
            &p,
            &event(&unique("u"), "user3", &[], &format!("ATTACH:{dotted}\r\n")),
        )
        .await;
    results.push((
        "dot segments",
        r.status.as_u16(),
        planted(&w, "user3", &p, &id).await.0,
    ));

    if let Some(l) = &loc {
        paths.push(("add-member".into(), l.clone()));
    }
    for (what, p) in &paths {
        let r = w.send(Some("user3"), "GET", p, &[], "").await;
        if r.status != 200 {
            eprintln!("R2 {kind:?} {what}: GET {}", r.status);
            continue;
        }
        let t = r.text();
        let lines: Vec<_> = t
            .replace("\r\n ", "")
            .lines()
            .filter(|l| l.to_ascii_uppercase().contains("ATTACH"))
            .map(str::to_string)
            .collect();
        eprintln!("R2 {kind:?} {what} stored: {lines:?}");
    }
    for (what, status, landed) in &results {
        eprintln!("R2 {kind:?}: {what}: status {status}, id stored upstream: {landed}");
    }
    let bad: Vec<_> = results
        .iter()
        .filter(|(what, status, landed)| {
            *landed && !what.starts_with("percent") && (200..300).contains(status)
        })
        .collect();
    assert!(bad.is_empty(), "planted past the guard: {bad:?}");
}
on_two!(plant_variants: foreign_ids_cannot_be_planted_through_charsets_encodings_groups_or_posts);

// === R3: a releasing marker left by a dropped POST makes gc tombstone someone else's id ===

fn utf7_event(uid: &str, id: &str, url: &str) -> String {
    let line = attach_line(id, url).replacen("ATTACH", "+AEEAVABUAEEAQwBI-", 1);
    event(uid, "user3", &[], &line)
}

/// The two bypasses that once planted an id for the marker attack below: refused.
async fn plant_utf7_or_gzip(w: &W, path: &str, uid: &str, id: &str, url: &str) -> Vec<Reply> {
    let gz = w
        .send(
            Some("user3"),
            "PUT",
            path,
            &[
                ("Content-Type", "text/calendar"),
                ("Content-Encoding", "gzip"),
            ],
            gzip(event(uid, "user3", &[], &attach_line(id, url)).as_bytes()),
        )
        .await;
    let utf7 = w
        .send(
            Some("user3"),
            "PUT",
            path,
            &[("Content-Type", "text/calendar; charset=utf-7")],
            utf7_event(uid, id, url),
        )
        .await;
    vec![gz, utf7]
}

/// POST attachment-remove as `user`, dropping the connection after `delay`.
fn post_and_drop_as(user: &str, port: u16, path: &str, id: &str, delay: std::time::Duration) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = crate::harness::basic(user, pw(user));
    let req = format!(
        "POST {path}?action=attachment-remove&managed-id={id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: {auth}\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(delay);
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// An outsider's way in to the marker attack (plant the creator's id in an object of
/// its own through a charset or a compressed body, then drop an attachment-remove there
/// and let gc settle the marker): the plant is refused with `415` before anything
/// reaches the upstream, and the creator's attachment stays.
async fn releasing_marker_then_gc(kind: Kind) {
    let w = W::new(kind, "");
    let (_, id, url, _) = w.organizer_event(&["user1", "user2"]).await;
    let cal3 = w.up.new_calendar("user3", "rel").await;
    let uid = unique("u");
    let p = format!("{cal3}{uid}.ics");
    for r in plant_utf7_or_gzip(&w, &p, &uid, &id, &url).await {
        assert_eq!(r.status, 415, "{r:?}");
    }
    let r = w.send(Some("user3"), "GET", &p, &[], "").await;
    assert_eq!(r.status, 404, "a refused plant reached the upstream: {r:?}");
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
}
on_two!(releasing_marker_then_gc: an_outsider_cannot_plant_an_id_through_a_charset_or_a_compressed_body);

// === R4: the streamed path records every holder organizer-side ===

/// user2's ordinary attendee copy (ATTENDEE lines included), but larger than
/// max_object_size so it takes the streamed path: `decide_streamed` indexes it with
/// `organizer_side = true`. After uninvite and removal, user2 must lose access.
async fn streamed_attendee_copy(kind: Kind) {
    let w = W::new(kind, "[attachments]\nmax_object_size = \"2KiB\"\n");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let cal2 = w.up.new_calendar("user2", "copy").await;
    let copy = format!("{cal2}{}.ics", unique("copy"));
    let pad = format!("DESCRIPTION:{}\r\n", "x".repeat(4000));
    let body = event(
        &uid,
        "user1",
        &["user1", "user2"],
        &format!("{}{pad}", attach_line(&id, &url)),
    );
    let r = w.put("user2", &copy, &body).await;
    assert!(r.status.is_success(), "copy: {r:?}");
    let (after_uninvite, u2, u1) = uninvite_then_remove(&w, &path, &id, &url).await;
    eprintln!(
        "R4 {kind:?}: user2 after uninvite {after_uninvite}; after remove user2 {u2}, user1 {u1}"
    );
    assert_eq!(after_uninvite, 403, "uninvited attendee still downloads");
    assert_eq!(u1, 410, "organizer's removal did not tombstone");
}
on_two!(streamed_attendee_copy: a_streamed_attendee_copy_is_recorded_as_an_attendee_copy);

// === R5: a refused streamed body never lands upstream ===

async fn streamed_refusal(kind: Kind) {
    let w = W::new(kind, "[attachments]\nmax_object_size = \"2KiB\"\n");
    let (_, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal3 = w.up.new_calendar("user3", "str").await;
    let pad = format!("DESCRIPTION:{}\r\n", "x".repeat(4000));
    let mut out = Vec::new();
    for (what, ctype, chunked) in [
        ("sized text/calendar", "text/calendar", false),
        ("sized octet-stream", "application/octet-stream", false),
        ("chunked text/calendar", "text/calendar", true),
    ] {
        let p = format!("{cal3}{}.ics", unique("s"));
        // ATTACH last, so the scanner decides only at the very end.
        let body = event(
            &unique("u"),
            "user3",
            &[],
            &format!("{pad}{}", attach_line(&id, &url)),
        );
        let mut b = w
            .http
            .request("PUT", &w.proxy.url(&p))
            .basic("user3", pw("user3"))
            .header("Content-Type", ctype);
        b = if chunked {
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
                .as_bytes()
                .chunks(700)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            b.stream(futures_util::stream::iter(chunks))
        } else {
            b.body(body.clone())
        };
        let r = b.send().await;
        let stored = w.send(Some("user3"), "GET", &p, &[], "").await;
        out.push((
            what,
            r.status.as_u16(),
            stored.status.as_u16(),
            stored.text().contains(&id),
        ));
    }
    for o in &out {
        eprintln!("R5 {kind:?}: {o:?}");
    }
    assert!(out.iter().all(|(_, _, _, landed)| !landed), "{out:?}");
}
on_two!(streamed_refusal: a_refused_streamed_body_is_never_stored);

// === R6: cross-site attachment POSTs ===

async fn cross_site(kind: Kind) {
    let w = W::new(kind, "");
    let (path, _, _, _) = w.organizer_event(&["user1"]).await;
    let origin = w.proxy.origin();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "evil origin",
            vec![("Origin", "https://evil.example".into())],
        ),
        ("null origin", vec![("Origin", "null".into())]),
        (
            "suffix origin",
            vec![("Origin", format!("{origin}.evil.example"))],
        ),
        (
            "userinfo origin",
            vec![("Origin", format!("http://evil@{}", &origin[7..]))],
        ),
        (
            "own origin + cross-site",
            vec![
                ("Origin", origin.clone()),
                ("Sec-Fetch-Site", "cross-site".into()),
            ],
        ),
        (
            "no origin, cross-site",
            vec![("Sec-Fetch-Site", "cross-site".into())],
        ),
        (
            "no origin, Cross-Site",
            vec![("Sec-Fetch-Site", "Cross-Site".into())],
        ),
        (
            "no origin, same-site",
            vec![("Sec-Fetch-Site", "same-site".into())],
        ),
        (
            "two origins",
            vec![
                ("Origin", origin.clone()),
                ("Origin", "https://evil.example".into()),
            ],
        ),
        ("own origin", vec![("Origin", origin.clone())]),
        ("caldav client", vec![]),
    ];
    for (what, hs) in cases {
        let mut b = w
            .http
            .request(
                "POST",
                &w.proxy.url(&format!("{path}?action=attachment-add")),
            )
            .basic("user1", pw("user1"))
            .header("Content-Type", "text/plain")
            .header("Content-Disposition", "attachment; filename=x.txt");
        for (k, v) in &hs {
            b = b.header(k, v.clone());
        }
        let r = b.body("x").send().await;
        eprintln!("R6 {kind:?}: {what}: {}", r.status);
    }
}
on_two!(cross_site: cross_site_attachment_posts_are_refused_in_every_form);

// === R7: POST remove/update naming someone else's id not in the object ===

async fn foreign_id_post(kind: Kind) {
    let w = W::new(kind, "");
    let (_, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal3 = w.up.new_calendar("user3", "fp").await;
    let p = format!("{cal3}{}.ics", unique("e"));
    assert!(w
        .put("user3", &p, &event(&unique("u"), "user3", &[], ""))
        .await
        .status
        .is_success());
    let marker = w.proxy.dir().join("data/state").join(&id).join("releasing");
    for q in [
        format!("action=attachment-remove&managed-id={id}"),
        format!("action=attachment-update&managed-id={id}"),
        format!("action=attachment-remove&managed-id={id}&rid=M"),
    ] {
        let r = w.post("user3", &p, &q, "x").await;
        eprintln!("R7 {kind:?}: {q}: {} marker={}", r.status, marker.exists());
    }
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
    assert!(!marker.exists());
}
on_two!(foreign_id_post: a_post_naming_a_foreign_id_not_in_the_object_is_refused);

/// R3 without any encoding trick: user2, a (former) attendee, stores a copy without
/// ATTENDEE lines (not an "attendee copy", so POSTs are allowed on it), then drops a
/// remove POST mid-commit and lets gc tombstone user1's attachment.
async fn attendee_marker_then_gc(kind: Kind) {
    let gc = format!(
        "[gc]\nusername = \"user2\"\npassword = \"{}\"\npending_grace = \"0\"\n",
        pw("user2")
    );
    let w = W::new(kind, &gc);
    let (_, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let cal2 = w.up.new_calendar("user2", "rel").await;
    let p = format!("{cal2}{}.ics", unique("c"));
    let marker = w.proxy.dir().join("data/state").join(&id).join("releasing");
    let mut left = false;
    for step in 0..60u64 {
        let r = w
            .put(
                "user2",
                &p,
                &event(&uid, "user1", &[], &attach_line(&id, &url)),
            )
            .await;
        assert!(r.status.is_success(), "copy: {r:?}");
        let delay = std::time::Duration::from_millis(step * 5);
        let port = w.proxy.port();
        let (pp, ii) = (p.clone(), id.clone());
        tokio::task::spawn_blocking(move || post_and_drop_as("user2", port, &pp, &ii, delay))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if marker.exists() {
            eprintln!("R3b {kind:?}: marker left after dropping at {delay:?}");
            left = true;
            break;
        }
    }
    assert!(left, "could not leave a releasing marker");
    let r = w.put("user2", &p, &event(&uid, "user1", &[], "")).await;
    assert!(r.status.is_success(), "{r:?}");
    assert_eq!(
        w.download(Some("user1"), &url).await.status,
        200,
        "before gc"
    );
    let exit = crate::harness::calattach::run_to_exit(
        w.proxy.dir(),
        &[
            "gc",
            "-c",
            &w.proxy.dir().join("proxy.toml").to_string_lossy(),
        ],
        &[],
    );
    eprintln!("gc stdout:\n{}", exit.stdout);
    let after = w.download(Some("user1"), &url).await;
    eprintln!("R3b {kind:?}: creator download after gc: {}", after.status);
    assert_eq!(
        after.status, 200,
        "user1's attachment tombstoned by gc via user2's marker"
    );
}
on_two!(attendee_marker_then_gc: a_dropped_remove_on_an_attendee_copy_never_tombstones_the_organizers_attachment);
