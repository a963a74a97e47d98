//! Managed attachments end to end (RFC 8607 §3.3–3.12, §5.1, Appendix A; DESIGN §4,
//! §6, §8): the real calattach in front of real Radicale and real Xandikos, storing in
//! a local directory and in a real S3 server (moto).
//!
//! Each behaviour is one conformance function taking an [`Env`]; [`conformance!`]
//! runs it in all four upstream × storage environments as tests named
//! `<behaviour>::<upstream>_<storage>`. Servers are shared per test binary (the
//! harness); each test gets its own calattach, storage and calendar, so the store
//! listing a test asserts on holds only what that test wrote.
//!
//! This file: the environment, helpers (a small iCalendar reader, the `DAV:error`
//! reader, raw HTTP/1.1 for `Expect: 100-continue`), round trips, downloads,
//! filenames and per-instance edits. `attach_errors.rs`: preconditions, conditional
//! POSTs, 100-continue, attachment-URL methods. `attach_races.rs`: concurrency,
//! upstream refusal, storage outage.

use crate::harness::{Calattach, Client, Kind, Moto, Reply, Storage, Upstream};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

pub const USER: &str = "user1";

/// Where calattach stores attachments in a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

/// One test's world: a shared upstream, a private calattach with its own storage, a
/// fresh calendar of [`USER`].
pub struct Env {
    pub up: &'static Upstream,
    pub proxy: Calattach,
    pub http: Client,
    pub backend: Backend,
    /// Path of a calendar created for this test (ends with `/`).
    pub cal: String,
}

impl Env {
    pub async fn start(kind: Kind, backend: Backend, extra_toml: &str) -> Env {
        Env::start_on(Upstream::get(kind), backend, extra_toml).await
    }

    /// Like [`Env::start`], on a given upstream.
    pub async fn start_on(up: &'static Upstream, backend: Backend, extra_toml: &str) -> Env {
        let storage = match backend {
            Backend::Local => Storage::Local,
            Backend::S3 => Storage::S3(Moto::shared()),
        };
        let proxy = Calattach::start(up, storage, extra_toml);
        let cal = up.new_calendar(USER, "attach").await;
        Env {
            up,
            proxy,
            http: Client::new(),
            backend,
            cal,
        }
    }

    /// `radicale/local` etc., for assertion messages.
    pub fn name(&self) -> String {
        format!("{}/{:?}", self.up.name(), self.backend).to_lowercase()
    }

    pub fn pw(&self) -> &'static str {
        self.up.password(USER)
    }

    /// A request through calattach with [`USER`]'s credentials.
    pub fn req(&self, method: &str, path_or_url: &str) -> crate::harness::http::RequestBuilder {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.proxy.url(path_or_url)
        };
        self.http.request(method, &url).basic(USER, self.pw())
    }

    /// `POST <href>?<query>` through calattach.
    pub fn post(&self, href: &str, query: &str) -> crate::harness::http::RequestBuilder {
        self.req("POST", &format!("{href}?{query}"))
    }

    /// Stores `ics` as a new object in the test's calendar (directly upstream) and
    /// returns its path.
    pub async fn new_object(&self, ics: &str) -> String {
        let href = format!("{}{}.ics", self.cal, crate::harness::unique("ev"));
        self.up.put_event(USER, &href, ics).await;
        href
    }

    /// A new one-off event; returns its path.
    pub async fn new_event(&self) -> String {
        self.new_titled_event("One-off meeting").await.0
    }

    /// A new one-off event with this `SUMMARY`, on 2025-07-14 at 17:00 UTC; returns its
    /// path and its UID (to write another version of it).
    pub async fn new_titled_event(&self, summary: &str) -> (String, String) {
        let uid = crate::harness::unique("uid");
        let href = self
            .new_object(&crate::transparency::event(
                &uid,
                summary,
                "20250714T170000Z",
            ))
            .await;
        (href, uid)
    }

    /// GET of the object through calattach: `(body, ETag)`.
    pub async fn object(&self, href: &str) -> (String, String) {
        let reply = self.req("GET", href).send().await;
        assert_eq!(reply.status, 200, "{}: GET {href}: {reply:?}", self.name());
        let etag = reply
            .header("etag")
            .unwrap_or_else(|| panic!("{}: GET {href} without ETag", self.name()))
            .to_string();
        (reply.text(), etag)
    }

    /// Adds `body` with `Content-Type` and `Content-Disposition` as given; asserts 201.
    pub async fn add(&self, href: &str, body: impl Into<Bytes>, ctype: &str, cd: &str) -> Added {
        let reply = self
            .post(href, "action=attachment-add")
            .header("Content-Type", ctype)
            .header("Content-Disposition", cd)
            .body(body)
            .send()
            .await;
        self.added(&reply)
    }

    /// The facts of a `201 Created` add (RFC 8607 §3.4 2.D, §5.1).
    pub fn added(&self, reply: &Reply) -> Added {
        assert_eq!(
            reply.status,
            201,
            "{}: add: {reply:?}\ncalattach stderr:\n{}",
            self.name(),
            self.proxy.stderr()
        );
        Added {
            id: reply
                .header("cal-managed-id")
                .unwrap_or_else(|| panic!("{}: add without Cal-Managed-ID: {reply:?}", self.name()))
                .to_string(),
            location: reply
                .header("location")
                .unwrap_or_else(|| panic!("{}: add without Location: {reply:?}", self.name()))
                .to_string(),
        }
    }

    /// Asserts that `reply` carries the object's current ETag (a fresh GET's) and
    /// `Content-Location` = the object.
    pub async fn assert_fresh_object_headers(&self, reply: &Reply, href: &str) {
        let (_, etag) = self.object(href).await;
        assert_eq!(
            reply.header("etag"),
            Some(etag.as_str()),
            "{}: the POST's ETag is not the object's current one: {reply:?}",
            self.name()
        );
        assert_eq!(
            reply.header("content-location"),
            Some(self.proxy.url(href).as_str()),
            "{}: Content-Location: {reply:?}",
            self.name()
        );
    }

    /// Every object key in this test's storage, relative to its root, sorted.
    pub fn store_keys(&self) -> Vec<String> {
        store_keys(
            &self.proxy,
            (self.backend == Backend::S3).then(Moto::shared),
        )
    }

    /// Keys under `blobs/` (including any staging files of unfinished uploads).
    pub fn blob_keys(&self) -> Vec<String> {
        self.store_keys()
            .into_iter()
            .filter(|k| k.starts_with("blobs/"))
            .collect()
    }

    /// Keys under `blobs/` and `meta/`: what an attachment leaves behind.
    pub fn attachment_keys(&self) -> Vec<String> {
        self.store_keys()
            .into_iter()
            .filter(|k| k.starts_with("blobs/") || k.starts_with("meta/"))
            .collect()
    }

    /// Downloads `url` through calattach; asserts 200.
    pub async fn download(&self, url: &str) -> Reply {
        let reply = self
            .req("GET", url)
            .send_with_timeout(Duration::from_secs(120))
            .await;
        assert_eq!(reply.status, 200, "{}: GET {url}: {reply:?}", self.name());
        reply
    }
}

