//! Inline binary attachments become managed ones on PUT (`attachments.convert_inline`;
//! `src/attach/inline.rs`), on every upstream of the matrix.

use base64::Engine;

use crate::attach::{master, override_at, vevents, Backend, Env};
use crate::harness::{unique, Kind};
use crate::transparency::on_each;

const ON: &str = "[attachments]\nconvert_inline = true\n";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Folds a content line at 75 octets (RFC 5545 §3.1), as clients write long values.
fn folded(line: &str) -> String {
    let mut out = String::new();
    let bytes = line.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let take = if at == 0 { 75 } else { 74 };
        let end = (at + take).min(bytes.len());
        if at > 0 {
            out.push_str("\r\n ");
        }
        out.push_str(&line[at..end]);
        at = end;
    }
    out.push_str("\r\n");
    out
}

const AGENDA: &[u8] = b"1. welcome\n2. the plan\n3. questions\n";

fn slides() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A daily series of three with an inline attachment on the master and another on the
/// overridden second instance.
fn event_with_inline(uid: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250601T100000Z\r\nDURATION:PT1H\r\n\
         RRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:inline kept as it was\r\n{}\
         END:VEVENT\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20250101T000000Z\r\n\
         RECURRENCE-ID:20250602T100000Z\r\nDTSTART:20250602T110000Z\r\nDURATION:PT1H\r\n\
         SUMMARY:moved\r\n{}END:VEVENT\r\nEND:VCALENDAR\r\n",
        folded(&format!(
            "ATTACH;FMTTYPE=text/plain;FILENAME=agenda.txt;ENCODING=BASE64;VALUE=BINARY:{}",
            b64(AGENDA)
        )),
        folded(&format!(
            "ATTACH;VALUE=BINARY;ENCODING=BASE64;FMTTYPE=application/pdf;X-LIC-FILENAME=slides.pdf:{}",
            b64(&slides())
        )),
    )
}

async fn put(env: &Env, href: &str, ics: &str) -> crate::harness::Reply {
    env.req("PUT", href)
        .header("Content-Type", "text/calendar; charset=utf-8")
        .body(ics.to_string())
        .send()
        .await
}

async fn inline_values_become_managed_attachments(kind: Kind) {
    let env = Env::start(kind, Backend::Local, ON).await;
    let uid = unique("inline");
    let href = format!("{}{uid}.ics", env.cal);
    let r = put(&env, &href, &event_with_inline(&uid)).await;
    assert!(r.status == 201 || r.status == 204, "{}: {r:?}", env.name());
    assert!(
        r.header("etag").is_none(),
        "{}: changed body answered with an ETag: {r:?}",
        env.name()
    );
    let (ics, _) = env.object(&href).await;
    assert!(
        !ics.to_ascii_uppercase().contains("ENCODING=BASE64"),
        "{}: still inline:\n{ics}",
        env.name()
    );
    assert!(
        ics.contains("SUMMARY:inline kept as it was"),
        "{}:\n{ics}",
        env.name()
    );
    assert_eq!(vevents(&ics).len(), 2, "{}:\n{ics}", env.name());
    let m = master(&ics);
    let a = m.attaches();
    assert_eq!(a.len(), 1, "{}:\n{ics}", env.name());
    assert_eq!(a[0].param("FILENAME"), Some("agenda.txt"));
    assert_eq!(a[0].param("FMTTYPE"), Some("text/plain"));
    assert_eq!(a[0].param("SIZE"), Some(AGENDA.len().to_string().as_str()));
    assert!(a[0].param("MANAGED-ID").is_some(), "{:?}", a[0]);
    let o = override_at(&ics, "20250602T100000Z").expect("the override");
    let b = o.attaches();
    assert_eq!(b.len(), 1, "{}:\n{ics}", env.name());
    assert_eq!(b[0].param("FILENAME"), Some("slides.pdf"));
    assert_eq!(b[0].param("FMTTYPE"), Some("application/pdf"));
    assert!(b[0].param("X-LIC-FILENAME").is_none(), "{:?}", b[0]);
    assert_eq!(env.download(&a[0].value).await.body.as_ref(), AGENDA);
    assert_eq!(
        env.download(&b[0].value).await.body.as_ref(),
        slides().as_slice()
    );
    assert_eq!(env.blob_keys().len(), 2, "{}", env.name());
}
on_each!(inline_values_become_managed_attachments: inline_attachments_on_put_become_managed_ones);

