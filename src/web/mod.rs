//! The attachment web page: `GET <prefix>/` and its assets under `<prefix>/_/`.
//!
//! For clients that cannot upload managed attachments themselves (docs/clients.md). The
//! page is static and public: HTML, CSS and JavaScript embedded in the binary, no build
//! step. Everything it does afterwards goes through the routes every client uses, from
//! the proxy's own origin: `PROPFIND` and `REPORT` (forwarded, RFC 4791 §7.8 for the
//! `calendar-query`), the attachment `POST` (RFC 8607 §3.4–3.6) and downloads (§3.10).
//! Sign-in is the browser's Basic prompt, raised by the upstream's own `401` challenge on
//! the page's first `PROPFIND`; the page never sees or stores the password.
//!
//! Assets live under `_/`, a segment that can never be an attachment id (ids are 22
//! URL-safe base64 characters, `store::AttachmentId::parse`), so the page and downloads
//! never collide. Every response carries a strict `Content-Security-Policy` (nothing from
//! other origins, no inline script or style, no framing, no form posts), `nosniff`, and a
//! strong `ETag` with `Cache-Control: no-cache`, so browsers revalidate with `304`.

use std::sync::OnceLock;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::body::{self, Body};
use crate::error::Error;
use crate::state::State;

/// The policy of every page response (no inline code, nothing from other origins).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("app.css"),
    },
];

/// The strong `ETag` of each asset, in [`ASSETS`] order: a hash of its bytes.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// `GET`/`HEAD` of the page or an asset. With `attachments.web_page = false` the path is
/// a download path like any other.
pub async fn handle(req: Request<Incoming>, state: &State) -> Result<Response<Body>, Error> {
    if !state.config.attachments.web_page {
        return crate::attach::download::handle(req, state).await;
    }
    let prefix = state.config.attachments.prefix.as_str();
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix(prefix) else {
        return Err(Error::NotFound);
    };
    if rest.is_empty() {
        // `<prefix>` without the slash: the page's relative asset URLs need it.
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        let location = format!("{prefix}/");
        resp.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(|e| Error::Internal(e.to_string()))?,
        );
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Ok(resp);
    }
    let name = if rest == "/" {
        ""
    } else {
        rest.strip_prefix(crate::router::ASSET_DIR).unwrap_or(rest)
    };
    let Some(index) = ASSETS.iter().position(|a| a.name == name && rest != "/_/") else {
        return Ok(not_found());
    };
    Ok(serve(
        index,
        req.headers().get(header::IF_NONE_MATCH),
        req.method() == Method::HEAD,
    ))
}

fn serve(index: usize, if_none_match: Option<&HeaderValue>, head: bool) -> Response<Body> {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim() == "*"
                || v.split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == etag)
        });
    let mut resp = if fresh {
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(if head {
            body::empty()
        } else {
            body::full(asset.bytes)
        });
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
        r
    };
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    security_headers(resp.headers_mut());
    resp
}

fn not_found() -> Response<Body> {
    let text = "not found\n";
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    security_headers(h);
    resp
}

fn security_headers(h: &mut http::HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_paths_are_the_prefix_its_slash_and_the_asset_dir() {
        let p = "/.attachments";
        assert!(crate::router::is_page_path("/.attachments", p));
        assert!(crate::router::is_page_path("/.attachments/", p));
        assert!(crate::router::is_page_path("/.attachments/_/app.js", p));
        assert!(!crate::router::is_page_path(
            "/.attachments/AAAAAAAAAAAAAAAAAAAAAA",
            p
        ));
        assert!(!crate::router::is_page_path(
            "/.attachments/AAAAAAAAAAAAAAAAAAAAAA/_/x",
            p
        ));
        assert!(!crate::router::is_page_path("/.attachmentsX/", p));
    }

    #[test]
    fn the_asset_dir_is_never_an_attachment_id() {
        assert!(crate::store::AttachmentId::parse("_").is_none());
        // Every id is 22 characters long: `_` alone, the first segment of every asset
        // path, is never one.
        assert_eq!(crate::store::AttachmentId::new().as_str().len(), 22);
    }

    #[test]
    fn etags_are_strong_and_distinct() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        assert!(tags.iter().all(|t| t.starts_with('"') && t.len() == 26));
        assert_ne!(tags[0], tags[1]);
    }

    #[test]
    fn a_matching_if_none_match_is_answered_304_with_the_policy() {
        let tag = HeaderValue::from_str(&etags()[1]).unwrap();
        let resp = serve(1, Some(&tag), false);
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert!(resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let resp = serve(1, None, false);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
}
