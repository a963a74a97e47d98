//! Parsing the parts of an attachment POST that come before its body: the query
//! (RFC 8607 §3.3), `Content-Type` and `Content-Disposition` (RFC 8607 §3.4 1.D–E,
//! RFC 6266), `Prefer` (RFC 7240).

use http::HeaderMap;

use crate::error::{Error, Precondition};
use crate::ical::{parse_rid_list, RidSpec};

/// `action` (RFC 8607 §3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachAction {
    Add,
    Update,
    Remove,
}

impl AttachAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachAction::Add => "attachment-add",
            AttachAction::Update => "attachment-update",
            AttachAction::Remove => "attachment-remove",
        }
    }
}

/// A validated RFC 8607 query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachQuery {
    pub action: AttachAction,
    /// `None` = every instance (RFC 8607 §3.3.2).
    pub rids: Option<Vec<RidSpec>>,
    /// Required for update/remove, absent for add (RFC 8607 §3.3.3).
    pub managed_id: Option<String>,
}

/// Applies the parameter rules of RFC 8607 §3.3 and §3.11, in the order a client can
/// act on: `action` first (`valid-action`), then `managed-id` (`valid-managed-id`),
/// then `rid` (`valid-rid`). `no_recurrence` refuses any `rid` (RFC 8607 §3.2); a list
/// of more than `max_rids` items is refused before it is parsed (RFC 8607 §7).
pub fn parse_query(
    query: &str,
    no_recurrence: bool,
    max_rids: usize,
) -> Result<AttachQuery, Error> {
    let mut actions = Vec::new();
    let mut rids = Vec::new();
    let mut mids = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "action" => actions.push(v.into_owned()),
            "rid" => rids.push(v.into_owned()),
            "managed-id" => mids.push(v.into_owned()),
            _ => {}
        }
    }
    let action = match actions.as_slice() {
        [a] if a == "attachment-add" => AttachAction::Add,
        [a] if a == "attachment-update" => AttachAction::Update,
        [a] if a == "attachment-remove" => AttachAction::Remove,
        _ => {
            return Err(Error::Precondition(
                Precondition::ValidAction,
                format!("action must be given once as one of the three values, got {actions:?}"),
            ))
        }
    };
    let managed_id = match (action, mids.as_slice()) {
        (AttachAction::Add, []) => None,
        (AttachAction::Add, _) => {
            return Err(Error::Precondition(
                Precondition::ValidManagedId,
                "managed-id must not be present with attachment-add".into(),
            ))
        }
        (_, [m]) if !m.is_empty() => Some(m.clone()),
        _ => {
            return Err(Error::Precondition(
                Precondition::ValidManagedId,
                format!("managed-id must be given exactly once, got {mids:?}"),
            ))
        }
    };
    let rids =
        match rids.as_slice() {
            [] => None,
            [_] if action == AttachAction::Update => {
                return Err(Error::Precondition(
                    Precondition::ValidRid,
                    "rid must not be present with attachment-update".into(),
                ))
            }
            [_] if no_recurrence => {
                return Err(Error::Precondition(
                    Precondition::ValidRid,
                    "this server manages attachments for whole series only (no-recurrence)".into(),
                ))
            }
            [r] if r.split(',').count() > max_rids => {
                return Err(Error::Precondition(
                    Precondition::ValidRid,
                    format!(
                        "{} rid items, more than {max_rids} (attachments.max_rids)",
                        r.split(',').count()
                    ),
                ))
            }
            [r] => Some(parse_rid_list(r).map_err(|e| {
                Error::Precondition(Precondition::ValidRid, format!("rid {r:?}: {e}"))
            })?),
            _ => {
                return Err(Error::Precondition(
                    Precondition::ValidRid,
                    "rid must be given at most once (a comma-separated list)".into(),
                ))
            }
        };
    Ok(AttachQuery {
        action,
        rids,
        managed_id,
    })
}

