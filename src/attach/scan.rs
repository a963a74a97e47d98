//! The guard's streaming scanner (DESIGN §5): which attachment ids an iCalendar body
//! references, read *after unfolding* (RFC 5545 §3.1), in bounded memory, from bytes that
//! may arrive in chunks of any size and need not parse as a whole.
//!
//! The guard decides from this scan, not from the raw bytes: a `MANAGED-ID` split by a
//! fold (`ATTACH;MANAG` CRLF SP `ED-ID=…`) is still a `MANAGED-ID`. It also does not care
//! whether the strict parser in `ical/` accepts the body: an upstream may be more lenient,
//! so a body calattach cannot edit is still scanned, and one that is too large to edit is
//! scanned as it streams past.
//!
//! A reference is
//! - the value of a `MANAGED-ID` parameter on an `ATTACH` line, whatever its URI;
//! - the path segment after `<prefix>/` of an `ATTACH` URI. Any origin counts, because
//!   clients fetch managed attachments from the CalDAV origin they know, replacing scheme
//!   and authority (RFC 8607 §6.1). On a foreign origin only a segment that has the form of
//!   an id calattach issues counts (anything else cannot name one of ours).
//!
//! Only `ATTACH`, `UID` and `ORGANIZER` lines are kept, each up to [`MAX_LINE`] octets; the
//! rest of the body (inline binary attachments of any size included) passes through the
//! scanner without being buffered. An `ATTACH` line whose parameters do not end within
//! [`MAX_LINE`] octets cannot be read with certainty: the scan reports it as
//! [`Scan::unreadable`] and the guard refuses the body.

use std::collections::BTreeSet;

use crate::ical::param;
use crate::store::AttachmentId;

/// Most octets of one unfolded `ATTACH`, `UID` or `ORGANIZER` line kept. Managed
/// `ATTACH` lines are a few hundred octets; inline ones are long, but their parameters
/// (which is all that is needed of them) are short.
pub const MAX_LINE: usize = 16 * 1024;

/// What a body references, as far as the guard is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Every id named by a `MANAGED-ID` parameter or an attachment URI.
    pub ids: BTreeSet<String>,
    /// The first `UID` value.
    pub uid: Option<String>,
    /// The first `ORGANIZER` value.
    pub organizer: Option<String>,
    /// An `ATTACH` line whose parameter section exceeded [`MAX_LINE`].
    pub unreadable: bool,
}

/// Which kind of line is being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Still reading the name.
    Undecided,
    Attach,
    Uid,
    Organizer,
    /// Not one of ours: skip to the end of the logical line.
    Skip,
}

/// Incremental scanner: [`Scanner::feed`] chunks, then [`Scanner::finish`].
#[derive(Debug)]
pub struct Scanner {
    /// The attachment URL path every URI reference starts with (`/.attachments/`).
    base_path: String,
    /// Origin (scheme://authority) of `public_url`, lowercase.
    own_origin: String,
    line: Vec<u8>,
    keep: Keep,
    truncated: bool,
    /// A line break was seen; the next octet decides: fold (SP/HTAB) or a new line.
    after_break: bool,
    /// A CR was seen and its LF may follow.
    pending_cr: bool,
    scan: Scan,
}

impl Scanner {
    /// `url_base` is `<public_url><prefix>/` as attachment URIs start.
    pub fn new(url_base: &str) -> Scanner {
        let (origin, path) = match url::Url::parse(url_base) {
            Ok(u) => (
                u.origin().ascii_serialization().to_ascii_lowercase(),
                u.path().to_owned(),
            ),
            Err(_) => (String::new(), url_base.to_owned()),
        };
        Scanner {
            base_path: path,
            own_origin: origin,
            line: Vec::new(),
            keep: Keep::Undecided,
            truncated: false,
            after_break: false,
            pending_cr: false,
            scan: Scan::default(),
        }
    }