/// Every object key in `proxy`'s storage (local, or on `moto` for S3), relative to its root,
/// sorted.
pub fn store_keys(proxy: &Calattach, moto: Option<&Moto>) -> Vec<String> {
    let mut keys = match moto {
        None => {
            let root = proxy.dir().join("data");
            let mut out = Vec::new();
            walk(&root, &root, &mut out);
            out
        }
        Some(moto) => moto.keys(proxy.bucket.as_deref().expect("bucket")),
    };
    keys.sort();
    keys
}

/// Keys under `blobs/` and `meta/`.
pub fn attachment_keys_of(keys: Vec<String>) -> Vec<String> {
    keys.into_iter()
        .filter(|k| k.starts_with("blobs/") || k.starts_with("meta/"))
        .collect()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// What an add answered.
#[derive(Debug, Clone)]
pub struct Added {
    pub id: String,
    pub location: String,
}

/// Runs conformance functions `async fn f(env: &Env)` in every upstream × storage
/// environment: `f::radicale_local`, `f::radicale_s3`, `f::xandikos_local`,
/// `f::xandikos_s3`, `f::baikal_local`, `f::baikal_s3`, each with a calattach
/// configured by the given extra TOML. Adding an upstream is one line in the list
/// below; a Baïkal test where Baïkal cannot run says so and passes.
macro_rules! conformance {
    ($($f:ident => $extra:expr;)*) => {$(
        $crate::attach::conformance!(@ $f => $extra; [
            radicale_local Radicale Local,
            radicale_s3 Radicale S3,
            xandikos_local Xandikos Local,
            xandikos_s3 Xandikos S3,
            baikal_local Baikal Local,
            baikal_s3 Baikal S3,
        ]);
    )*};
    (@ $f:ident => $extra:expr; [$($test:ident $kind:ident $backend:ident,)*]) => {
        mod $f {
            use $crate::attach::{Backend, Env};
            use $crate::harness::Kind;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let name = concat!(module_path!(), "::", stringify!($test));
                    if $crate::harness::upstream::usable(Kind::$kind, name) {
                        super::$f(&Env::start(Kind::$kind, Backend::$backend, $extra).await).await
                    }
                }
            )*
        }
    };
}
pub(crate) use conformance;

// === a small iCalendar reader (independent of calattach's own) ===

/// A content line: name, decoded parameters (RFC 6868 applied), value.
#[derive(Debug, Clone)]
pub struct Prop {
    pub name: String,
    pub params: Vec<(String, String)>,
    pub value: String,
}

