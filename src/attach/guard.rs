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
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::access;
use super::scan::{Scan, Scanner};
use super::{fetch_object, Caller, Fetched};
use crate::body::{self, Body, BoxError, IdleTimeout};
use crate::error::{Error, Precondition};
use crate::ical::{edit, Calendar, NewAttach};
use crate::identity::{normalize_address, Identity};
use crate::state::State;
use crate::store::{AttachmentId, Holder, Meta, State as AttState};

/// Most ids of one object looked up in the store (bounds the work one PUT can cause).
const MAX_LOOKUPS: usize = 256;

pub async fn handle(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    match req.method().as_str() {
        // A POST without `action` adds a member to a collection (RFC 5995) or goes to a
        // scheduling outbox: iCalendar reaches the upstream as with a PUT.
        "PUT" => {
            readable(req.headers())?;
            put(req, state, peer).await
        }
        // Other POSTs (HTML forms of a server's web pages, say) are scanned as sent and
        // need not be calendar data: only calendar data is held to the charset rule.
        "POST" => {
            if req.headers().get(header::CONTENT_TYPE).is_none() || is_calendar_type(req.headers())
            {
                readable(req.headers())?;
            }
            put(req, state, peer).await
        }
        "DELETE" => delete(req, state, peer).await,
        "MOVE" | "COPY" => relocate(req, state, peer).await,
        _ => state.upstream.forward(req, peer).await,
    }
}

type ClientBody = IdleTimeout<Incoming>;

/// The guard scans bodies as the upstream will read them; a body it cannot read that way
/// is refused (`415`) before anything is sent: a `Content-Encoding` (the upstream may
/// decompress it), or a charset other than UTF-8 (Radicale decodes with it, so UTF-7
/// could spell `ATTACH` in bytes the scanner cannot see).
fn readable(headers: &http::HeaderMap) -> Result<(), Error> {
    if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
        let ce = ce.to_str().unwrap_or("?").trim();
        if !ce.eq_ignore_ascii_case("identity") {
            return Err(Error::UnsupportedMediaType(format!(
                "content-encoding {ce:?}: calendar data is accepted uncompressed only"
            )));
        }
    }
    let charset = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';').skip(1).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("charset")
                    .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
            })
        });
    match charset.as_deref() {
        None | Some("utf-8") | Some("utf8") | Some("us-ascii") => Ok(()),
        Some(other) => Err(Error::UnsupportedMediaType(format!(
            "charset {other:?}: calendar data is accepted in UTF-8 only (RFC 5545 §3.1.4)"
        ))),
    }
}

/// The body read so far, or everything.
enum Read {
    Whole(Bytes),
    /// Past the bound: what was read, and the rest still to stream.
    Over(Bytes, ClientBody),
}

/// Reads up to `max` octets; the body idle timeout applies to every wait.
async fn read_bounded(mut incoming: ClientBody, max: usize) -> Result<Read, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| Error::BadRequest(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Ok(Read::Over(buf.freeze(), incoming));
            }
        }
    }
    Ok(Read::Whole(buf.freeze()))
}

fn full_body(parts: &mut Parts, bytes: Bytes) -> Body {
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, v);
    }
    body::full(bytes)
}

fn is_calendar(parts: &Parts) -> bool {
    is_calendar_type(&parts.headers)
}

fn is_calendar_type(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..13)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/calendar"))
        })
}

/// Every id `cal` references: `ATTACH` URIs under `base`, and `MANAGED-ID` values.
fn ids_of(cal: &Calendar, base: &str) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = cal.attach_refs(base).into_iter().map(|r| r.id).collect();
    ids.extend(cal.distinct_managed_ids());
    ids.retain(|s| !s.is_empty());
    ids
}

/// What a body references: the scanner's view (after unfolding, any origin, also when
/// the strict parser refuses the body), joined with the parser's.
fn references(base: &str, bytes: &[u8], cal: Option<&Calendar>) -> Scan {
    let mut scan = Scanner::scan_all(base, bytes);
    if let Some(cal) = cal {
        scan.ids.extend(ids_of(cal, base));
        scan.uid = cal.uid().or(scan.uid);
        scan.organizer = cal.organizer().or(scan.organizer);
    }
    scan
}

