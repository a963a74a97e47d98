//! The guard on `PUT`, `DELETE` and `MOVE` of calendar objects (RFC 8607 §3.7, §3.9,
//! §3.11 `CALDAV:valid-managed-id-parameter`, §3.12.2; DESIGN §5).
//!
//! **PUT.** Only `text/calendar` bodies up to `attachments.max_object_size` are looked
//! at; other bodies, and larger ones, stream through untouched (the upstream bounds
//! object sizes anyway). A body is guarded when calattach tracks the object (the refs
//! index names ids under its href) or the body mentions `MANAGED-ID` or the attachment
//! URL base; everything else is forwarded byte for byte. For a guarded PUT:
//!
//! 1. References are URIs: an `ATTACH` whose value starts with `<public_url><prefix>/`
//!    names the id after it, with or without parameters; a `MANAGED-ID` parameter names
//!    its value too.
//! 2. Only ids the PUT *introduces* — absent from the object now stored at that href,
//!    read with the caller's credentials — are checked. An id calattach issued may be
//!    introduced by its creator, or into an object with the same UID and ORGANIZER by
//!    that event's organizer or one of its recorded attendees (a scheduling copy).
//!    Unknown, removed or someone else's → `403` `CALDAV:valid-managed-id-parameter`
//!    (+ `CALDAV:valid-managed-id`). Ids already present pass whatever their state, so
//!    an attendee can always answer an invitation.
//! 3. For ids calattach knows, `MANAGED-ID`, `FMTTYPE`, `FILENAME` and `SIZE` are
//!    restored (server-authoritative, RFC 8607 §3.7). When that changed the body, the
//!    answer carries no `ETag` (RFC 4791 §5.3.4).
//! 4. The PUT goes upstream with the client's own headers (`If-Match` …). Introduced ids
//!    are indexed before (the index stays a superset) and un-indexed again when the
//!    upstream definitely refuses. After a 2xx: ids the object no longer references are
//!    un-indexed and, when no other object holds them, tombstoned; the audience
//!    (organizer and attendees) of the organizer's object is refreshed.
//!
//! **DELETE** of a tracked object tombstones, after the upstream's 2xx, the ids no other
//! object holds. **MOVE** moves the index entries to the `Destination`. A failed
//! upstream request changes nothing. Every refusal is logged with the id and reason: a
//! refused save looks like a broken calendar to the user.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::access;
use super::{fetch_object, Caller, Fetched};
use crate::body::{self, Body, BoxError};
use crate::error::{Error, Precondition};
use crate::ical::{edit, Calendar, NewAttach};
use crate::identity::{normalize_address, Identity};
use crate::server::State;
use crate::store::{AttachmentId, Holder, Meta, State as AttState};

use super::post::store_error;

/// Most ids of one object looked up in the store (bounds the work one PUT can cause).
const MAX_LOOKUPS: usize = 256;

pub async fn handle(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    match req.method().as_str() {
        "PUT" => put(req, state, peer).await,
        "DELETE" => delete(req, state, peer).await,
        "MOVE" => moved(req, state, peer).await,
        _ => state.upstream.forward(req, peer).await,
    }
}

fn is_calendar(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..13)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/calendar"))
        })
}

/// The body read so far, or everything.
enum Read {
    Whole(Bytes),
    /// Past the bound: the chunks read, and the rest still to stream.
    Over(Vec<Bytes>, Incoming),
}

async fn read_bounded(mut incoming: Incoming, max: usize) -> Result<Read, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| Error::BadRequest(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Ok(Read::Over(vec![buf.freeze()], incoming));
            }
        }
    }
    Ok(Read::Whole(buf.freeze()))
}

/// Forwards the request with `body` (the client's other headers unchanged).
async fn forward_with(
    state: &State,
    mut parts: Parts,
    body: Body,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    parts.extensions = http::Extensions::new();
    let mut req = Request::from_parts(parts, body);
    state.upstream.prepare_request(&mut req, peer)?;
    let resp = state.upstream.send(req).await?;
    Ok(state.upstream.relay_response(resp))
}

fn full_body(parts: &mut Parts, bytes: Bytes) -> Body {
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, v);
    }
    body::full(bytes)
}

/// Case-insensitive ASCII search.
fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Every id `cal` references: `ATTACH` URIs under `base`, and `MANAGED-ID` values.
fn ids_of(cal: &Calendar, base: &str) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = cal.attach_refs(base).into_iter().map(|r| r.id).collect();
    ids.extend(cal.distinct_managed_ids());
    ids.retain(|s| !s.is_empty());
    ids
}

