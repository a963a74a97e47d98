//! Mapping upstream origins back to the public origin.
//!
//! A `Location` or `Content-Location` that points at the upstream's own scheme and
//! authority would send the client around calattach; it is rewritten to `public_url`
//! with the same path, query and fragment. Relative references and other origins pass
//! unchanged (DESIGN §3).

use http::HeaderValue;
use url::Url;

/// Returns the rewritten value, or `None` when the value is left as it is.
pub fn map_to_public(value: &HeaderValue, upstream: &Url, public: &Url) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let url = Url::parse(text).ok()?;
    if url.scheme() != upstream.scheme()
        || url.host() != upstream.host()
        || url.port_or_known_default() != upstream.port_or_known_default()
    {
        return None;
    }
    let mut out = public.as_str().trim_end_matches('/').to_owned();
    // Keep the exact path bytes the upstream sent (no re-encoding).
    let after_authority = &text[text.find("://")? + 3..];
    let rest = after_authority
        .find(['/', '?', '#'])
        .map(|i| &after_authority[i..])
        .unwrap_or("/");
    out.push_str(rest);
    HeaderValue::from_str(&out).ok()
}

/// `<public_url><prefix>/`: what every attachment URI starts with.
pub fn url_base(upstream: &super::Upstream, prefix: &str) -> String {
    format!(
        "{}{}/",
        upstream.public_url().as_str().trim_end_matches('/'),
        prefix
    )
}

/// `<public_url><prefix>/<id>/<filename>`: the `ATTACH` value and `Location`. The last
/// segment is only a readable name (some clients show it); the id alone identifies.
pub fn attachment_url(
    upstream: &super::Upstream,
    prefix: &str,
    id: &crate::store::AttachmentId,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &str) -> Option<String> {
        let up = Url::parse("http://127.0.0.1:5232/").unwrap();
        let public = Url::parse("https://cal.example.org/").unwrap();
        map_to_public(&HeaderValue::from_str(v).unwrap(), &up, &public)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn upstream_origin_is_mapped_to_public_origin_keeping_path_bytes() {
        assert_eq!(
            map("http://127.0.0.1:5232/user1/cal%20x/a.ics?x=1").as_deref(),
            Some("https://cal.example.org/user1/cal%20x/a.ics?x=1")
        );
        assert_eq!(
            map("http://127.0.0.1:5232").as_deref(),
            Some("https://cal.example.org/")
        );
    }

    #[test]
    fn relative_and_foreign_locations_are_untouched() {
        assert_eq!(map("/user1/"), None);
        assert_eq!(map("http://127.0.0.1:5233/user1/"), None);
        assert_eq!(map("https://127.0.0.1:5232/user1/"), None);
        assert_eq!(map("http://example.com/"), None);
    }
}
