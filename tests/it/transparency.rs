//! Differential transparency (DESIGN §3): for a scripted CalDAV session, each
//! response through calattach equals the direct response from the same
//! upstream, up to the rewrites listed in `harness::compare`.
//!
//! Reads go to the same resource direct and then through the proxy, right
//! after each other, so both see one state. Writes run in lockstep on two
//! collections with same-length names, A direct and B proxied; the direct
//! answer is compared after substituting A's name with B's.

use crate::harness::compare::{assert_transparent, Mapping};
use crate::harness::{unique, Calattach, Client, Kind, Reply, Storage, Upstream};

pub const USER: &str = "user1";

/// Only the PROPFIND tests read this user's home (Depth 1), so calendars
/// that parallel tests create in `USER`'s home never change it mid-comparison.
pub const HOME_READER: &str = "user3";

/// A calendar event with CRLF line ends.
pub fn event(uid: &str, summary: &str, start: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:{start}\r\nDURATION:PT1H\r\n\
         SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

pub const ALLPROP: &str =
    r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

pub const NAMED_PROPS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/">
  <D:prop>
    <D:displayname/><D:resourcetype/><D:getetag/><D:getcontenttype/><D:sync-token/>
    <D:current-user-principal/><C:calendar-home-set/><C:supported-calendar-component-set/>
    <CS:getctag/><D:owner/>
  </D:prop>
</D:propfind>"#;

/// One test's view: an upstream, a calattach in front of it, a client.
pub struct Env {
    pub up: &'static Upstream,
    pub proxy: Calattach,
    pub http: Client,
}

impl Env {
    pub fn new(kind: Kind) -> Env {
        let up = Upstream::get(kind);
        let proxy = Calattach::start(up, Storage::Local, "");
        Env {
            up,
            proxy,
            http: Client::new(),
        }
    }

    pub fn password(&self) -> &'static str {
        self.up.password(USER)
    }

    /// Xandikos stores a generated `DAV:resource-id` on the first allprop
    /// PROPFIND of a resource, changing its ETag and sync token; one priming
    /// PROPFIND makes the following direct and proxied reads see one state.
    pub async fn prime(&self, user: &str, path: &str, depth: &str) {
        let reply = self
            .http
            .request("PROPFIND", &self.up.url(path))
            .basic(user, self.up.password(user))
            .header("Depth", depth)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(ALLPROP)
            .send()
            .await;
        assert_eq!(reply.status, 207, "priming PROPFIND {path}: {reply:?}");
    }

    /// Sends the same request direct and then through the proxy.
    pub async fn both(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        auth: bool,
    ) -> (Reply, Reply) {
        let user = if auth { Some(USER) } else { None };
        self.both_as(user, method, path, headers, body).await
    }

    pub async fn both_as(
        &self,
        user: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (Reply, Reply) {
        let direct = self
            .send_as(user, &self.up.url(path), method, headers, body)
            .await;
        let proxied = self
            .send_as(user, &self.proxy.url(path), method, headers, body)
            .await;
        (direct, proxied)
    }

    pub async fn send(
        &self,
        url: &str,
        method: &str,
        headers: &[(&str, &str)],
        body: &str,
        auth: bool,
    ) -> Reply {
        let user = if auth { Some(USER) } else { None };
        self.send_as(user, url, method, headers, body).await
    }

    pub async fn send_as(
        &self,
        user: Option<&str>,
        url: &str,
        method: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = self.http.request(method, url);
        if let Some(user) = user {
            request = request.basic(user, self.up.password(user));
        }
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if !body.is_empty() {
            request = request.body(body.to_string());
        }
        request.send().await
    }

    /// A read: same resource, direct then proxied, compared.
    pub async fn read_same(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.read_same_as(USER, what, method, path, headers, body)
            .await
    }

    pub async fn read_same_as(
        &self,
        user: &str,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let (direct, proxied) = self.both_as(Some(user), method, path, headers, body).await;
        self.assert_same(what, &direct, &proxied, &[], method == "OPTIONS");
        proxied
    }

    /// A write in lockstep: `direct_path` direct, `proxied_path` proxied.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_lockstep(
        &self,
        what: &str,
        method: &str,
        direct_path: &str,
        proxied_path: &str,
        headers: &[(&str, &str)],
        body: &str,
        substitutions: &[(String, String)],
    ) -> Reply {
        let direct = self
            .send(&self.up.url(direct_path), method, headers, body, true)
            .await;
        let proxied = self
            .send(&self.proxy.url(proxied_path), method, headers, body, true)
            .await;
        self.assert_same(what, &direct, &proxied, substitutions, false);
        proxied
    }

    pub fn assert_same(
        &self,
        what: &str,
        direct: &Reply,
        proxied: &Reply,
        substitutions: &[(String, String)],
        options: bool,
    ) {
        let upstream_origin = self.up.origin();
        let proxy_origin = self.proxy.origin();
        assert_transparent(
            &format!("{} on {}", what, self.up.name()),
            direct,
            proxied,
            &Mapping {
                upstream_origin: &upstream_origin,
                proxy_origin: &proxy_origin,
                substitutions,
                options,
            },
        );
    }

    /// A fresh calendar holding two events; returns its path and the hrefs.
    pub async fn calendar_with_events(&self, prefix: &str) -> (String, Vec<String>) {
        let cal = self.up.new_calendar(USER, prefix).await;
        let mut hrefs = Vec::new();
        for (i, start) in ["20250310T090000Z", "20250311T140000Z"].iter().enumerate() {
            let href = format!("{cal}ev{i}.ics");
            let uid = unique("uid");
            self.up
                .put_event(USER, &href, &event(&uid, &format!("Event {i}"), start))
                .await;
            hrefs.push(href);
        }
        self.prime(USER, &cal, "1").await;
        (cal, hrefs)
    }

    /// Two fresh calendars with same-length names for lockstep writes:
    /// (direct path, proxied path, substitution direct → proxied).
    pub async fn calendar_pair(&self, prefix: &str) -> (String, String, Vec<(String, String)>) {
        let a = self.up.new_calendar(USER, prefix).await;
        let b = self.up.new_calendar(USER, prefix).await;
        self.prime(USER, &a, "0").await;
        self.prime(USER, &b, "0").await;
        // Without the trailing slash: sabre/dav (Baïkal) names collections without it
        // in PROPPATCH answers.
        let subst = vec![(
            a.trim_end_matches('/').to_string(),
            b.trim_end_matches('/').to_string(),
        )];
        (a, b, subst)
    }
}