async fn put(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let cfg = &state.config.attachments;
    let (mut parts, incoming) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if !is_calendar(&parts) || declared.is_some_and(|n| n > cfg.max_object_size) {
        return forward_with(state, parts, body::boxed(incoming), peer).await;
    }
    let max = usize::try_from(cfg.max_object_size).unwrap_or(usize::MAX);
    let bytes = match read_bounded(incoming, max).await? {
        Read::Whole(b) => b,
        Read::Over(head, rest) => {
            let head = futures_util::stream::iter(head.into_iter().map(|b| Ok(Frame::data(b))));
            let rest =
                BodyDataStream::new(rest).map(|r| r.map(Frame::data).map_err(BoxError::from));
            let body = StreamBody::new(head.chain(rest)).boxed_unsync();
            return forward_with(state, parts, body, peer).await;
        }
    };
    let base = super::url_base(&state.upstream, &cfg.prefix);
    let tracked = state.store.refs(&path).await.map_err(store_error)?;
    let mentions = contains_ci(&bytes, b"managed-id") || contains_ci(&bytes, base.as_bytes());
    if tracked.is_empty() && !mentions {
        let body = full_body(&mut parts, bytes);
        return forward_with(state, parts, body, peer).await;
    }
    let Ok(cal) = Calendar::parse(&bytes) else {
        // Not iCalendar calattach can read: the upstream judges it. It cannot grant
        // anything: downloads are decided from the store, not from arbitrary objects.
        tracing::info!(%path, "guarded PUT body does not parse; forwarded as is");
        let body = full_body(&mut parts, bytes);
        return forward_with(state, parts, body, peer).await;
    };
    let caller = Caller::from_headers(&parts.headers)?;
    let identity = match access::identify(state, &caller, &path).await? {
        Ok(id) => id,
        Err(refusal) => return Ok(refusal),
    };

    // What the object holds now (read as the caller: what they could have seen).
    let old_ids = match fetch_object(&state.upstream, &caller, &path, cfg.max_object_size).await {
        Ok(Fetched::Object(o)) => Calendar::parse(&o.bytes)
            .map(|c| ids_of(&c, &base))
            .unwrap_or_default(),
        Ok(Fetched::Relay(_)) | Err(Error::BadRequest(_)) | Err(Error::Precondition(..)) => {
            BTreeSet::new()
        }
        Err(e) => return Err(e),
    };
    let new_ids = ids_of(&cal, &base);
    let known = lookup(state, new_ids.union(&old_ids)).await?;

    // Introduced ids: each must be one calattach issued, live, and the caller's to use.
    let introduced: Vec<&String> = new_ids.difference(&old_ids).collect();
    for id in &introduced {
        let reason = match known.get(id.as_str()) {
            None => Some("unknown managed id"),
            Some((_, AttState::Removed { .. })) => Some("removed attachment"),
            Some((meta, _)) => {
                let ok = may_introduce(state, &caller, identity.as_deref(), meta, &cal).await;
                (!ok).then_some("neither the creator nor the event's organizer side")
            }
        };
        if let Some(reason) = reason {
            tracing::warn!(
                %path,
                id = %id,
                reason,
                user = caller.user.as_deref().unwrap_or(""),
                "PUT refused: MANAGED-ID may not be used here (RFC 8607 §3.12.2)"
            );
            return Err(Error::Precondition(
                Precondition::ValidManagedIdParameter,
                format!("{path}: {id}: {reason}"),
            ));
        }
    }

    // Server-authoritative parameters (RFC 8607 §3.7).
    let restored = edit::restore_params(&cal, &base, |seg| {
        known.get(seg).map(|(m, _)| NewAttach {
            managed_id: m.id.as_str().to_owned(),
            fmttype: m.media_type.clone(),
            filename: m.filename.clone(),
            size: m.size,
            uri: String::new(),
        })
    })
    .unwrap_or_else(|e| {
        tracing::warn!(%path, error = %e, "restoring attachment parameters failed");
        None
    });
    let changed = restored.is_some();
    let final_bytes = restored.map(Bytes::from).unwrap_or(bytes);

    let owner = access::owner_addresses(state, &caller, identity.as_deref(), &path).await?;
    let organizer_side = !access::is_attendee_copy(&cal, &owner);
    // Index introduced ids before the write: the index stays a superset.
    let mut indexed = Vec::new();
    for id in &introduced {
        if let Some((meta, _)) = known.get(id.as_str()) {
            let holder = Holder {
                href: path.clone(),
                organizer_side,
            };
            let r = state.store.add_ref(&path, &meta.id).await;
            let r = match r {
                Ok(()) => state.store.add_holder(&meta.id, &holder).await,
                Err(e) => Err(e),
            };
            r.map_err(store_error)?;
            indexed.push(meta.id.clone());
        }
    }

    let prefer = super::params::wants_representation(&parts.headers);
    let body = full_body(&mut parts, final_bytes);
    let mut req = Request::from_parts(parts, body);
    state.upstream.prepare_request(&mut req, peer)?;
    let resp = state.upstream.send(req).await?;
    let status = resp.status();
    if !status.is_success() {
        for id in &indexed {
            let _ = state.store.remove_ref(&path, id).await;
            let _ = state.store.remove_holder(id, &path).await;
        }
        return Ok(state.upstream.relay_response(resp));
    }

    // Committed: promote, drop what the object no longer references, refresh audience.
    let audience = access::audience_of(&cal);
    for id in &new_ids {
        let Some((meta, st)) = known.get(id.as_str()) else {
            continue;
        };
        if *st == AttState::Pending {
            if let Err(e) = state.store.mark_live(&meta.id).await {
                tracing::warn!(id = %id, error = %e, "marking attachment live failed");
            }
        }
        if organizer_side && !audience.uid.is_empty() && audience.uid == meta.uid {
            if let Err(e) = state.store.put_audience(&meta.id, &audience).await {
                tracing::warn!(id = %id, error = %e, "refreshing the audience failed");
            }
        }
    }
    for id in old_ids.difference(&new_ids) {
        if let Some((meta, _)) = known.get(id.as_str()) {
            release(state, meta, &path, "dropped by PUT").await;
        }
    }

    let mut out = state.upstream.relay_response(resp);
    if changed {
        out.headers_mut().remove(header::ETAG);
    }
    if prefer {
        return representation(state, &caller, &path, status, out).await;
    }
    Ok(out)
}

