//! The `.netrc` format as curl and ftp read it: whitespace-separated tokens,
//! `machine <host>` or `default` followed by `login`, `password` (and `account`, ignored);
//! `macdef` bodies (up to an empty line) are skipped. Quoted tokens (`"a b"`, with `\"`)
//! are accepted as curl does.

/// Login and password for `host` (case-insensitive match on `machine`), else the
/// `default` entry. A `machine` entry without a password yields `None` for it.
pub fn lookup(text: &str, host: &str) -> Option<(String, Option<String>)> {
    let mut found: Option<Entry> = None;
    let mut default: Option<Entry> = None;
    let mut current: Option<(Target, Entry)> = None;
    let mut tokens = Tokens::new(text);
    let finish = |cur: Option<(Target, Entry)>,
                  found: &mut Option<Entry>,
                  default: &mut Option<Entry>| match cur {
        Some((Target::Host(h), e)) if h.eq_ignore_ascii_case(host) && found.is_none() => {
            *found = Some(e)
        }
        Some((Target::Default, e)) if default.is_none() => *default = Some(e),
        _ => {}
    };
    while let Some(tok) = tokens.next_token() {
        match tok.as_str() {
            "machine" => {
                finish(current.take(), &mut found, &mut default);
                let name = tokens.next_token().unwrap_or_default();
                current = Some((Target::Host(name), Entry::default()));
            }
            "default" => {
                finish(current.take(), &mut found, &mut default);
                current = Some((Target::Default, Entry::default()));
            }
            "login" => {
                let v = tokens.next_token();
                if let Some((_, e)) = current.as_mut() {
                    e.login = v;
                }
            }
            "password" => {
                let v = tokens.next_token();
                if let Some((_, e)) = current.as_mut() {
                    e.password = v;
                }
            }
            "account" => {
                tokens.next_token();
            }
            "macdef" => {
                tokens.next_token();
                tokens.skip_macro();
            }
            _ => {}
        }
    }
    finish(current.take(), &mut found, &mut default);
    let e = found.or(default)?;
    Some((e.login?, e.password))
}

enum Target {
    Host(String),
    Default,
}

#[derive(Default)]
struct Entry {
    login: Option<String>,
    password: Option<String>,
}

struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens { rest: text }
    }

    fn next_token(&mut self) -> Option<String> {
        self.rest = self.rest.trim_start();
        if self.rest.is_empty() {
            return None;
        }
        if let Some(quoted) = self.rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        self.rest = &quoted[i + 1..];
                        return Some(out);
                    }
                    c => out.push(c),
                }
            }
            self.rest = "";
            return Some(out);
        }
        let end = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        let tok = self.rest[..end].to_owned();
        self.rest = &self.rest[end..];
        Some(tok)
    }

    /// A `macdef` body runs to the first empty line.
    fn skip_macro(&mut self) {
        match self.rest.find("\n\n") {
            Some(i) => self.rest = &self.rest[i + 2..],
            None => self.rest = "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_entry_matches_its_host_case_insensitively() {
        let text = "machine other.example login x password y\n\
                    machine Cal.Example.org\n  login alice\n  password \"s3cret pw\"\n";
        assert_eq!(
            lookup(text, "cal.example.org"),
            Some(("alice".into(), Some("s3cret pw".into())))
        );
    }

    #[test]
    fn default_applies_when_no_machine_matches_and_macdef_is_skipped() {
        let text = "macdef init\ncd /\nmachine evil login m password p\n\n\
                    machine a login a password pa\ndefault login d password pd\n";
        assert_eq!(lookup(text, "b"), Some(("d".into(), Some("pd".into()))));
        assert_eq!(lookup(text, "evil"), Some(("d".into(), Some("pd".into()))));
        assert_eq!(lookup(text, "a"), Some(("a".into(), Some("pa".into()))));
    }

    #[test]
    fn missing_entries_give_nothing() {
        assert_eq!(lookup("machine a login a", "b"), None);
        assert_eq!(lookup("machine a login a", "a"), Some(("a".into(), None)));
        assert_eq!(lookup("", "a"), None);
    }
}