/// Runs `async fn scenario(kind: Kind)` on every upstream, as the tests
/// `name::radicale`, `name::xandikos` and `name::baikal`. Adding an upstream is one
/// line in the list below. A Baïkal test where Baïkal cannot run says so and passes
/// (see [`crate::harness::upstream::usable`]).
macro_rules! on_each {
    ($scenario:ident: $name:ident) => {
        $crate::transparency::on_each!(@ $scenario: $name [
            radicale Radicale,
            xandikos Xandikos,
            baikal Baikal,
        ]);
    };
    (@ $scenario:ident: $name:ident [$($test:ident $kind:ident,)*]) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $test() {
                    let kind = $crate::harness::Kind::$kind;
                    if $crate::harness::upstream::usable(kind, concat!(module_path!(), "::", stringify!($test))) {
                        super::$scenario(kind).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_each;

// === OPTIONS ===

async fn options(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.up.calendar_path(USER);
    for path in ["/", cal.as_str()] {
        env.read_same(&format!("OPTIONS {path}"), "OPTIONS", path, &[], "")
            .await;
    }
}
on_each!(options: proxied_options_equals_direct_plus_managed_attachments_dav_line);

// === PROPFIND ===

async fn propfind_depth0(kind: Kind) {
    let env = Env::new(kind);
    let (cal, _) = env.calendar_with_events("pf0").await;
    let home = env.up.home_path(HOME_READER);
    let principal = env.up.principal_path(HOME_READER);
    env.prime(HOME_READER, &home, "1").await;
    env.prime(HOME_READER, &principal, "0").await;
    for (user, path) in [
        (USER, &cal),
        (HOME_READER, &home),
        (HOME_READER, &principal),
    ] {
        for (name, body) in [("allprop", ALLPROP), ("named props", NAMED_PROPS)] {
            env.read_same_as(
                user,
                &format!("PROPFIND Depth 0 {name} {path}"),
                "PROPFIND",
                path,
                &[
                    ("Depth", "0"),
                    ("Content-Type", "application/xml; charset=utf-8"),
                ],
                body,
            )
            .await;
        }
    }
}
on_each!(propfind_depth0: proxied_propfind_depth0_allprop_and_named_equals_direct);

async fn propfind_depth1(kind: Kind) {
    let env = Env::new(kind);
    let (cal, _) = env.calendar_with_events("pf1").await;
    let home = env.up.home_path(HOME_READER);
    env.prime(HOME_READER, &home, "1").await;
    for (user, path) in [(USER, &cal), (HOME_READER, &home)] {
        for (name, body) in [
            ("allprop", ALLPROP),
            ("named props", NAMED_PROPS),
            ("empty body", ""),
        ] {
            env.read_same_as(
                user,
                &format!("PROPFIND Depth 1 {name} {path}"),
                "PROPFIND",
                path,
                &[
                    ("Depth", "1"),
                    ("Content-Type", "application/xml; charset=utf-8"),
                ],
                body,
            )
            .await;
        }
    }
}
on_each!(propfind_depth1: proxied_propfind_depth1_allprop_and_named_equals_direct);

// === MKCALENDAR ===

async fn mkcalendar(kind: Kind) {
    let env = Env::new(kind);
    let home = env.up.home_path(USER);
    let a = format!("{home}{}/", unique("mkcal"));
    let b = format!("{home}{}/", unique("mkcal"));
    let subst = vec![(a.clone(), b.clone())];
    let body = r#"<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>Lockstep ✓</D:displayname>
  <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
  </D:prop></D:set>
</C:mkcalendar>"#;
    let headers = [("Content-Type", "application/xml; charset=utf-8")];
    let created = env
        .write_lockstep("MKCALENDAR", "MKCALENDAR", &a, &b, &headers, body, &subst)
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    env.write_lockstep(
        "MKCALENDAR on an existing calendar",
        "MKCALENDAR",
        &a,
        &b,
        &headers,
        body,
        &subst,
    )
    .await;
    env.read_same(
        "PROPFIND Depth 0 of the new calendar",
        "PROPFIND",
        &b,
        &[("Depth", "0")],
        NAMED_PROPS,
    )
    .await;
}
on_each!(mkcalendar: proxied_mkcalendar_answers_like_direct);

// === PUT ===

async fn put_if_none_match(kind: Kind) {
    let env = Env::new(kind);
    let (a, b, subst) = env.calendar_pair("put").await;
    let ics = event(
        &unique("uid"),
        "Created with If-None-Match",
        "20250401T080000Z",
    );
    let headers = [
        ("Content-Type", "text/calendar; charset=utf-8"),
        ("If-None-Match", "*"),
    ];
    let (ea, eb) = (format!("{a}new.ics"), format!("{b}new.ics"));
    let created = env
        .write_lockstep(
            "PUT If-None-Match: * (new)",
            "PUT",
            &ea,
            &eb,
            &headers,
            &ics,
            &subst,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let again = env
        .write_lockstep(
            "PUT If-None-Match: * (exists)",
            "PUT",
            &ea,
            &eb,
            &headers,
            &ics,
            &subst,
        )
        .await;
    assert_eq!(again.status, 412, "{again:?}");
    env.read_same("GET after PUT", "GET", &eb, &[], "").await;
}
on_each!(put_if_none_match: proxied_put_if_none_match_star_answers_like_direct);

async fn put_if_match(kind: Kind) {
    let env = Env::new(kind);
    let (a, b, subst) = env.calendar_pair("putm").await;
    let uid = unique("uid");
    let (ea, eb) = (format!("{a}ev.ics"), format!("{b}ev.ics"));
    let first = event(&uid, "Before", "20250402T080000Z");
    let etag_a = env.up.put_event(USER, &ea, &first).await;
    let etag_b = env.up.put_event(USER, &eb, &first).await;
    let etag = etag_b.clone().expect("ETag on PUT");
    let mut subst = subst;
    if let (Some(x), Some(y)) = (etag_a, etag_b) {
        subst.push((x, y));
    }
    let second = event(&uid, "After", "20250402T090000Z");
    let headers = [
        ("Content-Type", "text/calendar; charset=utf-8"),
        ("If-Match", etag.as_str()),
    ];
    let updated = env
        .write_lockstep(
            "PUT If-Match current",
            "PUT",
            &ea,
            &eb,
            &headers,
            &second,
            &subst,
        )
        .await;
    assert!(updated.status.is_success(), "{updated:?}");
    // `etag` is now stale on both objects.
    let stale = env
        .write_lockstep(
            "PUT If-Match stale",
            "PUT",
            &ea,
            &eb,
            &headers,
            &first,
            &subst,
        )
        .await;
    assert_eq!(stale.status, 412, "{stale:?}");
    let missing = [
        ("Content-Type", "text/calendar; charset=utf-8"),
        ("If-Match", "\"no-such-etag\""),
    ];
    env.write_lockstep(
        "PUT If-Match on a missing object",
        "PUT",
        &format!("{a}missing.ics"),
        &format!("{b}missing.ics"),
        &missing,
        &first,
        &subst,
    )
    .await;
    env.read_same("GET after conditional PUTs", "GET", &eb, &[], "")
        .await;
}
on_each!(put_if_match: proxied_put_if_match_current_and_stale_answers_like_direct);

// === GET / HEAD ===

async fn get_and_head(kind: Kind) {
    let env = Env::new(kind);
    let (_, hrefs) = env.calendar_with_events("get").await;
    let href = &hrefs[0];
    let got = env.read_same("GET", "GET", href, &[], "").await;
    assert_eq!(got.status, 200, "{got:?}");
    env.read_same("HEAD", "HEAD", href, &[], "").await;
    if let Some(etag) = got.header("etag") {
        env.read_same(
            "GET If-None-Match current",
            "GET",
            href,
            &[("If-None-Match", etag)],
            "",
        )
        .await;
    }
}
on_each!(get_and_head: proxied_get_and_head_of_an_event_equal_direct);

// === REPORT ===

async fn report_calendar_query(kind: Kind) {
    let env = Env::new(kind);
    let (cal, _) = env.calendar_with_events("query").await;
    let body = r#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="20250301T000000Z" end="20250401T000000Z"/>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"#;
    let reply = env
        .read_same(
            "REPORT calendar-query",
            "REPORT",
            &cal,
            &[
                ("Depth", "1"),
                ("Content-Type", "application/xml; charset=utf-8"),
            ],
            body,
        )
        .await;
    assert_eq!(reply.status, 207, "{reply:?}");
}
on_each!(report_calendar_query: proxied_report_calendar_query_equals_direct);

async fn report_multiget(kind: Kind) {
    let env = Env::new(kind);
    let (cal, hrefs) = env.calendar_with_events("multiget").await;
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <D:href>{}</D:href><D:href>{}</D:href><D:href>{cal}missing.ics</D:href>
</C:calendar-multiget>"#,
        hrefs[0], hrefs[1]
    );
    let reply = env
        .read_same(
            "REPORT calendar-multiget",
            "REPORT",
            &cal,
            &[
                ("Depth", "1"),
                ("Content-Type", "application/xml; charset=utf-8"),
            ],
            &body,
        )
        .await;
    assert_eq!(reply.status, 207, "{reply:?}");
}
on_each!(report_multiget: proxied_report_calendar_multiget_equals_direct);

async fn report_sync_collection(kind: Kind) {
    let env = Env::new(kind);
    let (cal, hrefs) = env.calendar_with_events("sync").await;
    let sync = |token: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>
<D:prop><D:getetag/></D:prop></D:sync-collection>"#
        )
    };
    let headers = [("Content-Type", "application/xml; charset=utf-8")];
    let initial = env
        .read_same(
            "REPORT sync-collection (initial)",
            "REPORT",
            &cal,
            &headers,
            &sync(""),
        )
        .await;
    assert_eq!(initial.status, 207, "{initial:?}");
    let text = initial.text();
    let token = text
        .split("sync-token>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .expect("sync-token in the initial sync-collection answer")
        .to_string();
    // A change after the token, so the incremental answer is not empty.
    let reply = env
        .send(&env.up.url(&hrefs[1]), "DELETE", &[], "", true)
        .await;
    assert!(reply.status.is_success(), "{reply:?}");
    env.read_same(
        "REPORT sync-collection (with token)",
        "REPORT",
        &cal,
        &headers,
        &sync(&token),
    )
    .await;
}
on_each!(report_sync_collection: proxied_report_sync_collection_equals_direct);

// === DELETE ===

async fn delete_if_match(kind: Kind) {
    let env = Env::new(kind);
    let (a, b, mut subst) = env.calendar_pair("del").await;
    let (ea, eb) = (format!("{a}ev.ics"), format!("{b}ev.ics"));
    let ics = event(&unique("uid"), "To delete", "20250403T080000Z");
    let etag_a = env.up.put_event(USER, &ea, &ics).await.expect("ETag");
    let etag_b = env.up.put_event(USER, &eb, &ics).await.expect("ETag");
    subst.push((etag_a, etag_b.clone()));
    let stale = env
        .write_lockstep(
            "DELETE If-Match stale",
            "DELETE",
            &ea,
            &eb,
            &[("If-Match", "\"stale\"")],
            "",
            &subst,
        )
        .await;
    assert_eq!(stale.status, 412, "{stale:?}");
    let deleted = env
        .write_lockstep(
            "DELETE If-Match current",
            "DELETE",
            &ea,
            &eb,
            &[("If-Match", etag_b.as_str())],
            "",
            &subst,
        )
        .await;
    assert!(deleted.status.is_success(), "{deleted:?}");
    env.read_same("GET after DELETE", "GET", &eb, &[], "").await;
}
on_each!(delete_if_match: proxied_delete_if_match_answers_like_direct);

// === errors relayed ===

async fn unauthenticated(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.up.calendar_path(USER);
    for method in ["PROPFIND", "GET"] {
        let (direct, proxied) = env.both(method, &cal, &[("Depth", "0")], "", false).await;
        assert_eq!(direct.status, 401, "{direct:?}");
        env.assert_same(
            &format!("{method} without credentials"),
            &direct,
            &proxied,
            &[],
            false,
        );
    }
}
on_each!(unauthenticated: proxied_request_without_credentials_gets_the_same_401);

async fn not_found(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.up.calendar_path(USER);
    let missing = format!("{cal}{}.ics", unique("missing"));
    let reply = env
        .read_same("GET of a missing object", "GET", &missing, &[], "")
        .await;
    assert_eq!(reply.status, 404, "{reply:?}");
}
on_each!(not_found: proxied_get_of_a_missing_object_gets_the_same_404);
