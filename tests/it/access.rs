//! Access rules and the PUT/DELETE guard (RFC 8607 §3.7–3.9, §3.11, §3.12.2, §3.12.5;
//! DESIGN §5–6; docs/security.md) on real Radicale, Xandikos and Baïkal with users
//! user1 (organizer), user2 (attendee) and user3 (neither).
//!
//! No upstream here shares calendars between users (Radicale `owner_only`; Xandikos
//! refuses other users' collections; Baïkal as tested sets up no sharing), so an
//! attendee's copy is the attendee's own object: here user2 stores it through
//! calattach, as a client importing an invitation does. (Baïkal's implicit scheduling
//! also delivers a copy of its own into user2's default calendar; the stored one is a
//! second attendee object with the same UID, which sabre/dav accepts. The copy sabre
//! delivers is what `scheduling.rs` tests.) Download access then rests on the audience recorded from the organizer's
//! object. Neither offers sharing or delegation either, so "a sharee with write access
//! may add" is covered only by its rule's other half: the owner of the calendar decides
//! (an organizer-side object accepts changes from whoever the upstream lets write).

use crate::harness::{basic, unique, Calattach, Client, Kind, Reply, Storage, Upstream};
use crate::transparency::on_each;

const TEMPLATE: &str = "[identity]\naddress_template = \"mailto:{user}@example.org\"\n";

fn pw(user: &str) -> &'static str {
    crate::harness::upstream::password(user)
}

fn mail(user: &str) -> String {
    format!("mailto:{user}@example.org")
}

pub(crate) struct World {
    pub(crate) up: &'static Upstream,
    pub(crate) proxy: Calattach,
    pub(crate) http: Client,
}

impl World {
    pub(crate) fn new(kind: Kind, extra: &str) -> World {
        let up = Upstream::get(kind);
        let proxy = Calattach::start(up, Storage::Local, &format!("{TEMPLATE}{extra}"));
        World {
            up,
            proxy,
            http: Client::new(),
        }
    }

    pub(crate) async fn send(
        &self,
        user: Option<&str>,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl AsRef<[u8]>,
    ) -> Reply {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            self.proxy.url(url)
        };
        let mut b = self.http.request(method, &url);
        if let Some(u) = user {
            b = b.basic(u, pw(u));
        }
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        b.body(bytes::Bytes::copy_from_slice(body.as_ref()))
            .send()
            .await
    }

    pub(crate) async fn put(&self, user: &str, path: &str, ics: &str) -> Reply {
        self.send(
            Some(user),
            "PUT",
            path,
            &[("Content-Type", "text/calendar; charset=utf-8")],
            ics,
        )
        .await
    }

    pub(crate) async fn get_text(&self, user: &str, path: &str) -> String {
        let r = self.send(Some(user), "GET", path, &[], "").await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        r.text()
    }

    /// POST attachment-add; returns (managed id, attachment URL).
    pub(crate) async fn add(&self, user: &str, path: &str) -> (String, String) {
        let r = self
            .post(user, path, "action=attachment-add", "hello")
            .await;
        assert_eq!(r.status, 201, "attachment-add on {path}: {r:?}");
        let id = r
            .header("cal-managed-id")
            .expect("Cal-Managed-ID")
            .to_string();
        let url = r.header("location").expect("Location").to_string();
        (id, url)
    }

    pub(crate) async fn post(&self, user: &str, path: &str, query: &str, body: &str) -> Reply {
        self.send(
            Some(user),
            "POST",
            &format!("{path}?{query}"),
            &[
                ("Content-Type", "text/plain"),
                ("Content-Disposition", "attachment; filename=notes.txt"),
            ],
            body,
        )
        .await
    }

    pub(crate) async fn download(&self, user: Option<&str>, url: &str) -> Reply {
        self.send(user, "GET", url, &[], "").await
    }

    /// user1's scheduled event with user2 invited and one attachment added by POST:
    /// (event path, id, url, uid).
    pub(crate) async fn organizer_event(
        &self,
        attendees: &[&str],
    ) -> (String, String, String, String) {
        let cal = self.up.new_calendar("user1", "acc").await;
        let uid = unique("uid");
        let path = format!("{cal}{uid}.ics");
        let r = self
            .put("user1", &path, &event(&uid, "user1", attendees, ""))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let (id, url) = self.add("user1", &path).await;
        (path, id, url, uid)
    }
}

/// A VEVENT organised by `organizer` (none when empty) with `attendees`; `extra` lines
/// go in the VEVENT.
pub(crate) fn event(uid: &str, organizer: &str, attendees: &[&str], extra: &str) -> String {
    let mut s = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250601T100000Z\r\nDURATION:PT1H\r\n\
         SUMMARY:access\r\n"
    );
    if !organizer.is_empty() {
        s.push_str(&format!("ORGANIZER:{}\r\n", mail(organizer)));
    }
    for a in attendees {
        s.push_str(&format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:{}\r\n", mail(a)));
    }
    s.push_str(extra);
    s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    s
}

pub(crate) fn attach_line(id: &str, url: &str) -> String {
    format!("ATTACH;MANAGED-ID={id};FMTTYPE=text/plain;FILENAME=notes.txt;SIZE=5:{url}\r\n")
}

