//! The RFC 8607 §6 properties through the real binary (DESIGN §7): PROPFIND answers gain
//! them where they apply and are otherwise the upstream's (compared as XML trees), PROPPATCH
//! and MKCALENDAR cannot set them, PROPFINDs not naming them stay byte-identical, and a
//! large multistatus is rewritten in bounded memory.

use crate::harness::compare::{assert_transparent, Mapping};
use crate::harness::{unique, Calattach, Client, Kind, Reply, Storage, Upstream};
use crate::transparency::{event, on_each};
use futures_util::stream::{self, StreamExt};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
const OURS: [&str; 3] = [
    "managed-attachments-server-URL",
    "max-attachment-size",
    "max-attachments-per-resource",
];
const MAX_SIZE: u64 = 12_345_678;
const MAX_PER_RESOURCE: u64 = 7;

/// Creates calendars and events.
const WRITER: &str = "user1";
/// Only reads its home, so no parallel test changes it between a direct and a proxied read.
const HOME_READER: &str = "user3";

const THREE_AND_TWO: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop>
    <C:managed-attachments-server-URL/><C:max-attachment-size/><C:max-attachments-per-resource/>
    <D:displayname/><D:getetag/>
  </D:prop>
</D:propfind>"#;

const ALLPROP: &str =
    r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

const PROPNAME: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>"#;

const NOT_OURS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/">
  <D:prop><D:displayname/><D:resourcetype/><D:getetag/><CS:getctag/><C:supported-calendar-component-set/></D:prop>
</D:propfind>"#;

/// The shape of Apple Calendar's poll of the calendar home (Depth 1): ~40 properties, each
/// declaring its own namespace, server-URL among them, the limits not.
const APPLE_HOME: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<A:propfind xmlns:A="DAV:">
  <A:prop>
    <A:add-member/>
    <C:allowed-sharing-modes xmlns:C="http://calendarserver.org/ns/"/>
    <D:autoprovisioned xmlns:D="http://apple.com/ns/ical/"/>
    <E:bulk-requests xmlns:E="http://me.com/_namespace/"/>
    <B:calendar-alarm xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <D:calendar-color xmlns:D="http://apple.com/ns/ical/"/>
    <B:calendar-description xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <B:calendar-free-busy-set xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <D:calendar-order xmlns:D="http://apple.com/ns/ical/"/>
    <B:calendar-timezone xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <A:current-user-privilege-set/>
    <B:default-alarm-vevent-date xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <B:default-alarm-vevent-datetime xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <A:displayname/>
    <C:getctag xmlns:C="http://calendarserver.org/ns/"/>
    <C:invite xmlns:C="http://calendarserver.org/ns/"/>
    <D:language-code xmlns:D="http://apple.com/ns/ical/"/>
    <D:location-code xmlns:D="http://apple.com/ns/ical/"/>
    <B:managed-attachments-server-URL xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <A:owner/>
    <C:pre-publish-url xmlns:C="http://calendarserver.org/ns/"/>
    <C:publish-url xmlns:C="http://calendarserver.org/ns/"/>
    <C:push-transports xmlns:C="http://calendarserver.org/ns/"/>
    <C:pushkey xmlns:C="http://calendarserver.org/ns/"/>
    <A:quota-available-bytes/>
    <A:quota-used-bytes/>
    <D:refreshrate xmlns:D="http://apple.com/ns/ical/"/>
    <A:resource-id/>
    <A:resourcetype/>
    <B:schedule-calendar-transp xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <B:schedule-default-calendar-URL xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <C:source xmlns:C="http://calendarserver.org/ns/"/>
    <C:subscribed-strip-alarms xmlns:C="http://calendarserver.org/ns/"/>
    <C:subscribed-strip-attachments xmlns:C="http://calendarserver.org/ns/"/>
    <C:subscribed-strip-todos xmlns:C="http://calendarserver.org/ns/"/>
    <B:supported-calendar-component-set xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <B:supported-calendar-component-sets xmlns:B="urn:ietf:params:xml:ns:caldav"/>
    <A:supported-report-set/>
    <A:sync-token/>
    <C:xmpp-server xmlns:C="http://calendarserver.org/ns/"/>
    <C:xmpp-uri xmlns:C="http://calendarserver.org/ns/"/>
  </A:prop>