impl Prop {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A top-level component of the VCALENDAR with its own properties (those of nested
/// components such as VALARM are left out).
#[derive(Debug, Clone)]
pub struct Comp {
    pub props: Vec<Prop>,
}

impl Comp {
    pub fn prop(&self, name: &str) -> Option<&Prop> {
        self.props
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// `RECURRENCE-ID` value text, `None` for the master.
    pub fn rid(&self) -> Option<&str> {
        self.prop("RECURRENCE-ID").map(|p| p.value.as_str())
    }

    pub fn attaches(&self) -> Vec<&Prop> {
        self.props
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case("ATTACH"))
            .collect()
    }

    /// The `MANAGED-ID`s of its ATTACH properties.
    pub fn managed_ids(&self) -> Vec<String> {
        self.attaches()
            .iter()
            .filter_map(|p| p.param("MANAGED-ID").map(str::to_string))
            .collect()
    }
}

pub fn unfold(ics: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in ics.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = line.strip_prefix([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(rest);
                continue;
            }
        }
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    out
}

fn decode_6868(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '^' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\'') => out.push('"'),
            Some('n') | Some('N') => out.push('\n'),
            Some('^') => out.push('^'),
            Some(other) => {
                out.push('^');
                out.push(other);
            }
            None => out.push('^'),
        }
    }
    out
}

pub fn parse_line(line: &str) -> Prop {
    let name_end = line.find([';', ':']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut params = Vec::new();
    let bytes: Vec<char> = line.chars().collect();
    let mut i = line[..name_end].chars().count();
    while i < bytes.len() && bytes[i] == ';' {
        i += 1;
        let mut pname = String::new();
        while i < bytes.len() && bytes[i] != '=' {
            pname.push(bytes[i]);
            i += 1;
        }
        i += 1; // '='
        let mut values = Vec::new();
        loop {
            let mut v = String::new();
            if i < bytes.len() && bytes[i] == '"' {
                i += 1;
                while i < bytes.len() && bytes[i] != '"' {
                    v.push(bytes[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < bytes.len() && ![';', ':', ','].contains(&bytes[i]) {
                    v.push(bytes[i]);
                    i += 1;
                }
            }
            values.push(decode_6868(&v));
            if i < bytes.len() && bytes[i] == ',' {
                i += 1;
                continue;
            }
            break;
        }
        params.push((pname, values.join(",")));
    }
    let value = if i < bytes.len() && bytes[i] == ':' {
        bytes[i + 1..].iter().collect()
    } else {
        String::new()
    };
    Prop {
        name,
        params,
        value,
    }
}

/// The top-level components named `kind` (e.g. `VEVENT`).
pub fn components(ics: &str, kind: &str) -> Vec<Comp> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<Comp> = None;
    for line in unfold(ics) {
        let p = parse_line(&line);
        if p.name.eq_ignore_ascii_case("BEGIN") {
            depth += 1;
            if depth == 2 && p.value.eq_ignore_ascii_case(kind) {
                current = Some(Comp { props: Vec::new() });
            }
            continue;
        }
        if p.name.eq_ignore_ascii_case("END") {
            if depth == 2 {
                if let Some(c) = current.take() {
                    out.push(c);
                }
            }
            depth = depth.saturating_sub(1);
            continue;
        }
        if depth == 2 {
            if let Some(c) = current.as_mut() {
                c.props.push(p);
            }
        }
    }
    out
}

pub fn vevents(ics: &str) -> Vec<Comp> {
    components(ics, "VEVENT")
}

/// The one master VEVENT.
pub fn master(ics: &str) -> Comp {
    let masters: Vec<Comp> = vevents(ics)
        .into_iter()
        .filter(|c| c.rid().is_none())
        .collect();
    assert_eq!(masters.len(), 1, "expected one master VEVENT in:\n{ics}");
    masters.into_iter().next().unwrap()
}

/// The override with RECURRENCE-ID value `rid`, if any.
pub fn override_at(ics: &str, rid: &str) -> Option<Comp> {
    vevents(ics).into_iter().find(|c| c.rid() == Some(rid))
}

// === DAV:error bodies ===

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";

/// The root element and its child elements, each as `(namespace, local name)`.
pub fn xml_root_and_children(body: &[u8]) -> ((String, String), Vec<(String, String)>) {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let mut r = quick_xml::NsReader::from_reader(body);
    let mut depth = 0usize;
    let mut root = None;
    let mut children = Vec::new();
    loop {
        let (res, ev) = r
            .read_resolved_event()
            .unwrap_or_else(|e| panic!("not XML ({e}): {}", String::from_utf8_lossy(body)));
        let (start, opens) = match &ev {
            Event::Start(s) => (Some(s.local_name().into_inner().to_vec()), true),
            Event::Empty(s) => (Some(s.local_name().into_inner().to_vec()), false),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                (None, false)
            }
            Event::Eof => break,
            _ => (None, false),
        };
        if let Some(local) = start {
            let ns = match res {
                ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.into_inner()).into_owned(),
                _ => String::new(),
            };
            let n = (ns, String::from_utf8_lossy(&local).into_owned());
            match depth {
                0 => root = Some(n),
                1 => children.push(n),
                _ => {}
            }
            if opens {
                depth += 1;
            }
        }
    }
    (root.expect("a root element"), children)
}

/// Asserts a `403` whose `application/xml` body is a `DAV:error` with `first` (a
/// CalDAV element, RFC 8607 §3.11) as its first child.
pub fn assert_precondition(reply: &Reply, first: &str, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/xml")),
        "{what}: Content-Type: {reply:?}"
    );
    let (root, children) = xml_root_and_children(&reply.body);
    assert_eq!(
        root,
        (DAV.to_string(), "error".to_string()),
        "{what}: {reply:?}"
    );
    assert_eq!(
        children.first(),
        Some(&(CALDAV.to_string(), first.to_string())),
        "{what}: the RFC element must come first: {reply:?}"
    );
}

