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

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyDataStream;
use hyper::body::Incoming;

use super::conditional::{self, Validators};
use super::edit::{edit_for, off_thread, parse_object, precondition_failed};
use super::params::{self, AttachAction, AttachQuery};
use super::{fetch_object, Caller, Fetched};
use crate::body::{self, Body};
use crate::error::{Error, Precondition};
use crate::ical::{Budget, Calendar, NewAttach};
use crate::state::State;
use crate::store::{AttachmentId, Meta, PutBlobError};

/// A stored upload waiting for its commit.
struct Upload {
    id: AttachmentId,
    attach: NewAttach,
}

/// The request body as the POST reads it: abandoned after `server.body_idle_timeout`
/// without data, and read on in the background when the answer comes first
/// ([`body::Lingering`]).
type RequestBody = body::Lingering<body::IdleTimeout<Incoming>>;

pub async fn handle(req: Request<Incoming>, state: &State) -> Result<Response<Body>, Error> {
    let cfg = &state.config.attachments;
    let (parts, incoming) = req.into_parts();
    // From here every early answer leaves the body to be read on and discarded, so a
    // client that sends it whole before reading hears the refusal.
    let incoming: RequestBody = body::Lingering::new(
        body::IdleTimeout::new(incoming, state.upstream.body_idle_timeout()),
        &parts.headers,
    );
    // A page on another site must not make a browser change attachments with the
    // user's stored credentials: refused before anything is read or asked.
    super::refuse_cross_site(&parts.headers, &state.config.server)?;
    let query = params::parse_query(
        parts.uri.query().unwrap_or(""),
        cfg.no_recurrence,
        cfg.max_rids,
    )?;
    let caller = Caller::from_headers(&parts.headers)?;
    let path = parts.uri.path().to_owned();
    if path.ends_with('/') {
        return Err(Error::BadRequest(format!(
            "{path} is a collection; attachments are managed on calendar object resources"
        )));
    }
    let mut headers = parts.headers;
    let has_body = query.action != AttachAction::Remove;
    // Held until the response is built: bounds uploads (and their store multipart
    // buffers) in progress at once, and each user's share of them.
    let _slot = if has_body {
        Some(state.uploads.acquire(&caller)?)
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
    // The recurrence work this request may do, shared by every rid check it makes.
    let mut budget = Budget::new(
        cfg.max_expanded_instances,
        cfg.max_recurrence_lines,
        cfg.max_expansion_time,
    );

    // Pre-body checks: everything that can refuse the request without its body.
    let object = match fetch_object(&state.upstream, &caller, &path, cfg.max_object_size).await? {
        Fetched::Object(o) => o,
        Fetched::Relay(resp) => return Ok(resp),
    };
    let prefer = params::wants_representation(&headers);
    if !conditional::preconditions_hold(&headers, &object.validators) {
        return Ok(precondition_failed(state, &path, &object, prefer));
    }
    let cal = parse_object(&object, &path, cfg.max_overrides).await?;
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
    apply(
        state,
        &cal,
        &query,
        has_body.then_some(&placeholder),
        &mut budget,
    )
    .await?;

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
                .map_err(Error::from)?;
            Some(old)
        }
        _ => None,
    };
    let change = super::commit::Change {
        caller: caller.clone(),
        query: query.clone(),
        attach: upload.as_ref().map(|u| u.attach.clone()),
        headers: headers.clone(),
        object,
        budget,
    };
    let (new_validators, new_cal) = match super::commit::queues().commit(state, &path, change).await
    {
        Ok(c) => (c.validators, c.cal),
        Err(f) if f.definite => {
            discard(state, upload.as_ref()).await;
            clear_releasing(state, releasing.as_ref()).await;
            return Ok(f.answer.into_response());
        }
        Err(f) => {
            if let Some(u) = &upload {
                tracing::warn!(id = %u.id.as_str(), %path, "commit outcome unknown; attachment kept pending");
            }
            return Ok(f.answer.into_response());
        }
    };

    if finish_store(state, &path, &query, upload.as_ref(), &new_cal).await {
        clear_releasing(state, releasing.as_ref()).await;
    }
    super::access::record_audience(state, &path, &new_cal).await;
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
/// Runs off the I/O thread, checking rids within `budget`.
async fn apply(
    state: &State,
    cal: &Arc<Calendar>,
    query: &AttachQuery,
    new: Option<&NewAttach>,
    budget: &mut Budget,
) -> Result<Vec<u8>, Error> {
    let max = state.config.attachments.max_attachments_per_resource;
    let (cal, query, new, mut spent) = (cal.clone(), query.clone(), new.cloned(), budget.clone());
    let (result, spent) = off_thread(move || {
        let result = edit_for(&cal, &query, new.as_ref(), max, &mut spent);
        (result, spent)
    })
    .await?;
    *budget = spent;
    result
}

/// Streams the request body into the store and records its metadata (state pending).
async fn store_upload(
    state: &State,
    caller: &Caller,
    path: &str,
    cal: &Calendar,
    headers: &HeaderMap,
    incoming: RequestBody,
) -> Result<Upload, Error> {
    let max = state.config.attachments.max_attachment_size;
    let id = AttachmentId::new();
    let stream = BodyDataStream::new(incoming);
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
        Err(PutBlobError::Store(e)) => return Err(Error::from(e)),
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
        return Err(Error::from(e));
    }
    let attach = new_attach(state, &id, &filename, &media_type, info.size);
    tracing::info!(id = %id.as_str(), size = info.size, %path, "attachment stored (pending)");
    Ok(Upload { id, attach })
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
    // The replaced or removed id: this object's reference goes; the id itself is
    // tombstoned only when nothing that keeps it alive holds it (DESIGN §5: an update or
    // remove acts on the targeted object only, and the creator's other objects keep a
    // reused id alive, RFC 8607 §3.7).
    let Some(old) = query.managed_id.as_deref() else {
        return true;
    };
    if new_cal.distinct_managed_ids().contains(old) {
        return true;
    }
    let Some(old_id) = AttachmentId::parse(old) else {
        return true; // not one of ours (data from before calattach)
    };
    match store.state(&old_id).await {
        Ok(Some((meta, _))) => {
            super::access::release(state, &meta, path, query.action.as_str()).await;
            true
        }
        Ok(None) => true,
        Err(e) => {
            // Its releasing marker stays, so gc settles it later.
            tracing::warn!(id = old, error = %e, "reading attachment state failed");
            false
        }
    }
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