</A:propfind>"#;

// === environment ===

struct Env {
    up: &'static Upstream,
    proxy: Calattach,
    http: Client,
}

impl Env {
    fn new(kind: Kind) -> Env {
        let up = Upstream::get(kind);
        let proxy = Calattach::start(
            up,
            Storage::Local,
            &format!(
                "[attachments]\nmax_attachment_size = {MAX_SIZE}\n\
                 max_attachments_per_resource = {MAX_PER_RESOURCE}\n"
            ),
        );
        Env {
            up,
            proxy,
            http: Client::new(),
        }
    }

    async fn send(
        &self,
        url: &str,
        user: &str,
        method: &str,
        depth: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, url)
            .basic(user, self.up.password(user))
            .header("Content-Type", "application/xml; charset=utf-8");
        if let Some(d) = depth {
            req = req.header("Depth", d);
        }
        if !body.is_empty() {
            req = req.body(body.to_string());
        }
        req.send().await
    }

    async fn direct(&self, user: &str, method: &str, path: &str, depth: &str, body: &str) -> Reply {
        self.send(&self.up.url(path), user, method, Some(depth), body)
            .await
    }

    async fn proxied(
        &self,
        user: &str,
        method: &str,
        path: &str,
        depth: &str,
        body: &str,
    ) -> Reply {
        self.send(&self.proxy.url(path), user, method, Some(depth), body)
            .await
    }

    /// The same PROPFIND direct (after one priming read: Xandikos stores generated
    /// properties on first read) and then proxied.
    async fn propfind_both(
        &self,
        user: &str,
        path: &str,
        depth: &str,
        body: &str,
    ) -> (Reply, Reply) {
        let prime = self.direct(user, "PROPFIND", path, depth, body).await;
        assert_eq!(prime.status, 207, "priming PROPFIND {path}: {prime:?}");
        let direct = self.direct(user, "PROPFIND", path, depth, body).await;
        let proxied = self.proxied(user, "PROPFIND", path, depth, body).await;
        assert_eq!(direct.status, 207, "direct PROPFIND {path}: {direct:?}");
        assert_eq!(
            proxied.status,
            207,
            "proxied PROPFIND {path}: {proxied:?}\ncalattach stderr:\n{}",
            self.proxy.stderr()
        );
        (direct, proxied)
    }

    /// A fresh calendar of [`WRITER`] with `n` events, PUT directly, 16 at a time.
    async fn calendar_with(&self, prefix: &str, n: usize) -> String {
        let cal = self.up.new_calendar(WRITER, prefix).await;
        let up = self.up;
        stream::iter(0..n)
            .map(|i| {
                let cal = cal.clone();
                async move {
                    let ics = event(&unique("uid"), &format!("Event {i}"), "20250310T090000Z");
                    up.put_event(WRITER, &format!("{cal}ev{i}.ics"), &ics).await;
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        cal
    }
}

// === XML trees ===

#[derive(Debug, Clone, PartialEq)]
enum Node {
    El(El),
    Text(String),
}

/// An element with resolved names; whitespace-only text and namespace declarations are not
/// part of the tree (prefixes are not meaning).
#[derive(Debug, Clone, PartialEq)]
struct El {
    ns: String,
    local: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl El {
    fn elements(&self) -> impl Iterator<Item = &El> {
        self.children.iter().filter_map(|n| match n {
            Node::El(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    fn child(&self, ns: &str, local: &str) -> Option<&El> {
        self.elements().find(|e| e.ns == ns && e.local == local)
    }

    fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::El(_) => None,
            })
            .collect()
    }

    fn is_ours(&self) -> bool {
        self.ns == CALDAV && OURS.contains(&self.local.as_str())
    }
}

fn parse(what: &str, xml: &[u8]) -> El {
    let mut reader = quick_xml::NsReader::from_reader(xml);
    let mut stack: Vec<El> = Vec::new();
    let mut text = String::new();
    let flush = |stack: &mut Vec<El>, text: &mut String| {
        let t = text.trim();
        if !t.is_empty() {
            if let Some(top) = stack.last_mut() {
                top.children.push(Node::Text(t.to_string()));
            }
        }
        text.clear();
    };
    let element = |res: ResolveResult, e: &quick_xml::events::BytesStart| {
        let ns = match res {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.into_inner()).into_owned(),
            _ => String::new(),
        };
        let mut attrs: Vec<(String, String)> = e
            .attributes()
            .map(|a| a.unwrap_or_else(|err| panic!("{what}: attribute: {err}")))
            .filter(|a| {
                let k = a.key.as_ref();
                k != b"xmlns" && !k.starts_with(b"xmlns:")
            })
            .map(|a| {
                (
                    String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                    String::from_utf8_lossy(&a.value).into_owned(),
                )
            })
            .collect();
        attrs.sort();
        El {
            ns,
            local: String::from_utf8_lossy(e.local_name().into_inner()).into_owned(),
            attrs,
            children: Vec::new(),
        }
    };
    loop {
        let (res, ev) = reader
            .read_resolved_event()
            .unwrap_or_else(|e| panic!("{what}: not well-formed XML: {e}"));
        match ev {
            Event::Start(e) => {
                flush(&mut stack, &mut text);
                stack.push(element(res, &e));
            }
            Event::Empty(e) => {
                flush(&mut stack, &mut text);
                let el = element(res, &e);
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::El(el)),
                    None => return el,
                }
            }
            Event::End(_) => {
                flush(&mut stack, &mut text);
                let el = stack.pop().expect("balanced");
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::El(el)),
                    None => return el,
                }
            }
            Event::Text(t) => text.push_str(&t.decode().expect("text is UTF-8")),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                text.push('&');
                text.push_str(&String::from_utf8_lossy(&r));
                text.push(';');
            }
            Event::Eof => panic!("{what}: document ended early"),
            _ => {}
        }
    }
}

