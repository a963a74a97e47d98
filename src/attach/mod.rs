//! calattach's own routes: the attachment POST (RFC 8607 §3.3–3.6, DESIGN §4) and
//! downloads (RFC 8607 §3.10, DESIGN §6).

pub mod access;
pub mod commit;
pub mod conditional;
pub mod get;
pub mod guard;
pub mod params;
pub mod post;
pub mod scan;
pub mod slots;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::body::{self, Body};
use crate::error::{Error, Precondition};
use crate::proxy::Upstream;
use crate::store::AttachmentId;

use conditional::Validators;

/// Who is asking, as far as calattach can tell without asking the upstream.
///
/// Credentials are replayed verbatim on calattach's internal upstream requests, so the
/// upstream's access rules stay the authority (DESIGN §5). Digest cannot be replayed
/// (the response hash covers method and URI), so it is refused on owned routes.
#[derive(Clone)]
pub struct Caller {
    authorization: Option<HeaderValue>,
    /// The Basic user name; `None` for Bearer or anonymous callers.
    pub user: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential itself.
        f.debug_struct("Caller")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Result<Caller, Error> {
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller {
                authorization: None,
                user: None,
            });
        };
        let text = auth.to_str().unwrap_or("");
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        let user = if scheme.eq_ignore_ascii_case("basic") {
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|s| s.split_once(':').map(|(u, _)| u.to_owned()))
        } else if scheme.eq_ignore_ascii_case("digest") {
            return Err(Error::unauthorized(crate::error::DIGEST_REFUSAL.trim_end()));
        } else {
            None
        };
        Ok(Caller {
            authorization: Some(auth.clone()),
            user,
        })
    }

    /// The `Authorization` value to replay, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// `PROPFIND` of `path` with the caller's credentials: the XML `body`, `Depth` as
    /// given (`None` = none sent). Connect failures are retried (nothing was sent).
    pub async fn propfind(
        &self,
        upstream: &Upstream,
        path: &str,
        depth: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<crate::proxy::UpstreamResponse, Error> {
        let method = Method::from_bytes(b"PROPFIND").map_err(|e| Error::Internal(e.to_string()))?;
        upstream
            .send_retrying(|| {
                let mut req =
                    self.request(upstream, method.clone(), path, body::full(body.clone()))?;
                if let Some(d) = &depth {
                    req.headers_mut().insert("depth", d.clone());
                }
                req.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml; charset=utf-8"),
                );
                Ok(req)
            })
            .await
    }

    pub fn is_anonymous(&self) -> bool {
        self.authorization.is_none()
    }

    /// An internal request to the upstream carrying the caller's credentials.
    pub fn request(
        &self,
        upstream: &Upstream,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Request<Body>, Error> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = upstream.uri_for(path)?;
        req.headers_mut()
            .insert(header::HOST, upstream.authority().clone());
        if let Some(a) = &self.authorization {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        Ok(req)
    }
}

/// Refuses an attachment POST a browser sends on behalf of a page from another site.
///
/// Browsers keep Basic credentials for an origin once a user signed in there (to open a
/// download link, say), and an HTML form on any site can make them POST to it without a
/// CORS preflight. A browser marks such a request: `Sec-Fetch-Site: cross-site` or
/// `same-site` (Fetch Metadata), and an `Origin` naming the page's origin (RFC 6454 §7;
/// `null` for opaque ones). Refused: either mark, unless the `Origin` is
/// `server.public_url`'s or one of `server.allowed_origins` (browser-based CalDAV
/// clients served from elsewhere). CalDAV clients send neither header; a page served from
/// calattach's own origin sends `same-origin`.
pub fn refuse_cross_site(
    headers: &HeaderMap,
    server: &crate::config::ServerConfig,
) -> Result<(), Error> {
    let origin = headers.get(header::ORIGIN);
    let allowed = |o: &HeaderValue| {
        let Some(origin) = o.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
            return false;
        };
        let origin = origin.origin();
        origin == server.public_url.origin() || server.allowed_origins.contains(&origin)
    };
    if let Some(o) = origin {
        if !allowed(o) {
            return Err(Error::CrossSite(format!(
                "origin {:?} is neither server.public_url nor in server.allowed_origins",
                String::from_utf8_lossy(o.as_bytes())
            )));
        }
        return Ok(());
    }
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if let Some(site) = site {
        if site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site") {
            return Err(Error::CrossSite(format!(
                "sec-fetch-site {:?} without an allowed origin",
                String::from_utf8_lossy(site)
            )));
        }
    }
    Ok(())
}