/// The ids the object at `path` references now, read with the caller's credentials
/// (what they could have seen). Nothing readable there holds nothing.
async fn current_ids(
    state: &State,
    caller: &Caller,
    path: &str,
    base: &str,
) -> Result<BTreeSet<String>, Error> {
    let max = state.config.attachments.max_object_size;
    match fetch_object(&state.upstream, caller, path, max).await {
        Ok(Fetched::Object(o)) => {
            let cal = Calendar::parse(&o.bytes).ok();
            Ok(references(base, &o.bytes, cal.as_ref()).ids)
        }
        Ok(Fetched::Relay(_)) | Err(Error::BadRequest(_)) | Err(Error::Precondition(..)) => {
            Ok(BTreeSet::new())
        }
        Err(e) => Err(e),
    }
}

/// A write about to land at `target`: the checks every guarded method shares.
struct Landing<'a> {
    state: &'a State,
    caller: Caller,
    identity: Option<std::sync::Arc<Identity>>,
    target: String,
    old_ids: BTreeSet<String>,
    new_ids: BTreeSet<String>,
    known: BTreeMap<String, (Meta, AttState)>,
    /// Index entries this request created (and may roll back).
    created_refs: Vec<AttachmentId>,
    created_holders: Vec<AttachmentId>,
    /// Introduced ids let in as an attendee's copy of their event (not by their
    /// creator): their holder here is never organizer-side, whatever the body says.
    via_copy: BTreeSet<String>,
}

impl<'a> Landing<'a> {
    /// Resolves the caller and reads what `target` holds now. `Err(Ok(resp))` is the
    /// upstream's refusal of the credentials, to relay.
    async fn prepare(
        state: &'a State,
        caller: Caller,
        target: &str,
        new_ids: BTreeSet<String>,
    ) -> Result<Result<Landing<'a>, Response<Body>>, Error> {
        let identity = match access::identify(state, &caller, target).await? {
            Ok(id) => id,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let base = super::url_base(&state.upstream, &state.config.attachments.prefix);
        let old_ids = current_ids(state, &caller, target, &base).await?;
        let known = lookup(state, new_ids.union(&old_ids)).await?;
        Ok(Ok(Landing {
            state,
            caller,
            identity,
            target: target.to_owned(),
            old_ids,
            new_ids,
            known,
            created_refs: Vec::new(),
            created_holders: Vec::new(),
            via_copy: BTreeSet::new(),
        }))
    }

    /// Converts the inline binary attachments of `cal` (module `inline`), unless the
    /// target is an attendee's copy or the caller is anonymous: those stay as sent.
    async fn convert_inline(&self, cal: &Calendar) -> Result<Option<(Vec<u8>, Vec<Meta>)>, Error> {
        let Some(identity) = self.identity.as_deref() else {
            return Ok(None);
        };
        let owner =
            access::owner_addresses(self.state, &self.caller, Some(identity), &self.target).await?;
        if access::is_attendee_copy(cal, &owner) {
            return Ok(None);
        }
        let creator = self.caller.user.clone().unwrap_or_default();
        super::inline::convert(self.state, &creator, cal, &self.target).await
    }

    /// Takes attachments stored for this write (converted inline values) as introduced
    /// ids calattach knows, still pending.
    fn adopt(&mut self, metas: &[Meta]) {
        for m in metas {
            let id = m.id.as_str().to_owned();
            self.new_ids.insert(id.clone());
            self.known.insert(id, (m.clone(), AttState::Pending));
        }
    }

    /// Ids the write introduces: absent from the object at the target now.
    fn introduced(&self) -> Vec<String> {
        self.new_ids.difference(&self.old_ids).cloned().collect()
    }