/// Removes our properties everywhere, then the propstats whose `prop` they emptied.
fn strip_ours(el: &mut El) {
    el.children
        .retain(|n| !matches!(n, Node::El(e) if e.is_ours()));
    for n in &mut el.children {
        if let Node::El(e) = n {
            strip_ours(e);
        }
    }
    el.children.retain(|n| match n {
        Node::El(e) if e.ns == "DAV:" && e.local == "propstat" => e
            .child("DAV:", "prop")
            .is_some_and(|p| p.elements().next().is_some()),
        _ => true,
    });
}

/// The `DAV:response`s by href.
fn responses(root: &El) -> Vec<(String, &El)> {
    root.elements()
        .filter(|e| e.ns == "DAV:" && e.local == "response")
        .map(|r| {
            let href = r.child("DAV:", "href").map(El::text).unwrap_or_default();
            (href, r)
        })
        .collect()
}

/// Our properties in a response's `200` propstats: (local name, value text, has children).
fn ours_in_200(resp: &El) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for ps in resp
        .elements()
        .filter(|e| e.ns == "DAV:" && e.local == "propstat")
    {
        let status = ps.child("DAV:", "status").map(El::text).unwrap_or_default();
        if !status.contains(" 200 ") {
            continue;
        }
        if let Some(prop) = ps.child("DAV:", "prop") {
            for p in prop.elements().filter(|e| e.is_ours()) {
                out.push((p.local.clone(), p.text(), p.elements().next().is_some()));
            }
        }
    }
    out.sort();
    out
}