/// Metadata and state of every id in `ids` calattach issued (bounded).
async fn lookup<'a>(
    state: &State,
    ids: impl Iterator<Item = &'a String>,
) -> Result<BTreeMap<String, (Meta, AttState)>, Error> {
    let mut out = BTreeMap::new();
    for id in ids.take(MAX_LOOKUPS) {
        let Some(parsed) = AttachmentId::parse(id) else {
            continue;
        };
        if let Some(found) = state.store.state(&parsed).await.map_err(store_error)? {
            out.insert(id.clone(), found);
        }
    }
    Ok(out)
}

/// RFC 8607 §3.12.2: only the creator may reuse an id; a scheduling copy of the same
/// event (same UID, same ORGANIZER as recorded) may carry it when written by the
/// organizer or a recorded attendee.
async fn may_introduce(
    state: &State,
    caller: &Caller,
    identity: Option<&Identity>,
    meta: &Meta,
    cal: &Calendar,
) -> bool {
    let Some(identity) = identity else {
        return false;
    };
    if access::is_creator(identity, caller, meta) {
        return true;
    }
    if cal.uid().as_deref() != Some(meta.uid.as_str()) {
        return false;
    }
    let Ok(Some(audience)) = state.store.audience(&meta.id).await else {
        return false;
    };
    let Some(organizer) = &audience.organizer else {
        return false;
    };
    if cal.organizer().map(|o| normalize_address(&o)).as_ref() != Some(organizer) {
        return false;
    }
    identity.has_address(organizer) || audience.attendees.iter().any(|a| identity.has_address(a))
}

/// `href` no longer holds the id of `meta`: un-index it, and tombstone the id when no
/// other object holds it (RFC 8607 §3.9, §3.12.5).
async fn release(state: &State, meta: &Meta, href: &str, reason: &str) {
    let id = &meta.id;
    if let Err(e) = state.store.remove_ref(href, id).await {
        tracing::warn!(id = %id.as_str(), error = %e, "removing reference failed");
    }
    if let Err(e) = state.store.remove_holder(id, href).await {
        tracing::warn!(id = %id.as_str(), error = %e, "removing holder failed");
    }
    match held_elsewhere(state, meta, href).await {
        Ok(true) => {}
        Ok(false) => match state.store.mark_removed(id, reason).await {
            Ok(()) => tracing::info!(id = %id.as_str(), %href, reason, "attachment tombstoned"),
            Err(e) => tracing::warn!(id = %id.as_str(), error = %e, "tombstoning failed"),
        },
        // Unknown: keep it (never remove what may be referenced; gc decides later).
        Err(e) => {
            tracing::warn!(id = %id.as_str(), error = %e, "cannot tell whether still referenced")
        }
    }
}

async fn held_elsewhere(
    state: &State,
    meta: &Meta,
    href: &str,
) -> Result<bool, crate::store::StoreError> {
    if state
        .store
        .holders(&meta.id)
        .await?
        .iter()
        .any(|h| h.href != href)
    {
        return Ok(true);
    }
    if meta.href != href && state.store.refs(&meta.href).await?.contains(&meta.id) {
        return Ok(true);
    }
    Ok(false)
}

