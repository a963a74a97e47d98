//! An `https://` upstream (docs/configuration.md "HTTPS upstreams"): the real Radicale
//! behind a TLS terminator whose certificate comes from a CA made by the test
//! (`harness::tls`). Through it calattach is as transparent as over plain HTTP and
//! manages attachments; a certificate from another CA or for another name is refused
//! with a 502 naming the URL and the reason, and the same in the log.

use crate::harness::calattach::run_to_exit;
use crate::harness::compare::{assert_transparent, Mapping};
use crate::harness::tls::{Ca, Terminator};
use crate::harness::{free_port, unique, Calattach, Client, Storage, Upstream};
use crate::transparency::{event, NAMED_PROPS};

const USER: &str = "user1";

/// Radicale behind TLS for `names`, and the PEM of the CA that signed its certificate
/// (written into a temp dir kept alive by the returned guard).
struct Https {
    up: &'static Upstream,
    ca: Ca,
    terminator: Terminator,
    dir: tempfile::TempDir,
}

impl Https {
    fn new(names: &[&str]) -> Https {
        let up = Upstream::radicale();
        let ca = Ca::new("upstream");
        let terminator = Terminator::start(&ca, names, up.port());
        Https {
            up,
            ca,
            terminator,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn ca_file(&self) -> String {
        self.ca
            .write_pem(self.dir.path(), "upstream-ca.pem")
            .to_string_lossy()
            .into_owned()
    }

    /// calattach in front of `https://<host>:<port>` trusting the upstream's CA.
    fn proxy(&self, host: &str) -> Calattach {
        Calattach::start(
            &self.terminator.origin(host),
            Storage::Local,
            &format!("[upstream]\nca_file = {:?}\n", self.ca_file()),
        )
    }

    async fn event(&self, prefix: &str) -> String {
        let cal = self.up.new_calendar(USER, prefix).await;
        let href = format!("{cal}{}.ics", unique("ev"));
        let uid = unique("uid");
        self.up
            .put_event(USER, &href, &event(&uid, "Over TLS", "20261201T100000Z"))
            .await;
        href
    }
}

#[tokio::test]
async fn https_upstream_get_and_propfind_equal_the_direct_answers() {
    let tls = Https::new(&["localhost"]);
    let proxy = tls.proxy("localhost");
    let href = tls.event("tls-read").await;
    let cal = href.rsplit_once('/').map(|(c, _)| format!("{c}/")).unwrap();
    let http = Client::new();
    let pw = tls.up.password(USER);
    let map = Mapping {
        upstream_origin: &tls.up.origin(),
        proxy_origin: &proxy.origin(),
        substitutions: &[],
        options: false,
    };
    let direct = http
        .request("GET", &tls.up.url(&href))
        .basic(USER, pw)
        .send()
        .await;
    let proxied = http
        .request("GET", &proxy.url(&href))
        .basic(USER, pw)
        .send()
        .await;
    assert_eq!(proxied.status, 200, "{proxied:?}\n{}", proxy.stderr());
    assert_transparent("GET over TLS", &direct, &proxied, &map);

    let propfind = |url: String| {
        http.request("PROPFIND", &url)
            .basic(USER, pw)
            .header("Depth", "1")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(NAMED_PROPS)
            .send()
    };
    let direct = propfind(tls.up.url(&cal)).await;
    let proxied = propfind(proxy.url(&cal)).await;
    assert_eq!(proxied.status, 207, "{proxied:?}");
    assert_transparent("PROPFIND over TLS", &direct, &proxied, &map);

    // The host name went out as SNI, and HTTP/1.1 was negotiated with ALPN.
    let seen = tls.terminator.seen();
    assert!(!seen.server_names.is_empty(), "no TLS handshake seen");
    assert!(
        seen.server_names
            .iter()
            .all(|n| n.as_deref() == Some("localhost")),
        "{seen:?}"
    );
    assert!(
        seen.alpn.iter().all(|p| p.as_deref() == Some("http/1.1")),
        "{seen:?}"
    );
    // Connections are pooled, not opened per request: at most one for the start-up
    // probe and one per worker thread (two requests here).
    assert!(seen.server_names.len() <= 3, "{seen:?}");
}

/// An IP-literal upstream: no SNI, the certificate's IP address entry is what matches.
#[tokio::test]
async fn https_upstream_by_ip_address_adds_downloads_and_removes_an_attachment() {
    let tls = Https::new(&["127.0.0.1"]);
    let proxy = tls.proxy("127.0.0.1");
    let href = tls.event("tls-attach").await;
    let http = Client::new();
    let pw = tls.up.password(USER);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();

    let added = http
        .request("POST", &proxy.url(&format!("{href}?action=attachment-add")))
        .basic(USER, pw)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Disposition", "attachment; filename=\"report.bin\"")
        .body(body.clone())
        .send()
        .await;
    assert_eq!(added.status, 201, "add: {added:?}\n{}", proxy.stderr());
    let location = added.header("location").expect("Location").to_string();
    let id = added
        .header("cal-managed-id")
        .expect("Cal-Managed-ID")
        .to_string();

    // The ATTACH line was written to Radicale over TLS.
    let stored = http
        .request("GET", &tls.up.url(&href))
        .basic(USER, pw)
        .send()
        .await;
    assert!(
        stored
            .text()
            .replace("\r\n ", "")
            .contains(&format!("MANAGED-ID={id}")),
        "{}",
        stored.text()
    );

    let got = http.request("GET", &location).basic(USER, pw).send().await;
    assert_eq!(got.status, 200, "download: {got:?}");
    assert!(got.body == body, "downloaded bytes differ from the upload");

    let removed = http
        .request(
            "POST",
            &proxy.url(&format!("{href}?action=attachment-remove&managed-id={id}")),
        )
        .basic(USER, pw)
        .send()
        .await;
    assert_eq!(removed.status, 204, "remove: {removed:?}");
    let stored = http
        .request("GET", &tls.up.url(&href))
        .basic(USER, pw)
        .send()
        .await;
    assert!(
        !stored.text().contains("MANAGED-ID="),
        "{removed:?}\n{}\n{}",
        stored.text(),
        proxy.stderr()
    );
    let gone = http.request("GET", &location).basic(USER, pw).send().await;
    assert_eq!(gone.status, 410, "after remove: {gone:?}");

    let seen = tls.terminator.seen();
    assert!(
        seen.server_names.iter().all(Option::is_none),
        "an IP address must not be sent as SNI: {seen:?}"
    );
}

/// `SSL_CERT_FILE` replaces the system's store, as OpenSSL-based tools read it.
#[tokio::test]
async fn https_upstream_is_trusted_through_ssl_cert_file() {
    let tls = Https::new(&["localhost"]);
    let ca_file = tls.ca_file();
    let proxy = Calattach::start_with_env(
        &tls.terminator.origin("localhost"),
        Storage::Local,
        "",
        &[("SSL_CERT_FILE", &ca_file)],
    );
    let reply = Client::new()
        .request("PROPFIND", &proxy.url(&tls.up.calendar_path(USER)))
        .basic(USER, tls.up.password(USER))
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(reply.status, 207, "{reply:?}\n{}", proxy.stderr());
}

/// Asserts a 502 whose body names the upstream URL and `reason`, and the log line.
async fn assert_refused(proxy: &Calattach, tls: &Https, host: &str, reason: &str) {
    let reply = Client::new()
        .request("PROPFIND", &proxy.url(&tls.up.calendar_path(USER)))
        .basic(USER, tls.up.password(USER))
        .header("Depth", "0")
        .send()
        .await;
    let origin = tls.terminator.origin(host);
    assert_eq!(reply.status, 502, "{reply:?}");
    let text = reply.text();
    assert!(
        text.contains(&format!("TLS handshake with {origin} failed")) && text.contains(reason),
        "the 502 body must name {origin} and {reason:?}:\n{text}"
    );
    let log = proxy.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("upstream TLS handshake failed")
                && l.contains(&origin)
                && l.contains(reason)),
        "no log line naming {origin} and {reason:?}:\n{log}"
    );
    // Nothing reached Radicale: the terminator saw the handshake fail.
    assert!(tls.terminator.seen().server_names.is_empty());
}

