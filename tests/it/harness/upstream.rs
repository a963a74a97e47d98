//! Radicale 3.9, Xandikos 0.4.10 and Baïkal 0.12.1 as upstreams, one of each per
//! test binary.
//!
//! Layouts (measured, see the project's server notes): Radicale's principal
//! and calendar home are `/<user>/`, its default calendar `/<user>/calendar/`
//! (predefined, created on the user's first authenticated request); Xandikos's
//! principal is `/<user>/`, home `/<user>/calendars/`, default calendar
//! `/<user>/calendars/calendar/` (created on first authenticated request).
//! Baïkal's DAV server lives under `/dav.php/` (its `/` is an HTML start page):
//! principal `/dav.php/principals/<user>/`, home `/dav.php/calendars/<user>/`,
//! default calendar `/dav.php/calendars/<user>/default/`, addresses
//! `mailto:<user>@example.org`; sabre/dav 4.7.1 with implicit scheduling.
//!
//! Baïkal comes from `../shared/upstreams/baikal/start.sh` (beside the repository;
//! `BAIKAL_DIR` overrides) and needs PHP. Where either is missing, the Baïkal
//! variant of each test prints that it was skipped and why, and passes; with
//! `BAIKAL_REQUIRED=1` (CI) it fails instead. The name has no `CALATTACH_` prefix:
//! calattach reads those as config overrides.

use super::process::{port_open, Proc};
use super::{free_port, loopback, raw};
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

