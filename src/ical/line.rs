//! Content-line scanner (RFC 5545 §3.1): splits a byte buffer into logical lines
//! (a physical line plus its folded continuations), keeping each line's exact raw span
//! so that untouched lines can be written back byte for byte, and builds the
//! BEGIN/END component tree.
//!
//! Leniencies, all preserved verbatim on output: LF-only and mixed line endings, a
//! missing final line ending, blank lines, a UTF-8 byte-order mark, lower-case names,
//! and folds that split a multi-byte UTF-8 sequence (the sequence is validated after
//! unfolding, which is what RFC 5545 §3.1 prescribes: unfold first, then interpret).

use std::fmt;

/// Why a buffer is not a calendar object this layer can edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based physical line number where the problem starts (0 when it concerns the
    /// whole buffer).
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// The kinds of [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The buffer holds no content line at all.
    Empty,
    /// A content line has no `:` separating the value (outside quoted parameter values).
    MissingColon,
    /// A content line has an empty or invalid property name.
    InvalidName,
    /// A parameter value opens a `"` that is never closed.
    UnterminatedQuote,
    /// A logical line (after unfolding) is not valid UTF-8.
    InvalidUtf8,
    /// The buffer starts with a folded continuation line.
    LeadingContinuation,
    /// `END:X` does not close the innermost open component.
    UnbalancedEnd {
        expected: Option<String>,
        found: String,
    },
    /// The input ended while these components were still open.
    Unclosed(String),
    /// The outermost component is not `VCALENDAR`, or content sits outside it.
    NotACalendar,
    /// Something other than blank lines follows `END:VCALENDAR`.
    TrailingContent,
    /// The buffer exceeds the size this layer indexes (4 GiB).
    TooLarge,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no content lines"),
            Self::MissingColon => f.write_str("content line without ':'"),
            Self::InvalidName => f.write_str("invalid property name"),
            Self::UnterminatedQuote => f.write_str("unterminated quoted parameter value"),
            Self::InvalidUtf8 => f.write_str("invalid utf-8"),
            Self::LeadingContinuation => {
                f.write_str("continuation line without a line to continue")
            }
            Self::UnbalancedEnd {
                expected: Some(e),
                found,
            } => {
                write!(f, "END:{found} while {e} is open")
            }
            Self::UnbalancedEnd {
                expected: None,
                found,
            } => {
                write!(f, "END:{found} without BEGIN")
            }
            Self::Unclosed(c) => write!(f, "component {c} is never closed"),
            Self::NotACalendar => f.write_str("not a VCALENDAR object"),
            Self::TrailingContent => f.write_str("content after END:VCALENDAR"),
            Self::TooLarge => f.write_str("object too large"),
        }
    }
}

/// What a logical line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An empty line (tolerated and preserved).
    Blank,
    /// `BEGIN:<comp>`; `jump` holds the index of the matching `END` line.
    Begin,
    /// `END:<comp>`.
    End,
    /// Any other content line.
    Prop,
}

/// One logical line.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// Raw span in the input, including folds and the final line ending.
    pub raw: (usize, usize),
    /// Span of the unfolded text in [`Scan::text`] (no line ending).
    pub text: (usize, usize),
    /// Length of the property name within the unfolded text.
    pub name_len: usize,
    /// Offset of the value (just after the separating `:`) within the unfolded text.
    pub value_start: usize,
    pub kind: Kind,
    /// For [`Kind::Begin`]: index of the matching END line.
    pub jump: usize,
    /// 1-based physical line number of the first physical line.
    pub lineno: usize,
}

/// A component: the lines from its BEGIN to its END, inclusive.
#[derive(Debug, Clone)]
pub(crate) struct Comp {
    /// Upper-cased component name.
    pub name: String,
    pub begin: usize,
    pub end: usize,
    pub parent: Option<usize>,
}

/// Result of scanning a buffer.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    pub text: String,
    pub lines: Vec<Line>,
    pub comps: Vec<Comp>,
    /// Whether every terminated line ends in a bare LF (no CRLF anywhere).
    pub lf_only: bool,
}

fn err(line: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { line, kind }
}

