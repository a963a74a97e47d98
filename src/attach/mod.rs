//! calattach's own routes: the attachment POST (RFC 8607 §3.3–3.6, DESIGN §4) and
//! downloads (RFC 8607 §3.10, DESIGN §6).

pub mod access;
pub mod commit;
pub mod conditional;
pub mod download;
pub mod edit;
pub mod guard;
pub mod inline;
pub mod migrate;
pub mod params;
pub mod post;
pub mod scan;

pub use crate::upstream::caller::{
    drain, fetch_object, validators, Caller, Fetched, Object, Validators,
};
pub use crate::upstream::origin::{attachment_url, url_base};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::Error;

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
/// is missing; for a download, the resource [`download`] checks downloads against) — never
/// `/`, which need not be the DAV server (Baïkal's is `/dav.php/`). When the upstream
/// names none, `Basic realm="calattach"`.
pub async fn challenge_for(state: &crate::state::State, path: &str) -> Vec<HeaderValue> {
    let anonymous = Caller::anonymous();
    let prefix = &state.config.attachments.prefix;
    let mut candidates = Vec::new();
    if crate::router::under_prefix(path, prefix) {
        candidates.push(download::dav_resource(None));
    } else {
        candidates.push(path.to_owned());
        let collection = crate::identity::parent_collection(path);
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

/// A response about a calendar object: `Content-Location` (its public URL), its `ETag`
/// and `Schedule-Tag`, and — when `representation` is given, for `Prefer:
/// return=representation` (RFC 7240, RFC 8144 §3.2) — the object itself with
/// `Preference-Applied`; otherwise an empty body.
pub fn object_response(
    state: &crate::state::State,
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
