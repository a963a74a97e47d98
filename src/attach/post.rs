//! The attachment POST: add, update, remove (RFC 8607 §3.4–3.6; DESIGN §4).
//!
//! Order is the contract:
//! 1. parse the query (`valid-action`, `valid-managed-id`, `valid-rid`);
//! 2. pre-body checks — size from `Content-Length`, GET the object with the caller's
//!    credentials, the client's own `If-Match`/`If-None-Match`/`If-Schedule-Tag-Match`,
//!    object bounds, `rid`, `managed-id`, the per-resource count — all before the body is
//!    touched, so hyper never sends `100 Continue` for a doomed upload;
//! 3. stream the body into `blobs/<id>`, then write `meta/<id>.json` (state pending);
//! 4. edit the object losslessly and commit it with a conditional PUT;
//! 5. mark the new id live and the replaced/removed id removed, answer.
//!
//! What remains on each failure: before step 3 nothing was written. A body that grows
//! past the limit, a client that goes away mid-upload or a store error leaves nothing
//! (the multipart upload is aborted). An upstream that answers the PUT with a refusal
//! (any status other than 2xx/412, or 412 on a conditional POST, or too many 412s)
//! changed nothing: blob and metadata are deleted. An upstream that cannot be heard
//! after the PUT was sent (connection lost, timeout) may have applied it: the blob stays
//! `pending` (never delete what may be referenced) and `gc` or the next download
//! reconciles it. After a successful PUT a failing store write only delays the state
//! change, which the same reconciliation repairs.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyDataStream;
use hyper::body::Incoming;
use rand::Rng;

use super::conditional::{self, Validators};
use super::params::{self, AttachAction, AttachQuery};
use super::{fetch_object, Caller, Fetched, Object};
use crate::body::{self, Body};
use crate::error::{Error, Precondition};
use crate::ical::{edit, Calendar, EditError, NewAttach};
use crate::server::State;
use crate::store::{AttachmentId, Meta, PutBlobError};

/// Headers of the client's POST that the commit PUT carries on: scheduling controls
/// (RFC 6638 §8, draft-ietf-calext-caldav-scheduling-controls) so an upstream with
/// implicit scheduling informs attendees of the change (RFC 8607 §3.12.6).
const FORWARDED_TO_COMMIT: [&str; 3] = ["schedule-reply", "scheduling", "schedule-user-address"];

/// A stored upload waiting for its commit.
struct Upload {
    id: AttachmentId,
    attach: NewAttach,
}