// === raw HTTP/1.1 (for Expect: 100-continue, where the client must see every byte) ===

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw connection to calattach.
pub struct Raw {
    pub writer: TcpStream,
    pub reader: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(crate::harness::loopback(port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        Raw {
            writer: s.try_clone().expect("clone"),
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to calattach");
    }

    /// Reads one response head, and its body when it has one (`Content-Length`).
    pub fn read(&mut self) -> RawReply {
        let head = crate::harness::raw::read_head(&mut self.reader)
            .expect("read response head")
            .expect("connection closed before a response");
        let status: u16 = head
            .start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {:?}", head.start));
        let mut body = Vec::new();
        if status >= 200 && status != 204 && status != 304 {
            let n = head.content_length().unwrap_or(0) as usize;
            body.resize(n, 0);
            self.reader.read_exact(&mut body).expect("read body");
        }
        RawReply {
            status,
            headers: head.headers,
            body,
        }
    }
}

/// `POST` head with `Expect: 100-continue` and Basic auth, to be followed by `len`
/// bytes once the server says so.
pub fn expect_continue_head(
    env: &Env,
    href: &str,
    query: &str,
    len: usize,
    extra: &[(&str, &str)],
) -> String {
    let mut head = format!(
        "POST {href}?{query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {}\r\n\
         Content-Type: text/html; charset=\"utf-8\"\r\n\
         Content-Disposition: attachment;filename=agenda.html\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n",
        env.proxy.port(),
        crate::harness::basic(USER, env.pw())
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    format!("{:x}", h.finalize())
}

/// Percent-decodes an RFC 8187 value (`UTF-8''…`).
pub fn decode_ext_value(v: &str) -> String {
    let rest = v.split_once("''").map(|(_, r)| r).unwrap_or(v);
    percent_encoding::percent_decode_str(rest)
        .decode_utf8_lossy()
        .into_owned()
}

/// The `filename*` of a `Content-Disposition` value, decoded.
pub fn disposition_filename(cd: &str) -> Option<String> {
    cd.split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("filename*="))
        .map(decode_ext_value)
}

/// A deterministic pseudo-random byte stream (xorshift), for large uploads.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A weekly series in Europe/Berlin (6 instances from 2024-03-21 09:00) with one
/// overridden instance (2024-03-28, moved to 10:00), as Apple Calendar writes them.
pub fn recurring_event(uid: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\n\
         BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n\
         BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n\
         DTSTART:19810329T020000\r\nTZNAME:CEST\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\n\
         BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
         DTSTART:19961027T030000\r\nTZNAME:CET\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n\
         END:VTIMEZONE\r\n\
         BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20240301T101600Z\r\n\
         DTSTART;TZID=Europe/Berlin:20240321T090000\r\n\
         DTEND;TZID=Europe/Berlin:20240321T100000\r\n\
         RRULE:FREQ=WEEKLY;COUNT=6\r\nSUMMARY:Team sync\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:{uid}\r\nRECURRENCE-ID;TZID=Europe/Berlin:20240328T090000\r\n\
         DTSTAMP:20240302T080000Z\r\nDTSTART;TZID=Europe/Berlin:20240328T100000\r\n\
         DTEND;TZID=Europe/Berlin:20240328T110000\r\nSUMMARY:Team sync (moved)\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

/// The overridden instance of [`recurring_event`].
pub const OVERRIDDEN: &str = "20240328T090000";

conformance! {
    add_update_remove_round_trip_with_exact_attach_parameters => "";
    prefer_return_representation_answers_with_the_modified_object => "";
    downloads_return_the_uploaded_bytes_with_ranges_and_safe_headers => "";
    fifty_megabyte_attachment_round_trips_intact => "[attachments]\nmax_attachment_size = \"64MiB\"\n";
    filenames_from_content_disposition_reach_attach_and_download => "";
    per_instance_add_creates_or_extends_the_targeted_components => "";
    remove_with_rid_without_override_creates_one_without_the_attach => "";
}

const AGENDA: &[u8] = b"<html>\n  <body>\n    <h1>Agenda</h1>\n  </body>\n</html>\n";

/// RFC 8607 §3.4–3.6 and §5.1: add → 201, update/remove → 204; `Cal-Managed-ID` on add
/// and update only; the ATTACH carries MANAGED-ID, FMTTYPE (type/subtype only),
/// FILENAME, SIZE and the Location as value; an update gives a new id and URL and the
/// old URL is gone; every answer carries the object's current ETag.
async fn add_update_remove_round_trip_with_exact_attach_parameters(env: &Env) {
    let href = env.new_event().await;
    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/html; charset=\"utf-8\"")
        .header("Content-Disposition", "attachment;filename=agenda.html")
        .body(Bytes::from_static(AGENDA))
        .send()
        .await;
    let a = env.added(&reply);
    assert!(
        reply.body.is_empty(),
        "{}: 201 without Prefer has a body: {reply:?}",
        env.name()
    );
    assert!(
        a.location.starts_with(&env.proxy.url("/.attachments/")) && a.location.contains(&a.id),
        "{}: Location {} is not an attachment URL holding the id",
        env.name(),
        a.location
    );
    env.assert_fresh_object_headers(&reply, &href).await;
    let (ics, _) = env.object(&href).await;
    let m = master(&ics);
    let attaches = m.attaches();
    assert_eq!(attaches.len(), 1, "{}: {ics}", env.name());
    let at = attaches[0];
    assert_eq!(
        at.param("MANAGED-ID"),
        Some(a.id.as_str()),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.param("FMTTYPE"),
        Some("text/html"),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.param("FILENAME"),
        Some("agenda.html"),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.param("SIZE"),
        Some(AGENDA.len().to_string().as_str()),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.value,
        a.location,
        "{}: ATTACH value is not the Location",
        env.name()
    );
    let got = env.download(&a.location).await;
    assert_eq!(&got.body[..], AGENDA, "{}", env.name());
    assert_eq!(
        got.header("content-type"),
        Some("text/html"),
        "{}: {got:?}",
        env.name()
    );
    assert_eq!(
        env.blob_keys(),
        vec![format!("blobs/{}", a.id)],
        "{}",
        env.name()
    );

    // Update: new id, new URL, new parameters; the old URL is gone.
    let v2 = Bytes::from_static(b"agenda, second version\n");
    let reply = env
        .post(
            &href,
            &format!("action=attachment-update&managed-id={}", a.id),
        )
        .header("Content-Type", "text/plain")
        .header(
            "Content-Disposition",
            "attachment; filename=\"agenda v2.txt\"",
        )
        .body(v2.clone())
        .send()
        .await;
    assert_eq!(reply.status, 204, "{}: update: {reply:?}", env.name());
    assert!(reply.body.is_empty(), "{}: {reply:?}", env.name());
    let new_id = reply
        .header("cal-managed-id")
        .unwrap_or_else(|| panic!("{}: update without Cal-Managed-ID: {reply:?}", env.name()))
        .to_string();
    assert_ne!(
        new_id,
        a.id,
        "{}: update must change MANAGED-ID (RFC 8607 §3.5)",
        env.name()
    );
    let new_location = reply
        .header("location")
        .expect("Location on update")
        .to_string();
    assert_ne!(new_location, a.location, "{}", env.name());
    env.assert_fresh_object_headers(&reply, &href).await;
    let (ics, _) = env.object(&href).await;
    let m = master(&ics);
    assert_eq!(m.attaches().len(), 1, "{}: {ics}", env.name());
    let at = m.attaches()[0].clone();
    assert_eq!(
        at.param("MANAGED-ID"),
        Some(new_id.as_str()),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.param("FMTTYPE"),
        Some("text/plain"),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.param("FILENAME"),
        Some("agenda v2.txt"),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        at.param("SIZE"),
        Some(v2.len().to_string().as_str()),
        "{}",
        env.name()
    );
    assert_eq!(at.value, new_location, "{}", env.name());
    assert_eq!(env.download(&new_location).await.body, v2, "{}", env.name());
    let old = env.req("GET", &a.location).send().await;
    assert_eq!(
        old.status,
        410,
        "{}: the replaced attachment: {old:?}",
        env.name()
    );

    // Remove: 204, no Cal-Managed-ID (RFC 8607 §5.1), no ATTACH left, URL gone.
    let reply = env
        .post(
            &href,
            &format!("action=attachment-remove&managed-id={new_id}"),
        )
        .send()
        .await;
    assert_eq!(reply.status, 204, "{}: remove: {reply:?}", env.name());
    assert!(reply.body.is_empty(), "{}: {reply:?}", env.name());
    assert_eq!(
        reply.header("cal-managed-id"),
        None,
        "{}: Cal-Managed-ID on remove: {reply:?}",
        env.name()
    );
    env.assert_fresh_object_headers(&reply, &href).await;
    let (ics, _) = env.object(&href).await;
    assert!(master(&ics).attaches().is_empty(), "{}: {ics}", env.name());
    let gone = env.req("GET", &new_location).send().await;
    assert_eq!(
        gone.status,
        410,
        "{}: the removed attachment: {gone:?}",
        env.name()
    );
}

/// RFC 8607 §3.4 2.D, §3.5 2.D, §3.6 2.E: under `Prefer: return=representation` the
/// answer carries the modified object (as a fresh GET returns it), its ETag and
/// `Content-Location`; add stays 201, update and remove become 200.
async fn prefer_return_representation_answers_with_the_modified_object(env: &Env) {
    let href = env.new_event().await;
    let check = |reply: &Reply, status: u16, what: &str| {
        assert_eq!(reply.status, status, "{}: {what}: {reply:?}", env.name());
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/calendar")),
            "{}: {what}: {reply:?}",
            env.name()
        );
        assert_eq!(
            reply.header("preference-applied"),
            Some("return=representation"),
            "{}: {what}: {reply:?}",
            env.name()
        );
    };
    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/html")
        .header("Content-Disposition", "attachment;filename=agenda.html")
        .header("Prefer", "return=representation")
        .body(Bytes::from_static(AGENDA))
        .send()
        .await;
    check(&reply, 201, "add");
    let a = env.added(&reply);
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        reply.text(),
        ics,
        "{}: add body is not the stored object",
        env.name()
    );
    assert_eq!(
        master(&ics).managed_ids(),
        vec![a.id.clone()],
        "{}",
        env.name()
    );
    env.assert_fresh_object_headers(&reply, &href).await;

