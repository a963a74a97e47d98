//! Request bodies that concern the RFC 8607 §6 properties: PROPFIND (RFC 4918 §9.1, §14.20),
//! PROPPATCH (RFC 4918 §9.2, §14.19) and the `DAV:set` of MKCALENDAR (RFC 4791 §5.3.1) or
//! extended MKCOL (RFC 5689 §3).
//!
//! # Bounds
//!
//! The caller reads at most N bytes of the body and passes them with a flag saying whether the
//! body was longer; a truncated body is [`RequestError::TooLarge`] (the caller then forwards the
//! request untouched, as if it did not name our properties: a client asking for them sends a
//! few hundred bytes). Malformed XML, a DTD, or an unexpected root element is
//! [`RequestError::Malformed`]: the caller forwards the request untouched and lets the upstream
//! answer. No entity is ever expanded; text content is never decoded here.
//!
//! # PROPFIND (RFC 8607 §6.1–§6.3 "allprop behavior")
//!
//! An empty body means `allprop` (RFC 4918 §9.1) and is reported as [`PropfindKind::Empty`].
//! `allprop` does not return our properties unless a `DAV:include` names them; `propname`
//! lists them (the rewriter adds the empty elements, see [`super::rewrite`]).
//!
//! # PROPPATCH: calattach answers the whole request itself
//!
//! The three properties are protected (RFC 8607 §6.1–§6.3). PROPPATCH is atomic (RFC 4918
//! §9.2: "either all property instructions are executed or none"), so when a PROPPATCH sets or
//! removes any of our properties, calattach forwards **nothing** and answers itself with
//! `207 Multi-Status` built by [`proppatch_refusal`]: each of our properties gets
//! `403 Forbidden` with `DAV:cannot-modify-protected-property` (RFC 4918 §16) in the propstat,
//! every other property of the request gets `424 Failed Dependency` (RFC 4918 §9.2.1). The
//! client may resend the other properties alone; the upstream then decides on them. A PROPPATCH
//! naming none of ours is forwarded untouched.
//!
//! # MKCALENDAR / extended MKCOL
//!
//! A creation request whose `DAV:set` names one of our properties is refused as a whole
//! (creation is atomic too, RFC 4791 §5.3.1): `403` with
//! `<D:error><D:cannot-modify-protected-property/></D:error>`; [`parse_mkcol_set`] detects it.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{escape_xml, OurProps, QName, CALDAV_NS, DAV_NS};

/// Why a request body could not be used; the caller forwards the request untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The caller's bound cut the body short.
    #[error("request body larger than the bound")]
    TooLarge,
    /// Not well-formed XML, a DTD, or not the expected document element.
    #[error("request body: {0}")]
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> RequestError {
    RequestError::Malformed(msg.into())
}

/// What a PROPFIND asks for (RFC 4918 §14.20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropfindKind {
    /// `DAV:prop`: these properties, in request order.
    Prop(Vec<QName>),
    /// `DAV:allprop`, with the properties of an optional `DAV:include`.
    AllProp { include: Vec<QName> },
    /// `DAV:propname`: the names of all properties.
    PropName,
    /// No body, which RFC 4918 §9.1 defines as `allprop`.
    Empty,
}

impl PropfindKind {
    /// Which of our properties the answer must carry: named in `DAV:prop` or `DAV:include`,
    /// all three for `propname` (as empty elements), none for a bare `allprop`.
    pub fn our_props(&self) -> OurProps {
        match self {
            PropfindKind::Prop(names) | PropfindKind::AllProp { include: names } => {
                names.iter().filter_map(QName::our_prop).collect()
            }
            PropfindKind::PropName => OurProps::ALL,
            PropfindKind::Empty => OurProps::NONE,
        }
    }

    /// Whether the answer carries property names only (values omitted).
    pub fn names_only(&self) -> bool {
        matches!(self, PropfindKind::PropName)
    }
}

/// Whether a PROPPATCH instruction sets or removes its property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    Set,
    Remove,
}

/// One property of a PROPPATCH, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchProp {
    pub name: QName,
    pub op: PatchOp,
}

/// A parsed PROPPATCH body (RFC 4918 §14.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proppatch {
    /// Every property instruction, in document order.
    pub props: Vec<PatchProp>,
}