    /// Scans a whole body at once.
    pub fn scan_all(url_base: &str, bytes: &[u8]) -> Scan {
        let mut s = Scanner::new(url_base);
        s.feed(bytes);
        s.finish()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// Whether an unreadable `ATTACH` line has been seen so far.
    pub fn unreadable(&self) -> bool {
        self.scan.unreadable
    }

    /// Ends the body: the last line counts even without a final line break.
    pub fn finish(mut self) -> Scan {
        self.end_line();
        self.scan
    }

    fn byte(&mut self, b: u8) {
        if self.pending_cr {
            self.pending_cr = false;
            if b == b'\n' {
                self.after_break = true;
                return;
            }
            // A lone CR is content.
            self.content(b'\r');
        }
        if self.after_break {
            self.after_break = false;
            if b == b' ' || b == b'\t' {
                return; // folded: the logical line goes on, without this octet
            }
            self.end_line();
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => self.after_break = true,
            _ => self.content(b),
        }
    }

    fn content(&mut self, b: u8) {
        match self.keep {
            Keep::Skip => {}
            Keep::Undecided => {
                if b == b';' || b == b':' {
                    self.keep = match_name(&self.line);
                    if self.keep == Keep::Skip {
                        self.line.clear();
                        return;
                    }
                } else if self.line.len() > 64 {
                    self.keep = Keep::Skip;
                    self.line.clear();
                    return;
                }
                self.line.push(b);
            }
            _ => {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                } else {
                    self.truncated = true;
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let keep = std::mem::replace(&mut self.keep, Keep::Undecided);
        let truncated = std::mem::replace(&mut self.truncated, false);
        let text = String::from_utf8_lossy(&line);
        match keep {
            Keep::Attach => self.attach_line(&text, truncated),
            Keep::Uid => {
                if self.scan.uid.is_none() {
                    self.scan.uid = value_of(&text).map(|v| v.trim().to_owned());
                }
            }
            Keep::Organizer => {
                if self.scan.organizer.is_none() {
                    self.scan.organizer = value_of(&text).map(|v| v.trim().to_owned());
                }
            }
            Keep::Undecided | Keep::Skip => {}
        }
    }

    fn attach_line(&mut self, text: &str, truncated: bool) {
        let Some(colon) = value_colon(text) else {
            // The value separator never came: a truncated parameter section may hide a
            // MANAGED-ID; a complete line without one is not an ATTACH we can name.
            if truncated {
                self.scan.unreadable = true;
            }
            return;
        };
        let (section, value) = (&text[..colon], &text[colon + 1..]);
        let name_end = section.find(';').unwrap_or(section.len());
        for p in param::parse_params(&section[name_end..]) {
            // A value in another encoding (quoted-printable, which some parsers decode)
            // could hide a URI: only BASE64 (inline data) and 8BIT are iCalendar's.
            if p.name.eq_ignore_ascii_case("ENCODING")
                && !p
                    .values
                    .iter()
                    .all(|v| v.eq_ignore_ascii_case("BASE64") || v.eq_ignore_ascii_case("8BIT"))
            {
                self.scan.unreadable = true;
            }
            if p.name.eq_ignore_ascii_case("MANAGED-ID") {
                let v = p.value();
                if !v.is_empty() {
                    self.found(v);
                }
            }
        }
        if let Some(id) = self.uri_id(value.trim()) {
            self.found(id);
        }
    }

    /// The id an attachment URI names, if any (module docs).
    fn uri_id(&self, value: &str) -> Option<String> {
        let u = url::Url::parse(value).ok()?;
        let rest = u.path().strip_prefix(self.base_path.as_str())?;
        let seg = rest.split('/').next().unwrap_or("");
        if seg.is_empty() {
            return None;
        }
        let own = u.origin().ascii_serialization().to_ascii_lowercase() == self.own_origin;
        (own || AttachmentId::parse(seg).is_some()).then(|| seg.to_owned())
    }

    fn found(&mut self, id: String) {
        self.scan.ids.insert(id);
    }
}

fn match_name(name: &[u8]) -> Keep {
    // A `group.` prefix (vCard syntax some parsers accept and keep) names the same property.
    let name = name.trim_ascii();
    let name = match name.iter().rposition(|&b| b == b'.') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    if name.eq_ignore_ascii_case(b"ATTACH") {
        Keep::Attach
    } else if name.eq_ignore_ascii_case(b"UID") {
        Keep::Uid
    } else if name.eq_ignore_ascii_case(b"ORGANIZER") {
        Keep::Organizer
    } else {
        Keep::Skip
    }
}

/// Position of the `:` that separates the value: the first one outside a quoted
/// parameter value (RFC 5545 §3.1).
fn value_colon(text: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn value_of(text: &str) -> Option<&str> {
    value_colon(text).map(|i| &text[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &str = "http://cal.example:8080/.attachments/";
    const ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    fn body(attach: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:u1\r\n\
             ORGANIZER:mailto:a@example.org\r\n{attach}\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    }

    fn ids(s: &Scan) -> Vec<&str> {
        s.ids.iter().map(String::as_str).collect()
    }

    #[test]
    fn managed_id_and_uri_are_references_and_uid_organizer_are_kept() {
        let s = Scanner::scan_all(
            BASE,
            body(&format!("ATTACH;MANAGED-ID=m1:{BASE}{ID}/f.txt")).as_bytes(),
        );
        assert_eq!(ids(&s), [ID, "m1"]);
        assert_eq!(s.uid.as_deref(), Some("u1"));
        assert_eq!(s.organizer.as_deref(), Some("mailto:a@example.org"));
        assert!(!s.unreadable);
    }

    #[test]
    fn a_fold_inside_the_parameter_name_is_unfolded() {
        let line =
            format!("ATTACH;MANAG\r\n ED-ID=m2:http://cal.example:8080/.attach\r\n\tments/{ID}/f");
        let s = Scanner::scan_all(BASE, body(&line).as_bytes());
        assert_eq!(ids(&s), [ID, "m2"]);
    }

    #[test]
    fn bare_lf_line_ends_and_folds_are_understood() {
        let text = body(&format!("AT\n TACH;MANAGED-ID=m3:{BASE}x")).replace("\r\n", "\n");
        let s = Scanner::scan_all(BASE, text.as_bytes());
        assert_eq!(ids(&s), ["m3", "x"]);
    }

    #[test]
    fn foreign_origins_count_only_for_id_shaped_segments() {
        let s = Scanner::scan_all(
            BASE,
            body(&format!(
                "ATTACH:https://evil.example/.attachments/{ID}/x\r\n\
                 ATTACH:https://other.example/.attachments/readme/x"
            ))
            .as_bytes(),
        );
        assert_eq!(ids(&s), [ID]);
    }

    #[test]
    fn quoted_colons_do_not_end_the_parameters() {
        let s = Scanner::scan_all(
            BASE,
            body("ATTACH;FILENAME=\"a:b\";MANAGED-ID=m4:https://example.com/x").as_bytes(),
        );
        assert_eq!(ids(&s), ["m4"]);
    }

    #[test]
    fn other_properties_and_inline_values_are_not_references() {
        let s = Scanner::scan_all(
            BASE,
            body(&format!(
                "DESCRIPTION:ATTACH;MANAGED-ID=no:{BASE}{ID}\r\n\
                 ATTACH;ENCODING=BASE64;VALUE=BINARY:{}",
                "QUJD".repeat(20_000)
            ))
            .as_bytes(),
        );
        assert!(s.ids.is_empty(), "{s:?}");
        assert!(!s.unreadable);
    }

    #[test]
    fn a_group_prefix_names_the_same_property() {
        let s = Scanner::scan_all(BASE, body("g.ATTACH;MANAGED-ID=m6:https://e/x").as_bytes());
        assert_eq!(ids(&s), ["m6"]);
    }

    #[test]
    fn an_attach_in_another_encoding_is_unreadable() {
        let s = Scanner::scan_all(
            BASE,
            body("ATTACH;ENCODING=QUOTED-PRINTABLE:http=3A=2F=2Fcal.example").as_bytes(),
        );
        assert!(s.unreadable);
    }

    #[test]
    fn an_endless_parameter_section_is_unreadable() {
        let pad = "X".repeat(MAX_LINE + 10);
        let s = Scanner::scan_all(
            BASE,
            body(&format!("ATTACH;X-PAD={pad};MANAGED-ID=hidden:{BASE}y")).as_bytes(),
        );
        assert!(s.unreadable);
    }

    /// Folds `line` (an unfolded content line) at the given cut points, each with
    /// CRLF or LF and SP or HTAB.
    fn fold_at(line: &str, cuts: &[(usize, bool, bool)]) -> String {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|(c, _, _)| c % (line.len() + 1))
            .filter(|&c| c > 0 && c < line.len() && line.is_char_boundary(c))
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut out = String::new();
        let mut last = 0;
        for (i, p) in points.iter().enumerate() {
            let (_, crlf, tab) = cuts[i % cuts.len()];
            out.push_str(&line[last..*p]);
            out.push_str(if crlf { "\r\n" } else { "\n" });
            out.push(if tab { '\t' } else { ' ' });
            last = *p;
        }
        out.push_str(&line[last..]);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any folding of any ATTACH line, in any chunking, is recognised.
        #[test]
        fn any_folding_and_chunking_of_an_attach_line_is_recognised(
            name in "[Aa][Tt][Tt][Aa][Cc][Hh]",
            param in "[Mm][Aa][Nn][Aa][Gg][Ee][Dd]-[Ii][Dd]",
            mid in "[A-Za-z0-9_-]{1,30}",
            extra in proptest::option::of("FMTTYPE=text/plain|FILENAME=\"a;b:c\"|SIZE=12"),
            cuts in proptest::collection::vec((any::<usize>(), any::<bool>(), any::<bool>()), 0..12),
            chunks in proptest::collection::vec(1usize..40, 1..10),
        ) {
            let extra = extra.map(|e| format!(";{e}")).unwrap_or_default();
            let line = format!("{name}{extra};{param}={mid}:{BASE}{ID}/file.pdf");
            let text = body(&fold_at(&line, &cuts));
            let mut s = Scanner::new(BASE);
            let bytes = text.as_bytes();
            let mut at = 0;
            let mut i = 0;
            while at < bytes.len() {
                let n = chunks[i % chunks.len()].min(bytes.len() - at);
                s.feed(&bytes[at..at + n]);
                at += n;
                i += 1;
            }
            let scan = s.finish();
            prop_assert!(scan.ids.contains(&mid), "{:?} in {:?}", mid, text);
            prop_assert!(scan.ids.contains(ID), "{:?}", text);
        }
    }
}
