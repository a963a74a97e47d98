//! The client's own preconditions on an attachment POST (RFC 9110 §13.1, RFC 6638 §8.3),
//! evaluated against the calendar object as calattach read it from the upstream.
//!
//! RFC 8607 Appendix A shows conditional POSTs as the normal case, and Apple Calendar
//! sends `If-Match` or `If-Schedule-Tag-Match` on every attachment POST.

use http::HeaderMap;

pub use crate::upstream::caller::Validators;

/// Whether the request carries any precondition; a conditional POST is never retried
/// over a version the client did not see.
pub fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::IF_MATCH)
        || headers.contains_key(http::header::IF_NONE_MATCH)
        || headers.contains_key("if-schedule-tag-match")
}

/// True when every precondition the client sent holds for an existing object with
/// validators `v`.
///
/// * `If-Match`: `*` holds (the object exists); a list holds when one entity-tag
///   matches the ETag by strong comparison.
/// * `If-None-Match`: `*` fails (the object exists); a list fails when one tag matches by
///   weak comparison (for a POST the answer is then 412, RFC 9110 §13.1.2).
/// * `If-Schedule-Tag-Match`: holds when the value equals the `Schedule-Tag`. An
///   upstream that sends no Schedule-Tag (Radicale) makes it fail: a tag that does not
///   exist cannot match, and a client only has one from a server that sends them.
pub fn preconditions_hold(headers: &HeaderMap, v: &Validators) -> bool {
    for value in headers.get_all(http::header::IF_MATCH) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.trim() == "*" {
            continue;
        }
        let Some(etag) = v.etag.as_deref() else {
            return false;
        };
        if !tags(value).any(|t| strong_eq(t, etag)) {
            return false;
        }
    }
    for value in headers.get_all(http::header::IF_NONE_MATCH) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.trim() == "*" {
            return false;
        }
        if let Some(etag) = v.etag.as_deref() {
            if tags(value).any(|t| weak_eq(t, etag)) {
                return false;
            }
        }
    }
    for value in headers.get_all("if-schedule-tag-match") {
        let Ok(value) = value.to_str() else {
            return false;
        };
        match v.schedule_tag.as_deref() {
            Some(st) if value.trim() == st.trim() => {}
            _ => return false,
        }
    }
    true
}

fn tags(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn opaque(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// Whether an `If-None-Match` value matches `etag` (RFC 9110 §13.1.2): `*`, or one of
/// its tags by weak comparison.
pub fn none_match_hits(list: &str, etag: &str) -> bool {
    list.trim() == "*" || tags(list).any(|t| weak_eq(t, etag))
}

/// Strong comparison of two entity-tags (RFC 9110 §8.8.3.2): both strong, same opaque tag.
pub fn strong_eq(a: &str, b: &str) -> bool {
    let (wa, a) = opaque(a);
    let (wb, b) = opaque(b.trim());
    !wa && !wb && a == b
}

fn weak_eq(a: &str, b: &str) -> bool {
    opaque(a).1 == opaque(b.trim()).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn download_validators_compare_weakly_for_none_match_and_strongly_for_if_range() {
        let etag = "\"abc\"";
        assert!(none_match_hits("*", etag));
        assert!(none_match_hits("\"x\", W/\"abc\"", etag));
        assert!(!none_match_hits("\"x\"", etag));
        assert!(strong_eq("\"abc\"", etag));
        assert!(!strong_eq("W/\"abc\"", etag));
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn v() -> Validators {
        Validators {
            etag: Some("\"e1\"".into()),
            schedule_tag: Some("\"s1\"".into()),
        }
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert!(preconditions_hold(&h(&[("if-match", "\"e1\"")]), &v()));
        assert!(preconditions_hold(
            &h(&[("if-match", "\"x\", \"e1\"")]),
            &v()
        ));
        assert!(preconditions_hold(&h(&[("if-match", "*")]), &v()));
        assert!(!preconditions_hold(&h(&[("if-match", "\"e2\"")]), &v()));
        assert!(!preconditions_hold(&h(&[("if-match", "W/\"e1\"")]), &v()));
    }

    #[test]
    fn if_none_match_fails_on_existing_object() {
        assert!(!preconditions_hold(&h(&[("if-none-match", "*")]), &v()));
        assert!(!preconditions_hold(
            &h(&[("if-none-match", "W/\"e1\"")]),
            &v()
        ));
        assert!(preconditions_hold(&h(&[("if-none-match", "\"e9\"")]), &v()));
    }

    #[test]
    fn if_schedule_tag_match_compares_schedule_tag_and_fails_without_one() {
        assert!(preconditions_hold(
            &h(&[("if-schedule-tag-match", "\"s1\"")]),
            &v()
        ));
        assert!(!preconditions_hold(
            &h(&[("if-schedule-tag-match", "\"e1\"")]),
            &v()
        ));
        let no_stag = Validators {
            etag: Some("\"e1\"".into()),
            schedule_tag: None,
        };
        assert!(!preconditions_hold(
            &h(&[("if-schedule-tag-match", "\"e1\"")]),
            &no_stag
        ));
    }

    #[test]
    fn unconditional_request_holds() {
        assert!(!is_conditional(&HeaderMap::new()));
        assert!(preconditions_hold(&HeaderMap::new(), &v()));
        assert!(is_conditional(&h(&[("if-schedule-tag-match", "\"s1\"")])));
    }
}
