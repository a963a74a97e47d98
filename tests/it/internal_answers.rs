//! How calattach reads the upstream's answers to its own requests (identity, DESIGN §5;
//! conditional POSTs, RFC 8607 §3.3 with RFC 6638 §3.2), against a small hand-written
//! CalDAV stub where no real server can be made to answer so: an HTML page or a `404`
//! where a `207` belongs (what a DAV server below `/` gives on paths outside it), a
//! `401` with a challenge of its own, and a `Schedule-Tag` (Baïkal's sabre/dav 4.7.1
//! sends none).
//!
//! The stub serves one calendar object `/cal/e.ics` in the home `/cal/` of the
//! principal `/p/user1/`; its `PROPFIND` answers are what each test sets.

use crate::harness::raw::{read_body, read_head, RawServer};
use crate::harness::{Calattach, Client, Storage};
use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};

const OBJECT: &str = "/cal/e.ics";

#[derive(Clone, Copy, PartialEq)]
enum Propfind {
    /// `207` with the principal, home and address.
    Dav,
    /// `200 text/html`, as a web server's start page answers any method.
    Html,
    /// `207` whose body is an HTML page.
    HtmlMultistatus,
    NotFound,
    /// `401` with `WWW-Authenticate: Basic realm="stub-realm"`.
    Challenge,
}

struct Stub {
    server: RawServer,
    object: Arc<Mutex<(u32, String)>>,
}

fn event(version: u32) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//stub//EN\r\nBEGIN:VEVENT\r\nUID:stub\r\n\
         DTSTAMP:20250101T000000Z\r\nDTSTART:20250601T100000Z\r\nSUMMARY:v{version}\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

fn multistatus(href: &str, props: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\" \
         xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><d:response><d:href>{href}</d:href>\
         <d:propstat><d:prop>{props}</d:prop><d:status>HTTP/1.1 200 OK</d:status>\
         </d:propstat></d:response></d:multistatus>"
    )
}

