//! The RFC 8607 §6 properties over HTTP (DESIGN §2, §7): PROPFIND answers gain them,
//! PROPPATCH and MKCALENDAR / extended MKCOL cannot set them.
//!
//! # Reading the request body
//!
//! At most [`MAX_REQUEST_BODY`] bytes are read. A longer body, a body that is not
//! well-formed XML, or one that names none of our properties is forwarded untouched: the
//! bytes already read go first, the rest of the client's stream follows as it arrives. Only
//! the framing may change (a complete body is sent with its length).
//!
//! # PROPFIND (RFC 8607 §6.1–§6.3)
//!
//! A PROPFIND naming none of our properties (a bare `allprop`, an empty body, a `prop` list
//! without them) is forwarded and its answer streamed back untouched. Otherwise the request
//! is forwarded unchanged except that `Accept-Encoding` is removed (the rewriter works on the
//! identity encoding), and a `207` with an XML content type and no content coding is streamed
//! through [`Rewriter`]: bounded memory, `Content-Length` removed (the length changes, the body
//! is sent chunked), every other header kept. Any other answer passes through unchanged. When
//! the rewriter meets something it cannot parse it copies the rest unchanged and a warning is
//! logged; calattach never turns what the upstream sent into an error of its own.
//!
//! ## Which response is which resource
//!
//! * **Home** (server-URL applies): the response's `DAV:href` (absolute URLs reduced to their
//!   path, percent-decoded, trailing `/` ignored) equals one of the caller's
//!   `CALDAV:calendar-home-set` hrefs, resolved with the caller's credentials and cached
//!   ([`crate::identity`]). A calendar home is a plain collection, so nothing in the response
//!   could tell. A caller without a resolvable identity (anonymous, refused, Digest) has no
//!   home. Identity is resolved only when server-URL is asked for.
//! * **Calendar** (the two limits apply): `DAV:resourcetype` contains `CALDAV:calendar`. When
//!   the PROPFIND asks for `DAV:resourcetype` (or is an `allprop` with `include`), the value
//!   in the same response decides. Otherwise (a `prop` list without it, or `propname`, whose
//!   `resourcetype` is an empty name) calattach first asks the upstream itself: a PROPFIND
//!   of `DAV:resourcetype` on the same URL, same `Depth`, with the caller's credentials,
//!   streamed through the same parser, keeping only the hrefs of calendars. The answer is
//!   cached for [`CALENDARS_TTL`] per (credentials, URL, Depth), at most
//!   [`CALENDARS_CACHE_SIZE`] entries; credentials are keyed-hashed as in the identity cache.
//!   A failed look-up means "no calendar": the answer is then the upstream's, unchanged.
//! * A response that is both a home and a calendar is treated as the home.
//!
//! ## Values
//!
//! server-URL is always the empty element `<C:managed-attachments-server-URL/>` (RFC 8607
//! §6.1: the client substitutes the calendar home's scheme and authority). Attachments are
//! served on the CalDAV listener under `attachments.prefix` (DESIGN §2), so whatever origin
//! the client reached the home on also serves the attachments; a `DAV:href` would only be
//! right for a separate attachment origin, which calattach does not have. The limits come
//! from `attachments.max_attachment_size` and `attachments.max_attachments_per_resource`.
//!
//! # PROPPATCH (RFC 8607 §6: the properties are protected)
//!
//! A PROPPATCH that sets or removes any of our properties is answered by calattach with the
//! `207` of [`request::proppatch_refusal`]: `403` with `DAV:cannot-modify-protected-property`
//! for ours, `424 Failed Dependency` for every other property of the request (PROPPATCH is
//! atomic, RFC 4918 §9.2); nothing is forwarded. Others are forwarded untouched. Before
//! answering, calattach asks the upstream (`PROPFIND Depth: 0` with the caller's
//! credentials) and relays its refusal (401 with its challenge, 403, 404) instead, so a
//! caller the upstream would turn away learns nothing from calattach.
//!
//! # MKCALENDAR and extended MKCOL
//!
//! A body whose `DAV:set` names one of our properties gets `403` with
//! `<D:error><D:cannot-modify-protected-property/></D:error>`; nothing is forwarded (creation
//! is atomic). The same upstream check as for PROPPATCH runs first, on the parent
//! collection. Others are forwarded untouched.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt, TryStreamExt};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Incoming;

