//! Attachment downloads: `GET`/`HEAD <prefix>/<id>[/<name>]` (RFC 8607 §3.10, DESIGN §6).
//!
//! The access decision comes before the attachment's state is looked at in any way a
//! caller can observe: anonymous callers get the upstream's `401` challenge; callers
//! whose credentials the upstream refuses get that `401`; callers the rules of
//! [`super::access`] do not admit (creator, organizer and recorded attendees, readers of
//! an organizer-side object) get `403`. In `download = "capability"` mode the
//! unguessable path is the credential and no check is made. Only then
//! do `410 Gone` (removed, RFC 8607 §3.12.5) and the bytes come into view. An id that
//! calattach never issued is `404` for any caller with valid credentials: ids are 128
//! random bits, so a caller can only hold one it was given.

use futures_util::TryStreamExt;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};

use super::{fetch_object, Caller, Fetched};
use crate::body::{self, Body, BoxError};
use crate::config::DownloadMode;
use crate::error::Error;
use crate::ical::Calendar;
use crate::identity::{ask_principal, WELL_KNOWN};
use crate::state::State;
use crate::store::{AttachmentId, ByteRange, Meta, State as AttState, StoreError};

pub async fn handle(req: Request<Incoming>, state: &State) -> Result<Response<Body>, Error> {
    let caller = Caller::from_headers(req.headers())?;
    let prefix = &state.config.attachments.prefix;
    let rest = req.uri().path().strip_prefix(prefix.as_str()).unwrap_or("");
    let id_text = rest.trim_start_matches('/').split('/').next().unwrap_or("");
    let head = req.method() == Method::HEAD;

    let capability = state.config.attachments.download == DownloadMode::Capability;
    let found = match AttachmentId::parse(id_text) {
        Some(id) => state.store.state(&id).await.map_err(Error::from)?,
        None => None,
    };
    if caller.is_anonymous() && !capability {
        return challenge(state, found.as_ref().map(|(m, _)| m)).await;
    }
    let Some((meta, att_state)) = found else {
        if capability {
            return Err(Error::NotFound);
        }
        // Valid credentials first, so an unknown id tells an outsider nothing.
        return match verify_credentials(state, &caller).await? {
            Some(refusal) => Ok(refusal),
            None => Err(Error::NotFound),
        };
    };

    // Access: who may read the referencing object upstream, or its creator.
    let needs_body = att_state == AttState::Pending;
    let object = access(state, &caller, &meta, needs_body, capability).await?;
    let referencing = match object {
        Access::Denied(resp) => return Ok(resp),
        Access::Granted(obj) => obj,
    };
    match att_state {
        AttState::Removed { .. } => return Err(Error::Gone),
        AttState::Pending => {
            // Reconciliation: the commit happened if the object references the id.
            let base = super::url_base(&state.upstream, prefix);
            let referenced = referencing
                .as_ref()
                .and_then(|b| Calendar::parse(b).ok())
                .is_some_and(|cal| {
                    cal.attach_refs(&base)
                        .iter()
                        .any(|r| r.id == meta.id.as_str())
                });
            if !referenced {
                return Err(Error::NotFound);
            }
            if let Err(e) = state.store.mark_live(&meta.id).await {
                tracing::warn!(id = %meta.id.as_str(), error = %e, "promoting pending attachment failed");
            } else {
                tracing::info!(id = %meta.id.as_str(), "pending attachment is referenced: now live");
            }
        }
        AttState::Live | AttState::Releasing { .. } => {}
    }
    serve(state, &meta, req.headers(), head).await
}

enum Access {
    /// Granted; the referencing object's bytes when they were asked for and readable.
    Granted(Option<bytes::Bytes>),
    Denied(Response<Body>),
}

/// The access rules of [`super::access::may_download`] (skipped in capability mode,
/// where the unguessable path is the credential); then, for a pending id, the
/// referencing object's bytes as the caller may read them, for reconciliation.
async fn access(
    state: &State,
    caller: &Caller,
    meta: &Meta,
    with_body: bool,
    capability: bool,
) -> Result<Access, Error> {
    if !capability {
        if let super::access::Download::Denied(resp) =
            super::access::may_download(state, caller, meta).await?
        {
            return Ok(Access::Denied(resp));
        }
    }
    if !with_body {
        return Ok(Access::Granted(None));
    }
    let max = state.config.attachments.max_object_size;
    match fetch_object(&state.upstream, caller, &meta.href, max).await {
        Ok(Fetched::Object(o)) => Ok(Access::Granted(Some(o.bytes))),
        Ok(Fetched::Relay(_)) | Err(Error::BadRequest(_)) | Err(Error::Precondition(..)) => {
            Ok(Access::Granted(None))
        }
        Err(e) => Err(e),
    }
}

