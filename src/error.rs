//! One error type for everything calattach answers itself, mapped to HTTP in one place.
//!
//! Variants are what the client hears. RFC 8607 §3.11: a failed precondition is a `403`
//! (or `409`) whose body holds the named element as a child of a top-level `DAV:error`.
//! Where Apple's server used another name for the same condition, that name follows as a
//! second child (DESIGN §4) so RFC-based and older clients both recognise it. An upstream
//! 401/403/404 is not an `Error`: it is a response to relay.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// RFC 8607 §3.11 preconditions (and the WebDAV ones calattach reports itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    ValidAction,
    ValidRid,
    ValidManagedId,
    ValidManagedIdParameter,
    MaxAttachmentSize,
    MaxAttachmentsPerResource,
    /// `DAV:cannot-modify-protected-property` (RFC 4918 §16), for the §6 properties.
    CannotModifyProtectedProperty,
    /// RFC 4791 §5.3.2.1 `CALDAV:max-resource-size`: an object too large to edit.
    MaxResourceSize,
    /// RFC 4791 §5.3.2.1 `CALDAV:max-instances`: too many overridden instances to edit
    /// (RFC 8607 §7, processing-time attacks).
    MaxInstances,
    /// RFC 4791 §5.3.2.1 `CALDAV:supported-calendar-component`-like refusal of a target
    /// that is not a calendar object resource; reported as `CALDAV:valid-calendar-data`.
    ValidCalendarData,
    /// An attendee's copy: attendees may not add, update or remove managed attachments
    /// (RFC 8607 §3.12.2). RFC 8607 names no element; these are Apple CalendarServer's
    /// (`CALDAV:valid-attachment-add|update|remove`), which CalDAVTester expects.
    ValidAttachmentAdd,
    ValidAttachmentUpdate,
    ValidAttachmentRemove,
}