use super::request::{self, PropfindKind};
use super::rewrite::{Plan, ResourceHints, ResourceKind, Rewriter, Values};
use super::{OurProp, OurProps, QName, DAV_NS};
use crate::attach::{self, Caller};
use crate::body::{self, Body, BoxError};
use crate::error::{Error, Precondition};
use crate::identity::Resolved;
use crate::state::State;

/// Largest request body read to decide; a client asking for our properties sends a few
/// hundred bytes, Apple's ~40-property PROPFIND about 2 KiB.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// How long a `DAV:resourcetype` look-up is reused.
pub const CALENDARS_TTL: Duration = Duration::from_secs(5);
/// Most cached look-ups.
pub const CALENDARS_CACHE_SIZE: usize = 256;
/// Most calendar hrefs kept from one look-up.
const MAX_CALENDARS: usize = 10_000;

/// Handles PROPFIND, PROPPATCH, MKCALENDAR and MKCOL (see the module docs).
pub async fn handle(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let (parts, incoming) = req.into_parts();
    // A client that stalls mid-body is dropped after `server.body_idle_timeout`; a body
    // left unread by a refusal is read on, so the client hears it.
    let incoming: RequestBody = body::Lingering::new(
        body::IdleTimeout::new(incoming, state.upstream.body_idle_timeout()),
        &parts.headers,
    );
    let prefix = read_prefix(incoming, MAX_REQUEST_BODY).await?;
    let truncated = prefix.rest.is_some();
    match parts.method.as_str() {
        "PROPFIND" => match request::parse_propfind(&prefix.data, truncated) {
            Ok(kind) if !kind.our_props().is_empty() => {
                propfind(parts, prefix, kind, state, peer).await
            }
            _ => forward(parts, prefix, state, peer).await,
        },
        "PROPPATCH" => match request::parse_proppatch(&prefix.data, truncated) {
            Ok(patch) if !patch.our_props().is_empty() => {
                // The upstream's own answer first: a caller it would refuse (401 with
                // its challenge, 403, 404) hears that, not our per-property verdict.
                if let Some(refusal) = upstream_refusal(state, &parts, parts.uri.path()).await? {
                    return Ok(refusal);
                }
                tracing::info!(props = ?patch.our_props(), "PROPPATCH of protected properties refused");
                let href = parts.uri.path();
                let mut resp = Response::new(body::full(request::proppatch_refusal(href, &patch)));
                *resp.status_mut() = StatusCode::MULTI_STATUS;
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml; charset=utf-8"),
                );
                Ok(resp)
            }
            _ => forward(parts, prefix, state, peer).await,
        },
        _ => match request::parse_mkcol_set(&prefix.data, truncated) {
            Ok(set) if !set.our_props().is_empty() => {
                // The collection does not exist yet: ask about its parent.
                let parent = crate::identity::parent_of(parts.uri.path());
                if let Some(refusal) = upstream_refusal(state, &parts, parent).await? {
                    return Ok(refusal);
                }
                Err(Error::Precondition(
                    Precondition::CannotModifyProtectedProperty,
                    format!("{} sets {:?}", parts.method, set.our_props()),
                ))
            }
            _ => forward(parts, prefix, state, peer).await,
        },
    }
}

