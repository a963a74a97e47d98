//! OPTIONS: advertising managed attachments (RFC 8607 §3.2).
//!
//! The upstream's own `DAV:` lines are left untouched; calattach appends one more
//! `DAV:` header line (Cyrus already sends several, and RFC 9110 §5.3 makes separate
//! lines equivalent to one comma-joined list). In no-recurrence mode RFC §3.2 requires
//! *both* tokens.

use http::header::HeaderValue;
use http::HeaderMap;

pub const TOKEN: &str = "calendar-managed-attachments";
pub const TOKEN_NO_RECURRENCE: &str = "calendar-managed-attachments-no-recurrence";

/// Appends calattach's `DAV:` line.
pub fn add_dav_tokens(headers: &mut HeaderMap, no_recurrence: bool) {
    let value = if no_recurrence {
        HeaderValue::from_static(
            "calendar-managed-attachments, calendar-managed-attachments-no-recurrence",
        )
    } else {
        HeaderValue::from_static(TOKEN)
    };
    headers.append("dav", value);
}

/// Whether the upstream itself already offers managed attachments (then calattach must
/// not run in front of it: two owners of one feature corrupt each other).
pub fn upstream_has_managed_attachments(headers: &HeaderMap) -> bool {
    headers
        .get_all("dav")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(TOKEN))
}

/// Whether the upstream speaks CalDAV (`calendar-access`, RFC 4791 §5.1).
pub fn upstream_has_calendar_access(headers: &HeaderMap) -> bool {
    headers
        .get_all("dav")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("calendar-access"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_appended_as_its_own_line_keeping_upstream_lines() {
        let mut h = HeaderMap::new();
        h.append("dav", HeaderValue::from_static("1, 2, 3, calendar-access"));
        add_dav_tokens(&mut h, false);
        let lines: Vec<_> = h.get_all("dav").iter().collect();
        assert_eq!(lines, ["1, 2, 3, calendar-access", TOKEN]);
        assert!(upstream_has_calendar_access(&h));
    }

    #[test]
    fn no_recurrence_mode_sends_both_tokens() {
        let mut h = HeaderMap::new();
        add_dav_tokens(&mut h, true);
        let v = h["dav"].to_str().unwrap();
        let tokens: Vec<_> = v.split(',').map(str::trim).collect();
        assert_eq!(tokens, [TOKEN, TOKEN_NO_RECURRENCE]);
    }

    #[test]
    fn detects_upstream_that_already_manages_attachments() {
        let mut h = HeaderMap::new();
        h.append("dav", HeaderValue::from_static("1, 2, 3"));
        h.append(
            "dav",
            HeaderValue::from_static("calendar-query-extended, calendar-managed-attachments"),
        );
        assert!(upstream_has_managed_attachments(&h));
        let mut h = HeaderMap::new();
        h.append(
            "dav",
            HeaderValue::from_static("calendar-managed-attachments-no-recurrence"),
        );
        assert!(!upstream_has_managed_attachments(&h));
    }
}
