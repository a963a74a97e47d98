//! The three WebDAV properties of RFC 8607 §6, without any HTTP.
//!
//! * `CALDAV:managed-attachments-server-URL` (§6.1), on the calendar home collection;
//! * `CALDAV:max-attachment-size` (§6.2) and `CALDAV:max-attachments-per-resource` (§6.3), on
//!   calendar collections.
//!
//! The upstream CalDAV server knows nothing about them, so calattach adds them to the
//! `207 Multi-Status` answers of the PROPFINDs that name them, and answers itself every request
//! that tries to modify them (they are protected).
//!
//! * [`request`] reads request bodies: PROPFIND (which of our properties are asked for; RFC 4918
//!   §9.1 and §14.20), PROPPATCH (RFC 4918 §9.2) and MKCALENDAR / extended MKCOL sets (RFC 4791
//!   §5.3.1, RFC 5689), and builds the refusal bodies.
//! * [`rewrite`] is the streaming rewriter of the upstream's multistatus (RFC 4918 §13, §14.16).
//!
//! Everything in these two is pure: bytes in, bytes out. [`http`] wires them into the
//! PROPFIND, PROPPATCH, MKCALENDAR and MKCOL routes: reading bodies up to a bound and deciding
//! which resource is the caller's calendar home or a calendar.

pub mod http;
pub mod request;
pub mod rewrite;
mod scan;

#[cfg(test)]
mod tests;

use std::fmt;

/// The WebDAV namespace (RFC 4918 §21).
pub const DAV_NS: &str = "DAV:";
/// The CalDAV namespace (RFC 4791 §4), in which RFC 8607 §6 defines the three properties.
pub const CALDAV_NS: &str = "urn:ietf:params:xml:ns:caldav";

/// One of the three properties of RFC 8607 §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OurProp {
    /// `CALDAV:managed-attachments-server-URL` (§6.1), defined on the calendar home.
    ServerUrl,
    /// `CALDAV:max-attachment-size` (§6.2), defined on calendar collections.
    MaxAttachmentSize,
    /// `CALDAV:max-attachments-per-resource` (§6.3), defined on calendar collections.
    MaxAttachmentsPerResource,
}

impl OurProp {
    /// All three, in the order calattach emits them.
    pub const ALL: [OurProp; 3] = [
        OurProp::ServerUrl,
        OurProp::MaxAttachmentSize,
        OurProp::MaxAttachmentsPerResource,
    ];

    /// The element's local name in [`CALDAV_NS`].
    pub const fn local_name(self) -> &'static str {
        match self {
            OurProp::ServerUrl => "managed-attachments-server-URL",
            OurProp::MaxAttachmentSize => "max-attachment-size",
            OurProp::MaxAttachmentsPerResource => "max-attachments-per-resource",
        }
    }

    /// The property named by a resolved element name, if it is one of ours. Names are
    /// case-sensitive (XML).
    pub fn from_name(ns: &[u8], local: &[u8]) -> Option<OurProp> {
        if ns != CALDAV_NS.as_bytes() {
            return None;
        }
        OurProp::ALL
            .into_iter()
            .find(|p| p.local_name().as_bytes() == local)
    }

    const fn bit(self) -> u8 {
        match self {
            OurProp::ServerUrl => 1,
            OurProp::MaxAttachmentSize => 2,
            OurProp::MaxAttachmentsPerResource => 4,
        }
    }
}

/// A set of [`OurProp`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OurProps(u8);

impl OurProps {
    /// No property.
    pub const NONE: OurProps = OurProps(0);
    /// All three properties.
    pub const ALL: OurProps = OurProps(7);
    /// The property applying to a calendar home (RFC 8607 §6.1).
    pub const HOME: OurProps = OurProps(1);
    /// The properties applying to a calendar collection (RFC 8607 §6.2, §6.3).
    pub const CALENDAR: OurProps = OurProps(6);

    pub fn contains(self, p: OurProp) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn insert(&mut self, p: OurProp) {
        self.0 |= p.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: OurProps) -> OurProps {
        OurProps(self.0 | other.0)
    }

    pub fn intersection(self, other: OurProps) -> OurProps {
        OurProps(self.0 & other.0)
    }

    /// The members, in emission order.
    pub fn iter(self) -> impl Iterator<Item = OurProp> {
        OurProp::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl From<OurProp> for OurProps {
    fn from(p: OurProp) -> Self {
        OurProps(p.bit())
    }
}

impl FromIterator<OurProp> for OurProps {
    fn from_iter<I: IntoIterator<Item = OurProp>>(iter: I) -> Self {
        let mut s = OurProps::NONE;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

impl fmt::Debug for OurProps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A resolved XML element name: namespace URI (`None` for no namespace) and local name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QName {
    pub ns: Option<String>,
    pub local: String,
}

impl QName {
    pub fn new(ns: Option<&str>, local: &str) -> QName {
        QName {
            ns: ns.map(str::to_owned),
            local: local.to_owned(),
        }
    }

    /// Which of our properties this name is, if any.
    pub fn our_prop(&self) -> Option<OurProp> {
        OurProp::from_name(
            self.ns.as_deref().unwrap_or("").as_bytes(),
            self.local.as_bytes(),
        )
    }
}

/// Escapes text for XML character data and attribute values.
pub(crate) fn escape_xml(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}