impl Stub {
    fn spawn(propfind: Propfind) -> Stub {
        let object = Arc::new(Mutex::new((1u32, event(1))));
        let state = object.clone();
        let server = RawServer::spawn(move |stream, seen| {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut out = stream;
            while let Ok(Some(head)) = read_head(&mut reader) {
                let mut body = Vec::new();
                if read_body(&mut reader, &head, |b| body.extend_from_slice(b)).is_err() {
                    return;
                }
                let (method, target) = (head.method().to_string(), head.target().to_string());
                seen.lock().unwrap().push(format!("{method} {target}"));
                let mut obj = state.lock().unwrap();
                let tags = |v: u32| format!("ETag: \"e{v}\"\r\nSchedule-Tag: \"s{v}\"\r\n");
                let (status, headers, text) = match (method.as_str(), target.as_str()) {
                    ("GET", OBJECT) => (
                        "200 OK",
                        format!("Content-Type: text/calendar\r\n{}", tags(obj.0)),
                        obj.1.clone(),
                    ),
                    ("PUT", OBJECT) => {
                        let current = format!("\"e{}\"", obj.0);
                        match head.header("if-match") {
                            Some(m) if m != current => {
                                ("412 Precondition Failed", String::new(), String::new())
                            }
                            _ => {
                                obj.0 += 1;
                                obj.1 = String::from_utf8_lossy(&body).into_owned();
                                ("204 No Content", tags(obj.0), String::new())
                            }
                        }
                    }
                    ("PROPFIND", path) => match propfind {
                        Propfind::Dav => {
                            let props = if path.starts_with("/p/") {
                                "<c:calendar-home-set><d:href>/cal/</d:href></c:calendar-home-set>\
                                 <c:calendar-user-address-set><d:href>mailto:user1@example.org\
                                 </d:href></c:calendar-user-address-set>"
                            } else {
                                "<d:current-user-principal><d:href>/p/user1/</d:href>\
                                 </d:current-user-principal>"
                            };
                            (
                                "207 Multi-Status",
                                "Content-Type: application/xml\r\n".into(),
                                multistatus(path, props),
                            )
                        }
                        Propfind::Html => (
                            "200 OK",
                            "Content-Type: text/html\r\n".into(),
                            "<!DOCTYPE html><html><body>start page</body></html>".into(),
                        ),
                        Propfind::HtmlMultistatus => (
                            "207 Multi-Status",
                            "Content-Type: text/html\r\n".into(),
                            "<!DOCTYPE html><html><body>oops</body></html>".into(),
                        ),
                        Propfind::NotFound => ("404 Not Found", String::new(), String::new()),
                        Propfind::Challenge => (
                            "401 Unauthorized",
                            "WWW-Authenticate: Basic realm=\"stub-realm\"\r\n".into(),
                            String::new(),
                        ),
                    },
                    _ => ("404 Not Found", String::new(), String::new()),
                };
                drop(obj);
                let reply = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Stub { server, object }
    }

    fn seen(&self, method: &str) -> usize {
        let prefix = format!("{method} ");
        self.server
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.starts_with(&prefix))
            .count()
    }
}

async fn add(proxy: &Calattach, headers: &[(&str, &str)]) -> crate::harness::Reply {
    let mut b = Client::new()
        .request(
            "POST",
            &proxy.url(&format!("{OBJECT}?action=attachment-add")),
        )
        .basic("user1", "pw")
        .header("Content-Type", "text/plain");
    for (k, v) in headers {
        b = b.header(k, *v);
    }
    b.body("hello").send().await
}

fn stored_blobs(proxy: &Calattach) -> usize {
    std::fs::read_dir(proxy.dir().join("data/blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A `PROPFIND` answered with a web page (as Baïkal's `/` answers any method) is an
/// upstream problem, not a refusal of the caller's credentials: `502`, the object
/// untouched, nothing stored, and a log line naming the URL and status.
#[tokio::test]
async fn identity_answered_with_an_html_page_is_a_502_naming_url_and_status() {
    for mode in [Propfind::Html, Propfind::HtmlMultistatus] {
        let stub = Stub::spawn(mode);
        let proxy = Calattach::start(stub.server.origin().as_str(), Storage::Local, "");
        let r = add(&proxy, &[]).await;
        assert_eq!(r.status, 502, "{r:?}");
        assert_eq!(r.header("www-authenticate"), None, "{r:?}");
        assert_eq!(stub.seen("PUT"), 0);
        assert_eq!(stub.object.lock().unwrap().0, 1);
        assert_eq!(stored_blobs(&proxy), 0);
        let log = proxy.stderr();
        let status = if mode == Propfind::Html { "200" } else { "207" };
        assert!(
            log.lines()
                .any(|l| l.contains(OBJECT) && l.contains(status) && l.contains("unusable")),
            "no log line with the URL and status:\n{log}"
        );
    }
}

/// A `404` for the caller's own object and its collection (and the RFC 6764
/// bootstrap) is a `502`, not a `401` "refused the credentials".
#[tokio::test]
async fn identity_answered_404_is_a_502_not_a_credential_refusal() {
    let stub = Stub::spawn(Propfind::NotFound);
    let proxy = Calattach::start(stub.server.origin().as_str(), Storage::Local, "");
    let r = add(&proxy, &[]).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(stub.seen("PUT"), 0);
    let log = proxy.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(OBJECT) && l.contains("404") && l.contains("unusable")),
        "{log}"
    );
}

/// Only the upstream's own `401` is a refusal of the credentials, and it reaches the
/// client with the upstream's challenge.
#[tokio::test]
async fn identity_answered_401_is_relayed_with_the_upstreams_challenge() {
    let stub = Stub::spawn(Propfind::Challenge);
    let proxy = Calattach::start(stub.server.origin().as_str(), Storage::Local, "");
    let r = add(&proxy, &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"stub-realm\""),
        "{r:?}"
    );
    assert_eq!(stub.seen("PUT"), 0);
    assert_eq!(stored_blobs(&proxy), 0);
}

/// Identity is asked of the resource the request addresses, never of `/`.
#[tokio::test]
async fn identity_is_asked_of_the_requested_object_never_of_the_root() {
    let stub = Stub::spawn(Propfind::Dav);
    let proxy = Calattach::start(stub.server.origin().as_str(), Storage::Local, "");
    let r = add(&proxy, &[]).await;
    assert_eq!(r.status, 201, "{r:?}\n{}", proxy.stderr());
    let seen = stub.server.seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("PROPFIND {OBJECT}")),
        "identity not asked of the object: {seen:?}"
    );
    assert!(!seen.contains(&"PROPFIND /".to_string()), "{seen:?}");
}

/// RFC 6638 §3.2 `If-Schedule-Tag-Match` on an attachment POST is a condition like
/// `If-Match`: a stale tag is `412` with nothing uploaded or written; the current one
/// lets the add commit, and the answer carries the upstream's new `Schedule-Tag`.
#[tokio::test]
async fn if_schedule_tag_match_is_conditional_like_if_match() {
    let stub = Stub::spawn(Propfind::Dav);
    let proxy = Calattach::start(stub.server.origin().as_str(), Storage::Local, "");
    let r = add(&proxy, &[("If-Schedule-Tag-Match", "\"s0\"")]).await;
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(
        stub.seen("PUT"),
        0,
        "a stale Schedule-Tag reached the commit"
    );
    assert_eq!(stored_blobs(&proxy), 0);

    let r = add(&proxy, &[("If-Schedule-Tag-Match", "\"s1\"")]).await;
    assert_eq!(r.status, 201, "{r:?}\n{}", proxy.stderr());
    assert_eq!(stub.seen("PUT"), 1);
    assert_eq!(r.header("schedule-tag"), Some("\"s2\""), "{r:?}");
    assert_eq!(r.header("etag"), Some("\"e2\""), "{r:?}");
    assert!(stub.object.lock().unwrap().1.contains("ATTACH"));
}
