//! `calattach migrate`: inline binary attachments already stored upstream become managed
//! ones (the batch form of `attachments.convert_inline`, module `inline`).
//!
//! With the service account of `[gc]` (`gc.username`/`gc.password`), every calendar
//! object of the given calendars — or of every calendar in the account's calendar homes
//! — is read; one carrying inline values is converted as a PUT through the guard would
//! be (same limits; the account is the attachments' creator, the object their home) and
//! written back with `If-Match`. An object changed meanwhile (`412`) is read again and
//! converted again, never overwritten; what was stored for the lost attempt is deleted.
//! A re-run finds converted objects without inline values and leaves them alone, so an
//! interrupted run is resumed by running it again (a crash between storing and writing
//! leaves pending attachments for `gc`). `--dry-run` only counts.

use std::io::IsTerminal;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::{access, fetch_object, Caller, Fetched};
use crate::body;
use crate::error::Error;
use crate::ical::Calendar;
use crate::state::State;
use crate::store::{Holder, Meta};

/// Attempts per object when it keeps changing under the migration.
const ATTEMPTS: u32 = 5;

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub objects: u64,
    pub converted: u64,
    pub attachments: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// Converts the objects of `calendars` (paths; empty = every calendar of the service
/// account), printing one line per converted object and per error through `out`.
pub async fn run(
    state: &State,
    calendars: &[String],
    dry_run: bool,
    out: &mut dyn FnMut(String),
) -> Result<Report, Error> {
    let caller = Caller::service(&state.config.gc).ok_or_else(|| {
        Error::BadRequest(
            "migrate needs the service account: set gc.username and gc.password".into(),
        )
    })?;
    let calendars = if calendars.is_empty() {
        every_calendar(state, &caller).await?
    } else {
        calendars.to_vec()
    };
    let mut objects = Vec::new();
    for cal in &calendars {
        objects.extend(
            children(state, &caller, cal)
                .await?
                .into_iter()
                .filter(|c| !c.collection)
                .map(|c| c.href),
        );
    }
    let mut report = Report::default();
    let progress = std::io::stderr().is_terminal();
    let total = objects.len();
    for (n, href) in objects.iter().enumerate() {
        if progress {
            eprint!("\rmigrate: {}/{total} objects", n + 1);
        }
        report.objects += 1;
        match migrate_one(state, &caller, href, dry_run).await {
            Ok(Some((count, bytes))) => {
                report.converted += 1;
                report.attachments += count;
                report.bytes += bytes;
                out(format!(
                    "{}{href}: {count} inline attachments ({bytes} bytes)",
                    if dry_run {
                        "would convert "
                    } else {
                        "converted "
                    }
                ));
            }
            Ok(None) => {}
            Err(e) => {
                report.errors += 1;
                out(format!("error {href}: {e}"));
            }
        }
    }
    if progress {
        eprintln!();
    }
    Ok(report)
}

