//! What is particular to Baïkal (sabre/dav 4.7.1 under PHP): its PHP session cookie,
//! Digest authentication (its default `dav_auth_type`), and `check-config` in front of
//! a DAV server that lives under `/dav.php/` behind an HTML start page. The attachment
//! routes themselves run on Baïkal in every parametrized test (`on_each!`,
//! `conformance!`) and in `scheduling.rs`.

use crate::harness::calattach::run_to_exit;
use crate::harness::upstream::{password, usable};
use crate::harness::{free_port, Calattach, Client, Kind, Storage, Upstream};

macro_rules! on_baikal {
    ($name:ident) => {
        if !usable(Kind::Baikal, concat!("baikal::", stringify!($name))) {
            return;
        }
    };
}

const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calattach//tests//EN\r\n\
BEGIN:VEVENT\r\nUID:UID-HERE\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250601T100000Z\r\n\
SUMMARY:cookie\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

/// PHP starts a session on every request to Baïkal: its `Set-Cookie: PHPSESSID=…`
/// reaches the client through calattach as it left Baïkal, and the client's `Cookie`
/// reaches Baïkal untouched (PHP then resumes that session: its file exists, and no new
/// cookie is set), on pass-through and on the attachment routes' own answers alike.
#[tokio::test]
async fn php_session_cookie_passes_through_untouched() {
    on_baikal!(php_session_cookie_passes_through_untouched);
    let up = Upstream::baikal();
    let proxy = Calattach::start(up, Storage::Local, "");
    let http = Client::new();
    let cal = up.new_calendar("user1", "cookie").await;
    let uid = crate::harness::unique("cookie");
    let path = format!("{cal}{uid}.ics");
    up.put_event("user1", &path, &EVENT.replace("UID-HERE", &uid))
        .await;

    let r = http
        .request("GET", &proxy.url(&path))
        .basic("user1", password("user1"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let set = r.header("set-cookie").unwrap_or_default();
    assert!(
        set.starts_with("PHPSESSID=") && set.ends_with("; path=/; HttpOnly"),
        "Set-Cookie through calattach: {r:?}"
    );

    let session = format!("calattach{}", &uid[uid.len() - 8..]);
    let r = http
        .request("GET", &proxy.url(&path))
        .basic("user1", password("user1"))
        .header("Cookie", format!("PHPSESSID={session}"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("set-cookie"),
        None,
        "PHP started a new session: the Cookie did not reach it: {r:?}"
    );
    let file = up
        .dir()
        .join("state/baikal/sessions")
        .join(format!("sess_{session}"));
    assert!(file.exists(), "no PHP session {} upstream", file.display());

    // An attachment POST with the cookie: calattach's answer is its own, and the
    // session it replays on its internal requests is the client's.
    let session2 = format!("calattachpost{}", &uid[uid.len() - 8..]);
    let r = http
        .request("POST", &proxy.url(&format!("{path}?action=attachment-add")))
        .basic("user1", password("user1"))
        .header("Cookie", format!("PHPSESSID={session2}"))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("set-cookie"), None, "{r:?}");
}

/// With Digest (Baïkal's default `dav_auth_type`), calattach cannot replay the
/// caller's credentials: an attachment POST or download with Digest credentials
/// answers `401` with Baïkal's own Digest challenge and a body that says to switch
/// `dav_auth_type` to Basic.
#[tokio::test]
async fn digest_only_baikal_gets_its_challenge_and_the_dav_auth_type_advice_on_owned_routes() {
    on_baikal!(digest_only_baikal_gets_its_challenge_and_the_dav_auth_type_advice_on_owned_routes);
    let up: &'static Upstream = Box::leak(Box::new(Upstream::start_baikal_digest()));
    let proxy = Calattach::start(up, Storage::Local, "");
    let http = Client::new();
    let digest = "Digest username=\"user1\", realm=\"BaikalDAV\", nonce=\"n\", \
                  uri=\"/dav.php/calendars/user1/default/e.ics\", response=\"r\"";
    let path = format!("{}e.ics?action=attachment-add", up.calendar_path("user1"));
    for (method, url) in [
        ("POST", proxy.url(&path)),
        (
            "GET",
            proxy.url("/.attachments/00000000000000000000000000000000"),
        ),
    ] {
        let r = http
            .request(method, &url)
            .header("Authorization", digest)
            .header("Content-Type", "text/plain")
            .body(if method == "POST" { "x" } else { "" })
            .send()
            .await;
        assert_eq!(r.status, 401, "{method}: {r:?}");
        let challenges: Vec<String> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_string())
            .collect();
        assert!(
            !challenges.is_empty() && challenges.iter().all(|c| c.starts_with("Digest ")),
            "{method}: not Baïkal's Digest challenge: {r:?}\n{}",
            proxy.stderr()
        );
        assert!(
            challenges.iter().any(|c| c.contains("realm=\"BaikalDAV\"")),
            "{method}: {challenges:?}"
        );
        let text = r.text();
        assert!(
            text.contains("dav_auth_type") && text.contains("Basic"),
            "{method}: {text}"
        );
    }
}

fn check_config(upstream: &str, extra: &str) -> crate::harness::calattach::Exit {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"\"\n\
         [upstream]\nurl = \"{upstream}\"\nconnect_timeout = \"2s\"\n\
         [storage]\nurl = \"file://{}\"\n{extra}",
        free_port(),
        dir.path().join("data").display()
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).expect("write config");
    run_to_exit(
        dir.path(),
        &["check-config", "-c", &path.to_string_lossy()],
        &[],
    )
}

/// Baïkal's `/` is an HTML start page: check-config finds its CalDAV server through
/// `/.well-known/caldav` (under `/dav.php`), sees Basic offered, and does not take the
/// start page's answer at the attachment prefix for a collision.
#[test]
fn check_config_finds_baikal_under_dav_php_and_passes() {
    on_baikal!(check_config_finds_baikal_under_dav_php_and_passes);
    let up = Upstream::baikal();
    let gc = format!(
        "[gc]\nusername = \"user1\"\npassword = \"{}\"\n",
        password("user1")
    );
    let out = check_config(&up.origin(), &gc);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok (speaks CalDAV at /dav.php")
            && out.stdout.contains("ok (authentication: basic)")
            && out.stdout.contains("attachments.prefix /.attachments: ok"),
        "{}",
        out.stdout
    );
}

/// In front of a Baïkal left at Digest, check-config fails and says how to switch.
#[test]
fn check_config_on_digest_only_baikal_fails_and_says_to_switch_dav_auth_type() {
    on_baikal!(check_config_on_digest_only_baikal_fails_and_says_to_switch_dav_auth_type);
    let up = Upstream::start_baikal_digest();
    let out = check_config(&up.origin(), "");
    assert_ne!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("offers only Digest") && out.stdout.contains("dav_auth_type"),
        "{}",
        out.stdout
    );
}