fn same_path(href: &str, path: &str) -> bool {
    let strip = |s: &str| s.trim_end_matches('/').to_string();
    let href = match href.find("://") {
        Some(i) => href[i + 3..]
            .find('/')
            .map_or("/".to_string(), |j| href[i + 3 + j..].to_string()),
        None => href.to_string(),
    };
    strip(&href) == strip(path)
}

/// Proxied equals direct as XML trees once our properties are removed from both.
fn assert_same_but_ours(what: &str, direct: &Reply, proxied: &Reply) {
    let mut d = parse(&format!("{what} (direct)"), &direct.body);
    let mut p = parse(&format!("{what} (proxied)"), &proxied.body);
    strip_ours(&mut d);
    strip_ours(&mut p);
    assert!(
        d == p,
        "{what}: proxied multistatus differs from direct beyond our properties\n\
         --- direct ---\n{direct:?}\n--- proxied ---\n{proxied:?}"
    );
}

fn assert_framing(what: &str, reply: &Reply) {
    if let Some(cl) = reply.header("content-length") {
        assert_eq!(
            cl.parse::<usize>().ok(),
            Some(reply.body.len()),
            "{what}: Content-Length disagrees with the body"
        );
    }
}

fn limits() -> Vec<(String, String, bool)> {
    vec![
        ("max-attachment-size".into(), MAX_SIZE.to_string(), false),
        (
            "max-attachments-per-resource".into(),
            MAX_PER_RESOURCE.to_string(),
            false,
        ),
    ]
}

fn server_url() -> Vec<(String, String, bool)> {
    vec![(
        "managed-attachments-server-URL".into(),
        String::new(),
        false,
    )]
}

// === PROPFIND ===

async fn home_depth0(kind: Kind) {
    let env = Env::new(kind);
    let home = env.up.home_path(HOME_READER);
    let (direct, proxied) = env
        .propfind_both(HOME_READER, &home, "0", THREE_AND_TWO)
        .await;
    assert_framing("home Depth 0", &proxied);
    let tree = parse("home Depth 0", &proxied.body);
    let rs = responses(&tree);
    assert_eq!(rs.len(), 1, "{proxied:?}");
    assert!(same_path(&rs[0].0, &home), "{proxied:?}");
    assert_eq!(ours_in_200(rs[0].1), server_url(), "{proxied:?}");
    assert_same_but_ours("home Depth 0", &direct, &proxied);
}
on_each!(home_depth0: propfind_depth0_on_home_adds_empty_server_url_and_keeps_the_rest);

async fn calendar_depth1(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.calendar_with("props-d1", 3).await;
    let (direct, proxied) = env.propfind_both(WRITER, &cal, "1", THREE_AND_TWO).await;
    assert_framing("calendar Depth 1", &proxied);
    let tree = parse("calendar Depth 1", &proxied.body);
    let rs = responses(&tree);
    assert_eq!(rs.len(), 4, "{proxied:?}");
    for (href, r) in &rs {
        let expected = if same_path(href, &cal) {
            limits()
        } else {
            Vec::new()
        };
        assert_eq!(ours_in_200(r), expected, "{href}\n{proxied:?}");
    }
    assert_same_but_ours("calendar Depth 1", &direct, &proxied);
}
on_each!(calendar_depth1: propfind_depth1_on_calendar_adds_limits_to_the_calendar_only);

async fn allprop(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.calendar_with("props-all", 1).await;
    let home = env.up.home_path(HOME_READER);
    for (user, path) in [(WRITER, &cal), (HOME_READER, &home)] {
        let (direct, proxied) = env.propfind_both(user, path, "1", ALLPROP).await;
        let text = proxied.text();
        for name in OURS {
            assert!(
                !text.contains(name),
                "allprop {path} returned {name}:\n{text}"
            );
        }
        assert_same_as_direct(&env, &format!("allprop {path}"), &direct, &proxied);
    }
}
on_each!(allprop: allprop_returns_none_of_the_properties);