    let reply = env
        .post(
            &href,
            &format!("action=attachment-update&managed-id={}", a.id),
        )
        .header("Content-Type", "text/html")
        .header("Content-Disposition", "attachment;filename=agenda.html")
        .header("Prefer", "return=representation")
        .body(Bytes::from_static(b"<p>v2</p>"))
        .send()
        .await;
    check(&reply, 200, "update");
    let new_id = reply
        .header("cal-managed-id")
        .expect("Cal-Managed-ID")
        .to_string();
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        reply.text(),
        ics,
        "{}: update body is not the stored object",
        env.name()
    );
    assert_eq!(
        master(&ics).managed_ids(),
        vec![new_id.clone()],
        "{}",
        env.name()
    );
    env.assert_fresh_object_headers(&reply, &href).await;

    let reply = env
        .post(
            &href,
            &format!("action=attachment-remove&managed-id={new_id}"),
        )
        .header("Prefer", "return=representation")
        .send()
        .await;
    check(&reply, 200, "remove");
    assert_eq!(
        reply.header("cal-managed-id"),
        None,
        "{}: {reply:?}",
        env.name()
    );
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        reply.text(),
        ics,
        "{}: remove body is not the stored object",
        env.name()
    );
    assert!(master(&ics).attaches().is_empty(), "{}", env.name());
    env.assert_fresh_object_headers(&reply, &href).await;
}

