//! `Content-Disposition` (RFC 6266, with RFC 8187 for `filename*`): the one place that
//! reads a filename from the header (uploads), builds the header (downloads, and the
//! `calattach attach` client's uploads) and sanitises a name (RFC 6266 §4.3).

use std::borrow::Cow;

/// Name used when a client sends no usable filename.
pub const DEFAULT_FILENAME: &str = "attachment";
/// Longest filename kept, in bytes (common filesystem limit).
pub const MAX_FILENAME_BYTES: usize = 255;

/// The filename in a `Content-Disposition` value, parsed leniently and then sanitised
/// (RFC 6266 §4.3); [`DEFAULT_FILENAME`] when there is none.
///
/// Accepted forms: RFC 6266 (`attachment; filename="a b.pdf"`,
/// `attachment; filename*=UTF-8''%E2%82%AC.pdf`), and what Apple Calendar sends:
/// `attachment filename=My File.pdf` (no `;`, unquoted, spaces) and
/// `attachment filename=<ascii>;filename*=utf-8''<pct-encoded>`. `filename*` wins over
/// `filename` (RFC 6266 §4.3).
pub fn filename(value: Option<&str>) -> String {
    let name = value
        .and_then(|v| extended_filename(v).or_else(|| plain_filename(v).map(|s| s.into_owned())));
    sanitize_filename(name.as_deref().unwrap_or(""))
}

/// Finds `name` (case-insensitively) as a parameter name: at the start or after a
/// separator (`;`, space, tab), immediately followed by `=`. Returns the text after `=`.
fn param_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let start = from + pos;
        let end = start + name.len();
        let before_ok = start == 0 || matches!(lower.as_bytes()[start - 1], b';' | b' ' | b'\t');
        let rest = lower[end..].trim_start();
        if before_ok && rest.starts_with('=') {
            let eq = end + (lower[end..].len() - rest.len());
            return Some(header[eq + 1..].trim_start());
        }
        from = end;
    }
    None
}

/// `filename*=charset'lang'pct-encoded` (RFC 8187).
fn extended_filename(header: &str) -> Option<String> {
    let v = param_value(header, "filename*")?;
    let v = v.split(';').next()?.trim().trim_matches('"');
    let mut parts = v.splitn(3, '\'');
    let charset = parts.next()?.to_ascii_lowercase();
    let _lang = parts.next()?;
    let encoded = parts.next()?;
    let bytes: Cow<[u8]> = percent_encoding::percent_decode_str(encoded).into();
    match charset.as_str() {
        "utf-8" | "utf8" => Some(String::from_utf8_lossy(&bytes).into_owned()),
        "iso-8859-1" | "latin1" => Some(bytes.iter().map(|&b| b as char).collect()),
        _ => None,
    }
}

/// `filename=` quoted (with backslash escapes) or a token — or, leniently, everything up
/// to the next `;` (Apple: `filename=My File.pdf`).
fn plain_filename(header: &str) -> Option<Cow<'_, str>> {
    let v = param_value(header, "filename")?;
    if let Some(q) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => return Some(Cow::Owned(out)),
                c => out.push(c),
            }
        }
        // Unterminated quote: take what there is.
        return Some(Cow::Owned(out));
    }
    Some(Cow::Borrowed(v.split(';').next().unwrap_or("").trim()))
}

/// RFC 6266 §4.3: no directory parts, no control characters, bounded length, never
/// empty or a dot name.
pub fn sanitize_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect();
    let mut s = cleaned.trim().to_owned();
    if s.len() > MAX_FILENAME_BYTES {
        // Keep the extension when the name is cut.
        let ext = s
            .rfind('.')
            .map(|i| s[i..].to_owned())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        let mut cut = MAX_FILENAME_BYTES - ext.len();
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s = format!("{}{}", &s[..cut], ext);
    }
    if s.is_empty() || s.chars().all(|c| c == '.') {
        DEFAULT_FILENAME.to_owned()
    } else {
        s
    }
}

/// Bidirectional overrides let `exe.pdf` display as `fdp.exe`: never keep them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `attachment; filename="<ascii fallback>"; filename*=UTF-8''<pct-encoded>` (RFC 6266
/// §4.3, RFC 8187).
pub fn content_disposition(filename: &str) -> String {
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(filename, ATTR)
    )
}