pub async fn handle(req: Request<Incoming>, state: &State) -> Result<Response<Body>, Error> {
    let cfg = &state.config.attachments;
    let query = params::parse_query(req.uri().query().unwrap_or(""), cfg.no_recurrence)?;
    let caller = Caller::from_headers(req.headers())?;
    let path = req.uri().path().to_owned();
    if path.ends_with('/') {
        return Err(Error::BadRequest(format!(
            "{path} is a collection; attachments are managed on calendar object resources"
        )));
    }
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    let has_body = query.action != AttachAction::Remove;
    // Held until the response is built: bounds uploads (and their store multipart
    // buffers) in progress at once.
    let _permit = if has_body {
        Some(state.uploads.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!(
                "{} uploads in progress (attachments.max_concurrent_uploads)",
                cfg.max_concurrent_uploads
            ))
        })?)
    } else {
        None
    };
    if has_body {
        if let Some(len) = content_length(&headers) {
            if len > cfg.max_attachment_size {
                return Err(Error::Precondition(
                    Precondition::MaxAttachmentSize,
                    format!("content-length {len} exceeds {}", cfg.max_attachment_size),
                ));
            }
        }
    }

    // Pre-body checks: everything that can refuse the request without its body.
    let object = match fetch_object(&state.upstream, &caller, &path, cfg.max_object_size).await? {
        Fetched::Object(o) => o,
        Fetched::Relay(resp) => return Ok(resp),
    };
    let prefer = params::wants_representation(&headers);
    if !conditional::preconditions_hold(&headers, &object.validators) {
        return Ok(precondition_failed(state, &path, &object, prefer));
    }
    let cal = parse_object(&object, &path, cfg.max_overrides)?;
    promote_referenced(state, &cal).await;
    // RFC 8607 §3.12.2 (attendees may not change) and the scheduling header rule.
    let identity = super::access::may_change(state, &caller, &path, &cal, query.action).await?;
    super::access::filter_schedule_user_address(&mut headers, identity.as_deref());
    let placeholder = new_attach(
        state,
        &AttachmentId::new(),
        &params::filename(&headers),
        &params::media_type(&headers),
        content_length(&headers).unwrap_or(0),
    );
    apply(state, &cal, &query, has_body.then_some(&placeholder))?;

    // The body: hyper sends `100 Continue` when it is first read, here.
    let upload = if has_body {
        Some(store_upload(state, &caller, &path, &cal, &headers, incoming).await?)
    } else {
        drop(incoming);
        None
    };

    // The id an update or remove drops: marked before the commit so that a crash or a
    // lost answer after the upstream applied it cannot leave it live and unreferenced
    // forever (gc settles marked ids, see store::State::Releasing).
    let releasing = match query.managed_id.as_deref().and_then(AttachmentId::parse) {
        Some(old) if matches!(state.store.state(&old).await, Ok(Some(_))) => {
            state
                .store
                .mark_releasing(&old, &path)
                .await
                .map_err(store_error)?;
            Some(old)
        }
        _ => None,
    };
    let committed = commit(
        state,
        &caller,
        &path,
        &query,
        &headers,
        object,
        cal,
        upload.as_ref(),
    )
    .await;
    let (new_validators, new_cal) = match committed {
        Ok(c) => c,
        Err(Outcome::Refused(resp)) => {
            discard(state, upload.as_ref()).await;
            clear_releasing(state, releasing.as_ref()).await;
            return Ok(resp);
        }
        Err(Outcome::Failed(e)) => {
            discard(state, upload.as_ref()).await;
            clear_releasing(state, releasing.as_ref()).await;
            return Err(e);
        }
        Err(Outcome::Ambiguous(e)) => {
            if let Some(u) = &upload {
                tracing::warn!(id = %u.id.as_str(), %path, "commit outcome unknown; attachment kept pending");
            }
            return Err(e);
        }
    };

    if finish_store(state, &path, &query, upload.as_ref(), &new_cal).await {
        clear_releasing(state, releasing.as_ref()).await;
    }
    super::access::record_audience(state, &new_cal).await;
    respond(
        state,
        &caller,
        &path,
        &query,
        upload.as_ref(),
        new_validators,
        prefer,
    )
    .await
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn parse_object(object: &Object, path: &str, max_overrides: usize) -> Result<Calendar, Error> {
    let cal = Calendar::parse(&object.bytes).map_err(|e| {
        Error::Precondition(
            Precondition::ValidCalendarData,
            format!("{path} does not parse as iCalendar: {e}"),
        )
    })?;
    if cal.override_count() > max_overrides {
        return Err(Error::Precondition(
            Precondition::MaxInstances,
            format!(
                "{path} has {} overridden instances, more than attachments.max_overrides",
                cal.override_count()
            ),
        ));
    }
    Ok(cal)
}

fn new_attach(
    state: &State,
    id: &AttachmentId,
    filename: &str,
    media_type: &str,
    size: u64,
) -> NewAttach {
    let prefix = &state.config.attachments.prefix;
    NewAttach {
        managed_id: id.as_str().to_owned(),
        fmttype: media_type.to_owned(),
        filename: filename.to_owned(),
        size,
        uri: super::attachment_url(&state.upstream, prefix, id, filename),
    }
}

/// The edit for `query` on `cal`, or the precondition it violates (RFC 8607 §3.11).
fn apply(
    state: &State,
    cal: &Calendar,
    query: &AttachQuery,
    new: Option<&NewAttach>,
) -> Result<Vec<u8>, Error> {
    let rids = query.rids.as_deref();
    let result = match (query.action, new) {
        (AttachAction::Add, Some(a)) => {
            let count = cal.distinct_managed_ids().len() as u64;
            let max = state.config.attachments.max_attachments_per_resource;
            if count + 1 > max {
                return Err(Error::Precondition(
                    Precondition::MaxAttachmentsPerResource,
                    format!("the object already holds {count} managed attachments (max {max})"),
                ));
            }
            edit::add_attach(cal, rids, a)
        }
        (AttachAction::Update, Some(a)) => {
            edit::update_attach(cal, query.managed_id.as_deref().unwrap_or(""), a)
        }
        (AttachAction::Remove, _) => {
            edit::remove_attach(cal, rids, query.managed_id.as_deref().unwrap_or(""))
        }
        _ => return Err(Error::Internal("attachment edit without its upload".into())),
    };
    result.map_err(edit_error)
}

