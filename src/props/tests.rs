//! Tests of the multistatus rewriter against bodies shaped like Radicale's (default `DAV:`
//! namespace, `C:` for CalDAV, pretty-printed, 200 propstat before 404) and Xandikos's
//! (`ns0:`/`ns1:` prefixes declared on the document element, no whitespace, `DAV:status`
//! before `DAV:prop`), plus adversarial input.

use super::rewrite::{
    ErrorMode, Limits, Plan, ResourceHints, ResourceKind, RewriteError, Rewriter, Values,
};
use super::{OurProp, OurProps, CALDAV_NS, DAV_NS};
use proptest::prelude::*;

/// A minimal namespace-resolved XML tree, for comparing documents by meaning.
pub(crate) mod tree {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    use quick_xml::NsReader;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Node {
        Elem(Elem),
        Text(String),
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Elem {
        pub ns: Option<String>,
        pub local: String,
        /// Attributes other than namespace declarations, by raw key.
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Node>,
    }

    impl Elem {
        pub(crate) fn elements(&self) -> impl Iterator<Item = &Elem> {
            self.children.iter().filter_map(|n| match n {
                Node::Elem(e) => Some(e),
                Node::Text(_) => None,
            })
        }

        pub(crate) fn children_named(&self, ns: &str, local: &str) -> Vec<&Elem> {
            self.elements()
                .filter(|e| e.ns.as_deref() == Some(ns) && e.local == local)
                .collect()
        }

        pub(crate) fn text(&self) -> String {
            self.children
                .iter()
                .filter_map(|n| match n {
                    Node::Text(t) => Some(t.as_str()),
                    Node::Elem(_) => None,
                })
                .collect::<String>()
        }

        pub(crate) fn is(&self, ns: &str, local: &str) -> bool {
            self.ns.as_deref() == Some(ns) && self.local == local
        }
    }