/// `PROPFIND Depth: 0` of `path` with the caller's credentials: the upstream's answer
/// when it refuses (anything but 207), to relay instead of answering ourselves.
async fn upstream_refusal(
    state: &State,
    parts: &Parts,
    path: &str,
) -> Result<Option<Response<Body>>, Error> {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
        <D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/></D:prop></D:propfind>";
    let caller = Caller::from_headers(&parts.headers)?;
    let depth = Some(HeaderValue::from_static("0"));
    let resp = caller
        .propfind(
            &state.upstream,
            path,
            depth,
            bytes::Bytes::from_static(BODY.as_bytes()),
        )
        .await?;
    if resp.status() == StatusCode::MULTI_STATUS {
        crate::upstream::caller::drain(resp).await;
        return Ok(None);
    }
    Ok(Some(state.upstream.relay_response(resp)))
}

async fn forward(
    parts: Parts,
    prefix: Prefix,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let resp = send(parts, prefix, state, peer).await?;
    Ok(state.upstream.relay_response(resp))
}

async fn send(
    parts: Parts,
    prefix: Prefix,
    state: &State,
    peer: SocketAddr,
) -> Result<crate::upstream::UpstreamResponse, Error> {
    let mut req = Request::from_parts(parts, prefix.into_body());
    state.upstream.prepare_request(&mut req, peer)?;
    state.upstream.send(req).await
}

async fn propfind(
    mut parts: Parts,
    prefix: Prefix,
    kind: PropfindKind,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let wanted = kind.our_props();
    // Digest cannot be replayed; such a caller simply gets no home and no look-up.
    let caller = Caller::from_headers(&parts.headers).ok();
    let homes = match &caller {
        Some(c) if wanted.contains(OurProp::ServerUrl) => {
            home_paths(state, c, parts.uri.path()).await
        }
        _ => Vec::new(),
    };
    let trust_hints = match &kind {
        PropfindKind::Prop(names) => names.iter().any(is_resourcetype),
        PropfindKind::AllProp { .. } => true,
        PropfindKind::PropName | PropfindKind::Empty => false,
    };
    let calendars = match &caller {
        Some(c) if !trust_hints && !wanted.intersection(OurProps::CALENDAR).is_empty() => {
            calendars(state, c, &parts).await
        }
        _ => Arc::default(),
    };

    parts.headers.remove(header::ACCEPT_ENCODING);
    let resp = send(parts, prefix, state, peer).await?;
    let mut resp = state.upstream.relay_response(resp);
    if !rewritable(&resp) {
        return Ok(resp);
    }
    let plan = Plan {
        wanted,
        values: Values {
            server_url: None,
            max_size: state.config.attachments.max_attachment_size,
            max_per_resource: state.config.attachments.max_attachments_per_resource,
        },
        names_only: kind.names_only(),
    };
    let classifier = Classifier {
        homes,
        calendars,
        trust_hints,
    };
    let rewriter = Rewriter::new(plan, move |href: &str, hints: ResourceHints| {
        classifier.classify(href, hints)
    });
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    let (parts, inner) = resp.into_parts();
    let body = Rewritten {
        inner,
        rewriter: Some(rewriter),
        trailers: None,
        span: tracing::Span::current(),
    };
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

fn is_resourcetype(name: &QName) -> bool {
    name.ns.as_deref() == Some(DAV_NS) && name.local == "resourcetype"
}

/// A `207` with an XML media type (RFC 4918 §8.2: `application/xml` or `text/xml`; any
/// `+xml` type too) and no content coding.
fn rewritable(resp: &Response<Body>) -> bool {
    if resp.status() != StatusCode::MULTI_STATUS {
        return false;
    }
    let h = resp.headers();
    let coded = h
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    let media = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let xml = media == "application/xml" || media == "text/xml" || media.ends_with("+xml");
    if !xml || coded {
        tracing::warn!(
            content_type = %media,
            coded,
            "207 answer to a PROPFIND naming managed-attachment properties is not plain XML; passed through"
        );
    }
    xml && !coded
}

/// The caller's calendar homes, normalised; none when the caller cannot be resolved.
/// Resolved from `resource`, the collection the PROPFIND addresses.
async fn home_paths(state: &State, caller: &Caller, resource: &str) -> Vec<String> {
    match state
        .identity
        .resolve(&state.upstream, caller, resource)
        .await
    {
        Ok(Some(Resolved::Known(id))) => id.homes.iter().map(|h| normalize_href(h)).collect(),
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "identity not resolved; no calendar home in this PROPFIND");
            Vec::new()
        }
    }
}