/// RFC 8607 §3.10, DESIGN §6: a 0-byte file and one holding all 256 byte values come
/// back unchanged, with Content-Type, strong ETag, `Content-Disposition` with
/// `filename*`, nosniff, CSP sandbox, `Accept-Ranges`; HEAD, single ranges (206),
/// unsatisfiable ranges (416) and `If-None-Match` (304) work.
async fn downloads_return_the_uploaded_bytes_with_ranges_and_safe_headers(env: &Env) {
    let href = env.new_event().await;

    // A zero-length body is a valid, empty file; no Content-Type → octet-stream.
    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Disposition", "attachment; filename=empty.bin")
        .header("Content-Length", "0")
        .send()
        .await;
    let empty = env.added(&reply);
    let (ics, _) = env.object(&href).await;
    let m = master(&ics);
    let at = m
        .attaches()
        .into_iter()
        .find(|p| p.param("MANAGED-ID") == Some(empty.id.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{}: no ATTACH for the empty file: {ics}", env.name()));
    assert_eq!(at.param("SIZE"), Some("0"), "{}: {ics}", env.name());
    assert_eq!(
        at.param("FMTTYPE"),
        Some("application/octet-stream"),
        "{}",
        env.name()
    );
    let got = env.download(&empty.location).await;
    assert!(got.body.is_empty(), "{}: {got:?}", env.name());
    assert_eq!(
        got.header("content-length"),
        Some("0"),
        "{}: {got:?}",
        env.name()
    );

    let all: Vec<u8> = (0..=255u8).collect();
    let a = env
        .add(
            &href,
            all.clone(),
            "application/octet-stream",
            "attachment; filename=\"bytes.bin\"",
        )
        .await;
    let got = env.download(&a.location).await;
    assert_eq!(got.body, all, "{}: bytes differ", env.name());
    let etag = format!("\"{}\"", sha256_hex(&all));
    assert_eq!(
        got.header("etag"),
        Some(etag.as_str()),
        "{}: {got:?}",
        env.name()
    );
    assert_eq!(
        got.header("content-type"),
        Some("application/octet-stream"),
        "{}",
        env.name()
    );
    assert_eq!(got.header("content-length"), Some("256"), "{}", env.name());
    assert_eq!(got.header("accept-ranges"), Some("bytes"), "{}", env.name());
    assert_eq!(
        got.header("x-content-type-options"),
        Some("nosniff"),
        "{}",
        env.name()
    );
    assert!(
        got.header("content-security-policy")
            .is_some_and(|v| v.contains("sandbox")),
        "{}: {got:?}",
        env.name()
    );
    let cd = got.header("content-disposition").unwrap_or("");
    assert!(cd.starts_with("attachment"), "{}: {got:?}", env.name());
    assert_eq!(
        disposition_filename(cd).as_deref(),
        Some("bytes.bin"),
        "{}: {cd}",
        env.name()
    );

    let head = env.req("HEAD", &a.location).send().await;
    assert_eq!(head.status, 200, "{}: {head:?}", env.name());
    assert!(head.body.is_empty(), "{}", env.name());
    assert_eq!(
        head.header("content-length"),
        Some("256"),
        "{}: {head:?}",
        env.name()
    );
    assert_eq!(
        head.header("etag"),
        Some(etag.as_str()),
        "{}: {head:?}",
        env.name()
    );

    let part = env
        .req("GET", &a.location)
        .header("Range", "bytes=10-19")
        .send()
        .await;
    assert_eq!(part.status, 206, "{}: {part:?}", env.name());
    assert_eq!(
        part.header("content-range"),
        Some("bytes 10-19/256"),
        "{}",
        env.name()
    );
    assert_eq!(&part.body[..], &all[10..20], "{}", env.name());

    let tail = env
        .req("GET", &a.location)
        .header("Range", "bytes=-6")
        .send()
        .await;
    assert_eq!(tail.status, 206, "{}: {tail:?}", env.name());
    assert_eq!(
        tail.header("content-range"),
        Some("bytes 250-255/256"),
        "{}",
        env.name()
    );
    assert_eq!(&tail.body[..], &all[250..], "{}", env.name());

    let bad = env
        .req("GET", &a.location)
        .header("Range", "bytes=256-300")
        .send()
        .await;
    assert_eq!(bad.status, 416, "{}: {bad:?}", env.name());
    assert_eq!(
        bad.header("content-range"),
        Some("bytes */256"),
        "{}",
        env.name()
    );

    let cached = env
        .req("GET", &a.location)
        .header("If-None-Match", etag.clone())
        .send()
        .await;
    assert_eq!(cached.status, 304, "{}: {cached:?}", env.name());
    assert!(cached.body.is_empty(), "{}", env.name());
    let stale = env
        .req("GET", &a.location)
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await;
    assert_eq!(stale.status, 200, "{}: {stale:?}", env.name());
}

/// Bodies stream through calattach into the store and back: 50 MB, compared by
/// SHA-256, with SIZE and Content-Length exact.
async fn fifty_megabyte_attachment_round_trips_intact(env: &Env) {
    const LEN: usize = 50_000_000;
    let href = env.new_event().await;
    let data = pseudo_random(LEN, 0x5eed_cafe);
    let digest = sha256_hex(&data);
    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "application/pdf")
        .header("Content-Disposition", "attachment; filename=\"big.pdf\"")
        .body(data)
        .send_with_timeout(Duration::from_secs(180))
        .await;
    let a = env.added(&reply);
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        master(&ics).attaches()[0].param("SIZE"),
        Some("50000000"),
        "{}",
        env.name()
    );
    let got = env.download(&a.location).await;
    assert_eq!(
        got.header("content-length"),
        Some("50000000"),
        "{}",
        env.name()
    );
    assert_eq!(got.body.len(), LEN, "{}", env.name());
    assert_eq!(
        sha256_hex(&got.body),
        digest,
        "{}: downloaded bytes differ",
        env.name()
    );
    assert_eq!(
        env.blob_keys(),
        vec![format!("blobs/{}", a.id)],
        "{}",
        env.name()
    );
}

