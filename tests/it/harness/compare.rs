//! Differential comparison of a direct and a proxied response.
//!
//! What may differ, and nothing else (DESIGN §3): `Date`; hop-by-hop headers
//! (RFC 9110 §7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//! `Proxy-Connection`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`,
//! `Proxy-Authenticate`, `Proxy-Authorization`) and the upstream's `Alt-Svc`;
//! `Location`/`Content-Location` mapped from the upstream origin to the
//! proxy's; an `X-Request-Id` the proxy adds; `Content-Length` when the
//! upstream sent none (an HTTP/1.0 close-delimited body must be re-framed);
//! `Content-Length` on a `204` (RFC 9110 §8.6: a server must not send one,
//! and hyper drops it); and on OPTIONS one added `DAV:` line with `calendar-managed-attachments`
//! (RFC 8607 §3.1). The HTTP version is not compared (Radicale answers
//! HTTP/1.0, calattach HTTP/1.1). Baïkal (PHP) starts a new session on every
//! request without a session cookie, so the value of its `PHPSESSID` cookie in
//! `Set-Cookie` differs between any two answers: the value is masked, the rest of
//! the header (name, attributes, presence) is compared. That the cookie passes
//! through untouched is a test of its own (`transparency::php_session_cookie_*`).

use super::http::Reply;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// How the direct response maps onto the proxied one.
pub struct Mapping<'a> {
    pub upstream_origin: &'a str,
    pub proxy_origin: &'a str,
    /// Byte substitutions applied to the direct response's header values and
    /// body (lockstep writes on two collections: direct name → proxied name).
    pub substitutions: &'a [(String, String)],
    /// The request was OPTIONS: allow the `DAV:` line calattach adds.
    pub options: bool,
}

/// Asserts that `proxied` equals `direct` up to the documented rewrites.
pub fn assert_transparent(what: &str, direct: &Reply, proxied: &Reply, map: &Mapping<'_>) {
    let mut problems = Vec::new();
    if direct.status != proxied.status {
        problems.push(format!(
            "status: direct {} proxied {}",
            direct.status, proxied.status
        ));
    }
    let direct_body = substitute(&direct.body, map.substitutions);
    if direct_body != proxied.body.as_ref() {
        problems.push(format!(
            "body differs ({} bytes direct, {} proxied){}",
            direct_body.len(),
            proxied.body.len(),
            first_difference(&direct_body, &proxied.body)
        ));
    }
    let direct_has_request_id = direct.headers.contains_key("x-request-id");
    let mut direct_headers = normalise(
        direct,
        map,
        Side::Direct,
        direct_has_request_id,
        &mut problems,
    );
    let proxied_headers = normalise(
        proxied,
        map,
        Side::Proxied,
        direct_has_request_id,
        &mut problems,
    );
    if direct.headers.get("content-length").is_none() || direct.status == 204 {
        // Re-framing a close-delimited body is allowed: compare the rest.
        direct_headers.retain(|(n, _)| n != "content-length");
    }
    let proxied_headers: Vec<_> = if direct.headers.get("content-length").is_none() {
        proxied_headers
            .into_iter()
            .filter(|(n, _)| n != "content-length")
            .collect()
    } else {
        proxied_headers
    };
    if direct_headers != proxied_headers {
        let only_direct: Vec<_> = direct_headers
            .iter()
            .filter(|h| !proxied_headers.contains(h))
            .collect();
        let only_proxied: Vec<_> = proxied_headers
            .iter()
            .filter(|h| !direct_headers.contains(h))
            .collect();
        problems.push(format!(
            "end-to-end headers differ\n  only direct:  {only_direct:?}\n  only proxied: {only_proxied:?}{}",
            if only_direct.is_empty() && only_proxied.is_empty() {
                "\n  (same headers, different order or count)"
            } else {
                ""
            }
        ));
    }
    assert!(
        problems.is_empty(),
        "{what}: proxied response differs from direct:\n- {}\n\n--- direct ---\n{direct:?}\n\n--- proxied ---\n{proxied:?}",
        problems.join("\n- ")
    );
}