/// The users every upstream knows: (name, password). `user4` is the invitee of the
/// scheduling tests only: no other test creates calendars for them, because a calendar
/// made with MKCALENDAR on Baïkal 0.12.1 records no owner access and sabre/dav then
/// delivers each scheduling update there as a new object (docs/deployment.md).
pub const USERS: [(&str, &str); 4] = [
    ("user1", "user1-pw"),
    ("user2", "user2-pw"),
    ("user3", "user3-pw"),
    ("user4", "user4-pw"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Radicale,
    Xandikos,
    Baikal,
}

/// Every upstream the parametrized tests run on.
pub const ALL: [Kind; 3] = [Kind::Radicale, Kind::Xandikos, Kind::Baikal];

/// A running CalDAV server with throw-away state.
pub struct Upstream {
    kind: Kind,
    port: u16,
    proc: Proc,
    /// Baïkal's PHP server leads a process group of its own (start.sh detaches it):
    /// killed on drop; the lifeline's wrapper kills it when the test binary exits.
    detached_group: Option<u32>,
    _dir: TempDir,
}

static RADICALE: OnceLock<Upstream> = OnceLock::new();
static XANDIKOS: OnceLock<Upstream> = OnceLock::new();
static BAIKAL: OnceLock<Upstream> = OnceLock::new();

impl Upstream {
    /// The Radicale shared by this test binary (started on first use).
    pub fn radicale() -> &'static Upstream {
        RADICALE.get_or_init(|| Upstream::start(Kind::Radicale))
    }

    /// The Xandikos shared by this test binary (started on first use).
    pub fn xandikos() -> &'static Upstream {
        XANDIKOS.get_or_init(|| Upstream::start(Kind::Xandikos))
    }

    /// The Baïkal shared by this test binary (started on first use). Panics when
    /// Baïkal cannot run here: tests ask [`usable`] first.
    pub fn baikal() -> &'static Upstream {
        BAIKAL.get_or_init(|| Upstream::start(Kind::Baikal))
    }

    pub fn get(kind: Kind) -> &'static Upstream {
        match kind {
            Kind::Radicale => Self::radicale(),
            Kind::Xandikos => Self::xandikos(),
            Kind::Baikal => Self::baikal(),
        }
    }

    /// Starts a private instance (for tests that must own their upstream).
    pub fn start(kind: Kind) -> Upstream {
        Self::start_with(kind, &[])
    }

    /// A private Baïkal with Digest authentication, Baïkal's own default
    /// (`dav_auth_type: Digest`).
    pub fn start_baikal_digest() -> Upstream {
        Self::start_with(Kind::Baikal, &[("BAIKAL_AUTH", "Digest")])
    }

    fn start_with(kind: Kind, env: &[(&str, &str)]) -> Upstream {
        let dir = tempfile::Builder::new()
            .prefix(&format!("calattach-{kind:?}-").to_lowercase())
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut proc = match kind {
            Kind::Radicale => start_radicale(dir.path(), port),
            Kind::Xandikos => start_xandikos(dir.path(), port),
            Kind::Baikal => start_baikal(dir.path(), port, env),
        };
        let pidfile = dir.path().join("baikal.group");
        let mut detached_group = None;
        proc.wait_ready(Duration::from_secs(60), || {
            if kind == Kind::Baikal && detached_group.is_none() {
                detached_group = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                if detached_group.is_none() {
                    return false;
                }
            }
            port_open(port)
        });
        // The first authenticated request creates each user's principal and
        // default calendar; doing it here keeps tests from racing on it.
        let up = Upstream {
            kind,
            port,
            proc,
            detached_group,
            _dir: dir,
        };
        let digest = env.contains(&("BAIKAL_AUTH", "Digest"));
        for (user, password) in USERS.iter().filter(|_| !digest) {
            let path = up.calendar_path(user);
            let status = raw::blocking_request(
                loopback(port),
                &format!(
                    "PROPFIND {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {}\r\n\
                     Depth: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    super::basic(user, password)
                ),
            );
            assert_eq!(
                status,
                Some(207),
                "{kind:?}: PROPFIND {path} as {user} did not answer 207; stderr:\n{}",
                up.proc.stderr()
            );
        }
        up
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The direct URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn password(&self, user: &str) -> &'static str {
        password(user)
    }

    pub fn principal_path(&self, user: &str) -> String {
        match self.kind {
            Kind::Baikal => format!("/dav.php/principals/{user}/"),
            _ => format!("/{user}/"),
        }
    }

    pub fn home_path(&self, user: &str) -> String {
        match self.kind {
            Kind::Radicale => format!("/{user}/"),
            Kind::Xandikos => format!("/{user}/calendars/"),
            Kind::Baikal => format!("/dav.php/calendars/{user}/"),
        }
    }

    /// Path of the user's default calendar.
    pub fn calendar_path(&self, user: &str) -> String {
        match self.kind {
            Kind::Baikal => format!("{}default/", self.home_path(user)),
            _ => format!("{}calendar/", self.home_path(user)),
        }
    }

    /// The user's scheduling inbox (RFC 6638 §2.2), where the upstream has one.
    pub fn inbox_path(&self, user: &str) -> Option<String> {
        match self.kind {
            Kind::Baikal => Some(format!("{}inbox/", self.home_path(user))),
            _ => None,
        }
    }

    /// Direct URL of the user's default calendar.
    pub fn calendar_url(&self, user: &str) -> String {
        self.url(&self.calendar_path(user))
    }

    /// Path (not yet created) of a new calendar named `name` in `user`'s home.
    pub fn calendar_path_named(&self, user: &str, name: &str) -> String {
        format!("{}{name}/", self.home_path(user))
    }

    /// Creates a calendar with a unique name (MKCALENDAR, direct) and
    /// returns its path.
    pub async fn new_calendar(&self, user: &str, prefix: &str) -> String {
        let path = self.calendar_path_named(user, &super::unique(prefix));
        let reply = super::Client::new()
            .request("MKCALENDAR", &self.url(&path))
            .basic(user, password(user))
            .send()
            .await;
        assert_eq!(
            reply.status.as_u16(),
            201,
            "{}: MKCALENDAR {path}: {reply:?}",
            self.name()
        );
        path
    }

    /// PUTs `ics` (direct) at `path` and returns the ETag when there is one.
    pub async fn put_event(&self, user: &str, path: &str, ics: &str) -> Option<String> {
        let reply = super::Client::new()
            .request("PUT", &self.url(path))
            .basic(user, password(user))
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(ics.to_string())
            .send()
            .await;
        assert!(
            reply.status.as_u16() == 201 || reply.status.as_u16() == 204,
            "{}: PUT {path}: {reply:?}",
            self.name()
        );
        reply.header("etag").map(str::to_string)
    }

    /// The hrefs a PROPFIND depth 1 of `collection` (direct, as `user`) lists, the
    /// collection itself excepted.
    pub async fn members(&self, user: &str, collection: &str) -> Vec<String> {
        let r = super::Client::new()
            .request("PROPFIND", &self.url(collection))
            .basic(user, password(user))
            .header("Depth", "1")
            .send()
            .await;
        assert_eq!(
            r.status,
            207,
            "{}: PROPFIND {collection}: {r:?}",
            self.name()
        );
        hrefs(&r.text())
            .into_iter()
            .filter(|h| h != collection)
            .collect()
    }

    /// Every calendar object of `user` holding `uid`, in any of their calendars
    /// (read directly): (href, body) each.
    pub async fn objects_with_uid(&self, user: &str, uid: &str) -> Vec<(String, String)> {
        let skip = [
            self.inbox_path(user),
            Some(format!("{}outbox/", self.home_path(user))),
        ];
        let mut out = Vec::new();
        for cal in self.members(user, &self.home_path(user)).await {
            if cal.ends_with('/') && !skip.contains(&Some(cal.clone())) {
                out.extend(self.objects_with_uid_in(user, &cal, uid).await);
            }
        }
        out
    }

    /// The objects of `collection` holding `uid` (a calendar-query, or where the
    /// collection takes none, as a scheduling inbox, its members): (href, body) each.
    pub async fn objects_with_uid_in(
        &self,
        user: &str,
        collection: &str,
        uid: &str,
    ) -> Vec<(String, String)> {
        let http = super::Client::new();
        let query = format!(
            "<?xml version=\"1.0\"?><C:calendar-query xmlns:D=\"DAV:\" \
             xmlns:C=\"urn:ietf:params:xml:ns:caldav\"><D:prop><D:getetag/></D:prop>\
             <C:filter><C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\">\
             <C:prop-filter name=\"UID\"><C:text-match collation=\"i;octet\">{uid}\
             </C:text-match></C:prop-filter></C:comp-filter></C:comp-filter></C:filter>\
             </C:calendar-query>"
        );
        let r = http
            .request("REPORT", &self.url(collection))
            .basic(user, password(user))
            .header("Depth", "1")
            .header("Content-Type", "application/xml")
            .body(query)
            .send()
            .await;
        let candidates = if r.status == 207 {
            hrefs(&r.text())
        } else {
            self.members(user, collection).await
        };
        let mut out = Vec::new();
        for href in candidates.into_iter().filter(|h| h.ends_with(".ics")) {
            let r = http
                .request("GET", &self.url(&href))
                .basic(user, password(user))
                .send()
                .await;
            if r.status == 200 && r.text().contains(&format!("UID:{uid}\r\n")) {
                out.push((href, r.text()));
            }
        }
        out
    }

    /// The server's state directory (Radicale's `users` file lives here).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The server's stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(group) = self.detached_group {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Radicale => "radicale",
            Kind::Xandikos => "xandikos",
            Kind::Baikal => "baikal",
        }
    }
}

