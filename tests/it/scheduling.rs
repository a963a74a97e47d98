//! Managed attachments and implicit scheduling end to end (RFC 8607 §3.12, RFC 6638 §3)
//! on Baïkal, whose sabre/dav delivers the organizer's changes to the attendees itself:
//! what Radicale and Xandikos cannot show (they do no scheduling, so there an
//! attendee's copy is written by the attendee; `access.rs` covers that).
//!
//! user1 organises, user4 is invited (a user no other test makes calendars for: see
//! `harness::upstream::USERS`), user3 is neither. Addresses are Baïkal's own
//! (`mailto:userN@example.org`). The organizer's event is created directly upstream;
//! every attachment change goes through calattach, and its commit PUT is what sabre's
//! scheduling sends on to user4's calendar and inbox.

use crate::harness::upstream::{password, usable};
use crate::harness::{unique, Calattach, Client, Kind, Reply, Storage, Upstream};

fn mail(user: &str) -> String {
    format!("mailto:{user}@example.org")
}

/// A scheduled VEVENT organised by user1 with `attendees` (user1 among them).
fn event(uid: &str, attendees: &[&str]) -> String {
    let mut s = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250601T100000Z\r\nDURATION:PT1H\r\n\
         SUMMARY:scheduling\r\nORGANIZER:{}\r\n",
        mail("user1")
    );
    for a in attendees {
        s.push_str(&format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:{}\r\n", mail(a)));
    }
    s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    s
}

/// The unfolded ATTACH lines of an iCalendar text.
fn attach_lines(ics: &str) -> Vec<String> {
    ics.replace("\r\n ", "")
        .lines()
        .filter(|l| l.to_ascii_uppercase().starts_with("ATTACH"))
        .map(|l| l.trim_end().to_string())
        .collect()
}

struct World {
    up: &'static Upstream,
    proxy: Calattach,
    http: Client,
}

impl World {
    fn new() -> World {
        let up = Upstream::get(Kind::Baikal);
        World {
            up,
            proxy: Calattach::start(up, Storage::Local, ""),
            http: Client::new(),
        }
    }

    /// `method url` as `user`; `url` is a path (through calattach) or a full URL.
    async fn send(
        &self,
        user: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            self.proxy.url(url)
        };
        let mut b = self.http.request(method, &url).basic(user, password(user));
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        b.body(body.to_string()).send().await
    }

    /// POST `query` on `path` through calattach with a small text body.
    async fn post(&self, user: &str, path: &str, query: &str, body: &str) -> Reply {
        self.send(
            user,
            "POST",
            &format!("{path}?{query}"),
            &[
                ("Content-Type", "text/plain"),
                ("Content-Disposition", "attachment; filename=agenda.txt"),
            ],
            body,
        )
        .await
    }

    /// user1's event inviting `attendees`, stored directly upstream: (path, uid).
    async fn organizer_event(&self, attendees: &[&str]) -> (String, String) {
        let cal = self.up.new_calendar("user1", "sched").await;
        let uid = unique("sched");
        let path = format!("{cal}{uid}.ics");
        let ics = event(&uid, attendees);
        self.up.put_event("user1", &path, &ics).await;
        (path, uid)
    }

    /// user4's copy of the event (exactly one), in whichever of their calendars
    /// sabre/dav delivered it to.
    async fn attendee_copy(&self, uid: &str) -> (String, String) {
        let mut found = self.up.objects_with_uid("user4", uid).await;
        assert_eq!(found.len(), 1, "user4's copies of {uid}: {found:?}");
        found.remove(0)
    }

    /// The newest scheduling message for `uid` in user4's inbox.
    async fn inbox_item(&self, uid: &str) -> String {
        let inbox = self.up.inbox_path("user4").expect("Baïkal has an inbox");
        let found = self.up.objects_with_uid_in("user4", &inbox, uid).await;
        assert!(!found.is_empty(), "no inbox item for {uid}");
        found.last().map(|(_, b)| b.clone()).unwrap_or_default()
    }
}

/// Skips (with the reason printed) where Baïkal cannot run.
macro_rules! on_baikal {
    ($name:ident) => {
        if !usable(Kind::Baikal, concat!("scheduling::", stringify!($name))) {
            return;
        }
    };
}