impl Proppatch {
    /// Our properties that the request sets or removes; non-empty means calattach answers the
    /// request with [`proppatch_refusal`] and forwards nothing.
    pub fn our_props(&self) -> OurProps {
        self.props
            .iter()
            .filter_map(|p| p.name.our_prop())
            .collect()
    }
}

/// The `DAV:set` of a MKCALENDAR (RFC 4791 §5.3.1) or extended MKCOL (RFC 5689) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkcolSet {
    /// Every property set, in document order.
    pub props: Vec<QName>,
}

impl MkcolSet {
    /// Our properties the request tries to set; non-empty means `403` with
    /// `DAV:cannot-modify-protected-property`, nothing forwarded.
    pub fn our_props(&self) -> OurProps {
        self.props.iter().filter_map(QName::our_prop).collect()
    }
}

/// Parses a PROPFIND body. `truncated` says the caller's bound cut the body.
pub fn parse_propfind(body: &[u8], truncated: bool) -> Result<PropfindKind, RequestError> {
    if truncated {
        return Err(RequestError::TooLarge);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PropfindKind::Empty);
    }
    let mut kind: Option<PropfindKind> = None;
    walk(body, |path, name| {
        match path {
            [] => expect_root(name, DAV_NS, "propfind")?,
            [_] => {
                if is(name, DAV_NS, "prop") {
                    kind = Some(PropfindKind::Prop(Vec::new()));
                } else if is(name, DAV_NS, "allprop") {
                    if !matches!(kind, Some(PropfindKind::AllProp { .. })) {
                        kind = Some(PropfindKind::AllProp {
                            include: Vec::new(),
                        });
                    }
                } else if is(name, DAV_NS, "propname") {
                    kind = Some(PropfindKind::PropName);
                } else if is(name, DAV_NS, "include") {
                    // `include` follows `allprop` (RFC 4918 §14.20); accept either order.
                    if !matches!(kind, Some(PropfindKind::AllProp { .. })) {
                        kind = Some(PropfindKind::AllProp {
                            include: Vec::new(),
                        });
                    }
                }
            }
            [_, parent] => match &mut kind {
                Some(PropfindKind::Prop(v)) if is(parent, DAV_NS, "prop") => v.push(name.clone()),
                Some(PropfindKind::AllProp { include }) if is(parent, DAV_NS, "include") => {
                    include.push(name.clone())
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    })?;
    kind.ok_or_else(|| malformed("propfind without prop, allprop or propname"))
}

/// Parses a PROPPATCH body. `truncated` says the caller's bound cut the body.
pub fn parse_proppatch(body: &[u8], truncated: bool) -> Result<Proppatch, RequestError> {
    if truncated {
        return Err(RequestError::TooLarge);
    }
    let mut props = Vec::new();
    walk(body, |path, name| {
        match path {
            [] => expect_root(name, DAV_NS, "propertyupdate")?,
            [_, op, prop] if is(prop, DAV_NS, "prop") => {
                let op = if is(op, DAV_NS, "set") {
                    PatchOp::Set
                } else if is(op, DAV_NS, "remove") {
                    PatchOp::Remove
                } else {
                    return Ok(());
                };
                props.push(PatchProp {
                    name: name.clone(),
                    op,
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(Proppatch { props })
}

/// Parses the `DAV:set` of a MKCALENDAR or extended MKCOL body (any document element, as both
/// share the shape). `truncated` says the caller's bound cut the body.
pub fn parse_mkcol_set(body: &[u8], truncated: bool) -> Result<MkcolSet, RequestError> {
    if truncated {
        return Err(RequestError::TooLarge);
    }
    let mut props = Vec::new();
    walk(body, |path, name| {
        if let [_, set, prop] = path {
            if is(set, DAV_NS, "set") && is(prop, DAV_NS, "prop") {
                props.push(name.clone());
            }
        }
        Ok(())
    })?;
    Ok(MkcolSet { props })
}

/// The `207 Multi-Status` body refusing a PROPPATCH that names our properties (see the module
/// docs): one `DAV:response` for `href` (sent as given, XML-escaped), a `403` propstat with
/// `DAV:cannot-modify-protected-property` for ours and a `424` propstat for the others. Each
/// property is listed once, in request order.
pub fn proppatch_refusal(href: &str, patch: &Proppatch) -> String {
    let mut ours: Vec<&QName> = Vec::new();
    let mut others: Vec<&QName> = Vec::new();
    for p in &patch.props {
        if ours.contains(&&p.name) || others.contains(&&p.name) {
            continue;
        }
        if p.name.our_prop().is_some() {
            ours.push(&p.name);
        } else {
            others.push(&p.name);
        }
    }
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <D:multistatus xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\n\
         <D:response>\n<D:href>",
    );
    escape_xml(href, &mut out);
    out.push_str("</D:href>\n");
    if !ours.is_empty() {
        out.push_str("<D:propstat>\n<D:prop>");
        for n in &ours {
            empty_element(n, &mut out);
        }
        out.push_str(
            "</D:prop>\n<D:status>HTTP/1.1 403 Forbidden</D:status>\n\
             <D:error><D:cannot-modify-protected-property/></D:error>\n</D:propstat>\n",
        );
    }
    if !others.is_empty() {
        out.push_str("<D:propstat>\n<D:prop>");
        for n in &others {
            empty_element(n, &mut out);
        }
        out.push_str(
            "</D:prop>\n<D:status>HTTP/1.1 424 Failed Dependency</D:status>\n</D:propstat>\n",
        );
    }
    out.push_str(
        "<D:responsedescription>calattach: protected properties cannot be modified \
         (RFC 8607 section 6); nothing was changed</D:responsedescription>\n\
         </D:response>\n</D:multistatus>\n",
    );
    out
}

/// Writes `name` as an empty element, using the `D:` and `C:` prefixes declared on the
/// multistatus and a local declaration for any other namespace.
fn empty_element(name: &QName, out: &mut String) {
    out.push('<');
    match name.ns.as_deref() {
        Some(DAV_NS) => {
            out.push_str("D:");
            out.push_str(&name.local);
        }
        Some(CALDAV_NS) => {
            out.push_str("C:");
            out.push_str(&name.local);
        }
        Some(ns) => {
            out.push_str("X:");
            out.push_str(&name.local);
            out.push_str(" xmlns:X=\"");
            escape_xml(ns, out);
            out.push('"');
        }
        // The multistatus declares no default namespace, so an unprefixed name has none.
        None => out.push_str(&name.local),
    }
    out.push_str("/>");
}

fn is(name: &QName, ns: &str, local: &str) -> bool {
    name.ns.as_deref() == Some(ns) && name.local == local
}

fn expect_root(name: &QName, ns: &str, local: &str) -> Result<(), RequestError> {
    if is(name, ns, local) {
        Ok(())
    } else {
        Err(malformed(format!(
            "document element is {{{}}}{}, expected {{{ns}}}{local}",
            name.ns.as_deref().unwrap_or(""),
            name.local
        )))
    }
}

/// Calls `on_start(ancestors, name)` for every element, in document order, after checking the
/// whole body is well-formed enough (tags balanced, prefixes bound, no DTD). `ancestors` runs
/// from the document element down to the parent.
fn walk(
    body: &[u8],
    mut on_start: impl FnMut(&[QName], &QName) -> Result<(), RequestError>,
) -> Result<(), RequestError> {
    let mut reader = NsReader::from_reader(body);
    let mut stack: Vec<QName> = Vec::new();
    let mut seen_root = false;
    loop {
        let (res, ev) = reader
            .read_resolved_event()
            .map_err(|e| malformed(e.to_string()))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                if stack.is_empty() && seen_root {
                    return Err(malformed("content after the document element"));
                }
                seen_root = true;
                let ns = match res {
                    ResolveResult::Bound(ns) => Some(
                        std::str::from_utf8(ns.into_inner())
                            .map_err(|_| malformed("namespace is not UTF-8"))?
                            .to_owned(),
                    ),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(p) => {
                        return Err(malformed(format!(
                            "unbound prefix {}",
                            String::from_utf8_lossy(&p)
                        )))
                    }
                };
                let local = std::str::from_utf8(s.local_name().into_inner())
                    .map_err(|_| malformed("element name is not UTF-8"))?
                    .to_owned();
                let name = QName { ns, local };
                on_start(&stack, &name)?;
                if matches!(ev, Event::Start(_)) {
                    stack.push(name);
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::DocType(_) => return Err(malformed("DTD not accepted")),
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err(malformed("no document element"));
    }
    if !stack.is_empty() {
        return Err(malformed("unclosed element"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props::OurProp;

    fn caldav(local: &str) -> QName {
        QName::new(Some(CALDAV_NS), local)
    }

    #[test]
    fn prop_with_our_three_and_others_reports_ours() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:displayname/><C:managed-attachments-server-URL/><C:max-attachment-size/>
  <C:max-attachments-per-resource/><D:getetag/></D:prop>
</D:propfind>"#;
        let k = parse_propfind(body, false).unwrap();
        assert_eq!(k.our_props(), OurProps::ALL);
        let PropfindKind::Prop(names) = k else {
            panic!("not prop: {k:?}")
        };
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], QName::new(Some(DAV_NS), "displayname"));
    }

    #[test]
    fn default_namespace_declarations_resolve_our_names() {
        let body = br#"<propfind xmlns="DAV:"><prop><resourcetype/>
<managed-attachments-server-URL xmlns="urn:ietf:params:xml:ns:caldav"/></prop></propfind>"#;
        let k = parse_propfind(body, false).unwrap();
        assert_eq!(k.our_props(), OurProp::ServerUrl.into());
    }

    #[test]
    fn any_prefix_resolves_our_names_and_wrong_namespace_does_not() {
        let body = br#"<x:propfind xmlns:x="DAV:" xmlns:cal="urn:ietf:params:xml:ns:caldav"
 xmlns:other="http://example.com/"><x:prop><cal:max-attachment-size/>
<other:max-attachments-per-resource/></x:prop></x:propfind>"#;
        let k = parse_propfind(body, false).unwrap();
        assert_eq!(k.our_props(), OurProp::MaxAttachmentSize.into());
    }

    #[test]
    fn empty_body_is_empty_kind_without_our_props() {
        assert_eq!(parse_propfind(b"", false).unwrap(), PropfindKind::Empty);
        assert_eq!(
            parse_propfind(b" \r\n", false).unwrap(),
            PropfindKind::Empty
        );
        assert!(PropfindKind::Empty.our_props().is_empty());
    }

    #[test]
    fn allprop_excludes_ours_unless_included() {
        let bare = br#"<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
        let k = parse_propfind(bare, false).unwrap();
        assert_eq!(
            k,
            PropfindKind::AllProp {
                include: Vec::new()
            }
        );
        assert!(k.our_props().is_empty());
        let incl = br#"<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:allprop/><D:include><C:max-attachments-per-resource/></D:include></D:propfind>"#;
        let k = parse_propfind(incl, false).unwrap();
        assert_eq!(k.our_props(), OurProp::MaxAttachmentsPerResource.into());
    }

    #[test]
    fn propname_lists_all_of_ours() {
        let body = br#"<propfind xmlns="DAV:"><propname/></propfind>"#;
        let k = parse_propfind(body, false).unwrap();
        assert_eq!(k, PropfindKind::PropName);
        assert_eq!(k.our_props(), OurProps::ALL);
        assert!(k.names_only());
    }

    #[test]
    fn truncated_body_is_too_large() {
        assert_eq!(
            parse_propfind(b"<D:propfind", true),
            Err(RequestError::TooLarge)
        );
        assert_eq!(parse_proppatch(b"", true), Err(RequestError::TooLarge));
        assert_eq!(parse_mkcol_set(b"", true), Err(RequestError::TooLarge));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            &b"<D:propfind xmlns:D=\"DAV:\"><D:prop></D:propfind>"[..],
            b"<D:propfind><D:prop/></D:propfind>",
            b"<propfind xmlns=\"DAV:\"><prop/>",
            b"garbage",
            b"<propfind xmlns=\"urn:other\"><prop/></propfind>",
            b"<propfind xmlns=\"DAV:\"/>",
            b"<propfind xmlns=\"DAV:\"><prop/></propfind><propfind xmlns=\"DAV:\"/>",
        ] {
            assert!(
                matches!(parse_propfind(body, false), Err(RequestError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn dtd_and_entities_are_rejected_not_expanded() {
        let body = br#"<?xml version="1.0"?>
<!DOCTYPE propfind [<!ENTITY x "managed-attachments-server-URL">]>
<propfind xmlns="DAV:"><prop>&x;</prop></propfind>"#;
        assert!(matches!(
            parse_propfind(body, false),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn proppatch_reports_set_and_removed_ours_in_order() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?>
<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>Work</D:displayname>
    <C:max-attachment-size>1</C:max-attachment-size></D:prop></D:set>
  <D:remove><D:prop><C:managed-attachments-server-URL/></D:prop></D:remove>
</D:propertyupdate>"#;
        let p = parse_proppatch(body, false).unwrap();
        assert_eq!(
            p.props,
            vec![
                PatchProp {
                    name: QName::new(Some(DAV_NS), "displayname"),
                    op: PatchOp::Set
                },
                PatchProp {
                    name: caldav("max-attachment-size"),
                    op: PatchOp::Set
                },
                PatchProp {
                    name: caldav("managed-attachments-server-URL"),
                    op: PatchOp::Remove
                },
            ]
        );
        assert_eq!(
            p.our_props(),
            [OurProp::ServerUrl, OurProp::MaxAttachmentSize]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn proppatch_without_ours_has_no_our_props() {
        let body = br#"<propertyupdate xmlns="DAV:"><set><prop>
<calendar-color xmlns="http://apple.com/ns/ical/">#FF0000</calendar-color></prop></set>
</propertyupdate>"#;
        let p = parse_proppatch(body, false).unwrap();
        assert_eq!(p.props.len(), 1);
        assert!(p.our_props().is_empty());
    }

    #[test]
    fn mkcalendar_set_of_ours_is_detected() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>Lisa's Events</D:displayname>
  <C:max-attachments-per-resource>3</C:max-attachments-per-resource></D:prop></D:set>
</C:mkcalendar>"#;
        let m = parse_mkcol_set(body, false).unwrap();
        assert_eq!(m.our_props(), OurProp::MaxAttachmentsPerResource.into());
        let plain = br#"<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>x</D:displayname></D:prop></D:set></C:mkcalendar>"#;
        assert!(parse_mkcol_set(plain, false)
            .unwrap()
            .our_props()
            .is_empty());
    }

    #[test]
    fn refusal_gives_403_with_precondition_for_ours_and_424_for_others() {
        let body = br#"<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"
 xmlns:A="http://apple.com/ns/ical/"><D:set><D:prop><D:displayname>W</D:displayname>
 <A:calendar-color>#FFF</A:calendar-color><C:max-attachment-size>9</C:max-attachment-size>
 </D:prop></D:set><D:remove><D:prop><D:displayname/></D:prop></D:remove></D:propertyupdate>"#;
        let p = parse_proppatch(body, false).unwrap();
        let out = proppatch_refusal("/u/cal/a&b/", &p);
        let doc = crate::props::tests::tree::parse(out.as_bytes()).unwrap();
        let resp = &doc.children_named(DAV_NS, "response")[0];
        assert_eq!(resp.children_named(DAV_NS, "href")[0].text(), "/u/cal/a&b/");
        let ps = resp.children_named(DAV_NS, "propstat");
        assert_eq!(ps.len(), 2);
        let names = |i: usize| -> Vec<(Option<String>, String)> {
            ps[i].children_named(DAV_NS, "prop")[0]
                .elements()
                .map(|e| (e.ns.clone(), e.local.clone()))
                .collect()
        };
        assert_eq!(
            names(0),
            vec![(Some(CALDAV_NS.into()), "max-attachment-size".into())]
        );
        assert_eq!(
            ps[0].children_named(DAV_NS, "status")[0].text(),
            "HTTP/1.1 403 Forbidden"
        );
        let err = &ps[0].children_named(DAV_NS, "error")[0];
        assert_eq!(
            err.children_named(DAV_NS, "cannot-modify-protected-property")
                .len(),
            1
        );
        assert_eq!(
            names(1),
            vec![
                (Some(DAV_NS.into()), "displayname".into()),
                (
                    Some("http://apple.com/ns/ical/".into()),
                    "calendar-color".into()
                )
            ]
        );
        assert_eq!(
            ps[1].children_named(DAV_NS, "status")[0].text(),
            "HTTP/1.1 424 Failed Dependency"
        );
    }
}