    /// DESIGN §5: every introduced id must be one calattach issued, not removed, and
    /// introduced by its creator or into an attendee's copy of its home object.
    async fn check(&mut self, uid: Option<&str>, organizer: Option<&str>) -> Result<(), Error> {
        for id in self.introduced() {
            let reason = match self.known.get(&id) {
                None => Some("unknown managed id"),
                Some((_, AttState::Removed { .. })) => Some("removed attachment"),
                Some((meta, _)) => {
                    let ok = self.may_introduce(meta, uid, organizer).await?;
                    let creator = self
                        .identity
                        .as_deref()
                        .is_some_and(|i| access::is_creator(i, &self.caller, meta));
                    if ok && !creator {
                        self.via_copy.insert(id.clone());
                    }
                    (!ok).then_some("neither its creator nor an attendee's copy of its event")
                }
            };
            if let Some(reason) = reason {
                let path = &self.target;
                tracing::warn!(
                    %path,
                    id = %id,
                    reason,
                    user = self.caller.user.as_deref().unwrap_or(""),
                    "write refused: MANAGED-ID may not be used here (RFC 8607 §3.12.2)"
                );
                return Err(Error::Precondition(
                    Precondition::ValidManagedIdParameter,
                    format!("{path}: {id}: {reason}"),
                ));
            }
        }
        Ok(())
    }

    /// (a) the creator, anywhere; (b) an attendee's copy of the id's home object: same
    /// UID, the recorded organizer as `ORGANIZER`, the target's owner among the recorded
    /// attendees. What the body claims about its organizer proves nothing by itself.
    async fn may_introduce(
        &self,
        meta: &Meta,
        uid: Option<&str>,
        organizer: Option<&str>,
    ) -> Result<bool, Error> {
        let Some(identity) = self.identity.as_deref() else {
            return Ok(false);
        };
        if access::is_creator(identity, &self.caller, meta) {
            return Ok(true);
        }
        if uid != Some(meta.uid.as_str()) {
            return Ok(false);
        }
        let Ok(Some(audience)) = self.state.store.audience(&meta.id).await else {
            return Ok(false);
        };
        let (Some(recorded), Some(organizer)) = (&audience.organizer, organizer) else {
            return Ok(false);
        };
        if normalize_address(organizer) != *recorded {
            return Ok(false);
        }
        let owner =
            access::owner_addresses(self.state, &self.caller, Some(identity), &self.target).await?;
        // The recorded organizer re-storing the event (another calendar of hers) is an
        // owner of the event too.
        Ok(owner.contains(recorded) || audience.attendees.iter().any(|a| owner.contains(a)))
    }

    /// Indexes the introduced ids at the target before the write (the index stays a
    /// superset of what objects reference), remembering which entries are new.
    async fn index(&mut self, organizer_side: bool) -> Result<(), Error> {
        let store = &self.state.store;
        let tracked = store.refs(&self.target).await.map_err(Error::from)?;
        for id in self.introduced() {
            let Some((meta, _)) = self.known.get(&id) else {
                continue;
            };
            let id = meta.id.clone();
            if !tracked.contains(&id) {
                store
                    .add_ref(&self.target, &id)
                    .await
                    .map_err(Error::from)?;
                self.created_refs.push(id.clone());
            }
            let held = store.holders(&id).await.map_err(Error::from)?;
            if !held.iter().any(|h| h.href == self.target) {
                let holder = Holder {
                    href: self.target.clone(),
                    organizer_side: organizer_side && !self.via_copy.contains(id.as_str()),
                };
                store.add_holder(&id, &holder).await.map_err(Error::from)?;
                self.created_holders.push(id);
            }
        }
        Ok(())
    }

    /// The write failed: undo the index entries this request created, and only those
    /// (another object's entries at the same href are not ours to remove).
    async fn roll_back(&self) {
        let store = &self.state.store;
        for id in &self.created_refs {
            let _ = store.remove_ref(&self.target, id).await;
        }
        for id in &self.created_holders {
            let _ = store.remove_holder(id, &self.target).await;
        }
    }

    /// The write succeeded: pending ids it references are live, the audience is
    /// refreshed when the target is an id's home object, and ids the target no longer
    /// references are released.
    async fn settle(&self, cal: Option<&Calendar>) {
        let audience = cal.map(access::audience_of);
        for id in &self.new_ids {
            let Some((meta, st)) = self.known.get(id) else {
                continue;
            };
            if *st == AttState::Pending {
                if let Err(e) = self.state.store.mark_live(&meta.id).await {
                    tracing::warn!(id = %id, error = %e, "marking attachment live failed");
                }
            }
            // Authority over an id lives with its home object (DESIGN §5).
            if let Some(a) = &audience {
                if meta.href == self.target && !a.uid.is_empty() && a.uid == meta.uid {
                    if let Err(e) = self.state.store.put_audience(&meta.id, a).await {
                        tracing::warn!(id = %id, error = %e, "refreshing the audience failed");
                    }
                }
            }
        }
        for id in self.old_ids.difference(&self.new_ids) {
            if let Some((meta, _)) = self.known.get(id) {
                access::release(self.state, meta, &self.target, "dropped by PUT").await;
            }
        }
    }