/// The unfolded ATTACH lines of an iCalendar text.
fn attach_lines(ics: &str) -> Vec<String> {
    let unfolded = ics.replace("\r\n ", "").replace("\n ", "");
    unfolded
        .lines()
        .filter(|l| l.to_ascii_uppercase().starts_with("ATTACH"))
        .map(|l| l.trim_end().to_string())
        .collect()
}

fn assert_error(r: &Reply, elements: &[&str]) {
    assert_eq!(r.status, 403, "{r:?}");
    let text = r.text();
    assert!(text.contains("error"), "{r:?}");
    for e in elements {
        assert!(text.contains(&format!(":{e}/>")), "missing {e}: {r:?}");
    }
}

/// user2's own copy of user1's event (same UID and ORGANIZER, the ATTACH), stored
/// through calattach as a client importing the invitation does.
///
/// On Baïkal, sabre/dav's implicit scheduling has already delivered that copy (with the
/// ATTACH) into user2's calendar: it is the copy. Storing a second one is not possible
/// there (one UID per calendar, `CALDAV:no-uid-conflict`), and a calendar created for
/// it would break later deliveries: Baïkal 0.12.1's schema leaves a MKCALENDAR'd
/// calendar without an owner `access` value, so sabre then looks for existing copies in
/// vain and delivers every update as a new object (and prefers such a calendar).
async fn attendee_copy(w: &World, uid: &str, id: &str, url: &str) -> String {
    if w.up.kind() == Kind::Baikal {
        let mut found = w.up.objects_with_uid("user2", uid).await;
        assert_eq!(
            found.len(),
            1,
            "user2's copies delivered by Baïkal: {found:?}"
        );
        let (path, body) = found.remove(0);
        assert!(
            attach_lines(&body)
                .iter()
                .any(|l| l.contains(id) && l.contains(url)),
            "the delivered copy lacks the ATTACH:\n{body}"
        );
        return path;
    }
    // A calendar of its own: Xandikos answers 423 to concurrent writes into one
    // collection, and tests run in parallel.
    let cal = w.up.new_calendar("user2", "copy").await;
    let path = format!("{cal}{}.ics", unique("copy"));
    let r = w
        .put(
            "user2",
            &path,
            &event(uid, "user1", &["user1", "user2"], &attach_line(id, url)),
        )
        .await;
    assert!(r.status == 201 || r.status == 204, "attendee copy: {r:?}");
    path
}

// === who may download ===

