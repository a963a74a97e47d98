//! Turning a refusal from an RFC 8607 server into a message a person can act on.
//!
//! RFC 8607 §3.11: a failed precondition is a `403` or `409` whose `application/xml`
//! body is a `DAV:error` element naming the condition (RFC 4918 §16). Servers also use
//! older names for some of them (Apple's `CALDAV:valid-managed-id`, `max-attachments`),
//! so both are recognised.

use http::StatusCode;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

const DAV: &str = "DAV:";
const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";

/// A request the server refused, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The named preconditions, e.g. `CALDAV:max-attachment-size`.
    pub conditions: Vec<String>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.message
        )
    }
}

/// Builds the message for a non-success response from its status, `Content-Type` and
/// (bounded) body.
pub fn refusal(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> Refusal {
    let is_xml = content_type.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.starts_with("application/xml") || t.starts_with("text/xml")
    });
    let conditions = if is_xml {
        error_children(body)
    } else {
        Vec::new()
    };
    let message = if let Some(first) = conditions.first() {
        let known = conditions.iter().find_map(|c| describe(c));
        match known {
            Some(text) => format!("{text} ({first})"),
            None => format!("precondition failed ({})", conditions.join(", ")),
        }
    } else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let plain = content_type.is_some_and(|t| t.to_ascii_lowercase().starts_with("text/plain"));
        // A 401 text is the server's own ("access forbidden"); where credentials come
        // from is what helps.
        // A text that only restates the status line ("410 gone") says less than the
        // status's meaning; "502 bad gateway: <detail>" keeps its detail.
        let text = without_status(text, status);
        if plain && !text.is_empty() && text.len() <= 500 && status != StatusCode::UNAUTHORIZED {
            text.to_owned()
        } else {
            by_status(status).to_owned()
        }
    };
    Refusal {
        status,
        conditions,
        message,
    }
}

/// `text` without a leading `<code> <reason phrase>` (and the `:` after it).
fn without_status(text: &str, status: StatusCode) -> &str {
    let Some(rest) = text.strip_prefix(status.as_str()) else {
        return text;
    };
    let rest = rest.trim_start();
    let reason = status.canonical_reason().unwrap_or("");
    let rest = match rest.get(..reason.len()) {
        Some(head) if head.eq_ignore_ascii_case(reason) => &rest[reason.len()..],
        _ => rest,
    };
    rest.trim_start_matches(':').trim()
}

/// The children of a top-level `DAV:error`, as `DAV:name` / `CALDAV:name` (other
/// namespaces as `{ns}name`). Empty when the body is not such a document.
pub fn error_children(body: &[u8]) -> Vec<String> {
    let mut reader = NsReader::from_reader(body);
    let mut depth = 0usize;
    let mut in_error = false;
    let mut out = Vec::new();
    loop {
        let Ok((res, ev)) = reader.read_resolved_event() else {
            return out;
        };
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let ns = match res {
                    ResolveResult::Bound(ns) => {
                        String::from_utf8_lossy(ns.into_inner()).into_owned()
                    }
                    _ => String::new(),
                };
                let local = String::from_utf8_lossy(s.local_name().into_inner()).into_owned();
                if depth == 0 {
                    if ns != DAV || local != "error" {
                        return Vec::new();
                    }
                    in_error = true;
                } else if depth == 1 && in_error {
                    out.push(match ns.as_str() {
                        DAV => format!("DAV:{local}"),
                        CALDAV => format!("CALDAV:{local}"),
                        other => format!("{{{other}}}{local}"),
                    });
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => return out,
            _ => {}
        }
    }
}

/// What a named precondition means for the person who ran the command.
fn describe(condition: &str) -> Option<&'static str> {
    Some(match condition {
        "CALDAV:max-attachment-size" => "attachment too large",
        "CALDAV:max-attachments-per-resource" | "CALDAV:max-attachments" => {
            "the event already holds the most attachments the server allows"
        }
        "CALDAV:valid-managed-id" | "CALDAV:valid-managed-id-parameter" => {
            "no attachment with this managed id in the event"
        }
        "CALDAV:valid-rid" | "CALDAV:valid-rid-parameter" => {
            "no such instance of the event (--rid)"
        }
        "CALDAV:valid-action" | "CALDAV:valid-action-parameter" => "invalid attachment action",
        "CALDAV:max-resource-size" => "the event is too large for the server to edit",
        "CALDAV:max-instances" => "the event has too many overridden instances to edit",
        "CALDAV:valid-calendar-data" => "the target is not a calendar object the server can edit",
        "DAV:need-privileges" => "you lack the privileges for this",
        _ => return None,
    })
}