async fn propname(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.calendar_with("props-name", 1).await;
    let home = env.up.home_path(HOME_READER);
    let mut cases = vec![(HOME_READER, &home, vec!["managed-attachments-server-URL"])];
    match kind {
        Kind::Radicale | Kind::Baikal => cases.push((
            WRITER,
            &cal,
            vec!["max-attachment-size", "max-attachments-per-resource"],
        )),
        // Xandikos 0.4.10 fails propname on calendars; its answer is relayed as it is.
        Kind::Xandikos => {
            let direct = env.direct(WRITER, "PROPFIND", &cal, "0", PROPNAME).await;
            let proxied = env.proxied(WRITER, "PROPFIND", &cal, "0", PROPNAME).await;
            assert_eq!(direct.status, 500, "{direct:?}");
            assert_same_as_direct(&env, "propname on a Xandikos calendar", &direct, &proxied);
        }
    }
    for (user, path, expected) in cases {
        let (direct, proxied) = env.propfind_both(user, path, "0", PROPNAME).await;
        let tree = parse("propname", &proxied.body);
        let rs = responses(&tree);
        assert_eq!(rs.len(), 1, "{proxied:?}");
        let names: Vec<(String, String, bool)> = expected
            .iter()
            .map(|n| (n.to_string(), String::new(), false))
            .collect();
        assert_eq!(ours_in_200(rs[0].1), names, "propname {path}\n{proxied:?}");
        assert_same_but_ours(&format!("propname {path}"), &direct, &proxied);
    }
}
on_each!(propname: propname_lists_the_properties_where_they_apply);

async fn apple_home(kind: Kind) {
    let env = Env::new(kind);
    let home = env.up.home_path(HOME_READER);
    let (direct, proxied) = env.propfind_both(HOME_READER, &home, "1", APPLE_HOME).await;
    let tree = parse("Apple home poll", &proxied.body);
    let rs = responses(&tree);
    assert!(
        rs.len() >= 2,
        "expected the home and its calendar: {proxied:?}"
    );
    let mut homes = 0;
    for (href, r) in &rs {
        if same_path(href, &home) {
            homes += 1;
            assert_eq!(ours_in_200(r), server_url(), "{href}\n{proxied:?}");
        } else {
            assert_eq!(ours_in_200(r), Vec::new(), "{href}\n{proxied:?}");
        }
    }
    assert_eq!(homes, 1, "{proxied:?}");
    assert_same_but_ours("Apple home poll", &direct, &proxied);
}
on_each!(apple_home: apple_depth1_home_poll_gets_server_url_on_the_home_only);

fn assert_same_as_direct(env: &Env, what: &str, direct: &Reply, proxied: &Reply) {
    assert_transparent(
        what,
        direct,
        proxied,
        &Mapping {
            upstream_origin: &env.up.origin(),
            proxy_origin: &env.proxy.origin(),
            substitutions: &[],
            options: false,
        },
    );
}

async fn not_ours(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.calendar_with("props-not", 2).await;
    let (direct, proxied) = env.propfind_both(WRITER, &cal, "1", NOT_OURS).await;
    assert_same_as_direct(&env, "PROPFIND without our properties", &direct, &proxied);
    // Past the body bound the request is forwarded untouched even though it names one.
    let padded = THREE_AND_TWO.replace(
        "<D:prop>",
        &format!("<!-- {} --><D:prop>", "x".repeat(70 * 1024)),
    );
    let (direct, proxied) = env.propfind_both(WRITER, &cal, "1", &padded).await;
    assert_same_as_direct(&env, "PROPFIND larger than the bound", &direct, &proxied);
}
on_each!(not_ours: propfind_not_naming_the_properties_is_byte_identical_to_direct);

async fn missing(kind: Kind) {
    let env = Env::new(kind);
    let path = env.up.calendar_path_named(WRITER, &unique("props-missing"));
    let direct = env
        .direct(WRITER, "PROPFIND", &path, "1", THREE_AND_TWO)
        .await;
    let proxied = env
        .proxied(WRITER, "PROPFIND", &path, "1", THREE_AND_TWO)
        .await;
    assert_eq!(proxied.status, direct.status, "{proxied:?}");
    assert_eq!(proxied.body, direct.body, "{direct:?}\n{proxied:?}");
}
on_each!(missing: propfind_naming_the_properties_on_a_missing_resource_gets_the_upstream_answer);