/// Whether a test on `kind` can run here. Radicale and Xandikos always can (their
/// absence fails the test). Baïkal needs PHP and the kit beside the repository:
/// without them this prints, past the test harness's output capture, that `test`
/// was skipped and why, and returns false; with `BAIKAL_REQUIRED=1` it panics.
pub fn usable(kind: Kind, test: &str) -> bool {
    if kind != Kind::Baikal {
        return true;
    }
    let Some(why) = baikal_missing() else {
        return true;
    };
    let test = test.strip_prefix("it::").unwrap_or(test);
    if std::env::var_os("BAIKAL_REQUIRED").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: Baïkal is required (BAIKAL_REQUIRED) but cannot run: {why}");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test} on baikal: {why} (set BAIKAL_REQUIRED=1 to make this an error)"
    );
    false
}

/// The Baïkal kit's start script: `$BAIKAL_DIR/start.sh`, default
/// `<repo>/../shared/upstreams/baikal/start.sh`.
pub fn baikal_start_script() -> std::path::PathBuf {
    let dir = match std::env::var_os("BAIKAL_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => super::repo_root().join("../shared/upstreams/baikal"),
    };
    dir.join("start.sh")
}

/// Why Baïkal cannot run here (checked once per test binary), `None` when it can.
fn baikal_missing() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let script = baikal_start_script();
        if !script.is_file() {
            return Some(format!(
                "no Baïkal kit at {} (set BAIKAL_DIR)",
                script.display()
            ));
        }
        let php = std::process::Command::new("php")
            .args([
                "-r",
                "exit(extension_loaded('pdo_sqlite') && extension_loaded('xml') \
                 && extension_loaded('mbstring') ? 0 : 3);",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match php {
            Err(_) => Some(
                "php not found (apt-get install php-cli php-sqlite3 php-xml php-mbstring)".into(),
            ),
            Ok(s) if !s.success() => Some(
                "php lacks pdo_sqlite, xml or mbstring (apt-get install php-sqlite3 php-xml \
                 php-mbstring)"
                    .into(),
            ),
            Ok(_) => None,
        }
    })
    .as_deref()
}