impl Precondition {
    /// The element names, `(namespace prefix, local name)`, RFC name first.
    fn elements(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Precondition::ValidAction => &[("C", "valid-action"), ("C", "valid-action-parameter")],
            Precondition::ValidRid => &[("C", "valid-rid"), ("C", "valid-rid-parameter")],
            Precondition::ValidManagedId => &[
                ("C", "valid-managed-id"),
                ("C", "valid-managed-id-parameter"),
            ],
            Precondition::ValidManagedIdParameter => &[
                ("C", "valid-managed-id-parameter"),
                ("C", "valid-managed-id"),
            ],
            Precondition::MaxAttachmentSize => &[("C", "max-attachment-size")],
            Precondition::MaxAttachmentsPerResource => &[
                ("C", "max-attachments-per-resource"),
                ("C", "max-attachments"),
            ],
            Precondition::CannotModifyProtectedProperty => {
                &[("D", "cannot-modify-protected-property")]
            }
            Precondition::MaxResourceSize => &[("C", "max-resource-size")],
            Precondition::MaxInstances => &[("C", "max-instances")],
            Precondition::ValidCalendarData => &[("C", "valid-calendar-data")],
            Precondition::ValidAttachmentAdd => &[("C", "valid-attachment-add")],
            Precondition::ValidAttachmentUpdate => &[("C", "valid-attachment-update")],
            Precondition::ValidAttachmentRemove => &[("C", "valid-attachment-remove")],
        }
    }

    /// The `application/xml` body: `<D:error>` with the elements as children.
    pub fn body(self) -> String {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <D:error xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">",
        );
        for (prefix, name) in self.elements() {
            s.push_str(&format!("<{prefix}:{name}/>"));
        }
        s.push_str("</D:error>\n");
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `403` with the precondition body; the detail is logged, not sent.
    #[error("precondition {0:?} failed: {1}")]
    Precondition(Precondition, String),
    /// `409`: the condition can be fixed by the user (RFC 8607 §3.11), e.g. the object
    /// kept changing under a bounded number of commit retries.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("forbidden")]
    Forbidden,
    /// `415`: a body the guard cannot read as it would reach the upstream (a compressed
    /// body, a charset other than UTF-8); nothing was sent.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// `403` with `DAV:need-privileges` naming `DAV:read` on `href` (RFC 3744 §7.1.1,
    /// which RFC 4791 §1.3 requires CalDAV servers to support): a refused download.
    #[error("no read access to {href}")]
    NeedRead { href: String },
    /// `403`: a browser request from another site (Fetch Metadata, `Origin`); nothing
    /// was read or asked.
    #[error("cross-site request refused: {0}")]
    CrossSite(String),
    #[error("not found")]
    NotFound,
    #[error("gone")]
    Gone,
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// `502` like [`Error::UpstreamUnavailable`], and the request was never sent (no
    /// connection could be made), so it certainly changed nothing upstream.
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    /// `502`: the upstream's certificate or TLS protocol was refused (the message names
    /// the URL and the reason); nothing was sent.
    #[error("{0}")]
    UpstreamTls(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// `502`: the upstream answered an internal request with something calattach cannot
    /// use (a `404` where its own resource should be, an HTML page, an unparsable body);
    /// logged with the URL and status where it was seen.
    #[error("unusable upstream answer: {0}")]
    UpstreamAnswer(String),
    /// `503 Retry-After`: the object store is unreachable or too busy; nothing changed.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    #[error("storage error: {0}")]
    Storage(String),
    /// `503 Retry-After`: too many uploads in progress; nothing was read or written.
    #[error("busy: {0}")]
    Busy(String),
    /// `507`: the store is full (RFC 4918 §11.5); nothing changed.
    #[error("storage full: {0}")]
    InsufficientStorage(String),
    /// `401` with the upstream's `WWW-Authenticate` challenges (RFC 9110 §11.6.1). An
    /// empty `challenge` is filled in from the upstream before the response is built
    /// (`server::handle`), so every `401` calattach sends carries one.
    #[error("unauthorized: {message}")]
    Unauthorized {
        message: String,
        challenge: Vec<HeaderValue>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The message of the `401` that answers Digest credentials on an owned route (they
/// cannot be replayed on calattach's own upstream requests).
pub const DIGEST_REFUSAL: &str = "Digest authentication cannot be used for attachment requests: \
calattach must replay the credentials on its own requests to the calendar server, and a Digest \
response is bound to one method and URI. Use Basic authentication (over TLS) or a bearer token. \
If the calendar server offers only Digest, switch it to Basic: on Baikal set dav_auth_type to \
Basic (admin page: Settings, WebDAV authentication type; or dav_auth_type: 'Basic' in \
config/baikal.yaml).\n";

/// `<D:error><D:need-privileges>` for `DAV:read` on `href` (RFC 3744 §7.1.1).
fn need_read(href: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <D:error xmlns:D=\"DAV:\"><D:need-privileges><D:resource><D:href>{}</D:href>\
         <D:privilege><D:read/></D:privilege></D:resource></D:need-privileges></D:error>\n",
        quick_xml::escape::escape(href)
    )
}

/// `a: b: c` for logging an error with its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// What calattach answers when the store fails: `507` when it is full, `503` with
/// `Retry-After` when it is unreachable or keeps failing (a later retry may succeed), `500`
/// otherwise. Every failure is counted (`calattach_store_errors_total`).
impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        crate::metrics::get().store_error(&e);
        if matches!(e, crate::store::StoreError::Full { .. }) {
            Error::InsufficientStorage(error_chain(&e))
        } else if e.is_unavailable() {
            Error::StorageUnavailable(error_chain(&e))
        } else {
            Error::Storage(error_chain(&e))
        }
    }
}

impl Error {
    /// The upstream's refusal of an internal request as calattach's own answer: its
    /// `401` with its challenges, or `403`.
    pub fn refused<B>(upstream: &Response<B>) -> Error {
        if upstream.status() == StatusCode::UNAUTHORIZED {
            Error::Unauthorized {
                message: "the calendar server refused the credentials".into(),
                challenge: upstream
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .cloned()
                    .collect(),
            }
        } else {
            Error::Forbidden
        }
    }