    async fn organizer_side(
        &self,
        uid_organizer_attendees: Option<&Calendar>,
    ) -> Result<bool, Error> {
        let Some(cal) = uid_organizer_attendees else {
            return Ok(true);
        };
        let owner = access::owner_addresses(
            self.state,
            &self.caller,
            self.identity.as_deref(),
            &self.target,
        )
        .await?;
        Ok(!access::is_attendee_copy(cal, &owner))
    }
}

async fn put(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let cfg = &state.config.attachments;
    let (mut parts, incoming) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let incoming = IdleTimeout::new(incoming, state.upstream.body_idle_timeout());
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = usize::try_from(cfg.max_object_size).unwrap_or(usize::MAX);
    // Only calendar data that fits is read whole (it may need editing); everything
    // else streams through the scanner, so uploads of other data keep streaming.
    let read = if !is_calendar(&parts) || declared.is_some_and(|n| n > cfg.max_object_size) {
        Read::Over(Bytes::new(), incoming)
    } else {
        read_bounded(incoming, max).await?
    };
    let base = super::url_base(&state.upstream, &cfg.prefix);
    let tracked = state.store.refs(&path).await.map_err(Error::from)?;
    let bytes = match read {
        Read::Whole(b) => b,
        Read::Over(head, rest) => {
            return put_streamed(state, parts, head, rest, tracked, peer).await
        }
    };
    let mut cal = Calendar::parse(&bytes).ok();
    let scan = references(&base, &bytes, cal.as_ref());
    if scan.unreadable {
        return Err(unreadable(&path));
    }
    let inline = cfg.convert_inline
        && cal
            .as_ref()
            .is_some_and(|c| !c.inline_attaches().is_empty());
    if tracked.is_empty() && scan.ids.is_empty() && !inline {
        // Nothing managed before or after: byte for byte.
        return put_plain(state, parts, bytes, peer).await;
    }
    let caller = Caller::from_headers(&parts.headers)?;
    let mut landing = match Landing::prepare(state, caller, &path, scan.ids.clone()).await? {
        Ok(l) => l,
        Err(refusal) => return Ok(refusal),
    };
    landing
        .check(scan.uid.as_deref(), scan.organizer.as_deref())
        .await?;

    // Inline binary attachments become managed ones (`attachments.convert_inline`),
    // stored as the caller's attachment-adds with this object as their home.
    let mut bytes = bytes;
    let mut converted = Vec::new();
    if let (true, Some(c)) = (inline, cal.as_ref()) {
        if let Some((new, metas)) = landing.convert_inline(c).await? {
            bytes = Bytes::from(new);
            cal = Calendar::parse(&bytes).ok();
            landing.adopt(&metas);
            converted = metas;
        }
    }

    // Server-authoritative parameters and URIs (RFC 8607 §3.7), when the body can be
    // edited; a body the strict parser refuses goes as sent (it was checked above).
    let restored = match &cal {
        Some(cal) => restore(state, cal, &base, &landing.known, &path),
        None => None,
    };
    // A body that differs from what the client sent is answered without an ETag
    // (RFC 4791 §5.3.4), so the client reads it back.
    let changed = restored.is_some() || !converted.is_empty();
    let final_bytes = restored.map(Bytes::from).unwrap_or(bytes);

    let indexed = match landing.organizer_side(cal.as_ref()).await {
        Ok(organizer_side) => landing.index(organizer_side).await,
        Err(e) => Err(e),
    };
    if let Err(e) = indexed {
        landing.roll_back().await;
        super::inline::discard(state, &converted).await;
        return Err(e);
    }

    let prefer = super::params::wants_representation(&parts.headers);
    let body = full_body(&mut parts, final_bytes);
    let mut req = Request::from_parts(parts, body);
    state.upstream.prepare_request(&mut req, peer)?;
    let resp = match state.upstream.send(req).await {
        Ok(r) => r,
        Err(e) => {
            // Unknown outcome: the superset index entries stay (gc settles them).
            return Err(e);
        }
    };
    let status = resp.status();
    if !status.is_success() {
        landing.roll_back().await;
        super::inline::discard(state, &converted).await;
        return Ok(state.upstream.relay_response(resp));
    }
    landing.settle(cal.as_ref()).await;

    let mut out = state.upstream.relay_response(resp);
    if changed {
        out.headers_mut().remove(header::ETAG);
    }
    if prefer {
        return representation(state, &landing.caller, &path, status, out).await;
    }
    Ok(out)
}