/// RFC 8607 §3.12 with RFC 6638 implicit scheduling: the organizer's add reaches the
/// attendee's copy and inbox with the same ATTACH (MANAGED-ID and all), and the
/// attendee downloads it through calattach; user3 may not.
#[tokio::test]
async fn organizer_add_reaches_the_attendee_copy_and_inbox_and_the_attendee_downloads_it() {
    on_baikal!(organizer_add_reaches_the_attendee_copy_and_inbox_and_the_attendee_downloads_it);
    let w = World::new();
    let (path, uid) = w.organizer_event(&["user1", "user4"]).await;
    let r = w
        .post("user1", &path, "action=attachment-add", "the agenda")
        .await;
    assert_eq!(r.status, 201, "{r:?}\n{}", w.proxy.stderr());
    let id = r
        .header("cal-managed-id")
        .expect("Cal-Managed-ID")
        .to_string();
    let url = r.header("location").expect("Location").to_string();

    let (_, copy) = w.attendee_copy(&uid).await;
    let lines = attach_lines(&copy);
    assert_eq!(lines.len(), 1, "user4's copy:\n{copy}");
    assert!(
        lines[0].contains(&format!("MANAGED-ID={id}")) && lines[0].ends_with(&format!(":{url}")),
        "user4's copy: {lines:?}"
    );
    let inbox = w.inbox_item(&uid).await;
    assert!(
        attach_lines(&inbox).iter().any(|l| l.contains(&id)),
        "inbox item without the ATTACH:\n{inbox}"
    );

    let r = w.send("user4", "GET", &url, &[], "").await;
    assert_eq!(
        r.status,
        200,
        "attendee download: {r:?}\n{}",
        w.proxy.stderr()
    );
    assert_eq!(r.body.as_ref(), b"the agenda");
    let r = w.send("user3", "GET", &url, &[], "").await;
    assert_eq!(r.status, 403, "outsider download: {r:?}");
}

/// sabre/dav changes what the organizer stores (SCHEDULE-STATUS on each attendee) and
/// then sends no `ETag` on the PUT: the POST must answer the ETag of what is stored,
/// read back, not one it assumed.
#[tokio::test]
async fn add_on_a_scheduled_event_answers_the_etag_sabre_stored_though_its_put_sent_none() {
    on_baikal!(add_on_a_scheduled_event_answers_the_etag_sabre_stored_though_its_put_sent_none);
    let w = World::new();
    let cal = w.up.new_calendar("user1", "sched").await;
    let uid = unique("sched");
    let path = format!("{cal}{uid}.ics");
    // The premise: sabre answers a PUT it rewrote without an ETag.
    let etag =
        w.up.put_event("user1", &path, &event(&uid, &["user1", "user4"]))
            .await;
    assert_eq!(etag, None, "sabre/dav sent an ETag for a PUT it changed");
    let r = w.post("user1", &path, "action=attachment-add", "x").await;
    assert_eq!(r.status, 201, "{r:?}");
    let got = w.send("user1", "GET", &w.up.url(&path), &[], "").await;
    assert!(
        got.text().contains("SCHEDULE-STATUS"),
        "sabre did not change the stored object: {got:?}"
    );
    assert_eq!(
        r.header("etag"),
        got.header("etag"),
        "POST's ETag is not the stored object's"
    );
    // The tag chains: a conditional POST with it succeeds.
    let etag = r.header("etag").expect("ETag").to_string();
    let r = w
        .send(
            "user1",
            "POST",
            &format!("{path}?action=attachment-add"),
            &[("Content-Type", "text/plain"), ("If-Match", &etag)],
            "y",
        )
        .await;
    assert_eq!(r.status, 201, "If-Match with the answered ETag: {r:?}");
}