async fn without_the_option_inline_values_stay(kind: Kind) {
    let env = Env::start(kind, Backend::Local, "").await;
    let uid = unique("inline");
    let href = format!("{}{uid}.ics", env.cal);
    let r = put(&env, &href, &event_with_inline(&uid)).await;
    assert!(r.status == 201 || r.status == 204, "{}: {r:?}", env.name());
    let (ics, _) = env.object(&href).await;
    assert!(
        ics.to_ascii_uppercase().contains("ENCODING=BASE64"),
        "{}:\n{ics}",
        env.name()
    );
    assert!(env.blob_keys().is_empty(), "{}", env.name());
}
on_each!(without_the_option_inline_values_stay: without_convert_inline_inline_attachments_stay);

async fn an_inline_value_over_the_limit_refuses_the_put(kind: Kind) {
    let env = Env::start(
        kind,
        Backend::Local,
        "[attachments]\nconvert_inline = true\nmax_attachment_size = 1000\n",
    )
    .await;
    let uid = unique("inline");
    let href = format!("{}{uid}.ics", env.cal);
    let r = put(&env, &href, &event_with_inline(&uid)).await;
    crate::attach::assert_precondition(&r, "max-attachment-size", "inline value over the limit");
    let r = env.req("GET", &href).send().await;
    assert_eq!(
        r.status,
        404,
        "{}: the refused object reached the upstream: {r:?}",
        env.name()
    );
    assert!(
        env.blob_keys().is_empty(),
        "{}: half-converted: {:?}",
        env.name(),
        env.blob_keys()
    );
}
on_each!(an_inline_value_over_the_limit_refuses_the_put: an_inline_attachment_over_the_size_limit_refuses_the_put_and_stores_nothing);

// === calattach migrate ===

fn migrate(env: &Env, extra: &[&str]) -> crate::harness::calattach::Exit {
    let config = env.proxy.dir().join("proxy.toml");
    let mut args = vec!["migrate", "-c", config.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let exit = crate::harness::calattach::run_to_exit(env.proxy.dir(), &args, &[]);
    assert_eq!(
        exit.code,
        Some(0),
        "migrate {extra:?}\nstdout:\n{}\nstderr:\n{}",
        exit.stdout,
        exit.stderr
    );
    exit
}

/// Events stored upstream before calattach (one with inline values, one without):
/// `--dry-run` changes nothing; a run converts the inline values once, each downloads
/// its original bytes; a second run finds nothing left to do.
async fn migrate_converts_existing_inline_attachments_once(kind: Kind) {
    let gc = format!(
        "[gc]\nusername = \"user1\"\npassword = \"{}\"\n",
        crate::harness::upstream::password("user1")
    );
    let env = Env::start(kind, Backend::Local, &gc).await;
    let uid = unique("inline");
    let href = format!("{}{uid}.ics", env.cal);
    env.up
        .put_event("user1", &href, &event_with_inline(&uid))
        .await;
    let plain = env.new_event().await;
    let (plain_before, _) = env.object(&plain).await;
    let cal = env.cal.clone();

    let dry = migrate(&env, &["--calendar", &cal, "--dry-run"]);
    assert!(
        dry.stdout
            .contains(&format!("would convert {href}: 2 inline attachments")),
        "{}",
        dry.stdout
    );
    let (ics, _) = env.object(&href).await;
    assert!(
        ics.to_ascii_uppercase().contains("ENCODING=BASE64"),
        "dry run changed the object"
    );
    assert!(
        env.blob_keys().is_empty(),
        "dry run stored {:?}",
        env.blob_keys()
    );

    let run = migrate(&env, &["--calendar", &env.proxy.url(&cal)]);
    assert!(
        run.stdout.contains("1 converted, 2 attachments"),
        "{}",
        run.stdout
    );
    let (ics, _) = env.object(&href).await;
    assert!(
        !ics.to_ascii_uppercase().contains("ENCODING=BASE64"),
        "{}:\n{ics}",
        env.name()
    );
    let a = master(&ics)
        .attaches()
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let b = override_at(&ics, "20250602T100000Z")
        .expect("override")
        .attaches()
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(env.download(&a[0].value).await.body.as_ref(), AGENDA);
    assert_eq!(
        env.download(&b[0].value).await.body.as_ref(),
        slides().as_slice()
    );
    let (plain_after, _) = env.object(&plain).await;
    assert_eq!(
        plain_after, plain_before,
        "an object without inline values changed"
    );

    let again = migrate(&env, &["--calendar", &cal]);
    assert!(
        again.stdout.contains("0 converted, 0 attachments"),
        "{}",
        again.stdout
    );
    assert_eq!(env.blob_keys().len(), 2, "{}", env.name());
}
on_each!(migrate_converts_existing_inline_attachments_once: migrate_converts_existing_inline_attachments_once);