/// The `DAV:href` values of a multistatus (any prefix), in order.
fn hrefs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("href>") {
        let after = &rest[i + 5..];
        let Some(end) = after.find('<') else { break };
        let text = after[..end].trim();
        if !text.is_empty() {
            out.push(text.to_string());
        }
        rest = &after[end..];
    }
    out
}

pub fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(name, _)| *name == user)
        .map(|(_, pw)| *pw)
        .unwrap_or_else(|| panic!("unknown test user {user}"))
}

fn start_radicale(dir: &std::path::Path, port: u16) -> Proc {
    let users: String = USERS
        .iter()
        .map(|(user, pw)| format!("{user}:{pw}\n"))
        .collect();
    std::fs::write(dir.join("users"), users).expect("write users");
    // delay = 0 / delay_on_error = 0: Radicale otherwise sleeps a second on
    // every 401/403/5xx. max_connections: parallel tests share this server.
    let config = format!(
        r#"[server]
hosts = 127.0.0.1:{port}
max_connections = 64
delay_on_error = 0

[auth]
type = htpasswd
htpasswd_filename = {dir}/users
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {dir}/collections
predefined_collections = {{"calendar": {{"tag": "VCALENDAR", "C:supported-calendar-component-set": "VEVENT,VTODO,VJOURNAL"}}}}

[web]
type = none

[logging]
level = warning
"#,
        dir = dir.display()
    );
    let config_path = dir.join("config");
    std::fs::write(&config_path, config).expect("write radicale config");
    let python = super::python();
    Proc::spawn(
        "radicale",
        dir,
        &python,
        &["-m", "radicale", "--config", &config_path.to_string_lossy()],
        &[],
    )
}

fn start_xandikos(dir: &std::path::Path, port: u16) -> Proc {
    let mut args = vec![
        super::script("xandikos_server.py")
            .to_string_lossy()
            .into_owned(),
        "--directory".into(),
        dir.join("data").to_string_lossy().into_owned(),
        "--htpasswd".into(),
        dir.join("htpasswd").to_string_lossy().into_owned(),
        "--port".into(),
        port.to_string(),
    ];
    for (user, pw) in USERS {
        args.push("--user".into());
        args.push(format!("{user}:{pw}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn("xandikos", dir, &super::python(), &args, &[])
}

/// Baïkal through its kit's `start.sh`, which detaches PHP's built-in server into a
/// process group of its own and prints its pid last. A small shell stays in the
/// lifeline's group: it records that pid for [`Upstream`]'s drop and, when the
/// lifeline stops it (the test binary ended), kills the detached group.
fn start_baikal(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Proc {
    const WRAPPER: &str = r#"set -u
pid=$("$0" "$1" "$2/state" | tail -n 1) || exit 1
case $pid in ''|*[!0-9]*) echo "start.sh printed no pid" >&2; exit 1;; esac
trap 'kill -KILL -- "-$pid" 2>/dev/null; exit 0' TERM INT HUP
echo "$pid" > "$2/baikal.group.tmp" && mv "$2/baikal.group.tmp" "$2/baikal.group"
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
echo "baikal (pid $pid) exited; its log:" >&2; tail -n 40 "$2/state/baikal.log" >&2
exit 1
"#;
    let users: Vec<String> = USERS.iter().map(|(u, p)| format!("{u}:{p}")).collect();
    let users = users.join(" ");
    let script = baikal_start_script();
    let port = port.to_string();
    let dir_text = dir.to_string_lossy().into_owned();
    let cache = super::repo_root().join("target/baikal-kit");
    let cache = cache.to_string_lossy().into_owned();
    Proc::spawn(
        "baikal",
        dir,
        std::path::Path::new("/bin/bash"),
        &["-c", WRAPPER, &script.to_string_lossy(), &port, &dir_text],
        &[
            &[
                ("BAIKAL_USERS", users.as_str()),
                ("PHP_CLI_SERVER_WORKERS", "8"),
                ("XDG_CACHE_HOME", cache.as_str()),
            ],
            env,
        ]
        .concat(),
    )
}