/// RFC 8607 §3.4 1.E / §4.2, RFC 6266: filenames with spaces, quotes, non-ASCII, path
/// parts, and Apple Calendar's malformed headers reach FILENAME and come back in the
/// download's `filename*`.
async fn filenames_from_content_disposition_reach_attach_and_download(env: &Env) {
    let href = env.new_event().await;
    let cases: &[(Option<&str>, &str)] = &[
        // Apple Calendar, verbatim: no `;`, unquoted, with a space.
        (Some("attachment filename=My File.pdf"), "My File.pdf"),
        // Apple Calendar for non-ASCII names: an ASCII stand-in, then filename*.
        (
            Some("attachment filename=Resume.pdf;filename*=utf-8''R%C3%A9sum%C3%A9.pdf"),
            "Résumé.pdf",
        ),
        (
            Some(r#"attachment; filename="say \"hi\" now.txt""#),
            r#"say "hi" now.txt"#,
        ),
        (
            Some("attachment; filename*=UTF-8''%E2%82%AC%20rates%202025.pdf"),
            "€ rates 2025.pdf",
        ),
        (Some("attachment; filename=\"../../etc/passwd\""), "passwd"),
        (None, "attachment"),
    ];
    for (cd, expected) in cases {
        let mut req = env
            .post(&href, "action=attachment-add")
            .header("Content-Type", "application/pdf");
        if let Some(cd) = cd {
            req = req.header("Content-Disposition", *cd);
        }
        let reply = req.body(Bytes::from_static(b"%PDF-1.4\n")).send().await;
        let a = env.added(&reply);
        let (ics, _) = env.object(&href).await;
        let m = master(&ics);
        let at = m
            .attaches()
            .into_iter()
            .find(|p| p.param("MANAGED-ID") == Some(a.id.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("{}: {cd:?}: no ATTACH in {ics}", env.name()));
        assert_eq!(
            at.param("FILENAME"),
            Some(*expected),
            "{}: {cd:?}: {ics}",
            env.name()
        );
        let got = env.download(&a.location).await;
        let disposition = got.header("content-disposition").unwrap_or("");
        assert_eq!(
            disposition_filename(disposition).as_deref(),
            Some(*expected),
            "{}: {cd:?}: {disposition}",
            env.name()
        );
    }
}

/// RFC 8607 §3.3.2, §3.4 2.C, Appendix A: `rid=<instance>` creates an override whose
/// RECURRENCE-ID is the value as given (TZID kept); an existing override gets the
/// ATTACH itself; `rid=M` targets only the master; no rid targets all components.
async fn per_instance_add_creates_or_extends_the_targeted_components(env: &Env) {
    let uid = crate::harness::unique("series");
    let href = env.new_object(&recurring_event(&uid)).await;
    let add = |rid: &'static str| {
        let href = href.clone();
        async move {
            let reply = env
                .post(&href, &format!("action=attachment-add&rid={rid}"))
                .header("Content-Type", "text/plain")
                .header(
                    "Content-Disposition",
                    format!("attachment; filename=\"{rid}.txt\""),
                )
                .body(Bytes::from(format!("for {rid}\n")))
                .send()
                .await;
            env.added(&reply).id
        }
    };

    let new_instance = add("20240404T090000").await;
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        vevents(&ics).len(),
        3,
        "{}: an override was not created: {ics}",
        env.name()
    );
    let o = override_at(&ics, "20240404T090000")
        .unwrap_or_else(|| panic!("{}: no override for the instance: {ics}", env.name()));
    assert_eq!(
        o.prop("RECURRENCE-ID").and_then(|p| p.param("TZID")),
        Some("Europe/Berlin"),
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        o.prop("DTSTART").map(|p| p.value.as_str()),
        Some("20240404T090000")
    );
    assert_eq!(
        o.managed_ids(),
        vec![new_instance.clone()],
        "{}: {ics}",
        env.name()
    );
    assert!(
        o.prop("RRULE").is_none(),
        "{}: override with RRULE: {ics}",
        env.name()
    );
    assert!(master(&ics).attaches().is_empty(), "{}: {ics}", env.name());
    assert!(
        override_at(&ics, OVERRIDDEN).unwrap().attaches().is_empty(),
        "{}: {ics}",
        env.name()
    );

    let on_override = add(OVERRIDDEN).await;
    let (ics, _) = env.object(&href).await;
    assert_eq!(vevents(&ics).len(), 3, "{}: {ics}", env.name());
    assert_eq!(
        override_at(&ics, OVERRIDDEN).unwrap().managed_ids(),
        vec![on_override.clone()],
        "{}: {ics}",
        env.name()
    );
    assert!(master(&ics).attaches().is_empty(), "{}: {ics}", env.name());

    let on_master = add("M").await;
    let (ics, _) = env.object(&href).await;
    assert_eq!(
        master(&ics).managed_ids(),
        vec![on_master.clone()],
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        override_at(&ics, OVERRIDDEN).unwrap().managed_ids(),
        vec![on_override.clone()],
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        override_at(&ics, "20240404T090000").unwrap().managed_ids(),
        vec![new_instance.clone()],
        "{}: {ics}",
        env.name()
    );

    let reply = env
        .post(&href, "action=attachment-add")
        .header("Content-Type", "text/plain")
        .body(Bytes::from_static(b"everyone\n"))
        .send()
        .await;
    let everywhere = env.added(&reply).id;
    let (ics, _) = env.object(&href).await;
    for c in vevents(&ics) {
        assert!(
            c.managed_ids().contains(&everywhere),
            "{}: without rid every component gets the ATTACH: {ics}",
            env.name()
        );
    }
    assert_eq!(vevents(&ics).len(), 3, "{}: {ics}", env.name());
}

