//! Property parameters (RFC 5545 §3.2, RFC 6868) and the canonical writer for new
//! content lines (RFC 5545 §3.1: CRLF, folding at 75 octets).
//!
//! Reading: a parameter value is either a quoted string (no escape mechanism inside,
//! RFC 5545 §3.1) or `paramtext`; multi-values are separated by `,`; RFC 6868 caret
//! escapes (`^n`, `^^`, `^'`) are decoded. Writing: RFC 6868 encoding, and quotes
//! whenever the value contains `:`, `;`, `,` or a character outside SAFE-CHAR.

use std::borrow::Cow;

/// A parameter as it appears on a line: its name and its (decoded) values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name as written (case preserved).
    pub name: String,
    /// Decoded values (RFC 6868 applied, quotes removed).
    pub values: Vec<String>,
}

impl Param {
    /// The values joined with `,`, i.e. the value of a single-valued parameter.
    pub fn value(&self) -> String {
        self.values.join(",")
    }
}

/// Parses the parameter section of a line (`;A=1;B="x,y",z`), as found between the
/// property name and the value separator. Never fails: the scanner has already
/// checked quotes, and a parameter without `=` is kept with no values.
pub fn parse_params(section: &str) -> Vec<Param> {
    let mut out = Vec::new();
    let b = section.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b';' {
            i += 1;
            continue;
        }
        i += 1;
        let name_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        let name = section[name_start..i].to_string();
        let mut values = Vec::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            loop {
                if i < b.len() && b[i] == b'"' {
                    let vs = i + 1;
                    let ve = b[vs..]
                        .iter()
                        .position(|&c| c == b'"')
                        .map_or(b.len(), |p| vs + p);
                    values.push(decode_6868(&section[vs..ve]).into_owned());
                    i = (ve + 1).min(b.len());
                    // Tolerate stray characters between a closing quote and the next separator.
                    while i < b.len() && b[i] != b',' && b[i] != b';' {
                        i += 1;
                    }
                } else {
                    let vs = i;
                    while i < b.len() && b[i] != b',' && b[i] != b';' {
                        i += 1;
                    }
                    values.push(decode_6868(&section[vs..i]).into_owned());
                }
                if i < b.len() && b[i] == b',' {
                    i += 1;
                    continue;
                }
                break;
            }
        }
        out.push(Param { name, values });
    }
    out
}

/// Decodes RFC 6868 caret escapes; an unknown `^x` sequence is kept literally.
pub fn decode_6868(s: &str) -> Cow<'_, str> {
    if !s.contains('^') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '^' {
            match it.peek() {
                Some('n') | Some('N') => {
                    out.push('\n');
                    it.next();
                }
                Some('^') => {
                    out.push('^');
                    it.next();
                }
                Some('\'') => {
                    out.push('"');
                    it.next();
                }
                _ => out.push('^'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Encodes one parameter value: RFC 6868 escapes for `^`, newlines and `"`, control
/// characters other than TAB dropped (they are not allowed in parameter values at
/// all), and quotes when the value contains `:`, `;`, `,` or is otherwise not
/// `paramtext`.
pub fn encode_param_value(v: &str) -> String {
    let mut body = String::with_capacity(v.len() + 2);
    let mut needs_quotes = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '^' => body.push_str("^^"),
            '"' => body.push_str("^'"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                body.push_str("^n");
            }
            '\n' => body.push_str("^n"),
            ':' | ';' | ',' => {
                needs_quotes = true;
                body.push(c);
            }
            '\t' => body.push(c),
            c if c.is_control() => {}
            c => body.push(c),
        }
    }
    if needs_quotes {
        format!("\"{body}\"")
    } else {
        body
    }
}

/// Builds one canonical content line: `NAME;P=v;...:value` folded at 75 octets
/// (continuation lines start with a space, which counts), never splitting a UTF-8
/// sequence, and terminated with `eol`. Multi-valued parameters are written as
/// `P=a,b` with each value encoded on its own.
pub fn write_line(name: &str, params: &[Param], value: &str, eol: &str) -> Vec<u8> {
    let mut logical = String::with_capacity(name.len() + value.len() + 64);
    logical.push_str(name);
    for p in params {
        logical.push(';');
        logical.push_str(&p.name);
        logical.push('=');
        for (i, v) in p.values.iter().enumerate() {
            if i > 0 {
                logical.push(',');
            }
            logical.push_str(&encode_param_value(v));
        }
    }
    logical.push(':');
    logical.push_str(value);
    fold(&logical, eol)
}

/// Folds an unfolded logical line at 75 octets on character boundaries.
pub fn fold(logical: &str, eol: &str) -> Vec<u8> {
    const LIMIT: usize = 75;
    let mut out = Vec::with_capacity(logical.len() + logical.len() / 70 * 3 + eol.len());
    let mut rest = logical;
    let mut first = true;
    loop {
        let room = if first { LIMIT } else { LIMIT - 1 };
        if !first {
            out.push(b' ');
        }
        if rest.len() <= room {
            out.extend_from_slice(rest.as_bytes());
            out.extend_from_slice(eol.as_bytes());
            return out;
        }
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.extend_from_slice(&rest.as_bytes()[..cut]);
        out.extend_from_slice(eol.as_bytes());
        rest = &rest[cut..];
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_params_handles_quotes_multivalues_and_6868() {
        let p =
            parse_params(";CN=\"Smith; Jane (Sales: EMEA)\";MEMBER=\"a\",\"b,c\";X=a^'b^nc^^;E=;F");
        assert_eq!(p[0].values, vec!["Smith; Jane (Sales: EMEA)"]);
        assert_eq!(p[1].values, vec!["a", "b,c"]);
        assert_eq!(p[2].values, vec!["a\"b\nc^"]);
        assert_eq!(p[3].values, vec![""]);
        assert_eq!(
            p[4],
            Param {
                name: "F".into(),
                values: vec![]
            }
        );
    }

    #[test]
    fn encode_quotes_and_escapes_what_paramtext_cannot_hold() {
        assert_eq!(encode_param_value("agenda.html"), "agenda.html");
        assert_eq!(
            encode_param_value("my;file:name\".txt"),
            "\"my;file:name^'.txt\""
        );
        assert_eq!(encode_param_value("a^b\nc,d.txt"), "\"a^^b^nc,d.txt\"");
        assert_eq!(encode_param_value("x\u{7}y"), "xy");
    }

    #[test]
    fn encoded_values_decode_back_to_the_original() {
        for v in ["a;b:c,d\"e^f\ng", "Ünïcødé 文件.pdf", "plain", "^n literal"] {
            let line = format!(";P={}", encode_param_value(v));
            assert_eq!(parse_params(&line)[0].value(), v, "{line}");
        }
    }

    #[test]
    fn fold_limits_physical_lines_to_75_octets_without_splitting_utf8() {
        let long = "X:".to_string() + &"€".repeat(100);
        let out = fold(&long, "\r\n");
        let s = String::from_utf8(out).unwrap();
        for phys in s.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(phys.len() <= 75, "{} octets", phys.len());
        }
        let unfolded = s.replace("\r\n ", "");
        assert_eq!(unfolded, format!("{long}\r\n"));
    }
}