/// Decides what one `DAV:response` is (see the module docs).
struct Classifier {
    homes: Vec<String>,
    calendars: Arc<HashSet<String>>,
    trust_hints: bool,
}

impl Classifier {
    fn classify(&self, href: &str, hints: ResourceHints) -> ResourceKind {
        let path = normalize_href(href);
        if self.homes.contains(&path) {
            ResourceKind::Home
        } else if self.trust_hints && hints.resourcetype_seen {
            if hints.calendar {
                ResourceKind::Calendar
            } else {
                ResourceKind::Other
            }
        } else if self.calendars.contains(&path) {
            ResourceKind::Calendar
        } else {
            ResourceKind::Other
        }
    }
}

/// An href as a comparable path: the path of an absolute URL, percent-decoded, without
/// trailing slashes (`/` stays `/`).
fn normalize_href(href: &str) -> String {
    let href = href.trim();
    let path = match url::Url::parse(href) {
        Ok(u) if u.has_host() => u.path().to_owned(),
        _ => href.to_owned(),
    };
    let decoded = percent_encoding::percent_decode_str(&path).decode_utf8_lossy();
    let trimmed = decoded.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

// === calendar look-up ===

type CacheKey = ([u8; 32], String, String);
/// The normalised hrefs of calendars found by one look-up.
type Calendars = Arc<HashSet<String>>;

struct CalendarCache {
    keys: crate::cache::CredentialHash,
    entries: crate::cache::TtlCache<CacheKey, Calendars>,
}

/// Process-wide: the look-ups are a pure function of (credentials, URL, Depth) and the
/// upstream, of which there is one per process.
fn cache() -> &'static CalendarCache {
    static CACHE: OnceLock<CalendarCache> = OnceLock::new();
    CACHE.get_or_init(|| CalendarCache {
        keys: crate::cache::CredentialHash::default(),
        entries: crate::cache::TtlCache::new(CALENDARS_TTL, CALENDARS_CACHE_SIZE),
    })
}

impl CalendarCache {
    fn key_for(&self, caller: &Caller, path: &str, depth: &str) -> CacheKey {
        (
            self.keys.of(caller.authorization()),
            path.to_owned(),
            depth.to_owned(),
        )
    }

    fn get(&self, key: &CacheKey) -> Option<Calendars> {
        self.entries.get(key)
    }

    fn put(&self, key: CacheKey, set: Calendars) {
        self.entries.put(key, set);
    }
}

const RESOURCETYPE_PROPFIND: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
    <D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/></D:prop></D:propfind>";

/// The normalised hrefs of the calendars among the resources the PROPFIND in `parts`
/// covers, asked of the upstream with the caller's credentials (cached).
async fn calendars(state: &State, caller: &Caller, parts: &Parts) -> Arc<HashSet<String>> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let depth = parts.headers.get("depth").cloned();
    let depth_text = depth
        .as_ref()
        .map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned())
        .unwrap_or_default();
    let cache = cache();
    let key = cache.key_for(caller, &path, &depth_text);
    if let Some(set) = cache.get(&key) {
        return set;
    }
    match lookup_calendars(state, caller, &path, depth).await {
        Ok(set) => {
            let set = Arc::new(set);
            cache.put(key, set.clone());
            set
        }
        Err(Lookup::Refused(status)) => {
            // Usually 401/403 for a caller the upstream does not know; its own answer to
            // the PROPFIND will say so.
            tracing::debug!(%path, %status, "resourcetype look-up refused; no calendar limits in this PROPFIND");
            Arc::default()
        }
        Err(Lookup::Failed(why)) => {
            tracing::warn!(%path, error = %why, "resourcetype look-up failed; no calendar limits in this PROPFIND");
            Arc::default()
        }
    }
}

