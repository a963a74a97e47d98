//! Streaming rewrite of an upstream `207 Multi-Status` (RFC 4918 §13, §14.16) so that it
//! carries the RFC 8607 §6 properties the PROPFIND asked for.
//!
//! # What changes
//!
//! For each `DAV:response` (a direct child of the `DAV:multistatus` document element), the
//! first `DAV:href` (XML-unescaped, trimmed, *not* percent-decoded) and the
//! [`ResourceHints`] from `DAV:resourcetype` in a `200` propstat go to the caller's `classify`
//! function. Server-URL applies to a [`ResourceKind::Home`], the two limits to a
//! [`ResourceKind::Calendar`], nothing to [`ResourceKind::Other`]. For each requested
//! ([`Plan::wanted`]) property that applies:
//!
//! * every element of that name the upstream put in any propstat (a `404`, or a `200` with a
//!   dead property someone stored) is removed, with the whitespace just before it;
//! * a propstat whose `DAV:prop` loses all its elements is dropped;
//! * our value goes into the first `200` propstat (after its last property, with the same
//!   indentation), or, if there is none, into a new
//!   `<D:propstat><D:prop>…</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>` after
//!   the last propstat.
//!
//! Responses without a propstat (the `DAV:status` form), without an href, or for which no
//! property applies are copied unchanged. Every byte not named above — prolog, namespace
//! declarations and prefixes, other properties, hrefs, status lines, `DAV:responsedescription`,
//! `DAV:sync-token`, comments, whitespace — is copied from the input, never re-serialized.
//!
//! Emitted elements use the prefixes in scope at the insertion point (the default namespace
//! included); if the CalDAV namespace is not in scope, the element declares it itself
//! (`xmlns:C="urn:ietf:params:xml:ns:caldav"`). Values: server-URL is
//! `<C:managed-attachments-server-URL/>` when [`Values::server_url`] is `None` (RFC 8607 §6.1:
//! the client uses the calendar home's scheme and authority), else one `DAV:href` with that
//! text; the limits are decimal integers. With [`Plan::names_only`] (a `propname` request)
//! all three are empty elements.
//!
//! # Memory
//!
//! Only the current `DAV:response` is buffered, up to [`Limits::max_response`]; past it the
//! buffered bytes are released unchanged, the rest of that response streams through
//! unchanged, and [`RewriteStats::oversized`] counts it. Besides that, one unfinished tag,
//! comment, CDATA section or PI is held, up to [`Limits::max_markup`]. Element depth is bounded
//! by [`Limits::max_depth`]. Text is never held outside a response.
//!
//! # Robustness and failure
//!
//! No DTD is accepted (`<!DOCTYPE` is an error), so no entity can be declared, and entities are
//! never expanded: the only decoding is of the href text, with the predefined entities and
//! character references. Unbalanced tags, unbound prefixes, malformed attributes, a document
//! element other than `DAV:multistatus`, an encoding other than UTF-8, depth or token bounds
//! exceeded, or input that ends early are a [`RewriteError`].
//!
//! The caller enables rewriting only for a `207` with an XML content type. What an error does
//! depends on [`ErrorMode`]:
//!
//! * [`ErrorMode::PassThrough`] (the default): `feed` and `finish` never fail. On the first
//!   error everything held (the buffered response and unfinished token) is released unchanged,
//!   and from then on input is copied as is. The output is therefore always complete: the
//!   rewritten prefix followed by the upstream's own bytes. [`Rewriter::stats`] reports the
//!   error so the caller can log it.
//! * [`ErrorMode::Fail`]: the error is returned, and held input is dropped. The caller has
//!   already sent what earlier `feed`s returned, so it must then abort the response body
//!   (the client sees a truncated body) — only for tests and callers that buffer.

use bytes::{Bytes, BytesMut};
use quick_xml::events::BytesStart;
use quick_xml::name::{NamespaceResolver, PrefixDeclaration, ResolveResult};