fn unreadable(path: &str) -> Error {
    tracing::warn!(%path, "write refused: an ATTACH line cannot be read with certainty");
    Error::Precondition(
        Precondition::ValidManagedIdParameter,
        format!(
            "{path}: an ATTACH line cannot be read with certainty (parameters over {} octets, \
             or a value in an encoding other than BASE64)",
            super::scan::MAX_LINE
        ),
    )
}

/// Restores server-owned values of every `ATTACH` naming an id calattach issued: by URI
/// or by `MANAGED-ID`, the issued URI and the server's parameters come back.
fn restore(
    state: &State,
    cal: &Calendar,
    base: &str,
    known: &BTreeMap<String, (Meta, AttState)>,
    path: &str,
) -> Option<Vec<u8>> {
    let prefix = &state.config.attachments.prefix;
    edit::restore_params(cal, base, |seg| {
        known.get(seg).map(|(m, _)| NewAttach {
            managed_id: m.id.as_str().to_owned(),
            fmttype: m.media_type.clone(),
            filename: m.filename.clone(),
            size: m.size,
            uri: super::attachment_url(&state.upstream, prefix, &m.id, &m.filename),
        })
    })
    .unwrap_or_else(|e| {
        tracing::warn!(%path, error = %e, "restoring attachment parameters failed");
        None
    })
}

/// A PUT that is not read whole — not `text/calendar`, or too large to edit
/// (`attachments.max_object_size`) — scanned as it streams to the upstream. The body's
/// end is held back until the whole body was scanned and its introduced ids checked, so
/// a refused body never reaches the upstream complete (the upstream request is aborted,
/// which no server stores): with a `Content-Length` its last octet is held back, with
/// chunked framing only the final chunk; every other byte is forwarded as it arrives.
async fn put_streamed(
    state: &State,
    parts: Parts,
    head: Bytes,
    rest: ClientBody,
    tracked: Vec<AttachmentId>,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let path = parts.uri.path().to_owned();
    let base = super::url_base(&state.upstream, &state.config.attachments.prefix);
    let caller = Caller::from_headers(&parts.headers)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    let mut rx = rx;
    let upstream_body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut req = Request::from_parts(parts, body::boxed_direct(upstream_body));
    state.upstream.prepare_request(&mut req, peer)?;

    let sized = req.headers().contains_key(header::CONTENT_LENGTH);
    // The scanning pump: client → scanner → upstream, all but the body's end.
    let pump = async {
        // Owned here, so the upstream body ends when the pump does.
        let tx = tx;
        let mut scanner = Scanner::new(&base);
        let mut held: Option<Bytes> = None;
        let mut rest = rest;
        let mut next = Some(head).filter(|h| !h.is_empty());
        loop {
            let mut chunk = match next.take() {
                Some(c) => c,
                None => match rest.frame().await {
                    None => break,
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) if !d.is_empty() => d,
                        _ => continue,
                    },
                    Some(Err(e)) => {
                        let msg = format!("reading the body: {e}");
                        let _ = tx.send(Err(msg.clone().into())).await;
                        return Err(Error::BadRequest(msg));
                    }
                },
            };
            scanner.feed(&chunk);
            let last = sized.then(|| chunk.split_off(chunk.len() - 1));
            for piece in [held.take(), Some(chunk)].into_iter().flatten() {
                if !piece.is_empty() && tx.send(Ok(Frame::data(piece))).await.is_err() {
                    return Ok(None); // the upstream answered early
                }
            }
            held = last;
        }
        let scan = scanner.finish();
        let verdict = decide_streamed(state, &caller, &path, &scan, &tracked).await;
        match verdict {
            Ok(landing) => {
                if let Some(last) = held {
                    let _ = tx.send(Ok(Frame::data(last))).await;
                }
                Ok(landing)
            }
            Err(e) => {
                let _ = tx.send(Err("write refused by the guard".into())).await;
                Err(e)
            }
        }
    };
    let (verdict, resp) = tokio::join!(pump, state.upstream.send(req));
    let landing = verdict?;
    let resp = resp?;
    if let Some(landing) = &landing {
        if !resp.status().is_success() {
            landing.roll_back().await;
        } else {
            landing.settle(None).await;
        }
    }
    Ok(state.upstream.relay_response(resp))
}