    /// Parses a document; whitespace-only text is dropped, other text trimmed.
    pub(crate) fn parse(xml: &[u8]) -> Result<Elem, String> {
        let mut r = NsReader::from_reader(xml);
        let mut stack: Vec<Elem> = Vec::new();
        let mut root = None;
        loop {
            let (res, ev) = r.read_resolved_event().map_err(|e| e.to_string())?;
            let elem =
                |res: ResolveResult, s: &quick_xml::events::BytesStart| -> Result<Elem, String> {
                    let ns = match res {
                        ResolveResult::Bound(ns) => {
                            Some(String::from_utf8_lossy(ns.into_inner()).into_owned())
                        }
                        ResolveResult::Unbound => None,
                        ResolveResult::Unknown(p) => {
                            return Err(format!("unbound {}", String::from_utf8_lossy(&p)))
                        }
                    };
                    let mut attrs = Vec::new();
                    for a in s.attributes() {
                        let a = a.map_err(|e| e.to_string())?;
                        if a.key.as_namespace_binding().is_none() {
                            attrs.push((
                                String::from_utf8_lossy(a.key.into_inner()).into_owned(),
                                String::from_utf8_lossy(&a.value).into_owned(),
                            ));
                        }
                    }
                    Ok(Elem {
                        ns,
                        local: String::from_utf8_lossy(s.local_name().into_inner()).into_owned(),
                        attrs,
                        children: Vec::new(),
                    })
                };
            match ev {
                Event::Start(ref s) => stack.push(elem(res, s)?),
                Event::Empty(ref s) => {
                    let e = elem(res, s)?;
                    match stack.last_mut() {
                        Some(p) => p.children.push(Node::Elem(e)),
                        None => root = Some(e),
                    }
                }
                Event::End(_) => {
                    let e = stack.pop().ok_or("unbalanced")?;
                    match stack.last_mut() {
                        Some(p) => p.children.push(Node::Elem(e)),
                        None => root = Some(e),
                    }
                }
                Event::Text(t) => {
                    let t = t.decode().map_err(|e| e.to_string())?;
                    let t = quick_xml::escape::unescape(&t).map_err(|e| e.to_string())?;
                    if let (Some(p), false) = (stack.last_mut(), t.trim().is_empty()) {
                        p.children.push(Node::Text(t.trim().to_owned()));
                    }
                }
                Event::GeneralRef(g) => {
                    let name = g.decode().map_err(|e| e.to_string())?;
                    let s = quick_xml::escape::unescape(&format!("&{name};"))
                        .map_err(|e| e.to_string())?
                        .into_owned();
                    if let Some(p) = stack.last_mut() {
                        p.children.push(Node::Text(s));
                    }
                }
                Event::CData(c) => {
                    if let Some(p) = stack.last_mut() {
                        p.children
                            .push(Node::Text(String::from_utf8_lossy(&c).into_owned()));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let mut root = root.ok_or("no root")?;
        merge_text(&mut root);
        Ok(root)
    }

    /// Joins adjacent text nodes (entity references split them).
    fn merge_text(e: &mut Elem) {
        let mut out: Vec<Node> = Vec::new();
        for n in e.children.drain(..) {
            match (out.last_mut(), n) {
                (Some(Node::Text(a)), Node::Text(b)) => a.push_str(&b),
                (_, Node::Elem(mut c)) => {
                    merge_text(&mut c);
                    out.push(Node::Elem(c));
                }
                (_, n) => out.push(n),
            }
        }
        e.children = out;
    }
}

use tree::{Elem, Node};

// === fixtures ===

const RADICALE_HOME_DEPTH0: &str = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <response>
    <href>/user1/</href>
    <propstat>
      <prop>
        <displayname>user1</displayname>
      </prop>
      <status>HTTP/1.1 200 OK</status>
    </propstat>
    <propstat>
      <prop>
        <C:managed-attachments-server-URL />
        <C:max-attachment-size />
        <C:max-attachments-per-resource />
        <getetag />
      </prop>
      <status>HTTP/1.1 404 Not Found</status>
    </propstat>
  </response>
</multistatus>
"#;

const XANDIKOS_CALENDAR_DEPTH1: &str = concat!(
    r#"<ns0:multistatus xmlns:ns0="DAV:" xmlns:ns1="urn:ietf:params:xml:ns:caldav">"#,
    r#"<ns0:response><ns0:href>/user1/calendars/cal/</ns0:href>"#,
    r#"<ns0:propstat><ns0:status>HTTP/1.1 200 OK</ns0:status><ns0:prop>"#,
    r#"<ns0:displayname>Calendar</ns0:displayname><ns0:getetag>"a1b2"</ns0:getetag>"#,
    r#"</ns0:prop></ns0:propstat><ns0:propstat><ns0:status>HTTP/1.1 404 Not Found</ns0:status>"#,
    r#"<ns0:prop><ns1:managed-attachments-server-URL /><ns1:max-attachment-size />"#,
    r#"<ns1:max-attachments-per-resource /></ns0:prop></ns0:propstat></ns0:response>"#,
    r#"<ns0:response><ns0:href>/user1/calendars/cal/e%201.ics</ns0:href>"#,
    r#"<ns0:propstat><ns0:status>HTTP/1.1 200 OK</ns0:status><ns0:prop>"#,
    r#"<ns0:getetag>"e1"</ns0:getetag></ns0:prop></ns0:propstat>"#,
    r#"<ns0:propstat><ns0:status>HTTP/1.1 404 Not Found</ns0:status><ns0:prop>"#,
    r#"<ns0:displayname /><ns1:managed-attachments-server-URL /><ns1:max-attachment-size />"#,
    r#"<ns1:max-attachments-per-resource /></ns0:prop></ns0:propstat></ns0:response>"#,
    r#"<ns0:response><ns0:href>/user1/calendars/cal/e2.ics</ns0:href>"#,
    r#"<ns0:propstat><ns0:status>HTTP/1.1 200 OK</ns0:status><ns0:prop>"#,
    r#"<ns0:getetag>"e2"</ns0:getetag></ns0:prop></ns0:propstat>"#,
    r#"<ns0:propstat><ns0:status>HTTP/1.1 404 Not Found</ns0:status><ns0:prop>"#,
    r#"<ns0:displayname /><ns1:managed-attachments-server-URL /><ns1:max-attachment-size />"#,
    r#"<ns1:max-attachments-per-resource /></ns0:prop></ns0:propstat></ns0:response>"#,
    r#"</ns0:multistatus>"#
);

fn values() -> Values {
    Values {
        server_url: None,
        max_size: 10_485_760,
        max_per_resource: 12,
    }
}

fn plan(wanted: OurProps) -> Plan {
    Plan {
        wanted,
        values: values(),
        names_only: false,
    }
}

/// Classifies by href: `/user1/` is the home, hrefs ending in `/` below it are calendars.
fn classify(href: &str, _: ResourceHints) -> ResourceKind {
    if href == "/user1/" {
        ResourceKind::Home
    } else if href.ends_with('/') {
        ResourceKind::Calendar
    } else {
        ResourceKind::Other
    }
}

fn rewrite_chunks(plan: Plan, chunks: &[&[u8]]) -> Vec<u8> {
    let mut rw = Rewriter::new(plan, classify).with_error_mode(ErrorMode::Fail);
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&rw.feed(c).unwrap());
    }
    out.extend_from_slice(&rw.finish().unwrap());
    out
}

fn rewrite(plan: Plan, input: &str) -> String {
    String::from_utf8(rewrite_chunks(plan, &[input.as_bytes()])).unwrap()
}

/// Per response: href and, for each of our properties present, (status code, value text).
type Found = Vec<(String, Vec<(OurProp, u16, String)>)>;

fn ours_found(doc: &Elem) -> Found {
    doc.children_named(DAV_NS, "response")
        .into_iter()
        .map(|r| {
            let href = r.children_named(DAV_NS, "href")[0].text();
            let mut props = Vec::new();
            for ps in r.children_named(DAV_NS, "propstat") {
                let status = ps.children_named(DAV_NS, "status")[0].text();
                let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
                for prop in ps.children_named(DAV_NS, "prop") {
                    for e in prop.elements() {
                        let Some(p) = OurProp::ALL
                            .into_iter()
                            .find(|p| e.is(CALDAV_NS, p.local_name()))
                        else {
                            continue;
                        };
                        let value = match e.children_named(DAV_NS, "href").first() {
                            Some(h) => format!("href:{}", h.text()),
                            None => e.text(),
                        };
                        props.push((p, code, value));
                    }
                }
            }
            (href, props)
        })
        .collect()
}

/// The tree without our properties and without propstats left with an empty `DAV:prop`:
/// what must be identical between input and output.
fn without_ours(e: &Elem) -> Elem {
    let mut e = e.clone();
    e.children = e
        .children
        .iter()
        .filter_map(|n| match n {
            Node::Elem(c) if OurProp::ALL.iter().any(|p| c.is(CALDAV_NS, p.local_name())) => None,
            Node::Elem(c) => {
                let c = without_ours(c);
                let empty_propstat = c.is(DAV_NS, "propstat")
                    && c.children_named(DAV_NS, "prop")
                        .iter()
                        .all(|p| p.elements().next().is_none());
                (!empty_propstat).then_some(Node::Elem(c))
            }
            n => Some(n.clone()),
        })
        .collect();
    e
}

fn assert_same_except_ours(input: &str, output: &str) {
    let a = tree::parse(input.as_bytes()).unwrap();
    let b = tree::parse(output.as_bytes()).expect("output parses as XML");
    assert_eq!(without_ours(&a), without_ours(&b));
}

fn s(x: &str) -> String {
    x.to_owned()
}

// === behaviour on realistic bodies ===

#[test]
fn radicale_home_depth0_gets_server_url_in_200_and_keeps_limits_404() {
    let out = rewrite(plan(OurProps::ALL), RADICALE_HOME_DEPTH0);
    assert_same_except_ours(RADICALE_HOME_DEPTH0, &out);
    let found = ours_found(&tree::parse(out.as_bytes()).unwrap());
    assert_eq!(
        found,
        vec![(
            s("/user1/"),
            vec![
                (OurProp::ServerUrl, 200, s("")),
                (OurProp::MaxAttachmentSize, 404, s("")),
                (OurProp::MaxAttachmentsPerResource, 404, s("")),
            ]
        )]
    );
    // Default-namespace style kept: the new element uses the C: prefix in scope, same indent.
    assert!(out.contains(
        "<displayname>user1</displayname>\n        <C:managed-attachments-server-URL/>\n      </prop>"
    ));
    assert!(!out.contains("xmlns:C=\"urn:ietf:params:xml:ns:caldav\"/>"));
}

#[test]
fn radicale_home_depth0_outside_the_changes_is_byte_identical() {
    let out = rewrite(plan(OurProps::ALL), RADICALE_HOME_DEPTH0);
    let expected = RADICALE_HOME_DEPTH0
        .replace(
            "<displayname>user1</displayname>\n",
            "<displayname>user1</displayname>\n        <C:managed-attachments-server-URL/>\n",
        )
        .replacen("        <C:managed-attachments-server-URL />\n", "", 1);
    assert_eq!(out, expected);
}

#[test]
fn xandikos_calendar_depth1_gets_limits_on_the_calendar_only() {
    let out = rewrite(plan(OurProps::ALL), XANDIKOS_CALENDAR_DEPTH1);
    assert_same_except_ours(XANDIKOS_CALENDAR_DEPTH1, &out);
    let found = ours_found(&tree::parse(out.as_bytes()).unwrap());
    let untouched = |h: &str| {
        (
            s(h),
            vec![
                (OurProp::ServerUrl, 404, s("")),
                (OurProp::MaxAttachmentSize, 404, s("")),
                (OurProp::MaxAttachmentsPerResource, 404, s("")),
            ],
        )
    };
    assert_eq!(
        found,
        vec![
            (
                s("/user1/calendars/cal/"),
                vec![
                    (OurProp::MaxAttachmentSize, 200, s("10485760")),
                    (OurProp::MaxAttachmentsPerResource, 200, s("12")),
                    (OurProp::ServerUrl, 404, s("")),
                ]
            ),
            untouched("/user1/calendars/cal/e%201.ics"),
            untouched("/user1/calendars/cal/e2.ics"),
        ]
    );
    assert!(out.contains(
        r#"<ns0:getetag>"a1b2"</ns0:getetag><ns1:max-attachment-size>10485760</ns1:max-attachment-size><ns1:max-attachments-per-resource>12</ns1:max-attachments-per-resource></ns0:prop>"#
    ));
    // The event responses are byte-identical.
    let tail =
        &XANDIKOS_CALENDAR_DEPTH1[XANDIKOS_CALENDAR_DEPTH1.find("</ns0:response>").unwrap()..];
    assert!(out.ends_with(tail));
}

#[test]
fn propstat_left_empty_is_dropped() {
    let input = concat!(
        r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
        "\n<D:response>\n<D:href>/user1/cal/</D:href>\n",
        "<D:propstat>\n<D:prop>\n<D:getetag>\"x\"</D:getetag>\n</D:prop>\n",
        "<D:status>HTTP/1.1 200 OK</D:status>\n</D:propstat>\n",
        "<D:propstat>\n<D:prop>\n<C:max-attachment-size/>\n<C:max-attachments-per-resource/>\n",
        "</D:prop>\n<D:status>HTTP/1.1 404 Not Found</D:status>\n</D:propstat>\n",
        "</D:response>\n</D:multistatus>\n"
    );
    let out = rewrite(plan(OurProps::CALENDAR), input);
    assert_eq!(
        out,
        concat!(
            r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
            "\n<D:response>\n<D:href>/user1/cal/</D:href>\n",
            "<D:propstat>\n<D:prop>\n<D:getetag>\"x\"</D:getetag>\n",
            "<C:max-attachment-size>10485760</C:max-attachment-size>\n",
            "<C:max-attachments-per-resource>12</C:max-attachments-per-resource>\n</D:prop>\n",
            "<D:status>HTTP/1.1 200 OK</D:status>\n</D:propstat>\n",
            "</D:response>\n</D:multistatus>\n"
        )
    );
}

#[test]
fn stored_dead_property_with_our_name_is_replaced_by_our_value() {
    let input = concat!(
        r#"<multistatus xmlns="DAV:"><response><href>/user1/cal/</href><propstat><prop>"#,
        r#"<C:max-attachment-size xmlns:C="urn:ietf:params:xml:ns:caldav">999999999999</C:max-attachment-size>"#,
        r#"<displayname>Work</displayname></prop><status>HTTP/1.1 200 OK</status></propstat>"#,
        r#"</response></multistatus>"#
    );
    let out = rewrite(plan(OurProp::MaxAttachmentSize.into()), input);
    assert_eq!(
        out,
        concat!(
            r#"<multistatus xmlns="DAV:"><response><href>/user1/cal/</href><propstat><prop>"#,
            r#"<displayname>Work</displayname><C:max-attachment-size xmlns:C="urn:ietf:params:xml:ns:caldav">10485760</C:max-attachment-size>"#,
            r#"</prop><status>HTTP/1.1 200 OK</status></propstat>"#,
            r#"</response></multistatus>"#
        )
    );
}

#[test]
fn response_without_200_propstat_gets_a_new_one_and_loses_the_empty_404() {
    let input = concat!(
        "<d:multistatus xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\">\n",
        " <d:response>\n  <d:href>/user1/</d:href>\n",
        "  <d:propstat>\n   <d:prop>\n    <cal:managed-attachments-server-URL/>\n   </d:prop>\n",
        "   <d:status>HTTP/1.1 404 Not Found</d:status>\n  </d:propstat>\n",
        "  <d:responsedescription>partial</d:responsedescription>\n",
        " </d:response>\n <d:sync-token>http://x/sync/1</d:sync-token>\n</d:multistatus>"
    );
    let mut p = plan(OurProp::ServerUrl.into());
    p.values.server_url = Some("https://attach.example.com".into());
    let out = rewrite(p, input);
    assert_eq!(
        out,
        concat!(
            "<d:multistatus xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\">\n",
            " <d:response>\n  <d:href>/user1/</d:href>\n",
            "  <d:propstat><d:prop><cal:managed-attachments-server-URL><d:href>",
            "https://attach.example.com</d:href></cal:managed-attachments-server-URL></d:prop>",
            "<d:status>HTTP/1.1 200 OK</d:status></d:propstat>\n",
            "  <d:responsedescription>partial</d:responsedescription>\n",
            " </d:response>\n <d:sync-token>http://x/sync/1</d:sync-token>\n</d:multistatus>"
        )
    );
}

#[test]
fn caldav_namespace_not_in_scope_is_declared_on_the_emitted_element() {
    let input = concat!(
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/user1/</D:href>"#,
        r#"<D:propstat><D:prop><D:displayname>u</D:displayname></D:prop>"#,
        r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat>"#,
        r#"<D:propstat><D:prop><X:managed-attachments-server-URL xmlns:X="urn:ietf:params:xml:ns:caldav"/>"#,
        r#"</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response></D:multistatus>"#
    );
    let out = rewrite(plan(OurProps::ALL), input);
    assert_eq!(
        out,
        concat!(
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/user1/</D:href>"#,
            r#"<D:propstat><D:prop><D:displayname>u</D:displayname>"#,
            r#"<C:managed-attachments-server-URL xmlns:C="urn:ietf:params:xml:ns:caldav"/></D:prop>"#,
            r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
        )
    );
}

#[test]
fn fresh_caldav_prefix_does_not_hide_a_dav_prefix_named_c() {
    let input = concat!(
        r#"<C:multistatus xmlns:C="DAV:"><C:response><C:href>/user1/</C:href>"#,
        r#"<C:propstat><C:prop><C:displayname>u</C:displayname></C:prop>"#,
        r#"<C:status>HTTP/1.1 200 OK</C:status></C:propstat></C:response></C:multistatus>"#
    );
    let mut p = plan(OurProps::ALL);
    p.values.server_url = Some("https://a.example".into());
    let out = rewrite(p, input);
    assert_same_except_ours(input, &out);
    let found = ours_found(&tree::parse(out.as_bytes()).unwrap());
    assert_eq!(
        found[0].1,
        vec![(OurProp::ServerUrl, 200, s("href:https://a.example"))]
    );
}

#[test]
fn propname_answer_gets_empty_elements() {
    let input = concat!(
        r#"<multistatus xmlns="DAV:"><response><href>/user1/cal/</href><propstat><prop>"#,
        r#"<displayname/><getetag/></prop><status>HTTP/1.1 200 OK</status></propstat>"#,
        r#"</response></multistatus>"#
    );
    let mut p = plan(OurProps::ALL);
    p.names_only = true;
    let out = rewrite(p, input);
    assert!(out.contains(
        r#"<getetag/><C:max-attachment-size xmlns:C="urn:ietf:params:xml:ns:caldav"/><C:max-attachments-per-resource xmlns:C="urn:ietf:params:xml:ns:caldav"/></prop>"#
    ));
}

#[test]
fn hints_report_calendar_resourcetype_from_the_200_propstat() {
    let input = concat!(
        r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
        r#"<D:response><D:href>/a/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/>"#,
        r#"<C:calendar/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"#,
        r#"</D:response><D:response><D:href>/b/</D:href><D:propstat><D:prop><D:resourcetype>"#,
        r#"<D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status>"#,
        r#"</D:propstat></D:response><D:response><D:href>/c&amp;d.ics</D:href><D:propstat>"#,
        r#"<D:prop><D:getetag>"1"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status>"#,
        r#"</D:propstat></D:response></D:multistatus>"#
    );
    let mut seen = Vec::new();
    let mut rw = Rewriter::new(plan(OurProps::ALL), |href: &str, h: ResourceHints| {
        seen.push((href.to_owned(), h));
        if h.calendar {
            ResourceKind::Calendar
        } else {
            ResourceKind::Other
        }
    });
    let mut out = rw.feed(input.as_bytes()).unwrap().to_vec();
    out.extend_from_slice(&rw.finish().unwrap());
    let hint = |collection, calendar| ResourceHints {
        resourcetype_seen: true,
        collection,
        calendar,
    };
    assert_eq!(
        seen,
        vec![
            (s("/a/"), hint(true, true)),
            (s("/b/"), hint(true, false)),
            (s("/c&d.ics"), ResourceHints::default()),
        ]
    );
    let found = ours_found(&tree::parse(&out).unwrap());
    assert_eq!(found[0].1.len(), 2);
    assert!(found[1].1.is_empty() && found[2].1.is_empty());
}

/// Apple's home poll (DESIGN §7, notes C-6): Depth 1, ~40 properties, server-URL but no limits.
fn apple_home_depth1() -> String {
    let dav = [
        "add-member",
        "current-user-privilege-set",
        "displayname",
        "owner",
        "quota-available-bytes",
        "quota-used-bytes",
        "resource-id",
        "resourcetype",
        "sync-token",
        "getetag",
        "supported-report-set",
        "principal-URL",
        "current-user-principal",
        "owner-href",
    ];
    let cal = [
        "calendar-description",
        "calendar-free-busy-set",
        "calendar-timezone",
        "default-alarm-vevent-date",
        "default-alarm-vevent-datetime",
        "schedule-calendar-transp",
        "schedule-default-calendar-URL",
        "supported-calendar-component-set",
        "supported-calendar-component-sets",
        "managed-attachments-server-URL",
        "calendar-home-set",
        "max-resource-size",
        "max-instances",
    ];
    let cs = [
        "allowed-sharing-modes",
        "getctag",
        "invite",
        "pushkey",
        "source",
        "subscribed-strip-alarms",
        "subscribed-strip-attachments",
        "subscribed-strip-todos",
        "xmpp-server",
        "xmpp-uri",
    ];
    let ical = ["calendar-color", "calendar-order", "refreshrate"];
    let mut names: Vec<String> = Vec::new();
    names.extend(dav.iter().map(|n| format!("D:{n}")));
    names.extend(cal.iter().map(|n| format!("C:{n}")));
    names.extend(cs.iter().map(|n| format!("CS:{n}")));
    names.extend(ical.iter().map(|n| format!("I:{n}")));
    assert!(names.len() >= 40);
    let mut x = String::from(concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<D:multistatus xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\" ",
        "xmlns:CS=\"http://calendarserver.org/ns/\" xmlns:I=\"http://apple.com/ns/ical/\">\n"
    ));
    for (href, rt) in [
        ("/user1/", "<D:collection/>"),
        ("/user1/work/", "<D:collection/><C:calendar/>"),
        ("/user1/home/", "<D:collection/><C:calendar/>"),
        ("/user1/inbox/", "<D:collection/><C:schedule-inbox/>"),
        ("/user1/outbox/", "<D:collection/><C:schedule-outbox/>"),
    ] {
        x.push_str(&format!(
            " <D:response>\n  <D:href>{href}</D:href>\n  <D:propstat>\n   <D:prop>\n"
        ));
        x.push_str(&format!("    <D:resourcetype>{rt}</D:resourcetype>\n"));
        x.push_str("    <D:displayname>x</D:displayname>\n    <CS:getctag>\"c\"</CS:getctag>\n");
        x.push_str("   </D:prop>\n   <D:status>HTTP/1.1 200 OK</D:status>\n  </D:propstat>\n");
        x.push_str("  <D:propstat>\n   <D:prop>\n");
        for n in &names {
            if !matches!(
                n.as_str(),
                "D:resourcetype" | "D:displayname" | "CS:getctag"
            ) {
                x.push_str(&format!("    <{n}/>\n"));
            }
        }
        x.push_str(
            "   </D:prop>\n   <D:status>HTTP/1.1 404 Not Found</D:status>\n  </D:propstat>\n",
        );
        x.push_str(" </D:response>\n");
    }
    x.push_str("</D:multistatus>\n");
    x
}

#[test]
fn apple_like_home_depth1_gets_server_url_on_the_home_only() {
    let input = apple_home_depth1();
    let out = rewrite(plan(OurProp::ServerUrl.into()), &input);
    assert_same_except_ours(&input, &out);
    let found = ours_found(&tree::parse(out.as_bytes()).unwrap());
    assert_eq!(found.len(), 5);
    assert_eq!(found[0].1, vec![(OurProp::ServerUrl, 200, s(""))]);
    for (href, props) in &found[1..] {
        assert_eq!(props, &vec![(OurProp::ServerUrl, 404, s(""))], "{href}");
    }
    // Only the home response changed: the rest of the document is byte-identical.
    let second = input.find(" <D:response>\n  <D:href>/user1/work/").unwrap();
    assert!(out.ends_with(&input[second..]));
}

#[test]
fn wanted_empty_is_a_byte_copy_even_of_garbage() {
    for input in [RADICALE_HOME_DEPTH0, "not xml at all <<<"] {
        let out = rewrite(plan(OurProps::NONE), input);
        assert_eq!(out, input);
    }
}

#[test]
fn responses_that_do_not_apply_are_byte_identical() {
    let input = XANDIKOS_CALENDAR_DEPTH1;
    let out = String::from_utf8(rewrite_chunks(
        plan(OurProp::ServerUrl.into()),
        &[input.as_bytes()],
    ))
    .unwrap();
    assert_eq!(out, input);
}

// === streaming and memory ===

fn samples() -> Vec<(String, OurProps)> {
    vec![
        (RADICALE_HOME_DEPTH0.to_owned(), OurProps::ALL),
        (XANDIKOS_CALENDAR_DEPTH1.to_owned(), OurProps::ALL),
        (apple_home_depth1(), OurProp::ServerUrl.into()),
    ]
}

#[test]
fn every_split_point_gives_identical_output() {
    for (input, wanted) in samples() {
        let bytes = input.as_bytes();
        let whole = rewrite_chunks(plan(wanted), &[bytes]);
        // Every position of the small bodies; a stride through the large one keeps the run
        // short (the proptest below cuts it at random positions too).
        let stride = if bytes.len() > 4096 { 7 } else { 1 };
        for i in (0..=bytes.len()).step_by(stride) {
            let split = rewrite_chunks(plan(wanted), &[&bytes[..i], &bytes[i..]]);
            assert_eq!(split, whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(rewrite_chunks(plan(wanted), &singles), whole);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_identical_output(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        for (input, wanted) in samples() {
            let bytes = input.as_bytes();
            let whole = rewrite_chunks(plan(wanted), &[bytes]);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for a in at {
                chunks.push(&bytes[prev..a]);
                prev = a;
            }
            chunks.push(&bytes[prev..]);
            prop_assert_eq!(rewrite_chunks(plan(wanted), &chunks), whole);
        }
    }
}

fn big_calendar(events: usize) -> String {
    let mut x = String::from(concat!(
        "<?xml version='1.0' encoding='utf-8'?>\n",
        "<multistatus xmlns=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\n",
        "  <response>\n    <href>/user1/cal/</href>\n    <propstat>\n      <prop>\n",
        "        <getetag>\"cal\"</getetag>\n      </prop>\n",
        "      <status>HTTP/1.1 200 OK</status>\n    </propstat>\n    <propstat>\n",
        "      <prop>\n        <C:max-attachment-size />\n      </prop>\n",
        "      <status>HTTP/1.1 404 Not Found</status>\n    </propstat>\n  </response>\n"
    ));
    for i in 0..events {
        x.push_str(&format!(
            concat!(
                "  <response>\n    <href>/user1/cal/event-{:05}.ics</href>\n    <propstat>\n",
                "      <prop>\n        <getetag>\"{:040x}\"</getetag>\n      </prop>\n",
                "      <status>HTTP/1.1 200 OK</status>\n    </propstat>\n    <propstat>\n",
                "      <prop>\n        <C:max-attachment-size />\n      </prop>\n",
                "      <status>HTTP/1.1 404 Not Found</status>\n    </propstat>\n  </response>\n"
            ),
            i, i
        ));
    }
    x.push_str("</multistatus>\n");
    x
}

#[test]
fn two_thousand_events_stream_with_one_response_buffered() {
    let input = big_calendar(2000);
    let largest_response = 420;
    let chunk = 8192;
    let mut rw = Rewriter::new(plan(OurProp::MaxAttachmentSize.into()), classify)
        .with_error_mode(ErrorMode::Fail);
    let mut out = Vec::new();
    let mut fed = 0;
    for c in input.as_bytes().chunks(chunk) {
        fed += c.len();
        out.extend_from_slice(&rw.feed(c).unwrap());
        // Output keeps pace with input: never more than one chunk plus one response behind.
        assert!(out.len() + chunk + largest_response >= fed);
    }
    let stats = rw.stats().clone();
    out.extend_from_slice(&rw.finish().unwrap());
    assert!(input.len() > 2000 * 300);
    assert_eq!(stats.responses, 2001);
    assert_eq!(stats.rewritten, 1);
    assert!(
        stats.buffer_high_water <= chunk + largest_response,
        "held {} bytes",
        stats.buffer_high_water
    );
    let out = String::from_utf8(out).unwrap();
    assert_same_except_ours(&input, &out);
    let found = ours_found(&tree::parse(out.as_bytes()).unwrap());
    assert_eq!(
        found[0].1,
        vec![(OurProp::MaxAttachmentSize, 200, s("10485760"))]
    );
    assert!(found[1..]
        .iter()
        .all(|(_, p)| p == &vec![(OurProp::MaxAttachmentSize, 404, s(""))]));
}

#[test]
fn oversized_response_passes_unchanged_and_later_ones_are_rewritten() {
    let big = "x".repeat(5000);
    let input = format!(
        concat!(
            r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
            r#"<D:response><D:href>/user1/a/</D:href><D:propstat><D:prop><D:displayname>{}</D:displayname>"#,
            r#"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#,
            r#"<D:response><D:href>/user1/b/</D:href><D:propstat><D:prop><D:displayname>b</D:displayname>"#,
            r#"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
        ),
        big
    );
    let limits = Limits {
        max_response: 1024,
        ..Limits::default()
    };
    let mut rw = Rewriter::new(plan(OurProps::CALENDAR), classify).with_limits(limits);
    let mut out = Vec::new();
    for c in input.as_bytes().chunks(256) {
        out.extend_from_slice(&rw.feed(c).unwrap());
    }
    let stats = rw.stats().clone();
    out.extend_from_slice(&rw.finish().unwrap());
    assert_eq!(stats.oversized, 1);
    assert_eq!(stats.rewritten, 1);
    assert!(stats.buffer_high_water <= 1024 + 256 + 64);
    let found = ours_found(&tree::parse(&out).unwrap());
    assert!(found[0].1.is_empty());
    assert_eq!(found[1].1.len(), 2);
}

// === failure modes ===

fn pass_through(input: &[u8], chunk: usize) -> (Vec<u8>, Option<RewriteError>) {
    let mut rw = Rewriter::new(plan(OurProps::ALL), |_: &str, _| ResourceKind::Calendar);
    let mut out = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        out.extend_from_slice(&rw.feed(c).unwrap());
    }
    let (tail, stats) = rw.finish_with_stats().unwrap();
    out.extend_from_slice(&tail);
    (out, stats.error)
}

#[test]
fn malformed_input_passes_through_complete_and_reports_the_error() {
    let cases: Vec<(Vec<u8>, RewriteError)> = vec![
        (
            br#"<!DOCTYPE m [<!ENTITY e "x">]><D:multistatus xmlns:D="DAV:"/>"#.to_vec(),
            RewriteError::Dtd,
        ),
        (
            br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a/</D:href></D:multistatus>"#
                .to_vec(),
            RewriteError::Malformed("end tag does not match start tag".into()),
        ),
        (
            br#"<html><body>502 Bad Gateway</body></html>"#.to_vec(),
            RewriteError::NotMultistatus,
        ),
        (
            br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a/"#.to_vec(),
            RewriteError::UnexpectedEof,
        ),
        (
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><multistatus xmlns=\"DAV:\"/>"
                .to_vec(),
            RewriteError::Encoding("iso-8859-1".into()),
        ),
        (
            br#"<x:multistatus><x:response/></x:multistatus>"#.to_vec(),
            RewriteError::Malformed("unbound prefix x".into()),
        ),
        (b"".to_vec(), RewriteError::NotMultistatus),
    ];
    for (input, expected) in cases {
        for chunk in [1, 7, input.len()] {
            let (out, err) = pass_through(&input, chunk);
            assert_eq!(out, input, "{}", String::from_utf8_lossy(&input));
            assert_eq!(err.as_ref(), Some(&expected));
        }
    }
}

#[test]
fn error_after_a_rewritten_response_keeps_the_rewrite_and_copies_the_rest() {
    let good = concat!(
        r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
        r#"<D:response><D:href>/user1/c/</D:href><D:propstat><D:prop><D:getetag/></D:prop>"#,
        r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#
    );
    let bad = r#"<D:response><D:href>/user1/d/</D:href><D:propstat></D:response></oops>"#;
    let input = format!("{good}{bad}");
    let (out, err) = pass_through(input.as_bytes(), 5);
    assert!(matches!(err, Some(RewriteError::Malformed(_))));
    let out = String::from_utf8(out).unwrap();
    assert!(out.ends_with(bad));
    assert!(out.contains("<C:max-attachment-size>10485760</C:max-attachment-size>"));
    assert_eq!(out.len(), input.len() + "<C:max-attachment-size>10485760</C:max-attachment-size><C:max-attachments-per-resource>12</C:max-attachments-per-resource>".len());
}

#[test]
fn fail_mode_returns_the_error() {
    let mut rw = Rewriter::new(plan(OurProps::ALL), classify).with_error_mode(ErrorMode::Fail);
    assert_eq!(rw.feed(b"<!DOCTYPE x><x/>"), Err(RewriteError::Dtd));
    assert_eq!(rw.feed(b"more"), Err(RewriteError::Dtd));
    assert_eq!(rw.finish(), Err(RewriteError::Dtd));
}

#[test]
fn deep_nesting_is_refused_without_recursion_or_growth() {
    let mut input = br#"<D:multistatus xmlns:D="DAV:">"#.to_vec();
    for _ in 0..100_000 {
        input.extend_from_slice(b"<a>");
    }
    let (out, err) = pass_through(&input, 4096);
    assert_eq!(out, input);
    assert_eq!(
        err,
        Some(RewriteError::TooDeep(Limits::default().max_depth))
    );
}

#[test]
fn entity_references_are_never_expanded() {
    // Without a DTD no entity can be defined; an undefined one in an href leaves the
    // response untouched rather than guessing.
    let input = concat!(
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/user1/&lol9;/</D:href>"#,
        r#"<D:propstat><D:prop><D:getetag/></D:prop><D:status>HTTP/1.1 200 OK</D:status>"#,
        r#"</D:propstat></D:response></D:multistatus>"#
    );
    let (out, err) = pass_through(input.as_bytes(), 3);
    assert_eq!(out, input.as_bytes());
    assert_eq!(err, None);
}

#[test]
fn huge_text_and_huge_tags_stay_bounded() {
    let limits = Limits::default();
    let mut input = br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>"#.to_vec();
    input.extend(std::iter::repeat_n(b'a', 4 << 20));
    input.extend_from_slice(b"</D:href></D:response></D:multistatus>");
    let mut rw = Rewriter::new(plan(OurProps::ALL), classify);
    let mut out = Vec::new();
    for c in input.chunks(16 << 10) {
        out.extend_from_slice(&rw.feed(c).unwrap());
    }
    let stats = rw.stats().clone();
    out.extend_from_slice(&rw.finish().unwrap());
    assert_eq!(out, input);
    assert_eq!(stats.oversized, 1);
    assert!(stats.buffer_high_water <= limits.max_response + (16 << 10) + 64);

    let mut tag = br#"<D:multistatus xmlns:D="DAV:"><D:response a=""#.to_vec();
    tag.extend(std::iter::repeat_n(b'a', 1 << 20));
    let (out, err) = pass_through(&tag, 16 << 10);
    assert_eq!(out, tag);
    assert_eq!(err, Some(RewriteError::TokenTooLong(limits.max_markup)));
}

fn xmlish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"<D:multistatus xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">"[..]),
        Just(&b"<D:response>"[..]),
        Just(&b"</D:response>"[..]),
        Just(&b"<D:href>/user1/</D:href>"[..]),
        Just(&b"<D:propstat>"[..]),
        Just(&b"</D:propstat>"[..]),
        Just(&b"<D:prop>"[..]),
        Just(&b"</D:prop>"[..]),
        Just(&b"<D:prop/>"[..]),
        Just(&b"<D:status>HTTP/1.1 200 OK</D:status>"[..]),
        Just(&b"<D:status>HTTP/1.1 404 Not Found</D:status>"[..]),
        Just(&b"<C:max-attachment-size/>"[..]),
        Just(&b"<C:managed-attachments-server-URL>x</C:managed-attachments-server-URL>"[..]),
        Just(&b"<D:resourcetype><C:calendar/></D:resourcetype>"[..]),
        Just(&b"</D:multistatus>"[..]),
        Just(&b"<!DOCTYPE x [<!ENTITY a \"&a;&a;\">]>"[..]),
        Just(&b"&a;"[..]),
        Just(&b"<![CDATA[<]]>"[..]),
        Just(&b"<!-- c -->"[..]),
        Just(&b" \n"[..]),
        Just(&b"<"[..]),
        Just(&b"\""[..]),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_pass_through_when_nothing_applies(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
    ) {
        let mut rw = Rewriter::new(plan(OurProps::ALL), |_: &str, _| ResourceKind::Other);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            out.extend_from_slice(&rw.feed(c).unwrap());
        }
        out.extend_from_slice(&rw.finish().unwrap());
        prop_assert_eq!(out, input);
    }

    #[test]
    fn xml_like_input_never_panics_and_grows_by_a_bounded_amount(
        input in xmlish(),
        chunk in 1usize..64,
    ) {
        let (out, err) = pass_through(&input, chunk);
        let responses = input.windows(12).filter(|w| w == b"<D:response>").count();
        // Per response at most one new propstat holding the two limits.
        prop_assert!(out.len() <= input.len() + 256 * responses);
        // Well-formed input that was rewritten stays well-formed and only our properties
        // (and propstats they emptied) differ.
        if let (Ok(a), None) = (tree::parse(&input), err) {
            let b = tree::parse(&out);
            prop_assert!(b.is_ok(), "{}", String::from_utf8_lossy(&out));
            prop_assert_eq!(without_ours(&a), without_ours(&b.unwrap()));
        }
        let mut rw = Rewriter::new(plan(OurProps::ALL), |_: &str, _| ResourceKind::Other);
        let mut same = rw.feed(&input).unwrap().to_vec();
        same.extend_from_slice(&rw.finish().unwrap());
        prop_assert_eq!(same, input);
    }
}

/// Per response: href index and propstats as (is 200, property indices).
type GenResponse = (usize, Vec<(bool, Vec<usize>)>);

/// A well-formed multistatus from random parts: per response an href (home, calendar,
/// event) and propstats (200 or 404) drawn from a pool holding our three names too.
#[derive(Debug, Clone)]
struct GenDoc {
    dav_default: bool,
    cal_on_root: bool,
    indent: bool,
    responses: Vec<GenResponse>,
}

fn gen_doc() -> impl Strategy<Value = GenDoc> {
    let propstat = (any::<bool>(), proptest::collection::vec(0usize..7, 0..5));
    let response = (0usize..3, proptest::collection::vec(propstat, 1..4));
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(response, 0..5),
    )
        .prop_map(|(dav_default, cal_on_root, indent, responses)| GenDoc {
            dav_default,
            cal_on_root,
            indent,
            responses,
        })
}

const GEN_HREFS: [&str; 3] = ["/user1/", "/user1/cal/", "/user1/cal/e.ics"];

fn render(d: &GenDoc) -> String {
    let dp = if d.dav_default { "" } else { "D:" };
    let nl = if d.indent { "\n  " } else { "" };
    let cal_decl = if d.cal_on_root {
        ""
    } else {
        " xmlns:C=\"urn:ietf:params:xml:ns:caldav\""
    };
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<{dp}multistatus xmlns{}=\"DAV:\"{}>",
        if d.dav_default { "" } else { ":D" },
        if d.cal_on_root {
            " xmlns:C=\"urn:ietf:params:xml:ns:caldav\""
        } else {
            ""
        }
    );
    for (href, propstats) in &d.responses {
        x.push_str(&format!(
            "{nl}<{dp}response>{nl}<{dp}href>{}</{dp}href>",
            GEN_HREFS[*href]
        ));
        for (ok, props) in propstats {
            x.push_str(&format!("{nl}<{dp}propstat>{nl}<{dp}prop>"));
            for p in props {
                let v = if *ok { "5" } else { "" };
                x.push_str(nl);
                x.push_str(&match p {
                    0 => format!("<{dp}displayname>{v}</{dp}displayname>"),
                    1 => format!("<{dp}getetag>{v}</{dp}getetag>"),
                    2 => format!(
                        "<X:getctag xmlns:X=\"http://calendarserver.org/ns/\">{v}</X:getctag>"
                    ),
                    3 => format!("<{dp}resourcetype><{dp}collection/></{dp}resourcetype>"),
                    n => {
                        let local = OurProp::ALL[n - 4].local_name();
                        format!("<C:{local}{cal_decl}>{v}</C:{local}>")
                    }
                });
            }
            let status = if *ok { "200 OK" } else { "404 Not Found" };
            x.push_str(&format!(
                "{nl}</{dp}prop>{nl}<{dp}status>HTTP/1.1 {status}</{dp}status>{nl}</{dp}propstat>"
            ));
        }
        x.push_str(&format!("{nl}</{dp}response>"));
    }
    x.push_str(&format!("\n</{dp}multistatus>\n"));
    x
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_multistatus_gets_exactly_our_values_where_they_apply(
        doc in gen_doc(),
        wanted in 0u8..8,
        chunk in 1usize..200,
    ) {
        let wanted: OurProps = OurProp::ALL
            .into_iter()
            .filter(|p| wanted & (1 << (*p as u8)) != 0)
            .collect();
        let input = render(&doc);
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
        let out = String::from_utf8(rewrite_chunks(plan(wanted), &chunks)).unwrap();
        let a = tree::parse(input.as_bytes()).unwrap();
        let b = tree::parse(out.as_bytes());
        prop_assert!(b.is_ok(), "{}", out);
        let b = b.unwrap();
        prop_assert_eq!(without_ours(&a), without_ours(&b));
        for ((href, before), (_, after)) in ours_found(&a).into_iter().zip(ours_found(&b)) {
            let applicable = match classify(&href, ResourceHints::default()) {
                ResourceKind::Home => OurProps::HOME,
                ResourceKind::Calendar => OurProps::CALENDAR,
                ResourceKind::Other => OurProps::NONE,
            }
            .intersection(wanted);
            for p in OurProp::ALL {
                let got: Vec<_> = after.iter().filter(|f| f.0 == p).cloned().collect();
                if applicable.contains(p) {
                    let value = match p {
                        OurProp::ServerUrl => s(""),
                        OurProp::MaxAttachmentSize => s("10485760"),
                        OurProp::MaxAttachmentsPerResource => s("12"),
                    };
                    prop_assert_eq!(got, vec![(p, 200, value)], "{}", out);
                } else {
                    let had: Vec<_> = before.iter().filter(|f| f.0 == p).cloned().collect();
                    prop_assert_eq!(got, had);
                }
            }
        }
    }
}