// === protected ===

const PROPPATCH_SIZE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><C:max-attachment-size>1</C:max-attachment-size><D:displayname>renamed</D:displayname></D:prop></D:set>
</D:propertyupdate>"#;

async fn proppatch(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.calendar_with("props-patch", 0).await;
    let reply = env
        .proxied(WRITER, "PROPPATCH", &cal, "0", PROPPATCH_SIZE)
        .await;
    assert_eq!(reply.status, 207, "{reply:?}");
    let tree = parse("PROPPATCH", &reply.body);
    let rs = responses(&tree);
    assert_eq!(rs.len(), 1, "{reply:?}");
    let mut seen = Vec::new();
    for ps in rs[0].1.elements().filter(|e| e.local == "propstat") {
        let status = ps.child("DAV:", "status").map(El::text).unwrap_or_default();
        let prop = ps.child("DAV:", "prop").expect("prop");
        for p in prop.elements() {
            seen.push((p.local.clone(), status.clone()));
        }
        if status.contains(" 403 ") {
            let error = ps
                .child("DAV:", "error")
                .expect("DAV:error in the 403 propstat");
            assert!(
                error
                    .child("DAV:", "cannot-modify-protected-property")
                    .is_some(),
                "{reply:?}"
            );
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "displayname".to_string(),
                "HTTP/1.1 424 Failed Dependency".to_string()
            ),
            (
                "max-attachment-size".to_string(),
                "HTTP/1.1 403 Forbidden".to_string()
            ),
        ],
        "{reply:?}"
    );
    // Nothing reached the upstream, and the served value is still the configured one.
    let after = env
        .proxied(WRITER, "PROPFIND", &cal, "0", THREE_AND_TWO)
        .await;
    assert_eq!(after.status, 207, "{after:?}");
    let tree = parse("PROPFIND after PROPPATCH", &after.body);
    let rs = responses(&tree);
    assert_eq!(ours_in_200(rs[0].1), limits(), "{after:?}");
    assert!(
        !after.text().contains("renamed"),
        "displayname was changed: {after:?}"
    );
}
on_each!(proppatch: proppatch_of_max_attachment_size_is_refused_as_protected_and_value_unchanged);

/// The upstream decides about the caller before calattach decides about the property:
/// an anonymous PROPPATCH naming a protected property hears the upstream's 401 with its
/// challenge, exactly as it would for any other PROPPATCH, not our 207.
async fn proppatch_anonymous(kind: Kind) {
    let env = Env::new(kind);
    let cal = env.calendar_with("props-anon", 0).await;
    let direct = env
        .http
        .request("PROPPATCH", &env.up.url(&cal))
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(PROPPATCH_SIZE.to_string())
        .send()
        .await;
    let proxied = env
        .http
        .request("PROPPATCH", &env.proxy.url(&cal))
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(PROPPATCH_SIZE.to_string())
        .send()
        .await;
    assert_eq!(direct.status, 401, "{direct:?}");
    assert_eq!(proxied.status, 401, "{proxied:?}");
    assert_eq!(
        proxied.header("www-authenticate"),
        direct.header("www-authenticate"),
        "{proxied:?}"
    );
}
on_each!(proppatch_anonymous: anonymous_proppatch_of_a_protected_property_gets_the_upstream_401);

async fn proppatch_not_ours(kind: Kind) {
    let env = crate::transparency::Env::new(kind);
    let (a, b, subst) = env.calendar_pair("pp").await;
    let body = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>Renamed</D:displayname></D:prop></D:set></D:propertyupdate>"#;
    let headers = [("Content-Type", "application/xml; charset=utf-8")];
    let reply = env
        .write_lockstep(
            "PROPPATCH displayname",
            "PROPPATCH",
            &a,
            &b,
            &headers,
            body,
            &subst,
        )
        .await;
    assert_eq!(reply.status, 207, "{reply:?}");
}
on_each!(proppatch_not_ours: proppatch_not_naming_the_properties_is_forwarded_untouched);

