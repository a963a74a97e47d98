//! The `ATTACH` properties of a calendar object (RFC 5545 §3.8.1.1) with the RFC 8607
//! §4 parameters `MANAGED-ID`, `SIZE`, `FILENAME` and `FMTTYPE`, for `attach list`.
//!
//! The object is first checked with [`crate::ical::Calendar::parse`]; the lines are then
//! unfolded and each `ATTACH` in a `VEVENT`, `VTODO` or `VJOURNAL` (sub-components such
//! as `VALARM` excluded: an alarm sound is not an attachment of the event) is split
//! with [`crate::ical::param::parse_params`].

use crate::ical::{param, Calendar, ParseError};

/// One `ATTACH` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub managed_id: Option<String>,
    pub size: Option<String>,
    pub fmttype: Option<String>,
    pub filename: Option<String>,
    /// `RECURRENCE-ID` of the instance that holds it; `None` for the master.
    pub rid: Option<String>,
    /// The URI, or `(inline, N bytes)` for `VALUE=BINARY`.
    pub value: String,
}

impl Attachment {
    /// `managed-id  size  fmttype  filename  rid  value`, tab-separated, `-` for
    /// absent fields.
    pub fn tsv(&self) -> String {
        let f = |v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| s.replace(['\t', '\n', '\r'], " "))
                .unwrap_or_else(|| "-".to_owned())
        };
        [
            f(&self.managed_id),
            f(&self.size),
            f(&self.fmttype),
            f(&self.filename),
            f(&self.rid),
            self.value.clone(),
        ]
        .join("\t")
    }
}

/// Every `ATTACH` of the scheduling components, in document order.
pub fn list(bytes: &[u8]) -> Result<Vec<Attachment>, ParseError> {
    Calendar::parse(bytes)?;
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    // Components from the root down; ATTACH counts only directly inside a scheduling one.
    let mut stack: Vec<String> = Vec::new();
    let mut pending: Vec<Attachment> = Vec::new();
    let mut rid: Option<String> = None;
    for line in unfold(&text) {
        let (name, params, value) = split(&line);
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "BEGIN" => {
                stack.push(value.trim().to_ascii_uppercase());
                if is_scheduling(&stack) {
                    rid = None;
                    pending.clear();
                }
            }
            "END" => {
                if is_scheduling(&stack) {
                    for mut a in pending.drain(..) {
                        a.rid = rid.clone();
                        out.push(a);
                    }
                }
                stack.pop();
            }
            "RECURRENCE-ID" if is_scheduling(&stack) => rid = Some(value.to_owned()),
            "ATTACH" if is_scheduling(&stack) => {
                let ps = param::parse_params(params);
                let get = |n: &str| {
                    ps.iter()
                        .find(|p| p.name.eq_ignore_ascii_case(n))
                        .map(|p| p.value())
                };
                let binary = get("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("BINARY"));
                pending.push(Attachment {
                    managed_id: get("MANAGED-ID"),
                    size: get("SIZE"),
                    fmttype: get("FMTTYPE"),
                    filename: get("FILENAME"),
                    rid: None,
                    value: if binary {
                        format!("(inline, {} base64 characters)", value.len())
                    } else {
                        value.to_owned()
                    },
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Directly inside `VCALENDAR` > `VEVENT|VTODO|VJOURNAL`.
fn is_scheduling(stack: &[String]) -> bool {
    stack.len() == 2 && matches!(stack[1].as_str(), "VEVENT" | "VTODO" | "VJOURNAL")
}

/// RFC 5545 §3.1: a line break followed by a space or tab continues the line.
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = raw.strip_prefix([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push_str(cont);
                continue;
            }
        }
        if !raw.is_empty() {
            lines.push(raw.to_owned());
        }
    }
    lines
}

/// `NAME;PARAMS:VALUE` → (name, `;PARAMS`, value); the value starts at the first `:`
/// outside a quoted parameter value.
fn split(line: &str) -> (&str, &str, &str) {
    let name_end = line.find([';', ':']).unwrap_or(line.len());
    let mut quoted = false;
    let mut colon = line.len();
    for (i, c) in line[name_end..].char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => {
                colon = name_end + i;
                break;
            }
            _ => {}
        }
    }
    let value = line.get(colon + 1..).unwrap_or("");
    (&line[..name_end], &line[name_end..colon], value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\n\
BEGIN:VEVENT\r\nUID:1\r\nDTSTART:20261201T100000Z\r\nRRULE:FREQ=DAILY\r\n\
ATTACH;MANAGED-ID=m1;SIZE=12;FMTTYPE=text/plain;FILENAME=\"a;b:c.txt\":http://h/.att\r\n \
achments/m1/a.txt\r\n\
ATTACH:http://example.org/plain\r\n\
BEGIN:VALARM\r\nACTION:AUDIO\r\nATTACH:http://h/sound.wav\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\n\
END:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:1\r\nRECURRENCE-ID:20261202T100000Z\r\nDTSTART:20261202T110000Z\r\n\
ATTACH;VALUE=BINARY;ENCODING=BASE64;FMTTYPE=text/plain:aGVsbG8=\r\n\
END:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn lists_attach_properties_with_their_rfc8607_parameters_and_instance() {
        let l = list(EVENT.as_bytes()).unwrap();
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l[0].managed_id.as_deref(), Some("m1"));
        assert_eq!(l[0].filename.as_deref(), Some("a;b:c.txt"));
        assert_eq!(l[0].value, "http://h/.attachments/m1/a.txt");
        assert_eq!(
            l[0].tsv(),
            "m1\t12\ttext/plain\ta;b:c.txt\t-\thttp://h/.attachments/m1/a.txt"
        );
        assert_eq!(l[1].managed_id, None);
        assert_eq!(l[2].rid.as_deref(), Some("20261202T100000Z"));
        assert!(l[2].value.starts_with("(inline"), "{}", l[2].value);
    }

    #[test]
    fn refuses_what_is_not_icalendar() {
        assert!(list(b"<html>hello</html>").is_err());
    }
}