#[tokio::test]
async fn https_upstream_signed_by_an_unknown_ca_is_refused_with_502_naming_the_url() {
    let tls = Https::new(&["localhost"]);
    let other = Ca::new("other");
    let other_pem = other.write_pem(tls.dir.path(), "other-ca.pem");
    let proxy = Calattach::start(
        &tls.terminator.origin("localhost"),
        Storage::Local,
        &format!("[upstream]\nca_file = {:?}\n", other_pem.to_string_lossy()),
    );
    assert_refused(&proxy, &tls, "localhost", "certificate not trusted").await;
}

#[tokio::test]
async fn https_upstream_with_a_certificate_for_another_name_is_refused_with_502() {
    let tls = Https::new(&["calendar.example.org"]);
    let proxy = tls.proxy("localhost");
    assert_refused(
        &proxy,
        &tls,
        "localhost",
        "certificate does not match the host name localhost",
    )
    .await;
}

fn check_config(upstream: &str, extra: &str) -> crate::harness::calattach::Exit {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"\"\n\
         [upstream]\nurl = \"{upstream}\"\nconnect_timeout = \"2s\"\n{extra}\
         [storage]\nurl = \"file://{}\"\n",
        free_port(),
        dir.path().join("data").display()
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    run_to_exit(
        dir.path(),
        &["check-config", "-c", &path.to_string_lossy()],
        &[],
    )
}