use super::scan::{Kind, ScanError, Scanner};
use super::{escape_xml, OurProp, OurProps, CALDAV_NS, DAV_NS};

/// The values calattach serves for its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    /// Scheme and authority of the attachment origin (RFC 8607 §6.1), or `None` for the empty
    /// element meaning "the calendar home's origin".
    pub server_url: Option<String>,
    /// `CALDAV:max-attachment-size`, in octets (§6.2).
    pub max_size: u64,
    /// `CALDAV:max-attachments-per-resource` (§6.3).
    pub max_per_resource: u64,
}

/// What to add to one multistatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The properties the PROPFIND asked for ([`super::request::PropfindKind::our_props`]).
    /// Empty makes the rewriter a plain copy.
    pub wanted: OurProps,
    pub values: Values,
    /// Emit empty elements without values (a `propname` request, RFC 4918 §9.1).
    pub names_only: bool,
}

/// What the caller says a response's resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// The caller's calendar home: server-URL applies.
    Home,
    /// A calendar collection: the two limits apply.
    Calendar,
    Other,
}

/// What the response itself says about its resource: `DAV:resourcetype` in a `200` propstat,
/// when the PROPFIND asked for it. A calendar home is a plain collection, so these cannot
/// identify it; they can identify calendars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceHints {
    /// A `200` propstat carried `DAV:resourcetype`.
    pub resourcetype_seen: bool,
    /// It contained `DAV:collection`.
    pub collection: bool,
    /// It contained `CALDAV:calendar`.
    pub calendar: bool,
}

/// What happens on malformed input; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorMode {
    #[default]
    PassThrough,
    Fail,
}

/// Memory and structure bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `DAV:response` buffered for rewriting.
    pub max_response: usize,
    /// Largest single tag, comment, CDATA section or PI.
    pub max_markup: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_response: 1 << 20,
            max_markup: 64 << 10,
            max_depth: 64,
        }
    }
}

/// Why the input could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    #[error("multistatus: DTD not accepted")]
    Dtd,
    #[error("multistatus: tag, comment or CDATA section longer than {0} bytes")]
    TokenTooLong(usize),
    #[error("multistatus: elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("multistatus: document element is not DAV:multistatus")]
    NotMultistatus,
    #[error("multistatus: unsupported encoding {0}")]
    Encoding(String),
    #[error("multistatus: ended inside the document")]
    UnexpectedEof,
    #[error("multistatus: {0}")]
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> RewriteError {
    RewriteError::Malformed(msg.into())
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// `DAV:response` elements seen.
    pub responses: u64,
    /// Responses changed.
    pub rewritten: u64,
    /// Responses larger than [`Limits::max_response`], passed through unchanged.
    pub oversized: u64,
    /// Most input bytes held at once (buffered response plus unfinished token).
    pub buffer_high_water: usize,
    /// The error that switched a [`ErrorMode::PassThrough`] rewriter to copying.
    pub error: Option<RewriteError>,
}

/// A namespace prefix in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pfx {
    Default,
    Named(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    Response,
    Href,
    Propstat(usize),
    PropstatStatus(usize),
    Prop(usize),
    Property { propstat: usize, resourcetype: bool },
    Other,
}

#[derive(Debug)]
struct Frame {
    /// The raw qualified name, to check the end tag.
    name: Vec<u8>,
    role: Role,
}

/// One property element inside a `DAV:prop`; offsets into [`Resp::buf`].
#[derive(Debug)]
struct Child {
    /// Start of the whitespace run before the element (`start` if none).
    ws_start: usize,
    start: usize,
    end: usize,
    ours: Option<OurProp>,
}

#[derive(Debug)]
struct PropRec {
    /// End of a self-closing `<D:prop/>`, or of the start tag.
    inner_end: usize,
    self_closing: bool,
    children: Vec<Child>,
    dav: Option<Pfx>,
    cal: Option<Pfx>,
}

