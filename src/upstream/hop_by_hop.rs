//! Hop-by-hop header removal (RFC 9110 §7.6.1).
//!
//! "Intermediaries MUST parse a received Connection header field before a message is
//! forwarded and, for each connection-option in this field, remove any header or trailer
//! field(s) from the message with the same name as the connection-option, and then remove
//! the Connection header field itself". The fixed list below are the fields RFC 9110 and
//! RFC 7230 name as connection-specific; `Proxy-Connection` and `Keep-Alive` are the
//! legacy ones still seen in the wild.

use http::header::{self, HeaderMap, HeaderName};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Removes the connection-specific fields of a request before it is sent upstream.
///
/// `Expect` goes too: calattach answers `100-continue` itself (hyper sends the interim
/// response when the body is first read), and hyper's client would not wait for the
/// upstream's `100` anyway.
pub fn strip_request(headers: &mut HeaderMap) {
    strip(headers);
    headers.remove(header::EXPECT);
}

/// Removes the connection-specific fields of an upstream response before it is relayed.
///
/// `Proxy-Authenticate` is hop-by-hop; `Alt-Svc` advertises the upstream's own endpoints
/// (Cyrus sends `h2c`), which clients must never be sent to.
pub fn strip_response(headers: &mut HeaderMap) {
    strip(headers);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::ALT_SVC);
}

fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn connection_named_headers_and_fixed_list_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("expect", HeaderValue::from_static("100-continue"));
        h.insert("depth", HeaderValue::from_static("1"));
        h.insert("if-match", HeaderValue::from_static("\"x\""));
        strip_request(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["depth", "if-match"]);
    }

    #[test]
    fn response_alt_svc_and_upgrade_are_removed_but_end_to_end_kept() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("alt-svc", HeaderValue::from_static("h2c=\":8008\""));
        h.insert("etag", HeaderValue::from_static("\"1\""));
        h.insert("schedule-tag", HeaderValue::from_static("\"2\""));
        h.insert("cal-managed-id", HeaderValue::from_static("97S"));
        h.insert("dav", HeaderValue::from_static("1, calendar-access"));
        strip_response(&mut h);
        // Field order across different names carries no meaning (RFC 9110 §5.3).
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["cal-managed-id", "dav", "etag", "schedule-tag"]);
    }
}