fn edit_error(e: EditError) -> Error {
    if e.is_rid_error() {
        return Error::Precondition(Precondition::ValidRid, e.to_string());
    }
    match e {
        EditError::UnknownManagedId(_) => {
            Error::Precondition(Precondition::ValidManagedId, e.to_string())
        }
        EditError::NoComponent => {
            Error::Precondition(Precondition::ValidCalendarData, e.to_string())
        }
        other => Error::BadRequest(other.to_string()),
    }
}

/// Streams the request body into the store and records its metadata (state pending).
async fn store_upload(
    state: &State,
    caller: &Caller,
    path: &str,
    cal: &Calendar,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<Upload, Error> {
    let max = state.config.attachments.max_attachment_size;
    let id = AttachmentId::new();
    let idle = state.upstream.body_idle_timeout();
    let stream = BodyDataStream::new(crate::body::IdleTimeout::new(incoming, idle));
    let uploading = crate::metrics::get().upload_started();
    let info = match state.store.put_blob(&id, stream, max).await {
        Ok(info) => info,
        Err(PutBlobError::TooLarge { max_size }) => {
            return Err(Error::Precondition(
                Precondition::MaxAttachmentSize,
                format!("body exceeded {max_size} bytes while streaming"),
            ))
        }
        Err(PutBlobError::Body(e)) => {
            return Err(Error::BadRequest(format!(
                "reading the attachment body failed: {e}"
            )))
        }
        Err(PutBlobError::Store(e)) => return Err(store_error(e)),
        Err(e @ PutBlobError::Busy { .. }) => return Err(Error::Busy(e.to_string())),
    };
    drop(uploading);
    crate::metrics::get().attachment_stored(info.size);
    let filename = params::filename(headers);
    let media_type = params::media_type(headers);
    let meta = Meta {
        id: id.clone(),
        creator: caller.user.clone().unwrap_or_default(),
        href: path.to_owned(),
        uid: cal.uid().unwrap_or_default(),
        filename: filename.clone(),
        media_type: media_type.clone(),
        size: info.size,
        sha256: info.sha256,
        created: chrono::Utc::now(),
    };
    // Metadata, then the reference index, both before the commit: the index must stay a
    // superset of what upstream objects reference (store module docs).
    let recorded = match state.store.put_meta(&meta).await {
        Ok(()) => state.store.add_ref(path, &id).await,
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        let _ = state.store.discard(&id).await;
        return Err(store_error(e));
    }
    let attach = new_attach(state, &id, &filename, &media_type, info.size);
    tracing::info!(id = %id.as_str(), size = info.size, %path, "attachment stored (pending)");
    Ok(Upload { id, attach })
}

pub fn store_error(e: crate::store::StoreError) -> Error {
    crate::metrics::get().store_error(&e);
    if matches!(e, crate::store::StoreError::Full { .. }) {
        Error::InsufficientStorage(crate::proxy::error_chain(&e))
    } else if e.is_unavailable() {
        Error::StorageUnavailable(crate::proxy::error_chain(&e))
    } else {
        Error::Storage(crate::proxy::error_chain(&e))
    }
}

/// How a commit ended, when it did not succeed.
enum Outcome {
    /// The upstream answered with a refusal to relay; it changed nothing.
    Refused(Response<Body>),
    /// calattach refuses (409 after retries, a precondition on re-apply); nothing changed.
    Failed(Error),
    /// The PUT may or may not have been applied.
    Ambiguous(Error),
}

/// Applies the edit and PUTs it with `If-Match`, re-reading and re-applying on `412`.
///
/// A conditional POST keeps its precondition across retries: after a 412 the object is
/// read again and the client's own `If-Match`/`If-Schedule-Tag-Match` re-evaluated, so
/// a version the client did not see is never written over — the client gets `412`.
#[allow(clippy::too_many_arguments)]
async fn commit(
    state: &State,
    caller: &Caller,
    path: &str,
    query: &AttachQuery,
    headers: &HeaderMap,
    mut object: Object,
    mut cal: Calendar,
    upload: Option<&Upload>,
) -> Result<(Validators, Calendar), Outcome> {
    let retries = state.config.attachments.commit_retries;
    let mut attempt = 0u32;
    loop {
        let new_bytes =
            apply(state, &cal, query, upload.map(|u| &u.attach)).map_err(Outcome::Failed)?;
        let Some(etag) = object.validators.etag.clone() else {
            return Err(Outcome::Failed(Error::Conflict(format!(
                "the calendar server sent no ETag for {path}; cannot update it safely"
            ))));
        };
        let new_cal = Calendar::parse(&new_bytes).map_err(|e| {
            Outcome::Failed(Error::Internal(format!(
                "edited object does not parse: {e}"
            )))
        })?;
        let new_bytes = bytes::Bytes::from(new_bytes);
        let make_put = || {
            let mut put = caller.request(
                &state.upstream,
                Method::PUT,
                path,
                body::full(new_bytes.clone()),
            )?;
            let h = put.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/calendar; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::IF_MATCH, v);
            }
            for name in FORWARDED_TO_COMMIT {
                if let Some(v) = headers.get(name) {
                    h.insert(name, v.clone());
                }
            }
            Ok(put)
        };
        // Never sent (no connection) is a definite failure; anything after the request
        // went out may have been applied.
        let resp = match state.upstream.send_retrying(make_put).await {
            Ok(r) => r,
            Err(e @ Error::UpstreamUnreachable) => return Err(Outcome::Failed(e)),
            Err(e) => return Err(Outcome::Ambiguous(e)),
        };
        let status = resp.status();
        if status.is_success() {
            let v = super::validators(resp.headers());
            super::drain(resp).await;
            return Ok((v, new_cal));
        }
        // 412: the object changed since it was read. 423: the upstream holds a lock
        // (Xandikos locks a collection while it writes); the PUT was not applied either
        // way, so re-reading and re-applying is safe.
        if status != StatusCode::PRECONDITION_FAILED && status != StatusCode::LOCKED {
            tracing::info!(%path, status = status.as_u16(), "upstream refused the commit");
            return Err(Outcome::Refused(state.upstream.relay_response(resp)));
        }
        super::drain(resp).await;
        attempt += 1;
        crate::metrics::get().commit_retry();
        if attempt > retries {
            return Err(Outcome::Failed(Error::Conflict(format!(
                "{path} kept changing; gave up after {retries} retries"
            ))));
        }
        tracing::warn!(%path, attempt, status = status.as_u16(), "commit not applied (412 on commit, or 423 locked), re-applying edit");
        backoff(attempt).await;
        object = match fetch_object(
            &state.upstream,
            caller,
            path,
            state.config.attachments.max_object_size,
        )
        .await
        {
            Ok(Fetched::Object(o)) => o,
            Ok(Fetched::Relay(resp)) => return Err(Outcome::Refused(resp)),
            Err(e) => return Err(Outcome::Failed(e)),
        };
        if !conditional::preconditions_hold(headers, &object.validators) {
            let prefer = params::wants_representation(headers);
            return Err(Outcome::Refused(precondition_failed(
                state, path, &object, prefer,
            )));
        }
        cal = parse_object(&object, path, state.config.attachments.max_overrides)
            .map_err(Outcome::Failed)?;
    }
}

