//! Request routing (DESIGN §2): decided from method, path and query — never the body.

use http::{Method, Uri};

/// Which part of calattach owns a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST <object>?action=…` (RFC 8607 §3.3): any POST whose query carries `action`.
    Attach,
    /// `GET`/`HEAD` under the attachment prefix (RFC 8607 §3.10).
    Download,
    /// `GET`/`HEAD` of `<prefix>`, `<prefix>/` and `<prefix>/_/…`: the web page
    /// (src/web), never an attachment id.
    Page,
    /// `OPTIONS` under the attachment prefix: answered by calattach.
    AttachmentOptions,
    /// Any other method under the attachment prefix: `405` (RFC 8607 §3.8, §3.9).
    AttachmentWrite,
    /// `OPTIONS` elsewhere: forwarded, then the `DAV:` token is added (RFC 8607 §3.2).
    Options,
    /// `PROPFIND`, `PROPPATCH`, `MKCALENDAR`, `MKCOL` elsewhere: the RFC 8607 §6 properties
    /// (`props::http` reads a bounded body prefix, then rewrites, refuses or forwards).
    Props,
    /// Every `PUT`, and `DELETE`, `MOVE`, `COPY` of a non-collection path: the guard
    /// (DESIGN §5) scans what would land upstream and checks the ids it introduces.
    Guard,
    /// Everything else: byte-transparent forwarding.
    Forward,
}

impl Route {
    /// The snake_case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Attach => "attach",
            Route::Download => "download",
            Route::Page => "page",
            Route::AttachmentOptions => "attachment_options",
            Route::AttachmentWrite => "attachment_write",
            Route::Options => "options",
            Route::Props => "props",
            Route::Guard => "guard",
            Route::Forward => "forward",
        }
    }
}

pub fn route(method: &Method, uri: &Uri, prefix: &str) -> Route {
    if under_prefix(uri.path(), prefix) {
        return match *method {
            Method::GET | Method::HEAD if is_page_path(uri.path(), prefix) => Route::Page,
            Method::GET | Method::HEAD => Route::Download,
            Method::OPTIONS => Route::AttachmentOptions,
            _ => Route::AttachmentWrite,
        };
    }
    match *method {
        Method::POST if has_action(uri.query()) => Route::Attach,
        Method::POST => Route::Guard,
        Method::OPTIONS => Route::Options,
        // Every PUT, also to a collection path (Radicale imports the calendar it
        // carries): the guard scans whatever can put iCalendar upstream (DESIGN §5).
        Method::PUT => Route::Guard,
        Method::DELETE if !uri.path().ends_with('/') => Route::Guard,
        _ if matches!(method.as_str(), "MOVE" | "COPY") && !uri.path().ends_with('/') => {
            Route::Guard
        }
        _ if is_props_method(method) => Route::Props,
        _ => Route::Forward,
    }
}

/// The sub-path of the prefix that holds the assets.
pub const ASSET_DIR: &str = "/_/";

/// Whether `path` (under `prefix`) is the page or one of its assets: `<prefix>`,
/// `<prefix>/` and anything under `<prefix>/_/`.
pub fn is_page_path(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some("") | Some("/") => true,
        Some(rest) => rest.starts_with(ASSET_DIR),
        None => false,
    }
}

/// `prefix` itself or anything below it; `/.attachmentsX` is not below `/.attachments`.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn is_props_method(method: &Method) -> bool {
    matches!(
        method.as_str(),
        "PROPFIND" | "PROPPATCH" | "MKCALENDAR" | "MKCOL"
    )
}

fn has_action(query: Option<&str>) -> bool {
    query.is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "action"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: &str, u: &str) -> Route {
        route(&m.parse().unwrap(), &u.parse().unwrap(), "/.attachments")
    }

    #[test]
    fn route_labels_are_snake_case() {
        assert_eq!(Route::Attach.as_str(), "attach");
        assert_eq!(Route::AttachmentOptions.as_str(), "attachment_options");
    }

    #[test]
    fn post_with_action_is_owned_and_post_without_is_forwarded() {
        assert_eq!(r("POST", "/u/c/e.ics?action=attachment-add"), Route::Attach);
        assert_eq!(r("POST", "/u/c/e.ics?rid=M&action=bogus"), Route::Attach);
        assert_eq!(r("POST", "/u/c/e.ics"), Route::Guard);
        assert_eq!(r("POST", "/u/c/e.ics?actions=x"), Route::Guard);
        assert_eq!(r("GET", "/u/c/e.ics?action=attachment-add"), Route::Forward);
    }

    #[test]
    fn attachment_prefix_routes_by_method() {
        assert_eq!(r("GET", "/.attachments/abc"), Route::Download);
        assert_eq!(r("HEAD", "/.attachments/abc/name.pdf"), Route::Download);
        assert_eq!(r("PUT", "/.attachments/abc"), Route::AttachmentWrite);
        assert_eq!(r("DELETE", "/.attachments/abc"), Route::AttachmentWrite);
        assert_eq!(
            r("POST", "/.attachments/abc?action=attachment-add"),
            Route::AttachmentWrite
        );
        assert_eq!(r("PROPPATCH", "/.attachments/abc"), Route::AttachmentWrite);
        assert_eq!(r("OPTIONS", "/.attachments/abc"), Route::AttachmentOptions);
        assert_eq!(r("GET", "/.attachmentsX/abc"), Route::Forward);
    }

    #[test]
    fn the_page_and_its_assets_are_the_page_route() {
        assert_eq!(r("GET", "/.attachments/"), Route::Page);
        assert_eq!(r("HEAD", "/.attachments"), Route::Page);
        assert_eq!(r("GET", "/.attachments/_/app.js"), Route::Page);
        assert_eq!(r("POST", "/.attachments/"), Route::AttachmentWrite);
        assert_eq!(
            r("GET", "/.attachments/AAAAAAAAAAAAAAAAAAAAAA/_/x"),
            Route::Download
        );
    }

    #[test]
    fn property_methods_outside_the_prefix_are_the_props_route() {
        for m in ["PROPFIND", "PROPPATCH", "MKCALENDAR", "MKCOL"] {
            assert_eq!(r(m, "/user1/calendar/"), Route::Props, "{m}");
            assert_eq!(r(m, "/.attachments/abc"), Route::AttachmentWrite, "{m}");
        }
        assert_eq!(r("REPORT", "/user1/calendar/"), Route::Forward);
    }

    #[test]
    fn every_put_and_object_writes_are_the_guard_route() {
        assert_eq!(r("PUT", "/user1/calendar/e.ics"), Route::Guard);
        assert_eq!(r("DELETE", "/user1/calendar/e.ics"), Route::Guard);
        assert_eq!(r("MOVE", "/user1/calendar/e.ics"), Route::Guard);
        assert_eq!(r("COPY", "/user1/calendar/e.ics"), Route::Guard);
        assert_eq!(r("PUT", "/user1/calendar/"), Route::Guard);
        assert_eq!(r("DELETE", "/user1/calendar/"), Route::Forward);
        assert_eq!(r("MOVE", "/user1/calendar/"), Route::Forward);
        assert_eq!(r("PUT", "/.attachments/abc"), Route::AttachmentWrite);
    }

    #[test]
    fn options_elsewhere_is_the_options_route() {
        assert_eq!(r("OPTIONS", "/user1/"), Route::Options);
        assert_eq!(r("OPTIONS", "*"), Route::Options);
    }
}