/// RFC 8607 §3.6 2.C: removing with a rid that has no override creates that override
/// without the ATTACH; the master keeps it, and the attachment stays downloadable.
async fn remove_with_rid_without_override_creates_one_without_the_attach(env: &Env) {
    let uid = crate::harness::unique("series");
    let href = env.new_object(&recurring_event(&uid)).await;
    let a = env
        .add(
            &href,
            Bytes::from_static(b"minutes\n"),
            "text/plain",
            "attachment; filename=m.txt",
        )
        .await;
    let reply = env
        .post(
            &href,
            &format!(
                "action=attachment-remove&managed-id={}&rid=20240411T090000",
                a.id
            ),
        )
        .send()
        .await;
    assert_eq!(reply.status, 204, "{}: {reply:?}", env.name());
    assert_eq!(reply.header("cal-managed-id"), None, "{}", env.name());
    let (ics, _) = env.object(&href).await;
    let o = override_at(&ics, "20240411T090000")
        .unwrap_or_else(|| panic!("{}: no override created: {ics}", env.name()));
    assert!(o.attaches().is_empty(), "{}: {ics}", env.name());
    assert_eq!(
        master(&ics).managed_ids(),
        vec![a.id.clone()],
        "{}: {ics}",
        env.name()
    );
    assert_eq!(
        override_at(&ics, OVERRIDDEN).unwrap().managed_ids(),
        vec![a.id.clone()],
        "{}: {ics}",
        env.name()
    );
    env.download(&a.location).await;
}

/// Body length of the raw `Expect: 100-continue` POSTs.
pub const AGENDA_LEN: usize = 80;