async fn organizer_attendee_outsider_and_anonymous_downloads(kind: Kind) {
    let w = World::new(kind, "");
    let (_, _, url, _) = w.organizer_event(&["user1", "user2"]).await;
    let r = w.download(Some("user1"), &url).await;
    assert_eq!(r.status, 200, "organizer: {r:?}");
    assert_eq!(r.body.as_ref(), b"hello");
    let r = w.download(Some("user2"), &url).await;
    assert_eq!(r.status, 200, "attendee: {r:?}");
    let r = w.download(Some("user3"), &url).await;
    assert_eq!(r.status, 403, "outsider: {r:?}");
    let r = w.download(None, &url).await;
    assert_eq!(r.status, 401, "anonymous: {r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
}
on_each!(organizer_attendee_outsider_and_anonymous_downloads: organizer_and_attendee_download_outsider_403_anonymous_401);

async fn uninvited_attendee_loses_access(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    attendee_copy(&w, &uid, &id, &url).await;
    assert_eq!(w.download(Some("user2"), &url).await.status, 200);
    // The organizer drops user2 (no attachment change): the audience follows.
    let current = w.get_text("user1", &path).await;
    let without = current
        .replace("\r\n ", "")
        .lines()
        .filter(|l| !l.contains("user2@"))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    let r = w.put("user1", &path, &without).await;
    assert!(r.status.is_success(), "{r:?}");
    let r = w.download(Some("user2"), &url).await;
    assert_eq!(r.status, 403, "uninvited attendee still downloads: {r:?}");
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
}
on_each!(uninvited_attendee_loses_access: uninvited_attendee_loses_download_access);

async fn capability_mode(kind: Kind) {
    let w = World::new(kind, "[attachments]\ndownload = \"capability\"\n");
    let (path, _, url, _) = w.organizer_event(&["user1"]).await;
    let r = w.download(None, &url).await;
    assert_eq!(
        r.status, 200,
        "capability download without credentials: {r:?}"
    );
    assert_eq!(r.body.as_ref(), b"hello");
    // Removal still answers 410, to everybody.
    let current = w.get_text("user1", &path).await;
    let id = url.split('/').nth(4).unwrap();
    let r = w
        .post(
            "user1",
            &path,
            &format!("action=attachment-remove&managed-id={id}"),
            "",
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    assert!(!current.is_empty());
    assert_eq!(w.download(None, &url).await.status, 410);
}
on_each!(capability_mode: capability_mode_serves_without_credentials);

// === who may change ===

async fn attendee_copy_refuses_changes_but_accepts_replies(kind: Kind) {
    let w = World::new(kind, "");
    let (_, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let copy = attendee_copy(&w, &uid, &id, &url).await;
    let r = w
        .post("user2", &copy, "action=attachment-add", "nope")
        .await;
    assert_error(&r, &["valid-attachment-add"]);
    let r = w
        .post(
            "user2",
            &copy,
            &format!("action=attachment-update&managed-id={id}"),
            "nope",
        )
        .await;
    assert_error(&r, &["valid-attachment-update"]);
    let r = w
        .post(
            "user2",
            &copy,
            &format!("action=attachment-remove&managed-id={id}"),
            "",
        )
        .await;
    assert_error(&r, &["valid-attachment-remove"]);
    // The copy is unchanged and user2 still downloads.
    let text = w.get_text("user2", &copy).await;
    assert_eq!(attach_lines(&text).len(), 1, "{text}");
    assert_eq!(w.download(Some("user2"), &url).await.status, 200);
    // Replying (PARTSTAT) with the organizer's MANAGED-ID in the body succeeds.
    let reply = text.replace(
        "PARTSTAT=NEEDS-ACTION:mailto:user2",
        "PARTSTAT=ACCEPTED:mailto:user2",
    );
    assert_ne!(reply, text, "the copy lost its ATTENDEE line: {text}");
    let r = w.put("user2", &copy, &reply).await;
    assert!(r.status.is_success(), "attendee reply refused: {r:?}");
    assert!(w
        .get_text("user2", &copy)
        .await
        .contains("PARTSTAT=ACCEPTED"));
}
on_each!(attendee_copy_refuses_changes_but_accepts_replies: attendee_gets_403_on_add_update_remove_but_may_reply);

async fn updated_id_in_attendee_copy_still_saves(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let copy = attendee_copy(&w, &uid, &id, &url).await;
    // The organizer updates the attachment: the old id is tombstoned.
    let r = w
        .post(
            "user1",
            &path,
            &format!("action=attachment-update&managed-id={id}"),
            "v2",
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    // The attendee's stale copy still holds the old id and can still be saved. On
    // Baïkal the premise does not hold: its implicit scheduling has already brought
    // the update into user2's copy (the new id instead of the old), so what is checked
    // there is that this copy, as delivered, can be saved.
    let text = w.get_text("user2", &copy).await;
    if kind == Kind::Baikal {
        let new = r.header("cal-managed-id").expect("Cal-Managed-ID");
        assert!(
            text.contains(new) && !text.contains(&id),
            "Baïkal did not deliver the update:\n{text}"
        );
    }
    let reply = text.replace(
        "PARTSTAT=NEEDS-ACTION:mailto:user2",
        "PARTSTAT=DECLINED:mailto:user2",
    );
    let r = w.put("user2", &copy, &reply).await;
    assert!(r.status.is_success(), "stale copy refused: {r:?}");
}
on_each!(updated_id_in_attendee_copy_still_saves: attendee_copy_holding_an_updated_id_can_still_be_saved);

async fn outsider_cannot_reuse_an_id(kind: Kind) {
    let w = World::new(kind, "");
    let (_, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let cal = w.up.new_calendar("user3", "own").await;
    // A new event of user3's own.
    let own = event(&unique("uid"), "user3", &[], &attach_line(&id, &url));
    let r = w
        .put("user3", &format!("{cal}{}.ics", unique("e")), &own)
        .await;
    assert_error(&r, &["valid-managed-id-parameter", "valid-managed-id"]);
    // A fake copy of the event user3 was never invited to.
    let fake = event(&uid, "user1", &["user1", "user3"], &attach_line(&id, &url));
    let r = w
        .put("user3", &format!("{cal}{}.ics", unique("e")), &fake)
        .await;
    assert_error(&r, &["valid-managed-id-parameter", "valid-managed-id"]);
    // Without parameters, by URI alone: the same.
    let bare = event(&unique("uid"), "user3", &[], &format!("ATTACH:{url}\r\n"));
    let r = w
        .put("user3", &format!("{cal}{}.ics", unique("e")), &bare)
        .await;
    assert_error(&r, &["valid-managed-id-parameter", "valid-managed-id"]);
    assert_eq!(w.download(Some("user3"), &url).await.status, 403);
}
on_each!(outsider_cannot_reuse_an_id: outsider_reusing_an_id_gets_403_with_both_elements);

async fn creator_may_reuse_an_id(kind: Kind) {
    let w = World::new(kind, "");
    let (_, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal = w.up.new_calendar("user1", "other").await;
    let other = format!("{cal}{}.ics", unique("e"));
    let r = w
        .put(
            "user1",
            &other,
            &event(&unique("uid"), "user1", &[], &attach_line(&id, &url)),
        )
        .await;
    assert!(r.status.is_success(), "creator reuse refused: {r:?}");
}
on_each!(creator_may_reuse_an_id: creator_may_reuse_her_id_in_another_event);

async fn made_up_managed_id(kind: Kind) {
    let w = World::new(kind, "");
    let cal = w.up.new_calendar("user1", "acc").await;
    let ics = event(
        &unique("uid"),
        "user1",
        &[],
        "ATTACH;MANAGED-ID=made-up-id:https://example.com/x.pdf\r\n",
    );
    let path = format!("{cal}{}.ics", unique("e"));
    let r = w.put("user1", &path, &ics).await;
    assert_error(&r, &["valid-managed-id-parameter", "valid-managed-id"]);
    let r = w.send(Some("user1"), "GET", &path, &[], "").await;
    assert_eq!(r.status, 404, "refused PUT reached the upstream: {r:?}");
}
on_each!(made_up_managed_id: put_with_a_made_up_managed_id_is_refused);

// === the guard's bookkeeping ===

async fn put_dropping_attach(kind: Kind) {
    let w = World::new(kind, "");
    let (path, _, url, uid) = w.organizer_event(&["user1"]).await;
    let r = w
        .put("user1", &path, &event(&uid, "user1", &["user1"], ""))
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let r = w.download(Some("user1"), &url).await;
    assert_eq!(r.status, 410, "{r:?}");
}
on_each!(put_dropping_attach: put_dropping_the_attach_makes_the_download_410);

async fn delete_of_event(kind: Kind) {
    let w = World::new(kind, "");
    let (path, _, url, _) = w.organizer_event(&["user1"]).await;
    let r = w.send(Some("user1"), "DELETE", &path, &[], "").await;
    assert!(r.status.is_success(), "{r:?}");
    let r = w.download(Some("user1"), &url).await;
    assert_eq!(r.status, 410, "{r:?}");
}
on_each!(delete_of_event: delete_of_the_event_makes_the_download_410);

async fn stale_if_match(kind: Kind) {
    let w = World::new(kind, "");
    let (path, _, url, uid) = w.organizer_event(&["user1"]).await;
    let r = w
        .send(
            Some("user1"),
            "PUT",
            &path,
            &[
                ("Content-Type", "text/calendar"),
                ("If-Match", "\"stale-etag\""),
            ],
            &event(&uid, "user1", &["user1"], ""),
        )
        .await;
    assert_eq!(r.status, 412, "{r:?}");
    let r = w
        .send(
            Some("user1"),
            "DELETE",
            &path,
            &[("If-Match", "\"stale\"")],
            "",
        )
        .await;
    assert_eq!(r.status, 412, "{r:?}");
    let r = w.download(Some("user1"), &url).await;
    assert_eq!(
        r.status, 200,
        "a failed conditional write tombstoned: {r:?}"
    );
}
on_each!(stale_if_match: failed_conditional_put_and_delete_tombstone_nothing);

async fn rewrite_dropping_managed_id(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1"]).await;
    // A client rewrites the event keeping only the URI, with a wrong SIZE.
    let ics = event(
        &uid,
        "user1",
        &["user1"],
        &format!("ATTACH;SIZE=999:{url}\r\n"),
    );
    let r = w.put("user1", &path, &ics).await;
    assert!(r.status.is_success(), "{r:?}");
    assert!(
        r.header("etag").is_none(),
        "ETag sent although the stored body differs from the PUT: {r:?}"
    );
    let text = w.get_text("user1", &path).await;
    let lines = attach_lines(&text);
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert!(line.contains(&format!("MANAGED-ID={id}")), "{line}");
    assert!(line.contains("SIZE=5"), "{line}");
    assert!(line.contains("FILENAME=notes.txt"), "{line}");
    assert!(line.contains("FMTTYPE=text/plain"), "{line}");
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
}
on_each!(rewrite_dropping_managed_id: rewrite_dropping_managed_id_keeps_the_attachment_and_restores_parameters);

async fn prefer_on_guarded_put(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1"]).await;
    let ics = event(&uid, "user1", &["user1"], &format!("ATTACH:{url}\r\n"));
    let r = w
        .send(
            Some("user1"),
            "PUT",
            &path,
            &[
                ("Content-Type", "text/calendar"),
                ("Prefer", "return=representation"),
            ],
            &ics,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("etag").is_some(), "{r:?}");
    let stored = r.text().replace("\r\n ", "").replace("\n ", "");
    assert!(stored.contains(&format!("MANAGED-ID={id}")), "{r:?}");
}
on_each!(prefer_on_guarded_put: prefer_return_representation_on_a_guarded_put_answers_the_stored_object);

async fn move_keeps_refs(kind: Kind) {
    let w = World::new(kind, "");
    let (path, _, url, _) = w.organizer_event(&["user1"]).await;
    // Into another calendar: Xandikos refuses a MOVE within one collection (the UID is
    // "already in use" by the source).
    let other = w.up.new_calendar("user1", "moved").await;
    let dest = format!("{other}{}.ics", unique("moved"));
    let r = w
        .send(
            Some("user1"),
            "MOVE",
            &path,
            &[("Destination", &w.proxy.url(&dest))],
            "",
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
    // The moved object now owns the id: deleting it tombstones.
    let r = w.send(Some("user1"), "DELETE", &dest, &[], "").await;
    assert!(r.status.is_success(), "{r:?}");
    assert_eq!(w.download(Some("user1"), &url).await.status, 410);
}
on_each!(move_keeps_refs: move_hands_the_ids_to_the_destination);

// === credentials ===

async fn identity_cache_per_credentials(kind: Kind) {
    let w = World::new(kind, "");
    let (_, _, url, _) = w.organizer_event(&["user1"]).await;
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
    // Same user name, another password: not served from user1's cached resolution.
    let r = w
        .http
        .request("GET", &url)
        .header("Authorization", basic("user1", "not-the-password"))
        .send()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    // user2's credentials right after user1's: user2's own (403, not invited).
    assert_eq!(w.download(Some("user2"), &url).await.status, 403);
    assert_eq!(w.download(Some("user1"), &url).await.status, 200);
}
on_each!(identity_cache_per_credentials: identity_cache_never_serves_one_credentials_resolution_to_another);

/// A password change upstream: the new password works at once (another cache key), and
/// the old one stops working once its cached resolution expires (`identity.cache_ttl`,
/// 1 s here; a private Radicale whose htpasswd file is rewritten).
#[tokio::test]
async fn changed_password_is_not_served_from_the_identity_cache_past_its_ttl() {
    let up: &'static Upstream = Box::leak(Box::new(Upstream::start(Kind::Radicale)));
    let proxy = Calattach::start(
        up,
        Storage::Local,
        &format!("{TEMPLATE}cache_ttl = \"1s\"\n"),
    );
    let http = Client::new();
    let cal = up.calendar_path("user1");
    let path = format!("{cal}{}.ics", unique("e"));
    let uid = unique("uid");
    let r = http
        .request("PUT", &proxy.url(&path))
        .basic("user1", pw("user1"))
        .header("Content-Type", "text/calendar")
        .body(event(&uid, "user1", &[], ""))
        .send()
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = http
        .request("POST", &proxy.url(&format!("{path}?action=attachment-add")))
        .basic("user1", pw("user1"))
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let url = r.header("location").unwrap().to_string();
    let r = http
        .request("GET", &url)
        .basic("user1", pw("user1"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Change user1's password in Radicale's plain htpasswd file.
    let users = up.dir().join("users");
    let text = std::fs::read_to_string(&users).unwrap();
    std::fs::write(&users, text.replace("user1:user1-pw", "user1:new-pw")).unwrap();
    let r = http
        .request("GET", &url)
        .basic("user1", "new-pw")
        .send()
        .await;
    assert_eq!(r.status, 200, "new password: {r:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut status = 0;
    for _ in 0..50 {
        status = http
            .request("GET", &url)
            .basic("user1", pw("user1"))
            .send()
            .await
            .status
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 401,
        "old password still accepted after the cache TTL"
    );
}

async fn digest_on_owned_routes(kind: Kind) {
    let w = World::new(kind, "");
    let (path, _, url, _) = w.organizer_event(&["user1"]).await;
    let digest = "Digest username=\"user1\", realm=\"x\", nonce=\"n\", uri=\"/\", response=\"r\"";
    let r = w
        .http
        .request("GET", &url)
        .header("Authorization", digest)
        .send()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.text().contains("Digest"), "{r:?}");
    let r = w
        .http
        .request(
            "POST",
            &w.proxy.url(&format!("{path}?action=attachment-add")),
        )
        .header("Authorization", digest)
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.text().contains("Digest"), "{r:?}");
}
on_each!(digest_on_owned_routes: digest_on_owned_routes_gets_a_clear_401);

async fn schedule_user_address_not_the_callers(kind: Kind) {
    let w = World::new(kind, "");
    let (path, _, _, _) = w.organizer_event(&["user1"]).await;
    let r = w
        .send(
            Some("user1"),
            "POST",
            &format!("{path}?action=attachment-add"),
            &[
                ("Content-Type", "text/plain"),
                ("Schedule-User-Address", "mailto:user2@example.org"),
            ],
            "x",
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        w.proxy.stderr().contains("dropping Schedule-User-Address"),
        "foreign Schedule-User-Address was not dropped"
    );
}
on_each!(schedule_user_address_not_the_callers: foreign_schedule_user_address_is_dropped);

// === attachments belong to their creator: attacks by other accounts ===
//
// Each scenario is an attack by user2 or user3 on user1's attachment, made as an
// ordinary account on the same server would; each ends by showing the victim's
// attachment intact: still referenced by user1's event and downloadable.

/// user1's event still carries the attachment and user1 still downloads it.
async fn assert_intact(w: &World, path: &str, url: &str) {
    let text = w.get_text("user1", path).await;
    assert!(
        attach_lines(&text).iter().any(|l| l.ends_with(url)),
        "the victim's event lost its ATTACH: {text}"
    );
    let r = w.download(Some("user1"), url).await;
    assert_eq!(r.status, 200, "the victim's attachment: {r:?}");
    assert_eq!(r.body.as_ref(), b"hello");
}

/// A PUT by user3 of a new event of its own carrying `attach` (user1's id): refused
/// `403 valid-managed-id-parameter`, and nothing stored upstream.
async fn assert_plant_refused(w: &World, target: &str, headers: &[(&str, &str)], body: &str) {
    let r = w.send(Some("user3"), "PUT", target, headers, body).await;
    assert_error(&r, &["valid-managed-id-parameter", "valid-managed-id"]);
    if !target.ends_with('/') {
        let r = w.send(Some("user3"), "GET", target, &[], "").await;
        assert_eq!(r.status, 404, "refused PUT reached the upstream: {r:?}");
    }
}

/// `ATTACH;MANAG` CRLF SP `ED-ID=…`: a fold inside the parameter name, another inside
/// the URI.
fn folded_attach(id: &str, url: &str) -> String {
    let cut = url.len() / 2;
    format!(
        "ATTACH;MANAG\r\n ED-ID={id};FMTTYPE=text/plain:{}\r\n {}\r\n",
        &url[..cut],
        &url[cut..]
    )
}

async fn folded_lines_cannot_plant_an_id(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal = w.up.new_calendar("user3", "own").await;
    let target = format!("{cal}{}.ics", unique("e"));
    let ics = event(&unique("uid"), "user3", &[], &folded_attach(&id, &url));
    assert_plant_refused(
        &w,
        &target,
        &[("Content-Type", "text/calendar; charset=utf-8")],
        &ics,
    )
    .await;
    assert_intact(&w, &path, &url).await;
}
on_each!(folded_lines_cannot_plant_an_id: a_folded_attach_line_cannot_plant_another_users_id);

async fn put_without_content_type_is_guarded(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal = w.up.new_calendar("user3", "own").await;
    let target = format!("{cal}{}.ics", unique("e"));
    let ics = event(&unique("uid"), "user3", &[], &attach_line(&id, &url));
    assert_plant_refused(&w, &target, &[], &ics).await;
    assert_plant_refused(&w, &target, &[("Content-Type", "text/plain")], &ics).await;
    assert_intact(&w, &path, &url).await;
}
on_each!(put_without_content_type_is_guarded: a_put_without_or_with_another_content_type_cannot_plant_an_id);

async fn put_to_a_collection_is_guarded(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal = w.up.new_calendar("user3", "own").await;
    let ics = event(&unique("uid"), "user3", &[], &attach_line(&id, &url));
    assert_plant_refused(
        &w,
        &cal,
        &[("Content-Type", "text/calendar; charset=utf-8")],
        &ics,
    )
    .await;
    // Nothing was imported into the collection.
    let r = w
        .send(
            Some("user3"),
            "PROPFIND",
            &cal,
            &[("Depth", "1")],
            "<?xml version=\"1.0\"?><propfind xmlns=\"DAV:\"><prop><getetag/></prop></propfind>",
        )
        .await;
    assert!(!r.text().contains(".ics"), "an object was imported: {r:?}");
    assert_intact(&w, &path, &url).await;
}
on_each!(put_to_a_collection_is_guarded: a_put_to_a_collection_path_cannot_plant_an_id);

/// A body larger than `max_object_size`: scanned as it streams, refused with nothing
/// stored; one without managed ids still streams through byte for byte.
async fn oversize_put_is_scanned(kind: Kind) {
    let w = World::new(kind, "[attachments]\nmax_object_size = 65536\n");
    let (path, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal = w.up.new_calendar("user3", "own").await;
    let padding: String = (0..3000)
        .map(|i| format!("X-PAD-{i}:{}\r\n", "p".repeat(40)))
        .collect();
    let planted = format!("{padding}{}", folded_attach(&id, &url));
    let ics = event(&unique("uid"), "user3", &[], &planted);
    assert!(ics.len() > 65536 * 2);
    let target = format!("{cal}{}.ics", unique("e"));
    assert_plant_refused(
        &w,
        &target,
        &[("Content-Type", "text/calendar; charset=utf-8")],
        &ics,
    )
    .await;
    // The same size without the planted line is stored as sent.
    let innocent = event(&unique("uid"), "user3", &[], &padding);
    let target = format!("{cal}{}.ics", unique("e"));
    let r = w.put("user3", &target, &innocent).await;
    assert_eq!(r.status, 201, "{r:?}");
    let stored = w.get_text("user3", &target).await;
    assert!(stored.contains("X-PAD-2999:"), "large object not stored");
    assert_intact(&w, &path, &url).await;
}
on_each!(oversize_put_is_scanned: a_put_larger_than_max_object_size_cannot_plant_an_id_and_others_stream_through);

/// An attendee imports the invitation (allowed: a scheduling copy), names itself
/// ORGANIZER (the id is already in its object, so that save passes), then updates and
/// removes the attachment there: only its own object changes.
async fn attendee_cannot_tombstone_through_its_copy(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let copy = attendee_copy(&w, &uid, &id, &url).await;
    let hijacked = event(&uid, "user2", &["user1", "user2"], &attach_line(&id, &url));
    let r = w.put("user2", &copy, &hijacked).await;
    assert!(r.status.is_success(), "{r:?}");
    let r = w
        .post(
            "user2",
            &copy,
            &format!("action=attachment-update&managed-id={id}"),
            "mine",
        )
        .await;
    assert!(r.status.is_success(), "update of its own object: {r:?}");
    assert_intact(&w, &path, &url).await;
    let r = w
        .post(
            "user2",
            &copy,
            &format!("action=attachment-remove&managed-id={id}"),
            "",
        )
        .await;
    assert!(r.status.is_success() || r.status == 403, "{r:?}");
    assert_intact(&w, &path, &url).await;
    // Still invited: the attendee keeps reading it.
    assert_eq!(w.download(Some("user2"), &url).await.status, 200);
}
on_each!(attendee_cannot_tombstone_through_its_copy: an_attendee_posting_update_or_remove_on_its_copy_changes_only_its_copy);

/// Uninvited user3 names itself ORGANIZER — in its old copy and in a new object with the
/// same UID — and still cannot read; the invited attendee keeps access.
async fn ex_attendee_cannot_rewrite_the_audience(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2", "user3"]).await;
    let cal3 = w.up.new_calendar("user3", "copy").await;
    let copy3 = format!("{cal3}{}.ics", unique("copy"));
    let r = w
        .put(
            "user3",
            &copy3,
            &event(
                &uid,
                "user1",
                &["user1", "user2", "user3"],
                &attach_line(&id, &url),
            ),
        )
        .await;
    assert!(r.status.is_success(), "invited copy: {r:?}");
    // The organizer uninvites user3.
    let r = w
        .put(
            "user1",
            &path,
            &event(&uid, "user1", &["user1", "user2"], &attach_line(&id, &url)),
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    assert_eq!(w.download(Some("user3"), &url).await.status, 403);
    // user3 re-saves its copy as organizer, with itself and a friend invited.
    let claim = event(&uid, "user3", &["user3"], &attach_line(&id, &url));
    let r = w.put("user3", &copy3, &claim).await;
    assert!(r.status.is_success(), "{r:?}");
    // And plants the id into a new object with the same UID as organizer.
    let other = format!("{cal3}{}.ics", unique("e"));
    let r = w.put("user3", &other, &claim).await;
    assert_error(&r, &["valid-managed-id-parameter", "valid-managed-id"]);
    // And posts on its copy (an add records the audience of what it commits).
    let r = w.post("user3", &copy3, "action=attachment-add", "x").await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        w.download(Some("user3"), &url).await.status,
        403,
        "the ex-attendee regained access"
    );
    assert_eq!(w.download(Some("user2"), &url).await.status, 200);
    assert_intact(&w, &path, &url).await;
}
on_each!(ex_attendee_cannot_rewrite_the_audience: an_uninvited_attendee_naming_itself_organizer_cannot_rewrite_the_audience);

/// A MOVE of the attendee's copy onto the organizer's event is refused by the upstream;
/// its rollback must not remove the organizer's own index entries, so the attendee's
/// next save (dropping the ATTACH) cannot tombstone the organizer's attachment.
async fn failed_move_rolls_back_only_its_own_entries(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1", "user2"]).await;
    let copy = attendee_copy(&w, &uid, &id, &url).await;
    let r = w
        .send(
            Some("user2"),
            "MOVE",
            &copy,
            &[("Destination", &w.proxy.url(&path)), ("Overwrite", "T")],
            "",
        )
        .await;
    assert!(
        !r.status.is_success(),
        "the upstream let user2 overwrite user1's event: {r:?}"
    );
    let r = w
        .put(
            "user2",
            &copy,
            &event(&uid, "user1", &["user1", "user2"], ""),
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    assert_intact(&w, &path, &url).await;
}
on_each!(failed_move_rolls_back_only_its_own_entries: a_refused_move_onto_the_organizers_event_keeps_the_organizers_index);

/// RFC 8607 §3.7 reuse: the creator's second event holds the id; an update, then a
/// remove, on the first event leave the second event's link working.
async fn update_keeps_an_id_another_event_holds(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, _) = w.organizer_event(&["user1"]).await;
    let cal = w.up.new_calendar("user1", "other").await;
    let other = format!("{cal}{}.ics", unique("e"));
    let other_uid = unique("uid");
    let r = w
        .put(
            "user1",
            &other,
            &event(&other_uid, "user1", &[], &attach_line(&id, &url)),
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let r = w
        .post(
            "user1",
            &path,
            &format!("action=attachment-update&managed-id={id}"),
            "new",
        )
        .await;
    assert!(r.status.is_success(), "{r:?}");
    let r = w.download(Some("user1"), &url).await;
    assert_eq!(
        r.status, 200,
        "the other event's link broke on update: {r:?}"
    );
    assert_eq!(r.body.as_ref(), b"hello");
    // The second event drops it too: now nothing holds it.
    let r = w
        .put("user1", &other, &event(&other_uid, "user1", &[], ""))
        .await;
    assert!(r.status.is_success(), "{r:?}");
    assert_eq!(w.download(Some("user1"), &url).await.status, 410);
}
on_each!(update_keeps_an_id_another_event_holds: an_update_keeps_the_old_id_alive_while_the_creators_other_event_holds_it);

/// A managed ATTACH re-pointed at a foreign URL (with a new FILENAME and SIZE) gets the
/// issued URI and the server's parameters back.
async fn managed_attach_cannot_point_elsewhere(kind: Kind) {
    let w = World::new(kind, "");
    let (path, id, url, uid) = w.organizer_event(&["user1"]).await;
    let evil = format!(
        "ATTACH;MANAGED-ID={id};FMTTYPE=application/x-msdownload;FILENAME=evil.exe;SIZE=1:https://evil.example/evil.exe\r\n"
    );
    let r = w
        .put("user1", &path, &event(&uid, "user1", &["user1"], &evil))
        .await;
    assert!(r.status.is_success(), "{r:?}");
    assert!(
        r.header("etag").is_none(),
        "changed body answered with an ETag: {r:?}"
    );
    let text = w.get_text("user1", &path).await;
    let lines = attach_lines(&text);
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].ends_with(&url), "{lines:?}");
    assert!(lines[0].contains("FILENAME=notes.txt"), "{lines:?}");
    assert!(lines[0].contains("SIZE=5"), "{lines:?}");
    assert!(!text.contains("evil"), "{text}");
    assert_intact(&w, &path, &url).await;
}
on_each!(managed_attach_cannot_point_elsewhere: a_managed_attach_repointed_elsewhere_gets_the_issued_uri_and_parameters_back);

// === the representation clients ask for, refusals they can read (RFC 8144, RFC 3744) ===

/// calattach in front of a fault proxy in pass mode, which records every request line
/// the upstream receives.
fn counted(kind: Kind) -> (crate::harness::faultproxy::FaultProxy, Calattach) {
    let up = Upstream::get(kind);
    let fp = crate::harness::faultproxy::FaultProxy::start(crate::harness::loopback(up.port()));
    let proxy = Calattach::start(&fp.origin(), Storage::Local, TEMPLATE);
    (fp, proxy)
}

async fn put_via(proxy: &Calattach, path: &str, prefer: Option<&str>, ics: &str) -> Reply {
    let mut b = Client::new()
        .request("PUT", &proxy.url(path))
        .basic("user1", pw("user1"))
        .header("Content-Type", "text/calendar; charset=utf-8");
    if let Some(p) = prefer {
        b = b.header("Prefer", p);
    }
    b.body(ics.to_string()).send().await
}

fn gets(fp: &crate::harness::faultproxy::FaultProxy, path: &str) -> usize {
    fp.seen()
        .iter()
        .filter(|l| l.starts_with(&format!("GET {path} ")))
        .count()
}

async fn prefer_on_every_put(kind: Kind) {
    let (fp, proxy) = counted(kind);
    let up = Upstream::get(kind);
    let cal = up.new_calendar("user1", "prefer").await;
    let uid = unique("uid");
    let path = format!("{cal}{uid}.ics");

    // Create, asking for the representation: the stored object comes back.
    let r = put_via(
        &proxy,
        &path,
        Some("return=representation"),
        &event(&uid, "user1", &[], ""),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation"),
        "{r:?}"
    );
    assert!(r.text().contains(&format!("UID:{uid}")), "{r:?}");
    assert!(
        r.header("content-location")
            .is_some_and(|v| v.ends_with(&path)),
        "{r:?}"
    );
    assert!(r.header("etag").is_some(), "{r:?}");
    assert_eq!(gets(&fp, &path), 1, "one read-back GET");

    // Update: 200 with the object.
    let changed = event(&uid, "user1", &[], "DESCRIPTION:changed\r\n");
    let r = put_via(&proxy, &path, Some("return=representation"), &changed).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("DESCRIPTION:changed"), "{r:?}");
    assert_eq!(gets(&fp, &path), 2);

    // Without Prefer, or with return=minimal: as the upstream answered, no extra GET.
    let r = put_via(
        &proxy,
        &path,
        None,
        &event(&uid, "user1", &[], "DESCRIPTION:3\r\n"),
    )
    .await;
    assert!(
        r.status == 204 || r.status == 201 || r.status == 200,
        "{r:?}"
    );
    assert!(r.header("preference-applied").is_none(), "{r:?}");
    let r = put_via(
        &proxy,
        &path,
        Some("return=minimal"),
        &event(&uid, "user1", &[], "DESCRIPTION:4\r\n"),
    )
    .await;
    assert!(r.header("preference-applied").is_none(), "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    assert_eq!(gets(&fp, &path), 2, "a PUT that did not ask caused a GET");
}
on_each!(prefer_on_every_put: prefer_return_representation_on_any_put_returns_the_stored_object_and_nothing_extra_without_it);

async fn refused_download_names_dav_read(kind: Kind) {
    let w = World::new(kind, "");
    let (_, id, url, _) = w.organizer_event(&["user1"]).await;
    let r = w.download(Some("user3"), &url).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/xml")),
        "{r:?}"
    );
    let text = r.text();
    let (elements, href) = dav_elements(&text);
    assert_eq!(
        elements,
        [
            "error",
            "need-privileges",
            "resource",
            "href",
            "privilege",
            "read"
        ],
        "{text}"
    );
    assert!(href.ends_with(&id), "{text}");
    // Decided before the state: a removed id answers the same to an outsider.
    assert!(!text.contains("gone"), "{text}");
}
on_each!(refused_download_names_dav_read: a_refused_download_answers_403_need_privileges_naming_dav_read);

/// The `DAV:` elements of an XML document in document order (namespaces resolved, so
/// any prefix works), and the text of its `DAV:href`. Panics when it does not parse.
fn dav_elements(xml: &str) -> (Vec<String>, String) {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let mut reader = quick_xml::NsReader::from_str(xml);
    let (mut names, mut href, mut in_href) = (Vec::new(), String::new(), false);
    loop {
        match reader.read_resolved_event().expect("well-formed XML") {
            (ResolveResult::Bound(ns), Event::Start(e) | Event::Empty(e))
                if ns.as_ref() == b"DAV:" =>
            {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                in_href = name == "href";
                names.push(name);
            }
            (_, Event::Text(t)) if in_href => {
                href.push_str(&String::from_utf8_lossy(t.as_ref()));
            }
            (_, Event::End(_)) => in_href = false,
            (_, Event::Eof) => break,
            _ => {}
        }
    }
    (names, href)
}