/// Why a `DAV:resourcetype` look-up gave nothing.
enum Lookup {
    /// The upstream answered something else than `207`.
    Refused(StatusCode),
    Failed(String),
}

async fn lookup_calendars(
    state: &State,
    caller: &Caller,
    path: &str,
    depth: Option<HeaderValue>,
) -> Result<HashSet<String>, Lookup> {
    let failed = |e: &dyn std::fmt::Display| Lookup::Failed(e.to_string());
    let resp = caller
        .propfind(
            &state.upstream,
            path,
            depth,
            bytes::Bytes::from_static(RESOURCETYPE_PROPFIND.as_bytes()),
        )
        .await
        .map_err(|e| failed(&e))?;
    if resp.status() != StatusCode::MULTI_STATUS {
        let status = resp.status();
        attach::drain(resp).await;
        return Err(Lookup::Refused(status));
    }
    let mut found = HashSet::new();
    let plan = Plan {
        wanted: OurProps::CALENDAR,
        values: Values {
            server_url: None,
            max_size: 0,
            max_per_resource: 0,
        },
        names_only: true,
    };
    // The rewriter is used as a bounded streaming parser; its output is discarded.
    let mut parser = Rewriter::new(plan, |href: &str, hints: ResourceHints| {
        if hints.calendar && found.len() < MAX_CALENDARS {
            found.insert(normalize_href(href));
        }
        ResourceKind::Other
    });
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(&e))?;
        if let Some(data) = frame.data_ref() {
            parser.feed(data).map_err(|e| failed(&e))?;
        }
    }
    let (_, stats) = parser.finish_with_stats().map_err(|e| failed(&e))?;
    if let Some(e) = stats.error {
        return Err(failed(&e));
    }
    Ok(found)
}

// === request body prefix ===

/// The request body as this route reads it.
type RequestBody = body::Lingering<body::IdleTimeout<Incoming>>;

/// The first bytes of a request body and, when the body was longer, the rest unread.
struct Prefix {
    data: Bytes,
    trailers: Option<HeaderMap>,
    rest: Option<RequestBody>,
}

impl Prefix {
    /// The original body again: the prefix, then whatever is still to come.
    fn into_body(self) -> Body {
        if self.rest.is_none() && self.trailers.is_none() {
            return body::full(self.data);
        }
        let mut head: Vec<Result<Frame<Bytes>, BoxError>> = Vec::new();
        if !self.data.is_empty() {
            head.push(Ok(Frame::data(self.data)));
        }
        if let Some(t) = self.trailers {
            head.push(Ok(Frame::trailers(t)));
        }
        let tail = match self.rest {
            Some(rest) => TryStreamExt::map_err(BodyStream::new(rest), BoxError::from).boxed(),
            None => stream::empty().boxed(),
        };
        StreamBody::new(stream::iter(head).chain(tail)).boxed_unsync()
    }
}