/// The checks of a streamed PUT, once its whole body was scanned: `None` when it
/// references nothing managed (before or after).
async fn decide_streamed<'a>(
    state: &'a State,
    caller: &Caller,
    path: &str,
    scan: &Scan,
    tracked: &[AttachmentId],
) -> Result<Option<Landing<'a>>, Error> {
    if scan.unreadable {
        return Err(unreadable(path));
    }
    if scan.ids.is_empty() && tracked.is_empty() {
        return Ok(None);
    }
    let mut landing = match Landing::prepare(state, caller.clone(), path, scan.ids.clone()).await? {
        Ok(l) => l,
        Err(refusal) => {
            return Err(Error::Unauthorized {
                message: "the calendar server refused the credentials".into(),
                challenge: refusal
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .cloned()
                    .collect(),
            })
        }
    };
    landing
        .check(scan.uid.as_deref(), scan.organizer.as_deref())
        .await?;
    landing.index(true).await?;
    Ok(Some(landing))
}

/// A PUT that touches no managed attachment, forwarded as sent. `Prefer:
/// return=representation` (RFC 8144 §3.1 SHOULD, RFC 8607 §3.1) is honoured in front of
/// upstreams that ignore it: a 2xx without a body is answered with the object as stored,
/// read back with the caller's credentials — one extra GET, only for requests that ask,
/// none when the upstream already sent a body or the object is not a calendar object.
async fn put_plain(
    state: &State,
    mut parts: Parts,
    bytes: Bytes,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let path = parts.uri.path().to_owned();
    // A Digest caller cannot be replayed for the read-back: its PUT is forwarded as is.
    let caller = super::params::wants_representation(&parts.headers)
        .then(|| Caller::from_headers(&parts.headers).ok())
        .flatten();
    parts.extensions = http::Extensions::new();
    let body = full_body(&mut parts, bytes);
    let mut req = Request::from_parts(parts, body);
    state.upstream.prepare_request(&mut req, peer)?;
    let resp = state.upstream.send(req).await?;
    let status = resp.status();
    let out = state.upstream.relay_response(resp);
    let Some(caller) = caller.filter(|_| status.is_success()) else {
        return Ok(out);
    };
    // Whether the upstream sent a body: Xandikos sends an empty chunked one.
    let (head, mut sent) = out.into_parts();
    let first = loop {
        match sent.frame().await {
            None => break None,
            Some(Ok(f)) if f.data_ref().is_some_and(|d| d.is_empty()) => continue,
            Some(Ok(f)) => break Some(Ok(f)),
            Some(Err(e)) => break Some(Err(e)),
        }
    };
    match first {
        None => {
            let fallback = Response::from_parts(head, body::empty());
            representation(state, &caller, &path, status, fallback).await
        }
        Some(frame) => {
            let rest = http_body_util::BodyStream::new(sent);
            let again = futures_util::stream::iter([frame]).chain(rest);
            Ok(Response::from_parts(
                head,
                body::boxed_direct(StreamBody::new(again)),
            ))
        }
    }
}