    /// A `401` whose challenge is learned from the upstream before it is sent.
    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::Unauthorized {
            message: message.into(),
            challenge: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Config(_) | Error::Internal(_) | Error::Storage(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Precondition(..) => StatusCode::FORBIDDEN,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Forbidden | Error::NeedRead { .. } | Error::CrossSite(_) => {
                StatusCode::FORBIDDEN
            }
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Gone => StatusCode::GONE,
            Error::UpstreamUnavailable
            | Error::UpstreamUnreachable
            | Error::UpstreamAnswer(_)
            | Error::UpstreamTls(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::StorageUnavailable(_) | Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The only place an error becomes a status line and body.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::info!(error = %self, "request refused");
        }
        let (content_type, text) = match &self {
            Error::Precondition(p, _) => ("application/xml; charset=utf-8", p.body()),
            Error::NeedRead { href } => ("application/xml; charset=utf-8", need_read(href)),
            Error::UpstreamUnavailable | Error::UpstreamUnreachable => (
                "text/plain; charset=utf-8",
                "502 bad gateway: the calendar server is unreachable\n".to_owned(),
            ),
            Error::UpstreamAnswer(_) => (
                "text/plain; charset=utf-8",
                "502 bad gateway: the calendar server gave an answer calattach cannot use \
                 (see calattach's log)\n"
                    .to_owned(),
            ),
            Error::UpstreamTls(msg) => (
                "text/plain; charset=utf-8",
                format!("502 bad gateway: {msg}\n"),
            ),
            Error::UpstreamTimeout => (
                "text/plain; charset=utf-8",
                "504 gateway timeout: the calendar server did not answer in time\n".to_owned(),
            ),
            Error::Unauthorized { message: msg, .. }
            | Error::BadRequest(msg)
            | Error::UnsupportedMediaType(msg)
            | Error::Conflict(msg) => ("text/plain; charset=utf-8", format!("{msg}\n")),
            Error::CrossSite(_) => (
                "text/plain; charset=utf-8",
                "attachment requests from other sites are refused\n".to_owned(),
            ),
            Error::StorageUnavailable(_) => (
                "text/plain; charset=utf-8",
                "attachment storage is unavailable, try again later\n".to_owned(),
            ),
            Error::Busy(_) => (
                "text/plain; charset=utf-8",
                "too many uploads in progress, try again later\n".to_owned(),
            ),
            _ => (
                "text/plain; charset=utf-8",
                format!(
                    "{} {}\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("").to_lowercase()
                ),
            ),
        };
        let mut resp = Response::new(body::full(text));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        match &self {
            Error::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Error::StorageUnavailable(_) | Error::Busy(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Error::Unauthorized { challenge, .. } => {
                for c in challenge {
                    h.append(header::WWW_AUTHENTICATE, c.clone());
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precondition_body_puts_rfc_element_first_then_apple_name() {
        let b = Precondition::ValidManagedIdParameter.body();
        let rfc = b.find("<C:valid-managed-id-parameter/>").unwrap();
        let apple = b.find("<C:valid-managed-id/>").unwrap();
        assert!(rfc < apple, "{b}");
        assert!(b.contains("<D:error xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">"));
        let b = Precondition::MaxAttachmentsPerResource.body();
        assert!(
            b.find("max-attachments-per-resource").unwrap()
                < b.find("<C:max-attachments/>").unwrap()
        );
    }

    #[test]
    fn precondition_is_403_with_xml_body() {
        let r = Error::Precondition(Precondition::ValidAction, "x".into()).into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/xml; charset=utf-8"
        );
    }

    #[test]
    fn unauthorized_carries_every_challenge() {
        let r = Error::Unauthorized {
            message: "no".into(),
            challenge: vec![
                HeaderValue::from_static("Basic realm=\"a\""),
                HeaderValue::from_static("Bearer"),
            ],
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let all: Vec<_> = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .collect();
        assert_eq!(all, ["Basic realm=\"a\"", "Bearer"]);
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let r = Error::MethodNotAllowed {
            allow: "GET, HEAD, OPTIONS",
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD, OPTIONS");
    }
}