#[derive(Debug)]
struct Propstat {
    ws_start: usize,
    start: usize,
    end: usize,
    status: Vec<u8>,
    prop: Option<PropRec>,
    hints: ResourceHints,
}

impl Propstat {
    fn is_200(&self) -> bool {
        self.status
            .split(u8::is_ascii_whitespace)
            .filter(|s| !s.is_empty())
            .nth(1)
            == Some(b"200")
    }
}

/// The `DAV:response` being buffered.
#[derive(Debug, Default)]
struct Resp {
    buf: Vec<u8>,
    href: Vec<u8>,
    href_seen: bool,
    propstats: Vec<Propstat>,
    /// Start of the whitespace-only text run just before the next token, if any.
    ws: Option<usize>,
}

/// Limit on the status line kept per propstat; real ones are ~20 bytes.
const MAX_STATUS: usize = 256;

/// Rewrites one multistatus body, chunk by chunk. See the module docs.
pub struct Rewriter<F>
where
    F: FnMut(&str, ResourceHints) -> ResourceKind,
{
    plan: Plan,
    classify: F,
    mode: ErrorMode,
    limits: Limits,
    scanner: Scanner,
    /// Input not yet tokenized: at most one unfinished markup token.
    inbuf: Vec<u8>,
    out: BytesMut,
    resolver: NamespaceResolver,
    stack: Vec<Frame>,
    root_seen: bool,
    root_closed: bool,
    resp: Option<Resp>,
    /// Set once an error switched the rewriter to copying (or to failing).
    failed: Option<RewriteError>,
    stats: RewriteStats,
}

// === impl Rewriter ===