/// `(attachments, bytes)` converted in `href`, `None` when it holds no inline value.
async fn migrate_one(
    state: &State,
    caller: &Caller,
    href: &str,
    dry_run: bool,
) -> Result<Option<(u64, u64)>, Error> {
    let max = state.config.attachments.max_object_size;
    let creator = caller.user.clone().unwrap_or_default();
    for _ in 0..ATTEMPTS {
        let object = match fetch_object(&state.upstream, caller, href, max).await {
            Ok(Fetched::Object(o)) => o,
            Ok(Fetched::Relay(resp)) => {
                return Err(Error::BadRequest(format!("GET answered {}", resp.status())))
            }
            // Not a calendar object, or too large to edit: not ours to convert.
            Err(Error::BadRequest(_)) | Err(Error::Precondition(..)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(cal) = Calendar::parse(&object.bytes) else {
            return Ok(None);
        };
        let inline = cal.inline_attaches();
        if inline.is_empty() {
            return Ok(None);
        }
        if dry_run {
            let bytes = inline.iter().map(|a| a.value.len() as u64 * 3 / 4).sum();
            return Ok(Some((inline.len() as u64, bytes)));
        }
        let Some((new_bytes, metas)) = super::inline::convert(state, &creator, &cal, href).await?
        else {
            return Ok(None);
        };
        let Some(etag) = object.validators.etag.clone() else {
            super::inline::discard(state, &metas).await;
            return Err(Error::Conflict("the calendar server sent no ETag".into()));
        };
        // The index before the write, as the guard keeps it: a superset.
        for m in &metas {
            let holder = Holder {
                href: href.to_owned(),
                organizer_side: true,
            };
            state.store.add_ref(href, &m.id).await?;
            state.store.add_holder(&m.id, &holder).await?;
        }
        let body = Bytes::from(new_bytes);
        let status = put(state, caller, href, &etag, body.clone()).await;
        match status {
            Ok(s) if s.is_success() => {
                let new_cal = Calendar::parse(&body).ok();
                for m in &metas {
                    let _ = state.store.mark_live(&m.id).await;
                    if let Some(c) = &new_cal {
                        let _ = state
                            .store
                            .put_audience(&m.id, &access::audience_of(c))
                            .await;
                    }
                }
                let bytes = metas.iter().map(|m| m.size).sum();
                return Ok(Some((metas.len() as u64, bytes)));
            }
            Ok(s) => {
                unindex(state, href, &metas).await;
                super::inline::discard(state, &metas).await;
                if s != StatusCode::PRECONDITION_FAILED && s != StatusCode::LOCKED {
                    return Err(Error::BadRequest(format!("PUT answered {s}")));
                }
                // Changed meanwhile: read it again, never overwrite.
            }
            // The write may have happened: the attachments stay pending for gc to settle.
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(format!("{href} kept changing; try again")))
}

async fn unindex(state: &State, href: &str, metas: &[Meta]) {
    for m in metas {
        let _ = state.store.remove_ref(href, &m.id).await;
        let _ = state.store.remove_holder(&m.id, href).await;
    }
}

async fn put(
    state: &State,
    caller: &Caller,
    href: &str,
    etag: &str,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let resp = state
        .upstream
        .send_retrying(|| {
            let mut req =
                caller.request(&state.upstream, Method::PUT, href, body::full(body.clone()))?;
            let h = req.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/calendar; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(etag) {
                h.insert(header::IF_MATCH, v);
            }
            Ok(req)
        })
        .await?;
    let status = resp.status();
    super::drain(resp).await;
    Ok(status)
}

/// One member of a collection (`Depth: 1` PROPFIND).
struct Child {
    href: String,
    collection: bool,
    calendar: bool,
}

/// The members of the collection at `path` (itself left out).
async fn children(state: &State, caller: &Caller, path: &str) -> Result<Vec<Child>, Error> {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:propfind xmlns:D=\"DAV:\">\
        <D:prop><D:resourcetype/></D:prop></D:propfind>";
    let resp = caller
        .propfind(
            &state.upstream,
            path,
            Some(HeaderValue::from_static("1")),
            Bytes::from_static(BODY.as_bytes()),
        )
        .await?;
    let status = resp.status();
    if status != StatusCode::MULTI_STATUS {
        super::drain(resp).await;
        return Err(Error::BadRequest(format!(
            "PROPFIND {path} answered {status}"
        )));
    }
    let xml = http_body_util::Limited::new(resp.into_body(), 16 * 1024 * 1024)
        .collect()
        .await
        .map_err(|e| Error::BadRequest(format!("PROPFIND {path}: {e}")))?
        .to_bytes();
    let own = path.trim_end_matches('/');
    Ok(parse_children(&xml)
        .into_iter()
        .filter_map(|mut c| {
            c.href = crate::identity::same_upstream_path(&state.upstream, &c.href)?;
            let decoded = percent_encoding::percent_decode_str(&c.href)
                .decode_utf8()
                .ok()?
                .into_owned();
            (decoded.trim_end_matches('/') != own && c.href.trim_end_matches('/') != own)
                .then_some(c)
        })
        .collect())
}

/// `DAV:response` elements: href, and whether the resourcetype names a collection and a
/// CalDAV calendar (namespaces resolved).
fn parse_children(xml: &[u8]) -> Vec<Child> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let mut reader = quick_xml::NsReader::from_reader(xml);
    let mut out = Vec::new();
    let mut current: Option<Child> = None;
    let mut in_href = false;
    let mut buf = Vec::new();
    while let Ok((ns, ev)) = reader.read_resolved_event_into(&mut buf) {
        let ns = match ns {
            ResolveResult::Bound(n) => n.as_ref().to_vec(),
            _ => Vec::new(),
        };
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name().as_ref().to_vec();
                match (ns.as_slice(), name.as_slice()) {
                    (b"DAV:", b"response") => {
                        current = Some(Child {
                            href: String::new(),
                            collection: false,
                            calendar: false,
                        })
                    }
                    (b"DAV:", b"href") => in_href = true,
                    (b"DAV:", b"collection") => {
                        if let Some(c) = current.as_mut() {
                            c.collection = true;
                        }
                    }
                    (b"urn:ietf:params:xml:ns:caldav", b"calendar") => {
                        if let Some(c) = current.as_mut() {
                            c.calendar = true;
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_href => {
                if let (Some(c), Ok(text)) = (current.as_mut(), t.decode()) {
                    if c.href.is_empty() {
                        c.href = text.trim().to_owned();
                    }
                }
            }
            Event::End(e) => {
                let name = e.local_name().as_ref().to_vec();
                if name == b"href" {
                    in_href = false;
                } else if name == b"response" {
                    if let Some(c) = current.take() {
                        out.push(c);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    out
}

/// Every calendar in the service account's calendar homes.
async fn every_calendar(state: &State, caller: &Caller) -> Result<Vec<String>, Error> {
    let identity = match state
        .identity
        .resolve(&state.upstream, caller, crate::identity::WELL_KNOWN)
        .await?
    {
        Some(crate::identity::Resolved::Known(id)) => id,
        _ => {
            return Err(Error::BadRequest(
                "the calendar server refused the service account".into(),
            ))
        }
    };
    let mut calendars = Vec::new();
    for home in &identity.homes {
        for c in children(state, caller, home).await? {
            if c.calendar {
                calendars.push(c.href);
            }
        }
    }
    Ok(calendars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_members_are_read_with_their_types() {
        let xml = br#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
            <d:response><d:href>/u/cal/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><c:calendar/></d:resourcetype></d:prop></d:propstat></d:response>
            <d:response><d:href>/u/cal/e.ics</d:href><d:propstat><d:prop><d:resourcetype/></d:prop></d:propstat></d:response>
            </d:multistatus>"#;
        let c = parse_children(xml);
        assert_eq!(c.len(), 2);
        assert!(c[0].collection && c[0].calendar);
        assert_eq!(c[1].href, "/u/cal/e.ics");
        assert!(!c[1].collection && !c[1].calendar);
    }
}