const MKCALENDAR_WITH_SIZE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>x</D:displayname><C:max-attachment-size>1</C:max-attachment-size></D:prop></D:set>
</C:mkcalendar>"#;

const MKCALENDAR_PLAIN: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>plain</D:displayname></D:prop></D:set>
</C:mkcalendar>"#;

async fn mkcalendar(kind: Kind) {
    let env = Env::new(kind);
    let path = env.up.calendar_path_named(WRITER, &unique("props-mk"));
    let reply = env
        .proxied(WRITER, "MKCALENDAR", &path, "0", MKCALENDAR_WITH_SIZE)
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let tree = parse("MKCALENDAR refusal", &reply.body);
    assert_eq!((tree.ns.as_str(), tree.local.as_str()), ("DAV:", "error"));
    assert!(
        tree.child("DAV:", "cannot-modify-protected-property")
            .is_some(),
        "{reply:?}"
    );
    let probe = env.direct(WRITER, "GET", &path, "0", "").await;
    assert_eq!(probe.status, 404, "the refused calendar exists: {probe:?}");
    // Without our properties the request reaches the upstream.
    let reply = env
        .proxied(WRITER, "MKCALENDAR", &path, "0", MKCALENDAR_PLAIN)
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
}
on_each!(mkcalendar: mkcalendar_setting_max_attachment_size_is_refused_and_nothing_created);

// === scale ===

const EVENTS: usize = 2_000;
const PEAK_RSS_LIMIT: u64 = 64 << 20;

/// Radicale only: it takes a whole calendar in one PUT on the collection, while Xandikos
/// commits every PUT to git and needs about ten minutes for 2,000 of them. The rewriter's
/// memory does not depend on which server wrote the multistatus.
#[tokio::test]
async fn depth1_over_2000_events_is_rewritten_in_bounded_memory_on_radicale() {
    let env = Env::new(Kind::Radicale);
    let cal = env.up.new_calendar(WRITER, "props-2k").await;
    let mut ics =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\n");
    for i in 0..EVENTS {
        ics.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:{}\r\nDTSTAMP:20250101T000000Z\r\n\
             DTSTART:20250310T090000Z\r\nDURATION:PT1H\r\nSUMMARY:Event {i}\r\nEND:VEVENT\r\n",
            unique("uid")
        ));
    }
    ics.push_str("END:VCALENDAR\r\n");
    let upload = env
        .http
        .request("PUT", &env.up.url(&cal))
        .basic(WRITER, env.up.password(WRITER))
        .header("Content-Type", "text/calendar; charset=utf-8")
        .body(ics)
        .send_with_timeout(std::time::Duration::from_secs(300))
        .await;
    assert!(upload.status.is_success(), "bulk PUT {cal}: {upload:?}");

    let (direct, proxied) = env.propfind_both(WRITER, &cal, "1", THREE_AND_TWO).await;
    let tree = parse("2,000 events", &proxied.body);
    let rs = responses(&tree);
    assert_eq!(rs.len(), EVENTS + 1);
    let with_ours: Vec<&String> = rs
        .iter()
        .filter(|(_, r)| !ours_in_200(r).is_empty())
        .map(|(h, _)| h)
        .collect();
    assert_eq!(with_ours.len(), 1, "{with_ours:?}");
    assert!(same_path(with_ours[0], &cal), "{with_ours:?}");
    assert_same_but_ours("2,000 events", &direct, &proxied);
    let peak = env.proxy.peak_rss();
    assert!(
        peak < PEAK_RSS_LIMIT,
        "calattach peak RSS {} MiB >= 64 MiB after rewriting a {} byte multistatus",
        peak >> 20,
        proxied.body.len()
    );
}