impl<F> Rewriter<F>
where
    F: FnMut(&str, ResourceHints) -> ResourceKind,
{
    /// A rewriter in [`ErrorMode::PassThrough`] with default [`Limits`].
    pub fn new(plan: Plan, classify: F) -> Self {
        Rewriter {
            plan,
            classify,
            mode: ErrorMode::default(),
            limits: Limits::default(),
            scanner: Scanner::default(),
            inbuf: Vec::new(),
            out: BytesMut::new(),
            resolver: NamespaceResolver::default(),
            stack: Vec::new(),
            root_seen: false,
            root_closed: false,
            resp: None,
            failed: None,
            stats: RewriteStats::default(),
        }
    }

    pub fn with_error_mode(mut self, mode: ErrorMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn stats(&self) -> &RewriteStats {
        &self.stats
    }

    /// Takes the next chunk of the upstream body; returns the output ready so far (possibly
    /// empty while a response is buffered). Fails only in [`ErrorMode::Fail`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, RewriteError> {
        if let Some(e) = &self.failed {
            if self.mode == ErrorMode::Fail {
                return Err(e.clone());
            }
            return Ok(Bytes::copy_from_slice(chunk));
        }
        if self.plan.wanted.is_empty() {
            return Ok(Bytes::copy_from_slice(chunk));
        }
        self.inbuf.extend_from_slice(chunk);
        if let Err(e) = self.run() {
            self.fail(e)?;
        }
        let held = self.inbuf.len() + self.resp.as_ref().map_or(0, |r| r.buf.len());
        self.note_held(held);
        Ok(self.out.split().freeze())
    }

    /// Ends the body; returns the rest of the output. Fails only in [`ErrorMode::Fail`].
    pub fn finish(self) -> Result<Bytes, RewriteError> {
        self.finish_with_stats().map(|(b, _)| b)
    }

    /// [`Rewriter::finish`], also returning the final [`RewriteStats`] (in
    /// [`ErrorMode::PassThrough`], an error found only at the end, such as a truncated
    /// document, shows there).
    pub fn finish_with_stats(mut self) -> Result<(Bytes, RewriteStats), RewriteError> {
        if let Some(e) = &self.failed {
            return match self.mode {
                ErrorMode::Fail => Err(e.clone()),
                ErrorMode::PassThrough => Ok((self.out.split().freeze(), self.stats)),
            };
        }
        if self.plan.wanted.is_empty() {
            return Ok((Bytes::new(), self.stats));
        }
        let end = if !self.inbuf.is_empty() || !self.stack.is_empty() {
            Err(RewriteError::UnexpectedEof)
        } else if !self.root_seen {
            Err(RewriteError::NotMultistatus)
        } else {
            Ok(())
        };
        if let Err(e) = end {
            self.fail(e)?;
        }
        Ok((self.out.split().freeze(), self.stats))
    }

    fn fail(&mut self, e: RewriteError) -> Result<(), RewriteError> {
        self.failed = Some(e.clone());
        self.stats.error = Some(e.clone());
        let held = self.resp.take();
        let rest = std::mem::take(&mut self.inbuf);
        match self.mode {
            ErrorMode::PassThrough => {
                if let Some(r) = held {
                    self.out.extend_from_slice(&r.buf);
                }
                self.out.extend_from_slice(&rest);
                Ok(())
            }
            ErrorMode::Fail => Err(e),
        }
    }

    fn note_held(&mut self, n: usize) {
        self.stats.buffer_high_water = self.stats.buffer_high_water.max(n);
    }

    /// Tokenizes and handles all complete tokens in `inbuf`. A token is appended to the
    /// output or the response buffer only after every check on it passed, so on error
    /// `inbuf` still starts with the offending token and nothing is lost or doubled.
    fn run(&mut self) -> Result<(), RewriteError> {
        let buf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        let res = loop {
            match self.scanner.next(&buf[pos..], self.limits.max_markup) {
                Ok(Some((kind, len))) => {
                    if let Err(e) = self.token(kind, &buf[pos..pos + len]) {
                        break Err(e);
                    }
                    pos += len;
                }
                Ok(None) => break Ok(()),
                Err(ScanError::Dtd) => break Err(RewriteError::Dtd),
                Err(ScanError::TokenTooLong) => {
                    break Err(RewriteError::TokenTooLong(self.limits.max_markup))
                }
            }
        };
        self.inbuf = buf;
        self.inbuf.drain(..pos);
        res
    }

    fn token(&mut self, kind: Kind, tok: &[u8]) -> Result<(), RewriteError> {
        match kind {
            Kind::Text => self.text(tok),
            Kind::CData => {
                if let Some(r) = &mut self.resp {
                    if matches!(self.stack.last(), Some(f) if f.role == Role::Href) {
                        // The href is unescaped later as a whole; CDATA content is literal.
                        let inner = &tok[9..tok.len() - 3];
                        let mut s = String::new();
                        escape_xml(&String::from_utf8_lossy(inner), &mut s);
                        r.href.extend_from_slice(s.as_bytes());
                    }
                }
                self.emit(tok);
            }
            Kind::Comment => self.emit(tok),
            Kind::Pi => {
                if tok.starts_with(b"<?xml") && tok.get(5).is_some_and(u8::is_ascii_whitespace) {
                    check_encoding(tok)?;
                }
                self.emit(tok);
            }
            Kind::Start | Kind::Empty => self.start(tok, kind == Kind::Empty)?,
            Kind::End => self.end(tok)?,
        }
        self.check_response_size();
        Ok(())
    }

    /// Appends a token to the response buffer, or to the output outside responses.
    fn emit(&mut self, tok: &[u8]) {
        match &mut self.resp {
            Some(r) => {
                r.buf.extend_from_slice(tok);
                r.ws = None;
            }
            None => self.out.extend_from_slice(tok),
        }
    }

    fn text(&mut self, tok: &[u8]) {
        let Some(r) = &mut self.resp else {
            self.out.extend_from_slice(tok);
            return;
        };
        let start = r.buf.len();
        r.buf.extend_from_slice(tok);
        match self.stack.last().map(|f| f.role) {
            Some(Role::Href) => r.href.extend_from_slice(tok),
            Some(Role::PropstatStatus(i)) => {
                if let Some(ps) = r.propstats.get_mut(i) {
                    if ps.status.len() + tok.len() <= MAX_STATUS {
                        ps.status.extend_from_slice(tok);
                    }
                }
            }
            _ => {}
        }
        if tok.iter().all(u8::is_ascii_whitespace) {
            r.ws.get_or_insert(start);
        } else {
            r.ws = None;
        }
    }

    fn start(&mut self, tok: &[u8], empty: bool) -> Result<(), RewriteError> {
        if self.root_closed {
            return Err(malformed("element after the document element"));
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(RewriteError::TooDeep(self.limits.max_depth));
        }
        let inner = &tok[1..tok.len() - if empty { 2 } else { 1 }];
        let inner = std::str::from_utf8(inner).map_err(|_| malformed("tag is not UTF-8"))?;
        let name_len = inner
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(inner.len());
        if name_len == 0 {
            return Err(malformed("tag without a name"));
        }
        let start = BytesStart::from_content(inner, name_len);
        for a in start.attributes() {
            a.map_err(|e| malformed(e.to_string()))?;
        }
        self.resolver
            .push(&start)
            .map_err(|e| malformed(e.to_string()))?;
        let (res, local) = self.resolver.resolve_element(start.name());
        let (dav, cal) = match res {
            ResolveResult::Bound(ns) => (
                ns.into_inner() == DAV_NS.as_bytes(),
                ns.into_inner() == CALDAV_NS.as_bytes(),
            ),
            ResolveResult::Unbound => (false, false),
            ResolveResult::Unknown(p) => {
                self.resolver.pop();
                return Err(malformed(format!(
                    "unbound prefix {}",
                    String::from_utf8_lossy(&p)
                )));
            }
        };
        let local = local.into_inner();
        let ours = if cal {
            OurProp::from_name(CALDAV_NS.as_bytes(), local)
        } else {
            None
        };
        let is_dav = |l: &[u8]| dav && local == l;

        let parent = self.stack.last().map(|f| f.role);
        if parent.is_none() {
            if !is_dav(b"multistatus") {
                self.resolver.pop();
                return Err(RewriteError::NotMultistatus);
            }
            self.root_seen = true;
        }
        if parent == Some(Role::Root) && is_dav(b"response") && !empty {
            self.stats.responses += 1;
            self.resp = Some(Resp::default());
        }

        // Every check passed: from here on the token is committed.
        let role = match (parent, &mut self.resp) {
            (None, _) => Role::Root,
            (Some(Role::Root), _) if is_dav(b"response") => Role::Response,
            (_, None) => Role::Other,
            (Some(Role::Response), Some(r)) => {
                if is_dav(b"href") && !r.href_seen {
                    r.href_seen = true;
                    Role::Href
                } else if is_dav(b"propstat") {
                    let at = r.buf.len();
                    r.propstats.push(Propstat {
                        ws_start: r.ws.unwrap_or(at),
                        start: at,
                        end: at + tok.len(),
                        status: Vec::new(),
                        prop: None,
                        hints: ResourceHints::default(),
                    });
                    Role::Propstat(r.propstats.len() - 1)
                } else {
                    Role::Other
                }
            }
            (Some(Role::Propstat(i)), Some(r)) => {
                let has_prop = r.propstats.get(i).is_some_and(|p| p.prop.is_some());
                if is_dav(b"prop") && !has_prop {
                    let dav = find_prefix(&self.resolver, DAV_NS);
                    let cal = find_prefix(&self.resolver, CALDAV_NS);
                    if let Some(ps) = r.propstats.get_mut(i) {
                        ps.prop = Some(PropRec {
                            inner_end: r.buf.len() + tok.len(),
                            self_closing: empty,
                            children: Vec::new(),
                            dav,
                            cal,
                        });
                    }
                    Role::Prop(i)
                } else if is_dav(b"status") {
                    Role::PropstatStatus(i)
                } else {
                    Role::Other
                }
            }
            (Some(Role::Prop(i)), Some(r)) => {
                let at = r.buf.len();
                let resourcetype = is_dav(b"resourcetype");
                if let Some(ps) = r.propstats.get_mut(i) {
                    if resourcetype {
                        ps.hints.resourcetype_seen = true;
                    }
                    if let Some(p) = &mut ps.prop {
                        p.children.push(Child {
                            ws_start: r.ws.unwrap_or(at),
                            start: at,
                            end: at + tok.len(),
                            ours,
                        });
                    }
                }
                Role::Property {
                    propstat: i,
                    resourcetype,
                }
            }
            (
                Some(Role::Property {
                    propstat,
                    resourcetype: true,
                }),
                Some(r),
            ) => {
                if let Some(ps) = r.propstats.get_mut(propstat) {
                    ps.hints.collection |= is_dav(b"collection");
                    ps.hints.calendar |= cal && local == b"calendar";
                }
                Role::Other
            }
            _ => Role::Other,
        };
        let name = start.name().into_inner().to_vec();
        if empty {
            self.resolver.pop();
        } else {
            self.stack.push(Frame { name, role });
        }
        self.emit(tok);
        Ok(())
    }

    fn end(&mut self, tok: &[u8]) -> Result<(), RewriteError> {
        let name = tok[2..tok.len() - 1].trim_ascii_end();
        match self.stack.last() {
            Some(f) if f.name == name => {}
            Some(_) => return Err(malformed("end tag does not match start tag")),
            None => return Err(malformed("end tag without start tag")),
        }
        let Some(frame) = self.stack.pop() else {
            return Err(malformed("end tag without start tag"));
        };
        if let Some(r) = &mut self.resp {
            let at = r.buf.len();
            match frame.role {
                Role::Prop(i) => {
                    if let Some(p) = r.propstats.get_mut(i).and_then(|ps| ps.prop.as_mut()) {
                        p.inner_end = at;
                    }
                }
                Role::Propstat(i) => {
                    if let Some(ps) = r.propstats.get_mut(i) {
                        ps.end = at + tok.len();
                    }
                }
                Role::Property { propstat, .. } => {
                    if let Some(c) = r
                        .propstats
                        .get_mut(propstat)
                        .and_then(|ps| ps.prop.as_mut())
                        .and_then(|p| p.children.last_mut())
                    {
                        c.end = at + tok.len();
                    }
                }
                _ => {}
            }
        }
        match frame.role {
            Role::Response => {
                if let Some(mut r) = self.resp.take() {
                    r.buf.extend_from_slice(tok);
                    self.note_held(r.buf.len());
                    let prefixes = (
                        find_prefix(&self.resolver, DAV_NS),
                        find_prefix(&self.resolver, CALDAV_NS),
                    );
                    self.finish_response(r, prefixes);
                } else {
                    self.emit(tok);
                }
            }
            Role::Root => {
                self.root_closed = true;
                self.emit(tok);
            }
            _ => self.emit(tok),
        }
        self.resolver.pop();
        Ok(())
    }

    /// Releases an oversized response unchanged; the rest of it then streams through.
    fn check_response_size(&mut self) {
        if self
            .resp
            .as_ref()
            .is_some_and(|r| r.buf.len() > self.limits.max_response)
        {
            if let Some(r) = self.resp.take() {
                self.note_held(r.buf.len());
                self.out.extend_from_slice(&r.buf);
                self.stats.oversized += 1;
            }
        }
    }

    fn finish_response(&mut self, r: Resp, (resp_dav, resp_cal): (Option<Pfx>, Option<Pfx>)) {
        match self.edit(&r, resp_dav, resp_cal) {
            Some(edited) => {
                self.out.extend_from_slice(&edited);
                self.stats.rewritten += 1;
            }
            None => self.out.extend_from_slice(&r.buf),
        }
    }

    /// The rewritten response, or `None` to copy it unchanged.
    fn edit(&mut self, r: &Resp, resp_dav: Option<Pfx>, resp_cal: Option<Pfx>) -> Option<Vec<u8>> {
        if !r.href_seen || r.propstats.is_empty() {
            return None;
        }
        let href = std::str::from_utf8(&r.href).ok()?;
        let href = quick_xml::escape::unescape(href).ok()?;
        let hints = r
            .propstats
            .iter()
            .filter(|ps| ps.is_200())
            .map(|ps| ps.hints)
            .find(|h| h.resourcetype_seen)
            .unwrap_or_default();
        let applicable = match (self.classify)(href.trim(), hints) {
            ResourceKind::Home => OurProps::HOME,
            ResourceKind::Calendar => OurProps::CALENDAR,
            ResourceKind::Other => OurProps::NONE,
        }
        .intersection(self.plan.wanted);
        if applicable.is_empty() {
            return None;
        }

        let target = r
            .propstats
            .iter()
            .position(|ps| ps.is_200() && ps.prop.as_ref().is_some_and(|p| !p.self_closing));
        let mut dels: Vec<(usize, usize)> = Vec::new();
        for (i, ps) in r.propstats.iter().enumerate() {
            let Some(p) = &ps.prop else { continue };
            let ours = |c: &&Child| c.ours.is_some_and(|o| applicable.contains(o));
            let n = p.children.iter().filter(ours).count();
            if n == 0 {
                continue;
            }
            if Some(i) != target && n == p.children.len() {
                dels.push((ps.ws_start, ps.end));
            } else {
                dels.extend(p.children.iter().filter(ours).map(|c| (c.ws_start, c.end)));
            }
        }

        let (at, insert) = match target.and_then(|t| r.propstats[t].prop.as_ref()) {
            Some(p) => {
                let (at, sep) = match p.children.last() {
                    Some(c) => (c.end, &r.buf[c.ws_start..c.start]),
                    None => (p.inner_end, &b""[..]),
                };
                let mut s = Vec::new();
                for prop in applicable.iter() {
                    s.extend_from_slice(sep);
                    self.element(prop, p.dav.as_ref(), p.cal.as_ref(), &mut s);
                }
                (at, s)
            }
            None => {
                let last = r.propstats.last()?;
                let d = pfx_str(resp_dav.as_ref(), "D");
                let mut s = r.buf[last.ws_start..last.start].to_vec();
                s.extend_from_slice(format!("<{d}propstat><{d}prop>").as_bytes());
                for prop in applicable.iter() {
                    self.element(prop, resp_dav.as_ref(), resp_cal.as_ref(), &mut s);
                }
                s.extend_from_slice(
                    format!("</{d}prop><{d}status>HTTP/1.1 200 OK</{d}status></{d}propstat>")
                        .as_bytes(),
                );
                (last.end, s)
            }
        };

        dels.sort_unstable();
        let mut out = Vec::with_capacity(r.buf.len() + insert.len());
        let mut pos = 0;
        let mut inserted = false;
        for (s, e) in dels {
            if s < pos {
                continue;
            }
            if !inserted && at <= s {
                out.extend_from_slice(&r.buf[pos..at.max(pos)]);
                out.extend_from_slice(&insert);
                pos = at.max(pos);
                inserted = true;
            }
            out.extend_from_slice(&r.buf[pos..s]);
            pos = e;
        }
        if !inserted {
            let at = at.max(pos);
            out.extend_from_slice(&r.buf[pos..at]);
            out.extend_from_slice(&insert);
            pos = at;
        }
        out.extend_from_slice(&r.buf[pos..]);
        Some(out)
    }

    /// Writes our element for `prop` with the prefixes in scope, declaring CalDAV if needed.
    fn element(&self, prop: OurProp, dav: Option<&Pfx>, cal: Option<&Pfx>, out: &mut Vec<u8>) {
        let mut s = String::from("<");
        let (cal_name, decl) = match cal {
            Some(p) => (pfx_str(Some(p), ""), String::new()),
            // A fresh prefix must not hide the one the `DAV:href` inside uses.
            None => {
                let fresh = if dav == Some(&Pfx::Named(b"C".to_vec())) {
                    "CAL"
                } else {
                    "C"
                };
                (
                    format!("{fresh}:"),
                    format!(" xmlns:{fresh}=\"{CALDAV_NS}\""),
                )
            }
        };
        let name = format!("{cal_name}{}", prop.local_name());
        s.push_str(&name);
        s.push_str(&decl);
        let value = if self.plan.names_only {
            None
        } else {
            match prop {
                OurProp::ServerUrl => self.plan.values.server_url.as_ref().map(|url| {
                    let (d, d_decl) = match dav {
                        Some(p) => (pfx_str(Some(p), ""), ""),
                        None => ("D:".to_owned(), " xmlns:D=\"DAV:\""),
                    };
                    let mut v = format!("<{d}href{d_decl}>");
                    escape_xml(url, &mut v);
                    v.push_str(&format!("</{d}href>"));
                    v
                }),
                OurProp::MaxAttachmentSize => Some(self.plan.values.max_size.to_string()),
                OurProp::MaxAttachmentsPerResource => {
                    Some(self.plan.values.max_per_resource.to_string())
                }
            }
        };
        match value {
            Some(v) => {
                s.push('>');
                s.push_str(&v);
                s.push_str(&format!("</{name}>"));
            }
            None => s.push_str("/>"),
        }
        out.extend_from_slice(s.as_bytes());
    }
}