/// Scans `bytes` into logical lines and components.
pub(crate) fn scan(bytes: &[u8]) -> Result<Scan, ParseError> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(err(0, ParseErrorKind::TooLarge));
    }
    let start = if bytes.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let mut text: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut lines: Vec<Line> = Vec::new();
    let mut saw_crlf = false;
    let mut saw_lf = false;
    let mut pos = start;
    let mut lineno = 0usize;
    while pos < bytes.len() {
        lineno += 1;
        let (content_end, next) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(off) => {
                let nl = pos + off;
                if nl > pos && bytes[nl - 1] == b'\r' {
                    saw_crlf = true;
                    (nl - 1, nl + 1)
                } else {
                    saw_lf = true;
                    (nl, nl + 1)
                }
            }
            None => (bytes.len(), bytes.len()),
        };
        let physical = &bytes[pos..content_end];
        if matches!(physical.first(), Some(b' ' | b'\t')) {
            let Some(last) = lines.last_mut() else {
                return Err(err(lineno, ParseErrorKind::LeadingContinuation));
            };
            text.extend_from_slice(&physical[1..]);
            last.raw.1 = next;
            last.text.1 = text.len();
        } else {
            let t0 = text.len();
            text.extend_from_slice(physical);
            lines.push(Line {
                raw: (pos, next),
                text: (t0, text.len()),
                name_len: 0,
                value_start: 0,
                kind: Kind::Prop,
                jump: 0,
                lineno,
            });
        }
        pos = next;
    }
    let text = match String::from_utf8(text) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let idx = lines.partition_point(|l| l.text.1 <= at);
            let ln = lines.get(idx).map_or(0, |l| l.lineno);
            return Err(err(ln, ParseErrorKind::InvalidUtf8));
        }
    };

    let mut comps: Vec<Comp> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut calendar_done = false;
    let mut any = false;
    for i in 0..lines.len() {
        let l = &lines[i];
        let t = &text[l.text.0..l.text.1];
        if t.is_empty() {
            lines[i].kind = Kind::Blank;
            continue;
        }
        let (name_len, value_start) = split_line(t).map_err(|k| err(l.lineno, k))?;
        let lineno = l.lineno;
        let name = &t[..name_len];
        let value = &t[value_start..];
        let kind = if name.eq_ignore_ascii_case("BEGIN") {
            Kind::Begin
        } else if name.eq_ignore_ascii_case("END") {
            Kind::End
        } else {
            Kind::Prop
        };
        if calendar_done {
            return Err(err(lineno, ParseErrorKind::TrailingContent));
        }
        any = true;
        match kind {
            Kind::Begin => {
                let cname = value.trim().to_ascii_uppercase();
                if stack.is_empty() && cname != "VCALENDAR" {
                    return Err(err(lineno, ParseErrorKind::NotACalendar));
                }
                comps.push(Comp {
                    name: cname,
                    begin: i,
                    end: i,
                    parent: stack.last().copied(),
                });
                stack.push(comps.len() - 1);
            }
            Kind::End => {
                let cname = value.trim().to_ascii_uppercase();
                let Some(&open) = stack.last() else {
                    return Err(err(
                        lineno,
                        ParseErrorKind::UnbalancedEnd {
                            expected: None,
                            found: cname,
                        },
                    ));
                };
                if comps[open].name != cname {
                    return Err(err(
                        lineno,
                        ParseErrorKind::UnbalancedEnd {
                            expected: Some(comps[open].name.clone()),
                            found: cname,
                        },
                    ));
                }
                stack.pop();
                comps[open].end = i;
                let b = comps[open].begin;
                lines[b].jump = i;
                if stack.is_empty() {
                    calendar_done = true;
                }
            }
            Kind::Prop | Kind::Blank => {
                if stack.is_empty() {
                    return Err(err(lineno, ParseErrorKind::NotACalendar));
                }
            }
        }
        let l = &mut lines[i];
        l.kind = kind;
        l.name_len = name_len;
        l.value_start = value_start;
    }
    if let Some(&open) = stack.last() {
        return Err(err(
            lines.last().map_or(0, |l| l.lineno),
            ParseErrorKind::Unclosed(comps[open].name.clone()),
        ));
    }
    if !any {
        return Err(err(0, ParseErrorKind::Empty));
    }
    Ok(Scan {
        text,
        lines,
        comps,
        lf_only: saw_lf && !saw_crlf,
    })
}