#[test]
fn check_config_reports_the_tls_handshake_and_why_it_failed() {
    let tls = Https::new(&["localhost"]);
    let origin = tls.terminator.origin("localhost");
    let ok = check_config(&origin, &format!("ca_file = {:?}\n", tls.ca_file()));
    assert_eq!(ok.code, Some(0), "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout
            .contains(&format!("upstream {origin}: TLS ok (TLSv1_3, TLS13_"))
            && ok
                .stdout
                .contains("ALPN http/1.1; certificate and host name verified)"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("calendar-access"), "{}", ok.stdout);

    let other = Ca::new("other");
    let other_pem = other.write_pem(tls.dir.path(), "other-ca.pem");
    let refused = check_config(
        &origin,
        &format!("ca_file = {:?}\n", other_pem.to_string_lossy()),
    );
    assert_eq!(
        refused.code,
        Some(1),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert!(
        refused.stdout.contains(&format!(
            "upstream {origin}: FAIL: cannot connect: TLS handshake with {origin} failed: \
             certificate not trusted"
        )),
        "{}",
        refused.stdout
    );
}

#[test]
fn check_config_names_the_cause_when_the_upstream_is_down() {
    let port = free_port();
    let out = check_config(&format!("http://127.0.0.1:{port}"), "");
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "upstream http://127.0.0.1:{port}: FAIL: cannot connect: Connection refused"
        )),
        "{}",
        out.stdout
    );
}

/// `https://` pointed at a plain HTTP port: refused, with a hint.
#[tokio::test]
async fn https_url_on_a_plain_http_port_is_refused_with_a_hint() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(
        &format!("https://127.0.0.1:{}", up.port()),
        Storage::Local,
        "",
    );
    let reply = Client::new()
        .request("OPTIONS", &proxy.url("/"))
        .send()
        .await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        reply
            .text()
            .contains("does the upstream speak TLS on this port?"),
        "{}",
        reply.text()
    );
}