/// Metadata and state of every id in `ids` calattach issued (bounded), read with a few
/// store requests in flight at once (on S3 each read is a round trip).
async fn lookup<'a>(
    state: &State,
    ids: impl Iterator<Item = &'a String>,
) -> Result<BTreeMap<String, (Meta, AttState)>, Error> {
    const IN_FLIGHT: usize = 16;
    let parsed: Vec<AttachmentId> = ids
        .take(MAX_LOOKUPS)
        .filter_map(|id| AttachmentId::parse(id))
        .collect();
    let mut reads = futures_util::stream::iter(parsed)
        .map(|id| async move { state.store.state(&id).await.map(|found| (id, found)) })
        .buffer_unordered(IN_FLIGHT);
    let mut out = BTreeMap::new();
    while let Some(read) = reads.next().await {
        if let (id, Some(found)) = read.map_err(Error::from)? {
            out.insert(id.as_str().to_owned(), found);
        }
    }
    Ok(out)
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
    let tracked = state.store.refs(&path).await.map_err(Error::from)?;
    if tracked.is_empty() {
        return state.upstream.forward(req, peer).await;
    }
    let resp = state.upstream.forward(req, peer).await?;
    if resp.status().is_success() {
        for id in tracked {
            if let Ok(Some((meta, _))) = state.store.state(&id).await {
                access::release(state, &meta, &path, "object deleted").await;
            }
        }
    }
    Ok(resp)
}

/// `MOVE` and `COPY` of a calendar object (RFC 4918 §9.8, §9.9): the destination
/// receives the source's content, so the ids it references land there as if PUT by the
/// caller — the same introduction rules apply, checked against what the destination
/// holds now. A `Destination` on the public origin becomes a bare path (RFC 4918 §10.3
/// allows one): the upstream's own origin check then passes whether it compares with
/// `Host` (Xandikos) or with `X-Forwarded-Host` (Radicale). After the upstream's 2xx a
/// MOVE un-indexes the source; a failure removes only the entries this request made.
async fn relocate(
    mut req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    rewrite_destination(state, &mut req);
    let path = req.uri().path().to_owned();
    let is_move = req.method().as_str() == "MOVE";
    let dest = req
        .headers()
        .get("destination")
        .and_then(|v| v.to_str().ok())
        .map(destination_path);
    let Some(dest) = dest else {
        return state.upstream.forward(req, peer).await;
    };
    let base = super::url_base(&state.upstream, &state.config.attachments.prefix);
    let caller = Caller::from_headers(req.headers())?;
    let tracked = state.store.refs(&path).await.map_err(Error::from)?;
    let max = state.config.attachments.max_object_size;
    // What lands at the destination: the source as the caller reads it.
    let (scan, cal) = match fetch_object(&state.upstream, &caller, &path, max).await {
        Ok(Fetched::Object(o)) => {
            let cal = Calendar::parse(&o.bytes).ok();
            (references(&base, &o.bytes, cal.as_ref()), cal)
        }
        Ok(Fetched::Relay(_)) | Err(Error::BadRequest(_)) => (Scan::default(), None),
        Err(e) => return Err(e),
    };
    if scan.unreadable {
        return Err(unreadable(&path));
    }
    let mut ids = scan.ids.clone();
    ids.extend(tracked.iter().map(|id| id.as_str().to_owned()));
    if ids.is_empty() {
        return state.upstream.forward(req, peer).await;
    }
    let mut landing = match Landing::prepare(state, caller, &dest, ids).await? {
        Ok(l) => l,
        Err(refusal) => return Ok(refusal),
    };
    landing
        .check(scan.uid.as_deref(), scan.organizer.as_deref())
        .await?;
    let organizer_side = landing.organizer_side(cal.as_ref()).await?;
    landing.index(organizer_side).await?;
    let resp = state.upstream.forward(req, peer).await?;
    if !resp.status().is_success() {
        landing.roll_back().await;
        return Ok(resp);
    }
    if is_move {
        for id in &tracked {
            let _ = state.store.remove_ref(&path, id).await;
            let _ = state.store.remove_holder(id, &path).await;
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
    fn destination_may_be_a_url_or_a_path() {
        assert_eq!(destination_path("http://h:1/a/b.ics"), "/a/b.ics");
        assert_eq!(destination_path("/a/b.ics"), "/a/b.ics");
    }
}