/// `"p:"` for a named prefix, `""` for the default namespace, `"{fallback}:"` for none.
fn pfx_str(p: Option<&Pfx>, fallback: &str) -> String {
    match p {
        Some(Pfx::Default) => String::new(),
        Some(Pfx::Named(n)) => format!("{}:", String::from_utf8_lossy(n)),
        None if fallback.is_empty() => String::new(),
        None => format!("{fallback}:"),
    }
}

/// A prefix bound to `uri` in the current scope and not shadowed.
fn find_prefix(resolver: &NamespaceResolver, uri: &str) -> Option<Pfx> {
    let uri = uri.as_bytes();
    let candidates: Vec<Pfx> = resolver
        .bindings()
        .filter(|(_, ns)| ns.into_inner() == uri)
        .map(|(decl, _)| match decl {
            PrefixDeclaration::Default => Pfx::Default,
            PrefixDeclaration::Named(n) => Pfx::Named(n.to_vec()),
        })
        .collect();
    candidates.into_iter().find(|p| {
        let probe = match p {
            Pfx::Default => b"x".to_vec(),
            Pfx::Named(n) => [n.as_slice(), b":x"].concat(),
        };
        matches!(
            resolver.resolve_element(quick_xml::name::QName(&probe)).0,
            ResolveResult::Bound(ns) if ns.into_inner() == uri
        )
    })
}

/// Rejects an XML declaration naming an encoding other than UTF-8 (or its ASCII subset):
/// the rewriter works on UTF-8 bytes.
fn check_encoding(decl: &[u8]) -> Result<(), RewriteError> {
    let Some(i) = decl.windows(8).position(|w| w == b"encoding") else {
        return Ok(());
    };
    let rest = decl[i + 8..].trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b"=") else {
        return Err(malformed("bad XML declaration"));
    };
    let rest = rest.trim_ascii_start();
    let Some((&q, rest)) = rest.split_first() else {
        return Err(malformed("bad XML declaration"));
    };
    let Some(end) = rest.iter().position(|&b| b == q) else {
        return Err(malformed("bad XML declaration"));
    };
    let enc = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
    match enc.as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" => Ok(()),
        _ => Err(RewriteError::Encoding(enc)),
    }
}