/// Finds the end of the property name and the start of the value in an unfolded line,
/// skipping `:` and `;` inside quoted parameter values.
fn split_line(t: &str) -> Result<(usize, usize), ParseErrorKind> {
    let b = t.as_bytes();
    let name_len = b
        .iter()
        .position(|&c| c == b';' || c == b':')
        .ok_or(ParseErrorKind::MissingColon)?;
    if name_len == 0
        || !b[..name_len]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_' || *c == b'.')
    {
        return Err(ParseErrorKind::InvalidName);
    }
    let mut in_quote = false;
    for (i, &c) in b.iter().enumerate().skip(name_len) {
        match c {
            b'"' => in_quote = !in_quote,
            b':' if !in_quote => return Ok((name_len, i + 1)),
            _ => {}
        }
    }
    if in_quote {
        Err(ParseErrorKind::UnterminatedQuote)
    } else {
        Err(ParseErrorKind::MissingColon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<ParseErrorKind> {
        match scan(s.as_bytes()) {
            Ok(_) => vec![],
            Err(e) => vec![e.kind],
        }
    }

    #[test]
    fn split_line_skips_colons_inside_quotes() {
        assert_eq!(split_line("X;P=\"a:b\":v:w"), Ok((1, 10)));
        assert_eq!(split_line("NAME:"), Ok((4, 5)));
    }

    #[test]
    fn scan_rejects_malformed_structure_with_typed_errors() {
        assert_eq!(
            kinds("BEGIN:VCALENDAR\r\nFOO\r\nEND:VCALENDAR\r\n"),
            vec![ParseErrorKind::MissingColon]
        );
        assert_eq!(
            kinds("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n"),
            vec![ParseErrorKind::UnbalancedEnd {
                expected: Some("VEVENT".into()),
                found: "VCALENDAR".into()
            }]
        );
        assert_eq!(
            kinds("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n"),
            vec![ParseErrorKind::Unclosed("VEVENT".into())]
        );
        assert_eq!(
            kinds("BEGIN:VEVENT\r\nEND:VEVENT\r\n"),
            vec![ParseErrorKind::NotACalendar]
        );
        assert_eq!(kinds(""), vec![ParseErrorKind::Empty]);
        assert_eq!(kinds(" x\r\n"), vec![ParseErrorKind::LeadingContinuation]);
        assert_eq!(
            kinds("BEGIN:VCALENDAR\r\nX;P=\"a:b\r\nEND:VCALENDAR\r\n"),
            vec![ParseErrorKind::UnterminatedQuote]
        );
        assert_eq!(
            kinds("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\nX:1\r\n"),
            vec![ParseErrorKind::TrailingContent]
        );
        assert_eq!(
            kinds("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"),
            vec![ParseErrorKind::TrailingContent]
        );
    }

    #[test]
    fn scan_reports_invalid_utf8_with_its_line_number() {
        let e = scan(b"BEGIN:VCALENDAR\r\nX:\xff\r\nEND:VCALENDAR\r\n").unwrap_err();
        assert_eq!(
            e,
            ParseError {
                line: 2,
                kind: ParseErrorKind::InvalidUtf8
            }
        );
    }

    #[test]
    fn scan_accepts_utf8_sequence_split_by_a_fold() {
        // "ä" is C3 A4; the fold falls between the two bytes.
        let s = scan(b"BEGIN:VCALENDAR\r\nX:\xC3\r\n \xA4\r\nEND:VCALENDAR").unwrap();
        let l = &s.lines[1];
        assert_eq!(&s.text[l.text.0..l.text.1], "X:ä");
        assert_eq!(l.raw, (17, 26));
    }

    #[test]
    fn scan_detects_lf_only_documents() {
        assert!(scan(b"BEGIN:VCALENDAR\nEND:VCALENDAR\n").unwrap().lf_only);
        assert!(!scan(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\n").unwrap().lf_only);
    }
}