#[derive(PartialEq)]
enum Side {
    Direct,
    Proxied,
}

fn normalise(
    reply: &Reply,
    map: &Mapping<'_>,
    side: Side,
    direct_has_request_id: bool,
    problems: &mut Vec<String>,
) -> Vec<(String, Vec<u8>)> {
    let named_by_connection: Vec<String> = reply
        .headers
        .get_all("connection")
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::new();
    let mut dav_extra = 0;
    for (name, value) in &reply.headers {
        let name = name.as_str().to_string();
        // `Date` is the moment of the answer; `Last-Modified` the moment its object was
        // written, and the two sides always compare two objects written one after the
        // other (Baïkal sends it, to the second).
        if name == "date"
            || name == "last-modified"
            || name == "alt-svc"
            || HOP_BY_HOP.contains(&name.as_str())
            || named_by_connection.contains(&name)
        {
            continue;
        }
        if name == "x-request-id" && side == Side::Proxied && !direct_has_request_id {
            continue;
        }
        let mut value = value.as_bytes().to_vec();
        if name == "set-cookie" {
            value = mask_php_session(&value);
        }
        if side == Side::Direct {
            value = substitute(&value, map.substitutions);
            if name == "location" || name == "content-location" {
                if let Some(rest) = value.strip_prefix(map.upstream_origin.as_bytes()) {
                    value = [map.proxy_origin.as_bytes(), rest].concat();
                }
            }
        }
        if side == Side::Proxied && map.options && name == "dav" {
            let text = String::from_utf8_lossy(&value);
            if text.contains("calendar-managed-attachments") {
                dav_extra += 1;
                let tokens: Vec<&str> = text.split(',').map(str::trim).collect();
                if !tokens.iter().all(|t| {
                    *t == "calendar-managed-attachments"
                        || *t == "calendar-managed-attachments-no-recurrence"
                }) {
                    problems.push(format!(
                        "added DAV line {text:?} carries more than the managed-attachments tokens"
                    ));
                }
                continue;
            }
        }
        out.push((name, value));
    }
    if side == Side::Proxied && map.options && dav_extra != 1 {
        problems.push(format!(
            "OPTIONS: expected exactly one added DAV line with calendar-managed-attachments, found {dav_extra}"
        ));
    }
    if side == Side::Proxied {
        // Re-framing a body the upstream sent without Content-Length is fine;
        // a Content-Length that disagrees with the body is not.
        if let Some(cl) = reply.header("content-length") {
            if cl.parse::<usize>().ok() != Some(reply.body.len()) && !reply.body.is_empty() {
                problems.push(format!(
                    "proxied Content-Length {cl} but body has {} bytes",
                    reply.body.len()
                ));
            }
        }
    }
    // Order matters only among values of one name (RFC 9110 §5.3).
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `PHPSESSID=<id>; path=/` → `PHPSESSID=<session>; path=/`.
fn mask_php_session(value: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(value);
    match text.strip_prefix("PHPSESSID=") {
        Some(rest) => {
            let tail = rest.find(';').map_or("", |i| &rest[i..]);
            format!("PHPSESSID=<session>{tail}").into_bytes()
        }
        None => value.to_vec(),
    }
}

pub fn substitute(bytes: &[u8], substitutions: &[(String, String)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (from, to) in substitutions {
        let from = from.as_bytes();
        if from.is_empty() {
            continue;
        }
        let mut replaced = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(from) {
                replaced.extend_from_slice(to.as_bytes());
                i += from.len();
            } else {
                replaced.push(out[i]);
                i += 1;
            }
        }
        out = replaced;
    }
    out
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(40);
    format!(
        " at byte {at}:\n  direct:  {:?}\n  proxied: {:?}",
        String::from_utf8_lossy(&a[from..(at + 80).min(a.len())]),
        String::from_utf8_lossy(&b[from..(at + 80).min(b.len())])
    )
}