/// `FMTTYPE` from `Content-Type`: `type/subtype` only, lower-cased, parameters such as
/// `charset` dropped; `application/octet-stream` when absent or unusable.
pub fn media_type(headers: &HeaderMap) -> String {
    media_type_of(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// [`media_type`] of a `Content-Type` or `FMTTYPE` value.
pub fn media_type_of(value: Option<&str>) -> String {
    const DEFAULT: &str = "application/octet-stream";
    let Some(v) = value else {
        return DEFAULT.to_owned();
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let valid = essence.split_once('/').is_some_and(|(t, s)| {
        let token = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        token(t) && token(s)
    });
    if valid {
        essence
    } else {
        DEFAULT.to_owned()
    }
}

/// The filename of an upload, from `Content-Disposition` ([`crate::rfc6266::filename`]).
pub fn filename(headers: &HeaderMap) -> String {
    let raw = headers
        .get(http::header::CONTENT_DISPOSITION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    crate::rfc6266::filename(raw.as_deref())
}

/// Whether `Prefer` asks for `return=representation` (RFC 7240 §4.2).
pub fn wants_representation(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            let p = p.split(';').next().unwrap_or("").trim();
            p.eq_ignore_ascii_case("return=representation")
                || p.eq_ignore_ascii_case("return=\"representation\"")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfc6266::{DEFAULT_FILENAME, MAX_FILENAME_BYTES};
    use http::HeaderValue;

    fn pre(r: Result<AttachQuery, Error>) -> Precondition {
        match r {
            Err(Error::Precondition(p, _)) => p,
            other => panic!("expected a precondition, got {other:?}"),
        }
    }

    #[test]
    fn action_must_be_one_of_three_exactly_once() {
        assert_eq!(
            pre(parse_query("action=attachment-nope", false, 1000)),
            Precondition::ValidAction
        );
        assert_eq!(
            pre(parse_query("action=", false, 1000)),
            Precondition::ValidAction
        );
        assert_eq!(
            pre(parse_query(
                "action=attachment-add&action=attachment-add",
                false,
                1000
            )),
            Precondition::ValidAction
        );
        assert_eq!(
            pre(parse_query("action=ATTACHMENT-ADD", false, 1000)),
            Precondition::ValidAction
        );
        let q = parse_query("action=attachment-add", false, 1000).unwrap();
        assert_eq!(q.action, AttachAction::Add);
        assert_eq!(q.rids, None);
    }

    #[test]
    fn managed_id_forbidden_on_add_and_required_once_otherwise() {
        assert_eq!(
            pre(parse_query(
                "action=attachment-add&managed-id=x",
                false,
                1000
            )),
            Precondition::ValidManagedId
        );
        assert_eq!(
            pre(parse_query("action=attachment-update", false, 1000)),
            Precondition::ValidManagedId
        );
        assert_eq!(
            pre(parse_query(
                "action=attachment-remove&managed-id=a&managed-id=b",
                false,
                1000
            )),
            Precondition::ValidManagedId
        );
        let q = parse_query("action=attachment-remove&managed-id=97S", false, 1000).unwrap();
        assert_eq!(q.managed_id.as_deref(), Some("97S"));
    }

    #[test]
    fn rid_forbidden_on_update_duplicated_or_in_no_recurrence_mode() {
        assert_eq!(
            pre(parse_query(
                "action=attachment-update&managed-id=x&rid=M",
                false,
                1000
            )),
            Precondition::ValidRid
        );
        assert_eq!(
            pre(parse_query(
                "action=attachment-add&rid=M&rid=20240101T100000",
                false,
                1000
            )),
            Precondition::ValidRid
        );
        assert_eq!(
            pre(parse_query("action=attachment-add&rid=M,m", false, 1000)),
            Precondition::ValidRid
        );
        assert_eq!(
            pre(parse_query("action=attachment-add&rid=M", true, 1000)),
            Precondition::ValidRid
        );
        let q = parse_query("action=attachment-add&rid=M%2C20111022T160000", false, 1000).unwrap();
        assert_eq!(
            q.rids,
            Some(vec![
                RidSpec::Master,
                RidSpec::Instance("20111022T160000".into())
            ])
        );
    }

    #[test]
    fn rid_lists_longer_than_the_maximum_are_refused_before_parsing() {
        let list = ["20240101T100000"; 3].join(",");
        let q = format!("action=attachment-add&rid={list}");
        // Three items over a maximum of two: refused by count, not as duplicates.
        match parse_query(&q, false, 2) {
            Err(Error::Precondition(Precondition::ValidRid, msg)) => {
                assert!(msg.contains("attachments.max_rids"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_query("action=attachment-add&rid=M,20240101", false, 2).is_ok());
    }

    fn cd(v: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert(
            "content-disposition",
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
        filename(&h)
    }

    #[test]
    fn apple_content_disposition_without_semicolon_keeps_spaces() {
        assert_eq!(cd("attachment filename=My File.pdf"), "My File.pdf");
    }

    #[test]
    fn apple_non_ascii_form_prefers_filename_star() {
        assert_eq!(
            cd("attachment filename=Resume.pdf;filename*=utf-8''R%C3%A9sum%C3%A9%20final.pdf"),
            "Résumé final.pdf"
        );
    }

    #[test]
    fn rfc6266_forms_parse() {
        assert_eq!(cd("attachment;filename=agenda.html"), "agenda.html");
        assert_eq!(
            cd("attachment; filename=\"a \\\"quoted\\\"; name.txt\""),
            "a \"quoted\"; name.txt"
        );
        assert_eq!(
            cd("attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf; filename=\"EUR rates.pdf\""),
            "€ rates.pdf"
        );
        assert_eq!(cd("Attachment; FILENAME=x.txt"), "x.txt");
    }

    #[test]
    fn filenames_are_sanitised() {
        assert_eq!(cd("attachment; filename=\"../../etc/passwd\""), "passwd");
        assert_eq!(
            cd("attachment; filename=\"C:\\\\Users\\\\x\\\\a.doc\""),
            "a.doc"
        );
        assert_eq!(
            cd("attachment; filename*=UTF-8''a%0D%0Ab%00c.txt"),
            "abc.txt"
        );
        assert_eq!(
            cd("attachment; filename*=UTF-8''evil%E2%80%AEfdp.exe"),
            "evilfdp.exe"
        );
        assert_eq!(cd("attachment; filename=\"..\""), DEFAULT_FILENAME);
        assert_eq!(cd("attachment"), DEFAULT_FILENAME);
        assert_eq!(filename(&HeaderMap::new()), DEFAULT_FILENAME);
        let long = format!("attachment; filename=\"{}.pdf\"", "é".repeat(300));
        let f = cd(&long);
        assert!(f.len() <= MAX_FILENAME_BYTES && f.ends_with(".pdf"), "{f}");
    }

    #[test]
    fn media_type_keeps_type_subtype_only() {
        let mut h = HeaderMap::new();
        assert_eq!(media_type(&h), "application/octet-stream");
        h.insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=\"utf-8\""),
        );
        assert_eq!(media_type(&h), "text/html");
        h.insert("content-type", HeaderValue::from_static("Application/PDF"));
        assert_eq!(media_type(&h), "application/pdf");
        h.insert("content-type", HeaderValue::from_static("garbage"));
        assert_eq!(media_type(&h), "application/octet-stream");
    }

    #[test]
    fn prefer_return_representation_is_recognised() {
        let mut h = HeaderMap::new();
        assert!(!wants_representation(&h));
        h.insert(
            "prefer",
            HeaderValue::from_static("handling=lenient, return=representation"),
        );
        assert!(wants_representation(&h));
        h.insert("prefer", HeaderValue::from_static("return=minimal"));
        assert!(!wants_representation(&h));
    }
}