/// Reads until the body ends or more than `bound` bytes arrived.
async fn read_prefix(mut incoming: RequestBody, bound: usize) -> Result<Prefix, Error> {
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = incoming.frame().await {
        let frame =
            frame.map_err(|e| Error::BadRequest(format!("reading the request body: {e}")))?;
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > bound {
                    return Ok(Prefix {
                        data: data.freeze(),
                        trailers: None,
                        rest: Some(incoming),
                    });
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok(Prefix {
        data: data.freeze(),
        trailers,
        rest: None,
    })
}

// === rewritten response body ===

/// The upstream's multistatus, streamed through the rewriter.
struct Rewritten<F>
where
    F: FnMut(&str, ResourceHints) -> ResourceKind,
{
    inner: Body,
    rewriter: Option<Rewriter<F>>,
    trailers: Option<HeaderMap>,
    span: tracing::Span,
}

impl<F> Rewritten<F>
where
    F: FnMut(&str, ResourceHints) -> ResourceKind,
{
    /// Ends the rewrite; returns what it still held.
    fn finish(&mut self) -> Bytes {
        let Some(rw) = self.rewriter.take() else {
            return Bytes::new();
        };
        let _enter = self.span.enter();
        match rw.finish_with_stats() {
            Ok((rest, stats)) => {
                if let Some(e) = &stats.error {
                    tracing::warn!(error = %e, "upstream multistatus not understood; rest passed through unchanged");
                }
                if stats.oversized > 0 {
                    tracing::warn!(
                        oversized = stats.oversized,
                        "multistatus responses too large to rewrite passed through unchanged"
                    );
                }
                tracing::debug!(
                    responses = stats.responses,
                    rewritten = stats.rewritten,
                    held = stats.buffer_high_water,
                    "multistatus rewritten"
                );
                rest
            }
            // PassThrough mode never fails; nothing was held back if it did.
            Err(e) => {
                tracing::warn!(error = %e, "multistatus rewrite failed");
                Bytes::new()
            }
        }
    }
}

impl<F> http_body::Body for Rewritten<F>
where
    F: FnMut(&str, ResourceHints) -> ResourceKind + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(rw) = this.rewriter.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(f) => f,
            };
            let out = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => match rw.feed(&chunk) {
                        Ok(out) => out,
                        Err(e) => return Poll::Ready(Some(Err(e.into()))),
                    },
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.finish()
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.finish(),
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rewriter.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_compare_as_decoded_paths_without_trailing_slash() {
        assert_eq!(normalize_href("/user1/"), "/user1");
        assert_eq!(normalize_href("/user1"), "/user1");
        assert_eq!(normalize_href("http://h:1/user%201/cal/"), "/user 1/cal");
        assert_eq!(normalize_href(" /a%2Fb/ "), "/a/b");
        assert_eq!(normalize_href("/"), "/");
        assert_eq!(normalize_href("http://h:1"), "/");
    }

    fn classifier(trust_hints: bool) -> Classifier {
        Classifier {
            homes: vec![normalize_href("/user1/calendars/")],
            calendars: Arc::new(HashSet::from([normalize_href("/user1/calendars/work/")])),
            trust_hints,
        }
    }

    const CAL: ResourceHints = ResourceHints {
        resourcetype_seen: true,
        collection: true,
        calendar: true,
    };
    const PLAIN: ResourceHints = ResourceHints {
        resourcetype_seen: true,
        collection: true,
        calendar: false,
    };

    #[test]
    fn the_home_is_recognised_by_href_whatever_its_resourcetype() {
        let c = classifier(true);
        assert_eq!(c.classify("/user1/calendars", PLAIN), ResourceKind::Home);
        assert_eq!(
            c.classify("http://x/user1/calendars/", ResourceHints::default()),
            ResourceKind::Home
        );
        assert_eq!(c.classify("/user1/", PLAIN), ResourceKind::Other);
    }

    #[test]
    fn trusted_hints_decide_calendars_and_the_lookup_decides_otherwise() {
        let c = classifier(true);
        assert_eq!(
            c.classify("/user1/calendars/x/", CAL),
            ResourceKind::Calendar
        );
        assert_eq!(
            c.classify("/user1/calendars/work/", PLAIN),
            ResourceKind::Other
        );
        assert_eq!(
            c.classify("/user1/calendars/work/", ResourceHints::default()),
            ResourceKind::Calendar
        );
        // propname: the empty resourcetype says nothing; the look-up decides.
        let c = classifier(false);
        assert_eq!(
            c.classify("/user1/calendars/work/", PLAIN),
            ResourceKind::Calendar
        );
        assert_eq!(c.classify("/user1/calendars/x/", CAL), ResourceKind::Other);
    }
}