/// `Prefer: return=representation` (RFC 7240, RFC 8144): the stored object, read back.
async fn representation(
    state: &State,
    caller: &Caller,
    path: &str,
    status: StatusCode,
    fallback: Response<Body>,
) -> Result<Response<Body>, Error> {
    let max = state.config.attachments.max_object_size;
    let Ok(Fetched::Object(o)) = fetch_object(&state.upstream, caller, path, max).await else {
        return Ok(fallback);
    };
    let status = if status == StatusCode::CREATED {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let resp = super::object_response(state, status, path, &o.validators, Some(o.bytes));
    Ok(resp)
}

async fn delete(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let path = req.uri().path().to_owned();
    let tracked = state.store.refs(&path).await.map_err(store_error)?;
    if tracked.is_empty() {
        return state.upstream.forward(req, peer).await;
    }
    let resp = state.upstream.forward(req, peer).await?;
    if resp.status().is_success() {
        for id in tracked {
            if let Ok(Some((meta, _))) = state.store.state(&id).await {
                release(state, &meta, &path, "object deleted").await;
            }
        }
    }
    Ok(resp)
}

/// `MOVE`: the destination now holds the ids (RFC 4918 §9.9). A `Destination` on the
/// public origin becomes a bare path (RFC 4918 §10.3 allows one): the upstream's own
/// origin check then passes whether it compares with `Host` (Xandikos) or with
/// `X-Forwarded-Host` (Radicale).
async fn moved(
    mut req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    rewrite_destination(state, &mut req);
    let path = req.uri().path().to_owned();
    let tracked = state.store.refs(&path).await.map_err(store_error)?;
    let dest = req
        .headers()
        .get("destination")
        .and_then(|v| v.to_str().ok())
        .map(destination_path);
    let (Some(dest), false) = (dest, tracked.is_empty()) else {
        return state.upstream.forward(req, peer).await;
    };
    let organizer_side = match state.store.holders(&tracked[0]).await {
        Ok(hs) => hs
            .iter()
            .find(|h| h.href == path)
            .is_none_or(|h| h.organizer_side),
        Err(_) => true,
    };
    for id in &tracked {
        let holder = Holder {
            href: dest.clone(),
            organizer_side,
        };
        state.store.add_ref(&dest, id).await.map_err(store_error)?;
        state
            .store
            .add_holder(id, &holder)
            .await
            .map_err(store_error)?;
    }
    let resp = state.upstream.forward(req, peer).await?;
    if resp.status().is_success() {
        for id in &tracked {
            let _ = state.store.remove_ref(&path, id).await;
            let _ = state.store.remove_holder(id, &path).await;
        }
    } else {
        for id in &tracked {
            let _ = state.store.remove_ref(&dest, id).await;
            let _ = state.store.remove_holder(id, &dest).await;
        }
    }
    Ok(resp)
}

fn rewrite_destination(state: &State, req: &mut Request<Incoming>) {
    let Some(v) = req
        .headers()
        .get("destination")
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let Ok(u) = url::Url::parse(v) else {
        return;
    };
    if u.origin() != state.upstream.public_url().origin() {
        return;
    }
    let pq = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    if let Ok(m) = HeaderValue::from_str(&pq) {
        req.headers_mut().insert("destination", m);
    }
}

/// The path of a `Destination` (an absolute URL or a path).
fn destination_path(v: &str) -> String {
    match url::Url::parse(v) {
        Ok(u) => u.path().to_owned(),
        Err(_) => v.split(['?', '#']).next().unwrap_or(v).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_uris_and_managed_id_parameters() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:u\r\n\
                   DTSTAMP:20250101T000000Z\r\nDTSTART:20250101T100000Z\r\n\
                   ATTACH:http://h/.attachments/AAAAAAAAAAAAAAAAAAAAAA/a.txt\r\n\
                   ATTACH;MANAGED-ID=made-up:https://example.com/x\r\n\
                   ATTACH:https://example.com/unmanaged\r\n\
                   END:VEVENT\r\nEND:VCALENDAR\r\n";
        let cal = Calendar::parse(ics.as_bytes()).unwrap();
        let ids = ids_of(&cal, "http://h/.attachments/");
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            ["AAAAAAAAAAAAAAAAAAAAAA", "made-up"]
        );
    }

    #[test]
    fn marker_search_is_case_insensitive() {
        assert!(contains_ci(b"ATTACH;Managed-Id=x:y", b"managed-id"));
        assert!(!contains_ci(b"SUMMARY:hello", b"managed-id"));
    }

    #[test]
    fn destination_may_be_a_url_or_a_path() {
        assert_eq!(destination_path("http://h:1/a/b.ics"), "/a/b.ics");
        assert_eq!(destination_path("/a/b.ics"), "/a/b.ics");
    }
}