fn by_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => {
            "authentication required or refused (use --user/--password, CALDAV_USER and \
             CALDAV_PASSWORD, or ~/.netrc)"
        }
        403 => "forbidden",
        404 => "not found",
        405 => "the server does not allow this here (does it support managed attachments?)",
        409 => "conflict",
        410 => "the attachment was removed",
        412 => "the event changed meanwhile",
        413 => "request too large",
        502 => "the calendar server behind the proxy is unreachable",
        503 => "the server is unavailable, try again later",
        504 => "the calendar server behind the proxy did not answer in time",
        507 => "the server is out of storage",
        _ => "request failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: Option<&str> = Some("application/xml; charset=utf-8");

    #[test]
    fn a_text_restating_the_status_gives_way_to_its_meaning() {
        let plain = Some("text/plain; charset=utf-8");
        let r = refusal(StatusCode::GONE, plain, b"410 gone\n");
        assert_eq!(r.to_string(), "410 Gone: the attachment was removed");
        let r = refusal(
            StatusCode::BAD_GATEWAY,
            plain,
            b"502 bad gateway: TLS handshake with https://cal.example failed: certificate expired\n",
        );
        assert_eq!(
            r.to_string(),
            "502 Bad Gateway: TLS handshake with https://cal.example failed: certificate expired"
        );
    }

    #[test]
    fn max_attachment_size_body_becomes_a_plain_message_naming_the_condition() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:max-attachment-size/></D:error>"#;
        let r = refusal(StatusCode::FORBIDDEN, XML, body);
        assert_eq!(r.conditions, ["CALDAV:max-attachment-size"]);
        assert_eq!(
            r.to_string(),
            "403 Forbidden: attachment too large (CALDAV:max-attachment-size)"
        );
    }

    #[test]
    fn apple_second_name_and_default_namespace_are_understood() {
        let body = br#"<error xmlns="DAV:"><valid-managed-id-parameter xmlns="urn:ietf:params:xml:ns:caldav"/><x:other xmlns:x="urn:x"/></error>"#;
        let r = refusal(StatusCode::FORBIDDEN, XML, body);
        assert_eq!(
            r.conditions,
            ["CALDAV:valid-managed-id-parameter", "{urn:x}other"]
        );
        assert!(r.message.starts_with("no attachment with this managed id"));
    }

    #[test]
    fn unknown_conditions_are_listed_and_non_error_xml_is_ignored() {
        let r = refusal(
            StatusCode::CONFLICT,
            XML,
            br#"<D:error xmlns:D="DAV:"><D:lock-token-submitted/></D:error>"#,
        );
        assert_eq!(r.message, "precondition failed (DAV:lock-token-submitted)");
        let r = refusal(
            StatusCode::FORBIDDEN,
            XML,
            br#"<D:multistatus xmlns:D="DAV:"><D:response/></D:multistatus>"#,
        );
        assert!(r.conditions.is_empty());
        assert_eq!(r.message, "forbidden");
    }

    #[test]
    fn short_plain_text_bodies_are_shown_and_others_fall_back_to_the_status() {
        let r = refusal(
            StatusCode::CONFLICT,
            Some("text/plain; charset=utf-8"),
            b"the event kept changing\n",
        );
        assert_eq!(r.message, "the event kept changing");
        let r = refusal(
            StatusCode::UNAUTHORIZED,
            Some("text/html"),
            b"<html>nope</html>",
        );
        assert!(r.message.contains("--user"), "{}", r.message);
        let r = refusal(StatusCode::FORBIDDEN, XML, b"<not xml");
        assert_eq!(r.message, "forbidden");
    }
}