/// The upstream's own `WWW-Authenticate` challenges (RFC 9110 §11.6.1) for a `401`
/// calattach answers itself about `path`: learned by asking the upstream without
/// credentials about the resource the request addresses (its collection when the object
/// is missing; for a download, the resource [`get`] checks downloads against) — never
/// `/`, which need not be the DAV server (Baïkal's is `/dav.php/`). When the upstream
/// names none, `Basic realm="calattach"`.
pub async fn challenge_for(state: &crate::server::State, path: &str) -> Vec<HeaderValue> {
    let anonymous = Caller {
        authorization: None,
        user: None,
    };
    let prefix = &state.config.attachments.prefix;
    let mut candidates = Vec::new();
    if crate::router::under_prefix(path, prefix) {
        candidates.push(get::dav_resource(None));
    } else {
        candidates.push(path.to_owned());
        let collection = access::parent_collection(path);
        if collection != path && collection != "/" {
            candidates.push(collection.to_owned());
        }
    }
    for candidate in candidates {
        let Ok(resp) =
            crate::identity::ask_principal(&state.upstream, &anonymous, &candidate).await
        else {
            break;
        };
        let status = resp.status();
        let www: Vec<HeaderValue> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .cloned()
            .collect();
        drain(resp).await;
        if status == StatusCode::UNAUTHORIZED && !www.is_empty() {
            return www;
        }
    }
    vec![HeaderValue::from_static("Basic realm=\"calattach\"")]
}

/// A calendar object as read from the upstream.
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Bytes,
    pub validators: Validators,
}

/// What a GET of a calendar object gave.
pub enum Fetched {
    Object(Object),
    /// The upstream's answer to relay as it is (401 with its challenge, 403, 404, …).
    Relay(Response<Body>),
}

/// GETs `path` with the caller's credentials, reading at most `max_size` bytes
/// (RFC 8607 §7: objects above the bound are refused, `CALDAV:max-resource-size`).
pub async fn fetch_object(
    upstream: &Upstream,
    caller: &Caller,
    path: &str,
    max_size: u64,
) -> Result<Fetched, Error> {
    let resp = upstream
        .send_retrying(|| caller.request(upstream, Method::GET, path, body::empty()))
        .await?;
    if resp.status() != StatusCode::OK {
        return Ok(Fetched::Relay(upstream.relay_response(resp)));
    }
    let validators = validators(resp.headers());
    let is_calendar = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/calendar")
        });
    if !is_calendar {
        return Err(Error::BadRequest(format!(
            "{path} is not a calendar object resource"
        )));
    }
    let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
    let bytes = match Limited::new(resp.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::Precondition(
                Precondition::MaxResourceSize,
                format!("{path} is larger than attachments.max_object_size"),
            ))
        }
        Err(e) => {
            tracing::warn!(%path, error = %e, "reading calendar object from upstream failed");
            return Err(Error::UpstreamUnavailable);
        }
    };
    Ok(Fetched::Object(Object { bytes, validators }))
}

pub fn validators(headers: &HeaderMap) -> Validators {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        etag: get("etag"),
        schedule_tag: get("schedule-tag"),
    }
}

/// `<public_url><prefix>/`: what every attachment URI starts with.
pub fn url_base(upstream: &Upstream, prefix: &str) -> String {
    format!(
        "{}{}/",
        upstream.public_url().as_str().trim_end_matches('/'),
        prefix
    )
}

/// `<public_url><prefix>/<id>/<filename>`: the `ATTACH` value and `Location`. The last
/// segment is only a readable name (some clients show it); the id alone identifies.
pub fn attachment_url(
    upstream: &Upstream,
    prefix: &str,
    id: &AttachmentId,
    filename: &str,
) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "{}{}/{}",
        url_base(upstream, prefix),
        id.as_str(),
        percent_encoding::utf8_percent_encode(filename, SEGMENT)
    )
}

/// Reads the body of an upstream response we are about to drop, so the pooled connection
/// can be reused (bounded; larger bodies just close the connection).
pub async fn drain(resp: crate::proxy::UpstreamResponse) {
    let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
}

/// A response about a calendar object: `Content-Location` (its public URL), its `ETag`
/// and `Schedule-Tag`, and — when `representation` is given, for `Prefer:
/// return=representation` (RFC 7240, RFC 8144 §3.2) — the object itself with
/// `Preference-Applied`; otherwise an empty body.
pub fn object_response(
    state: &crate::server::State,
    status: StatusCode,
    path: &str,
    validators: &Validators,
    representation: Option<Bytes>,
) -> Response<Body> {
    let with_body = representation.is_some();
    let mut resp = Response::new(match representation {
        Some(bytes) => body::full(bytes),
        None => body::empty(),
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let public = format!(
        "{}{}",
        state.upstream.public_url().as_str().trim_end_matches('/'),
        path
    );
    if let Ok(v) = HeaderValue::from_str(&public) {
        h.insert(header::CONTENT_LOCATION, v);
    }
    for (name, v) in [
        (header::ETAG, &validators.etag),
        (
            HeaderName::from_static("schedule-tag"),
            &validators.schedule_tag,
        ),
    ] {
        if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    if with_body {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/calendar; charset=utf-8"),
        );
        h.insert(
            "preference-applied",
            HeaderValue::from_static("return=representation"),
        );
    } else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    resp
}
