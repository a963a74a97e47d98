//! Incremental splitting of an XML byte stream into raw tokens (XML 1.0 §2.4–§2.8, §3.1),
//! so that the rewriter can copy every byte it does not change and feed complete tags to
//! quick-xml. quick-xml's own readers need the whole input or a blocking `BufRead`; this
//! scanner takes arbitrary chunks and never looks at a byte twice except inside one unfinished
//! token's terminator search.

/// The kind of a raw token. Tokens are byte ranges of the input, `<` and `>` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Character data up to the next `<` (possibly a piece of a longer run).
    Text,
    /// `<name ...>`
    Start,
    /// `<name .../>`
    Empty,
    /// `</name>`
    End,
    /// `<!-- ... -->`
    Comment,
    /// `<![CDATA[ ... ]]>`
    CData,
    /// `<? ... ?>`, the XML declaration included.
    Pi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// `<!DOCTYPE` or another markup declaration: DTDs are refused, so nothing can define
    /// entities.
    Dtd,
    /// One tag, comment, CDATA section or PI longer than the bound.
    TokenTooLong,
}

/// What the scanner knows about the token starting at the front of the pending input.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// Bytes of the current unfinished markup token already searched for its terminator.
    searched: usize,
    /// The quote character open at `searched`, inside a tag.
    quote: Option<u8>,
}

const CDATA_OPEN: &[u8] = b"<![CDATA[";
const COMMENT_OPEN: &[u8] = b"<!--";

impl Scanner {
    /// The next complete token at the front of `input`: `Ok(Some((kind, len)))`, or
    /// `Ok(None)` when more input is needed. Text is returned as soon as any is available, so
    /// only markup waits; `max_markup` bounds that wait.
    pub(crate) fn next(
        &mut self,
        input: &[u8],
        max_markup: usize,
    ) -> Result<Option<(Kind, usize)>, ScanError> {
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        if first != b'<' {
            let len = memchr(b'<', input).unwrap_or(input.len());
            return Ok(Some((Kind::Text, len)));
        }
        let r = self.markup(input);
        match r {
            Ok(Some(_)) => {
                self.searched = 0;
                self.quote = None;
            }
            Ok(None) if input.len() > max_markup => return Err(ScanError::TokenTooLong),
            _ => {}
        }
        r
    }

    fn markup(&mut self, input: &[u8]) -> Result<Option<(Kind, usize)>, ScanError> {
        let Some(&second) = input.get(1) else {
            return Ok(None);
        };
        match second {
            b'?' => Ok(self.find(input, 2, b"?>").map(|l| (Kind::Pi, l))),
            b'/' => Ok(self.find(input, 2, b">").map(|l| (Kind::End, l))),
            b'!' => {
                if input.starts_with(COMMENT_OPEN) {
                    Ok(self
                        .find(input, COMMENT_OPEN.len(), b"-->")
                        .map(|l| (Kind::Comment, l)))
                } else if input.starts_with(CDATA_OPEN) {
                    Ok(self
                        .find(input, CDATA_OPEN.len(), b"]]>")
                        .map(|l| (Kind::CData, l)))
                } else if COMMENT_OPEN.starts_with(input) || CDATA_OPEN.starts_with(input) {
                    Ok(None)
                } else {
                    Err(ScanError::Dtd)
                }
            }
            _ => Ok(self.tag_end(input).map(|l| {
                let kind = if input[..l].ends_with(b"/>") {
                    Kind::Empty
                } else {
                    Kind::Start
                };
                (kind, l)
            })),
        }
    }

    /// Length of the token ending with `term`, searching from `from` (or where the last call
    /// stopped, minus what a terminator split across chunks needs).
    fn find(&mut self, input: &[u8], from: usize, term: &[u8]) -> Option<usize> {
        let start = from.max(self.searched.saturating_sub(term.len() - 1));
        if let Some(i) = input
            .get(start..)
            .and_then(|s| s.windows(term.len()).position(|w| w == term))
        {
            return Some(start + i + term.len());
        }
        self.searched = input.len();
        None
    }

    /// Length of a start tag: the first `>` outside a quoted attribute value.
    fn tag_end(&mut self, input: &[u8]) -> Option<usize> {
        let start = self.searched.max(1);
        for (i, &b) in input.iter().enumerate().skip(start) {
            match (self.quote, b) {
                (Some(q), b) if b == q => self.quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => self.quote = Some(b),
                (None, b'>') => return Some(i + 1),
                (None, _) => {}
            }
        }
        self.searched = input.len();
        None
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: &[u8]) -> Result<Vec<(Kind, &[u8])>, ScanError> {
        let mut s = Scanner::default();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some((k, l)) = s.next(&input[pos..], 1 << 20)? {
            out.push((k, &input[pos..pos + l]));
            pos += l;
        }
        Ok(out)
    }

    #[test]
    fn splits_all_token_kinds_and_honours_quotes() {
        let doc = br#"<?xml version="1.0"?><a x='>' y=">"><!-- -> --><![CDATA[<]]>t&amp;<b/></a>"#;
        let t = tokens(doc).unwrap();
        let kinds: Vec<Kind> = t.iter().map(|t| t.0).collect();
        assert_eq!(
            kinds,
            [
                Kind::Pi,
                Kind::Start,
                Kind::Comment,
                Kind::CData,
                Kind::Text,
                Kind::Empty,
                Kind::End
            ]
        );
        assert_eq!(t[1].1, br#"<a x='>' y=">">"#);
        assert_eq!(t[3].1, b"<![CDATA[<]]>");
    }

    #[test]
    fn doctype_is_refused() {
        assert_eq!(tokens(b"<!DOCTYPE a []><a/>"), Err(ScanError::Dtd));
    }

    #[test]
    fn unfinished_markup_waits_and_then_hits_the_bound() {
        let mut s = Scanner::default();
        assert_eq!(s.next(b"<a x='1", 100), Ok(None));
        assert_eq!(s.next(b"<a x='1>'>", 100), Ok(Some((Kind::Start, 10))));
        let long = [b'<', b'a', b' '].repeat(50);
        assert_eq!(
            Scanner::default().next(&long, 100),
            Err(ScanError::TokenTooLong)
        );
    }

    #[test]
    fn terminator_split_across_resumed_searches_is_found() {
        let mut s = Scanner::default();
        assert_eq!(s.next(b"<!-- x -", 100), Ok(None));
        assert_eq!(s.next(b"<!-- x --", 100), Ok(None));
        assert_eq!(s.next(b"<!-- x -->", 100), Ok(Some((Kind::Comment, 10))));
    }
}