/// Jittered exponential backoff: up to 20 ms, 40 ms, 80 ms, … (capped at 1 s).
async fn backoff(attempt: u32) {
    let cap = (10u64 << attempt.min(7)).min(1000);
    let ms = rand::rng().random_range(cap / 2..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Reconciliation on touch (DESIGN §8): a pending id the object references was
/// committed by a request whose state change was lost (crash, lost answer); promote it.
async fn promote_referenced(state: &State, cal: &Calendar) {
    let base = super::url_base(&state.upstream, &state.config.attachments.prefix);
    for r in cal.attach_refs(&base) {
        let Some(id) = AttachmentId::parse(&r.id) else {
            continue;
        };
        if let Ok(Some((_, crate::store::State::Pending))) = state.store.state(&id).await {
            match state.store.mark_live(&id).await {
                Ok(()) => {
                    tracing::info!(id = %id.as_str(), "pending attachment is referenced: now live")
                }
                Err(e) => {
                    tracing::warn!(id = %id.as_str(), error = %e, "promoting pending attachment failed")
                }
            }
        }
    }
}

/// The outcome of an update/remove commit is known: drop its releasing marker.
async fn clear_releasing(state: &State, id: Option<&AttachmentId>) {
    if let Some(id) = id {
        if let Err(e) = state.store.clear_releasing(id).await {
            tracing::warn!(id = %id.as_str(), error = %e, "clearing releasing marker failed; gc will");
        }
    }
}

/// Deletes an upload whose commit definitely did not happen.
async fn discard(state: &State, upload: Option<&Upload>) {
    if let Some(u) = upload {
        match state.store.discard(&u.id).await {
            Ok(()) => tracing::info!(id = %u.id.as_str(), "upload discarded"),
            Err(e) => {
                tracing::warn!(id = %u.id.as_str(), error = %e, "discarding upload failed; gc will")
            }
        }
    }
}

/// State changes after a successful commit. Failures are logged, not returned: the
/// commit happened, and a pending id is reconciled later.
async fn finish_store(
    state: &State,
    path: &str,
    query: &AttachQuery,
    upload: Option<&Upload>,
    new_cal: &Calendar,
) -> bool {
    let store = &state.store;
    if let Some(u) = upload {
        if let Err(e) = store.mark_live(&u.id).await {
            tracing::warn!(id = %u.id.as_str(), error = %e, "marking attachment live failed");
        }
    }
    // The replaced or removed id: tombstone it once the object no longer holds it.
    let Some(old) = query.managed_id.as_deref() else {
        return true;
    };
    if new_cal.distinct_managed_ids().contains(old) {
        return true;
    }
    let Some(old_id) = AttachmentId::parse(old) else {
        return true; // not one of ours (data from before calattach)
    };
    let reason = query.action.as_str();
    if let Err(e) = store.mark_removed(&old_id, reason).await {
        // Its releasing marker stays, so gc tombstones it later.
        tracing::warn!(id = old, error = %e, "tombstoning attachment failed");
        return false;
    }
    if let Err(e) = store.remove_ref(path, &old_id).await {
        tracing::warn!(id = old, error = %e, "removing reference failed");
    }
    true
}

/// `201` (add) or `204`/`200` (update, remove), with `Cal-Managed-ID` (add/update only,
/// RFC 8607 §5.1), `Location`, `Content-Location`, and fresh validators.
async fn respond(
    state: &State,
    caller: &Caller,
    path: &str,
    query: &AttachQuery,
    upload: Option<&Upload>,
    mut validators: Validators,
    prefer: bool,
) -> Result<Response<Body>, Error> {
    // The upstream may have re-serialised the object (Radicale does) and some servers
    // send no ETag when they did (sabre/dav): read it back rather than guess, so the
    // tags a client chains into its next POST are never stale.
    let mut representation = None;
    if prefer || validators.etag.is_none() {
        if let Ok(Fetched::Object(o)) = fetch_object(
            &state.upstream,
            caller,
            path,
            state.config.attachments.max_object_size,
        )
        .await
        {
            validators = o.validators.clone();
            representation = prefer.then_some(o.bytes);
        }
    }
    let status = match (query.action, &representation) {
        (AttachAction::Add, _) => StatusCode::CREATED,
        (_, Some(_)) => StatusCode::OK,
        (_, None) => StatusCode::NO_CONTENT,
    };
    let mut resp = super::object_response(state, status, path, &validators, representation);
    let h = resp.headers_mut();
    if let Some(u) = upload {
        if let Ok(v) = HeaderValue::from_str(u.id.as_str()) {
            h.insert("cal-managed-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&u.attach.uri) {
            h.insert(header::LOCATION, v);
        }
    }
    Ok(resp)
}

/// `412`; under `Prefer: return=representation` with the current object, its `ETag` and
/// `Content-Location` (RFC 8144 §3.2, RFC 8607 Appendix A).
fn precondition_failed(state: &State, path: &str, object: &Object, prefer: bool) -> Response<Body> {
    tracing::info!(%path, "client precondition failed (412)");
    super::object_response(
        state,
        StatusCode::PRECONDITION_FAILED,
        path,
        &object.validators,
        prefer.then(|| object.bytes.clone()),
    )
}