/// RFC 8607 §3.12.2: the attendee's copy, delivered by the server, is not theirs to
/// change: add, update and remove answer 403 with the RFC's precondition, and the copy
/// keeps the organizer's ATTACH.
#[tokio::test]
async fn attendee_add_update_remove_on_the_delivered_copy_are_refused_403() {
    on_baikal!(attendee_add_update_remove_on_the_delivered_copy_are_refused_403);
    let w = World::new();
    let (path, uid) = w.organizer_event(&["user1", "user4"]).await;
    let r = w
        .post("user1", &path, "action=attachment-add", "agenda")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.header("cal-managed-id").unwrap().to_string();
    let (copy_path, before) = w.attendee_copy(&uid).await;
    for (query, element) in [
        ("action=attachment-add".to_string(), "valid-attachment-add"),
        (
            format!("action=attachment-update&managed-id={id}"),
            "valid-attachment-update",
        ),
        (
            format!("action=attachment-remove&managed-id={id}"),
            "valid-attachment-remove",
        ),
    ] {
        let r = w.post("user4", &copy_path, &query, "mine").await;
        assert_eq!(r.status, 403, "{query}: {r:?}");
        assert!(r.text().contains(element), "{query}: {r:?}");
    }
    let (_, after) = w.attendee_copy(&uid).await;
    assert_eq!(attach_lines(&after), attach_lines(&before));
}

/// The organizer's update replaces the ATTACH in the attendee's copy (new MANAGED-ID,
/// new bytes for the attendee); her remove takes it out of the copy.
#[tokio::test]
async fn organizer_update_and_remove_reach_the_attendee_copy() {
    on_baikal!(organizer_update_and_remove_reach_the_attendee_copy);
    let w = World::new();
    let (path, uid) = w.organizer_event(&["user1", "user4"]).await;
    let r = w
        .post("user1", &path, "action=attachment-add", "draft")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let old = r.header("cal-managed-id").unwrap().to_string();

    let r = w
        .post(
            "user1",
            &path,
            &format!("action=attachment-update&managed-id={old}"),
            "final",
        )
        .await;
    assert!(r.status.is_success(), "update: {r:?}");
    let new = r
        .header("cal-managed-id")
        .expect("Cal-Managed-ID")
        .to_string();
    let url = r.header("location").expect("Location").to_string();
    assert_ne!(new, old);
    let (_, copy) = w.attendee_copy(&uid).await;
    let lines = attach_lines(&copy);
    assert!(
        lines.len() == 1 && lines[0].contains(&new),
        "user4's copy after the update: {lines:?}"
    );
    let r = w.send("user4", "GET", &url, &[], "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body.as_ref(), b"final");

    let r = w
        .post(
            "user1",
            &path,
            &format!("action=attachment-remove&managed-id={new}"),
            "",
        )
        .await;
    assert!(r.status.is_success(), "remove: {r:?}");
    let (_, copy) = w.attendee_copy(&uid).await;
    assert_eq!(attach_lines(&copy), Vec::<String>::new(), "{copy}");
    let r = w.send("user4", "GET", &url, &[], "").await;
    assert_eq!(r.status, 410, "download of the removed attachment: {r:?}");
}

/// RFC 8607 §3.12: when the organizer uninvites user4 (a PUT of the event without
/// them, through calattach; sabre sends user4 a CANCEL), user4 loses download access.
#[tokio::test]
async fn uninvited_attendee_loses_download_access() {
    on_baikal!(uninvited_attendee_loses_download_access);
    let w = World::new();
    let (path, uid) = w.organizer_event(&["user1", "user4"]).await;
    let r = w
        .post("user1", &path, "action=attachment-add", "agenda")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let url = r.header("location").unwrap().to_string();
    assert_eq!(w.send("user4", "GET", &url, &[], "").await.status, 200);

    let current = w.send("user1", "GET", &path, &[], "").await.text();
    let without: String = current
        .replace("\r\n ", "")
        .lines()
        .filter(|l| !l.contains("user4@"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let r = w
        .send(
            "user1",
            "PUT",
            &path,
            &[("Content-Type", "text/calendar; charset=utf-8")],
            &without,
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let (_, copy) = w.attendee_copy(&uid).await;
    assert!(
        copy.contains("STATUS:CANCELLED"),
        "no CANCEL reached user4:\n{copy}"
    );
    let r = w.send("user4", "GET", &url, &[], "").await;
    assert_eq!(r.status, 403, "uninvited attendee still downloads: {r:?}");
    assert_eq!(w.send("user1", "GET", &url, &[], "").await.status, 200);
}