/// Asks the upstream whether the caller's credentials are valid, for an attachment id
/// calattach does not know (so no calendar object to ask about): `PROPFIND` depth 0
/// for `DAV:current-user-principal` of [`dav_resource`]. Returns the upstream's `401`
/// to relay when it refuses them.
async fn verify_credentials(
    state: &State,
    caller: &Caller,
) -> Result<Option<Response<Body>>, Error> {
    let resp = ask_dav(state, caller, None).await?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        return Ok(Some(state.upstream.relay_response(resp)));
    }
    super::drain(resp).await;
    Ok(None)
}

/// `401` mirroring the upstream's challenge (its schemes and realm), learned by asking
/// it without credentials about [`dav_resource`].
async fn challenge(state: &State, meta: Option<&Meta>) -> Result<Response<Body>, Error> {
    let anonymous = Caller::from_headers(&HeaderMap::new())?;
    let resp = ask_dav(state, &anonymous, meta).await?;
    let www = resp
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .cloned()
        .collect::<Vec<_>>();
    super::drain(resp).await;
    let mut out = Error::unauthorized("authentication required").into_response();
    if www.is_empty() {
        out.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"calattach\""),
        );
    }
    for v in www {
        out.headers_mut().append(header::WWW_AUTHENTICATE, v);
    }
    Ok(out)
}

/// The DAV resource a download is checked against: never `/` (the DAV server may live
/// below the origin's root, as Baïkal's `/dav.php/` does), but the collection of the
/// object holding the attachment; for an unknown id, the RFC 6764 bootstrap
/// `/.well-known/caldav`, whose redirect to the server's DAV root is followed.
pub fn dav_resource(meta: Option<&Meta>) -> String {
    match meta {
        Some(m) => crate::identity::parent_collection(&m.href).to_owned(),
        None => WELL_KNOWN.to_owned(),
    }
}

/// `PROPFIND` depth 0 for `DAV:current-user-principal` of [`dav_resource`] with the
/// caller's credentials (or none).
async fn ask_dav(
    state: &State,
    caller: &Caller,
    meta: Option<&Meta>,
) -> Result<crate::upstream::UpstreamResponse, Error> {
    ask_principal(&state.upstream, caller, &dav_resource(meta)).await
}

/// Streams the blob with the headers of DESIGN §6; `Range`, `If-Range`, `If-None-Match`.
async fn serve(
    state: &State,
    meta: &Meta,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Error> {
    let etag = format!("\"{}\"", meta.sha256);
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if super::conditional::none_match_hits(inm, &etag) {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().insert(header::ETAG, header_value(&etag));
            return Ok(resp);
        }
    }
    let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        // RFC 9110 §13.1.5: an entity-tag in If-Range is compared strongly.
        Some(v) => super::conditional::strong_eq(v.trim(), &etag),
    };
    let range = if if_range_ok {
        headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_range)
    } else {
        None
    };
    // An empty blob has no satisfiable range; serve it whole (RFC 9110 §14.2 allows
    // ignoring Range).
    let range = range.filter(|_| meta.size > 0);

    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&meta.media_type));
    h.insert(header::ETAG, header_value(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&crate::rfc6266::content_disposition(&meta.filename)),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));

    let blob = match state.store.get_blob(&meta.id, range.clone()).await {
        Ok(b) => b,
        Err(StoreError::RangeNotSatisfiable { size }) => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return Ok(resp);
        }
        Err(e) if e.is_not_found() => {
            // Metadata without bytes: removed by gc or lost; say Gone, never 500.
            tracing::warn!(id = %meta.id.as_str(), "attachment metadata without blob");
            return Err(Error::Gone);
        }
        Err(e) => return Err(Error::from(e)),
    };
    let served = blob.range.end - blob.range.start;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, header_value(&served.to_string()));
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(&format!(
                "bytes {}-{}/{}",
                blob.range.start,
                blob.range.end.saturating_sub(1),
                blob.size
            )),
        );
    }
    if !head {
        let stream = blob
            .map_ok(Frame::data)
            .map_err(|e| -> BoxError { Box::new(e) });
        *resp.body_mut() = http_body_util::BodyExt::boxed_unsync(StreamBody::new(stream));
    }
    Ok(resp)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// One `bytes=` range (RFC 9110 §14.1.2). Several ranges, other units or bad syntax give
/// `None`: the whole representation is served, as RFC 9110 §14.2 allows.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(ByteRange::Suffix(last.parse().ok()?)),
        (false, true) => Some(ByteRange::From(first.parse().ok()?)),
        (false, false) => {
            let a: u64 = first.parse().ok()?;
            let b: u64 = last.parse().ok()?;
            (b >= a).then(|| ByteRange::Bounded(a..b.saturating_add(1)))
        }
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_parse_and_multi_ranges_are_ignored() {
        assert_eq!(parse_range("bytes=0-99"), Some(ByteRange::Bounded(0..100)));
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(parse_range("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=-"), None);
    }

    #[test]
    fn content_disposition_has_ascii_fallback_and_utf8_form() {
        assert_eq!(
            crate::rfc6266::content_disposition("Résumé \"v2\".pdf"),
            "attachment; filename=\"R_sum_ _v2_.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
    }
}
