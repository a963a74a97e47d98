//! Configuration: one TOML file, every key overridable from the environment.
//!
//! Loading is two steps, as in `proxy.toml.example`: the file (and the environment
//! overrides, merged into the same TOML tree) deserialises into [`RawConfig`], whose
//! fields are plain TOML types and which refuses unknown keys; [`Config::from_raw`] then
//! validates every value once and produces typed settings. No string travels as
//! configuration after loading.
//!
//! Environment overrides: `CALATTACH_<SECTION>__<KEY>` sets `[section] key`, and
//! `CALATTACH_STORAGE__OPTIONS__<OPT>` sets `[storage.options] opt` (names are
//! lower-cased). A value that parses as a TOML scalar (`20`, `true`) takes that type;
//! anything else is a string. The environment wins over the file. The environment is read
//! through [`Env`] so tests never mutate the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 64;
/// One user's share of the upload slots when `max_concurrent_uploads_per_user` is not
/// set: a quarter, so that one user cannot take every slot.
pub const DEFAULT_UPLOAD_SHARE_DIVISOR: usize = 4;
/// Most `rid` items in one attachment POST (RFC 8607 §7): clients send one.
pub const DEFAULT_MAX_RIDS: usize = 1000;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_PREFIX: &str = "/.attachments";
pub const DEFAULT_MAX_ATTACHMENT_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_ATTACHMENTS_PER_RESOURCE: u64 = 20;
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_OVERRIDES: usize = 1000;
/// Default of the rid check's instance limit (`attachments.max_expanded_instances`,
/// `ical::Budget`): a daily series of 270 years, an hourly one of 11; no real calendar
/// reaches it.
pub const DEFAULT_MAX_EXPANDED_INSTANCES: u64 = 100_000;
/// Default of the rid check's line limit (`attachments.max_recurrence_lines`).
pub const DEFAULT_MAX_RECURRENCE_LINES: usize = 1000;
/// Default of the rid check's wall-clock limit (`attachments.max_expansion_time`).
pub const DEFAULT_MAX_EXPANSION_TIME: Duration = Duration::from_secs(1);
/// Size of one multipart part by default (`storage.part_size`): the S3 minimum for
/// every part but the last.
pub const DEFAULT_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Part buffers of all S3 uploads together when not configured (`storage.upload_buffer`):
/// one part for each of the default 64 upload slots.
pub const DEFAULT_UPLOAD_BUFFER: u64 = 64 * DEFAULT_PART_SIZE;
pub const DEFAULT_COMMIT_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_STORAGE_URL: &str = "file://./data";
pub const DEFAULT_GC_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_GC_PENDING_GRACE: Duration = Duration::from_secs(3600);
pub const DEFAULT_IDENTITY_CACHE_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_IDENTITY_CACHE_SIZE: usize = 10_000;

const ENV_PREFIX: &str = "CALATTACH_";

/// A configuration problem, naming the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{key}: {message}")]
    Key { key: String, message: String },
    #[error("{key} = {value:?}: {message}")]
    Value {
        key: String,
        value: String,
        message: String,
    },
}

impl ConfigError {
    fn value(key: &str, value: impl fmt::Display, message: impl fmt::Display) -> Self {
        ConfigError::Value {
            key: key.to_owned(),
            value: value.to_string(),
            message: message.to_string(),
        }
    }
}

/// Where environment overrides come from; the process environment in production, a map
/// in tests.
pub trait Env {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

// === raw (file) form ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub attachments: RawAttachments,
    pub storage: RawStorage,
    pub identity: RawIdentity,
    pub gc: RawGc,
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub shutdown_grace: Option<String>,
    pub max_header_bytes: Option<SizeValue>,
    pub max_headers: Option<i64>,
    pub body_idle_timeout: Option<String>,
    pub threads: Option<i64>,
    pub allowed_origins: Option<StringList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub preserve_host: Option<bool>,
    pub forwarded_headers: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAttachments {
    pub prefix: Option<String>,
    pub max_attachment_size: Option<SizeValue>,
    pub max_attachments_per_resource: Option<i64>,
    pub max_object_size: Option<SizeValue>,
    pub max_overrides: Option<i64>,
    pub no_recurrence: Option<bool>,
    pub commit_deadline: Option<String>,
    pub download: Option<String>,
    pub max_concurrent_uploads: Option<i64>,
    pub web_page: Option<bool>,
    pub convert_inline: Option<bool>,
    pub max_concurrent_uploads_per_user: Option<i64>,
    pub max_rids: Option<i64>,
    pub max_recurrence_lines: Option<i64>,
    pub max_expanded_instances: Option<i64>,
    pub max_expansion_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub url: Option<String>,
    pub part_size: Option<SizeValue>,
    pub upload_buffer: Option<SizeValue>,
    pub options: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentity {
    pub address_template: Option<String>,
    pub cache_ttl: Option<String>,
    pub cache_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGc {
    pub retention: Option<String>,
    pub pending_grace: Option<String>,
    pub interval: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// A list written as a TOML array or as one string of comma-separated items (the form an
/// environment variable can give).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    List(Vec<String>),
    Text(String),
}

impl StringList {
    fn items(self) -> Vec<String> {
        match self {
            StringList::List(v) => v,
            StringList::Text(t) => t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// A size written as a number of bytes or as a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

// === validated form ===

/// How forwarding headers are added to requests sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHeaders {
    pub x_forwarded: bool,
    pub forwarded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Identity resolution (`[identity]`).
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub address_template: Option<String>,
    pub cache_ttl: Duration,
    pub cache_size: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub attachments: AttachmentsConfig,
    pub storage: StorageConfig,
    pub identity: IdentityConfig,
    pub gc: GcConfig,
    pub log: LogConfig,
}

#[derive(Clone)]
pub struct GcConfig {
    /// Tombstones older than this are deleted (`0` = at the next pass).
    pub retention: Duration,
    /// Pending ids and orphan blobs younger than this are never touched.
    pub pending_grace: Duration,
    /// Run gc inside `serve` this often; `None` = only `calattach gc`.
    pub interval: Option<Duration>,
    /// Service credential used to prove pending ids unreferenced.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for GcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcConfig")
            .field("retention", &self.retention)
            .field("pending_grace", &self.pending_grace)
            .field("interval", &self.interval)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    /// Scheme and authority only (no path), e.g. `http://cal.example.org`.
    pub public_url: Url,
    pub shutdown_grace: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// A request body that sends nothing for this long is abandoned.
    pub body_idle_timeout: Duration,
    /// Worker threads serving the CalDAV listener.
    pub threads: usize,
    /// Origins (`scheme://host[:port]`) besides `public_url`'s whose browser requests
    /// may make attachment POSTs (browser-based CalDAV clients served elsewhere).
    pub allowed_origins: Vec<url::Origin>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and authority only: request paths are forwarded unchanged.
    pub url: Url,
    /// PEM CA certificates trusted for an `https://` upstream besides the system's.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub preserve_host: bool,
    pub forwarded_headers: ForwardedHeaders,
}

#[derive(Debug, Clone)]
pub struct AttachmentsConfig {
    /// Starts with `/`, no trailing `/`.
    pub prefix: String,
    pub max_attachment_size: u64,
    pub max_attachments_per_resource: u64,
    pub max_object_size: u64,
    pub max_overrides: usize,
    pub no_recurrence: bool,
    pub commit_deadline: Duration,
    pub download: DownloadMode,
    /// Attachment uploads in progress at once; more get `503 Retry-After`.
    pub max_concurrent_uploads: usize,
    /// Serve the attachment web page at `<prefix>/` (src/web).
    pub web_page: bool,
    /// Turn inline binary `ATTACH` values of PUT calendar objects into managed
    /// attachments (`attach::guard`).
    pub convert_inline: bool,
    /// Of those, uploads one user may have in progress at once.
    pub max_concurrent_uploads_per_user: usize,
    /// Most `rid` items in one request (RFC 8607 §7).
    pub max_rids: usize,
    /// Most RRULE/EXRULE/RDATE/EXDATE lines of a master whose instances are checked.
    pub max_recurrence_lines: usize,
    /// Recurrence instances one request may generate while checking rids.
    pub max_expanded_instances: u64,
    /// Wall-clock time one request may spend checking rids.
    pub max_expansion_time: Duration,
}

/// How attachments are served (DESIGN §6; trade-offs in docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadMode {
    /// Credentials checked against the access rules (default).
    Auth,
    /// The unguessable id in the path is the credential: served to anyone holding it.
    Capability,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub url: Url,
    /// S3 multipart part size (5 MiB to 5 GiB).
    pub part_size: u64,
    /// Part buffers of all S3 uploads at once (default `max_concurrent_uploads` ×
    /// `part_size`); an upload that finds no room within a few seconds gets
    /// `503 Retry-After`.
    pub upload_buffer: u64,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Reads `path`, applies the overrides found in `env`, validates.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Parses TOML text (`origin` names it in errors), applies `env`, validates.
    pub fn parse(text: &str, origin: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut tree: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: match e.span() {
                        Some(span) => {
                            let (line, column) = line_column(text, span.start);
                            format!("{origin}:{line}:{column}")
                        }
                        None => origin.to_owned(),
                    },
                    message: e.message().trim_end().to_owned(),
                })?;
        apply_env(&mut tree, env)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                ConfigError::Key {
                    key: e.path().to_string(),
                    // toml adds "in `<table>`" on a line of its own; the key says it.
                    message: e
                        .inner()
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                }
            })?;
        Config::from_raw(raw)
    }

    /// Validates a raw configuration; every error names its key and value.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let s = raw.server;
        let listen = parse_addr(
            "server.listen",
            s.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?;
        let admin_listen = match s.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN) {
            "" => None,
            a => Some(parse_addr("server.admin_listen", a)?),
        };
        let public_url = match s.public_url.as_deref() {
            Some(u) => parse_origin("server.public_url", u)?,
            None => parse_origin("server.public_url", &format!("http://{listen}"))?,
        };
        let server = ServerConfig {
            listen,
            admin_listen,
            public_url,
            shutdown_grace: duration(
                "server.shutdown_grace",
                s.shutdown_grace,
                DEFAULT_SHUTDOWN_GRACE,
            )?,
            max_header_bytes: usize_of(
                "server.max_header_bytes",
                size(
                    "server.max_header_bytes",
                    s.max_header_bytes,
                    DEFAULT_MAX_HEADER_BYTES,
                )?,
                8192,
            )?,
            max_headers: usize_of(
                "server.max_headers",
                count(
                    "server.max_headers",
                    s.max_headers,
                    DEFAULT_MAX_HEADERS as u64,
                )?,
                8,
            )?,
            body_idle_timeout: duration(
                "server.body_idle_timeout",
                s.body_idle_timeout,
                DEFAULT_BODY_IDLE_TIMEOUT,
            )?,
            threads: match s.threads {
                None | Some(0) => std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                Some(n) => usize_of("server.threads", count("server.threads", Some(n), 1)?, 1)?,
            },
            allowed_origins: s
                .allowed_origins
                .map(StringList::items)
                .unwrap_or_default()
                .iter()
                .map(|o| parse_origin("server.allowed_origins", o).map(|u| u.origin()))
                .collect::<Result<_, _>>()?,
        };

        let u = raw.upstream;
        let upstream_url = u.url.as_deref().ok_or_else(|| ConfigError::Key {
            key: "upstream.url".into(),
            message: "required (the CalDAV server to front, e.g. http://127.0.0.1:5232)".into(),
        })?;
        let forwarded_headers = match u.forwarded_headers.as_deref().unwrap_or("both") {
            "none" => ForwardedHeaders {
                x_forwarded: false,
                forwarded: false,
            },
            "x-forwarded" => ForwardedHeaders {
                x_forwarded: true,
                forwarded: false,
            },
            "forwarded" => ForwardedHeaders {
                x_forwarded: false,
                forwarded: true,
            },
            "both" => ForwardedHeaders {
                x_forwarded: true,
                forwarded: true,
            },
            other => {
                return Err(ConfigError::value(
                    "upstream.forwarded_headers",
                    other,
                    "expected one of none, x-forwarded, forwarded, both",
                ))
            }
        };
        let url = parse_origin("upstream.url", upstream_url)?;
        let ca_file = match u.ca_file.as_deref() {
            None | Some("") => None,
            Some(_) if url.scheme() != "https" => {
                return Err(ConfigError::Key {
                    key: "upstream.ca_file".into(),
                    message: format!(
                        "only used with an https:// upstream.url (it is {})",
                        url.as_str().trim_end_matches('/')
                    ),
                })
            }
            Some(path) => Some(PathBuf::from(path)),
        };
        let upstream = UpstreamConfig {
            url,
            ca_file,
            connect_timeout: duration(
                "upstream.connect_timeout",
                u.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            response_timeout: duration(
                "upstream.response_timeout",
                u.response_timeout,
                DEFAULT_RESPONSE_TIMEOUT,
            )?,
            preserve_host: u.preserve_host.unwrap_or(false),
            forwarded_headers,
        };

        let a = raw.attachments;
        let prefix = a.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        validate_prefix(&prefix)?;
        let max_concurrent_uploads = usize_of(
            "attachments.max_concurrent_uploads",
            count(
                "attachments.max_concurrent_uploads",
                a.max_concurrent_uploads,
                DEFAULT_MAX_CONCURRENT_UPLOADS as u64,
            )?,
            1,
        )?;
        let max_concurrent_uploads_per_user = match a.max_concurrent_uploads_per_user {
            None => (max_concurrent_uploads / DEFAULT_UPLOAD_SHARE_DIVISOR).max(1),
            Some(n) => usize_of(
                "attachments.max_concurrent_uploads_per_user",
                count("attachments.max_concurrent_uploads_per_user", Some(n), 1)?,
                1,
            )?
            .min(max_concurrent_uploads),
        };
        let attachments = AttachmentsConfig {
            prefix: prefix.trim_end_matches('/').to_owned(),
            max_attachment_size: size(
                "attachments.max_attachment_size",
                a.max_attachment_size,
                DEFAULT_MAX_ATTACHMENT_SIZE,
            )?,
            max_attachments_per_resource: positive(
                "attachments.max_attachments_per_resource",
                count(
                    "attachments.max_attachments_per_resource",
                    a.max_attachments_per_resource,
                    DEFAULT_MAX_ATTACHMENTS_PER_RESOURCE,
                )?,
            )?,
            max_object_size: size(
                "attachments.max_object_size",
                a.max_object_size,
                DEFAULT_MAX_OBJECT_SIZE,
            )?,
            max_overrides: usize_of(
                "attachments.max_overrides",
                count(
                    "attachments.max_overrides",
                    a.max_overrides,
                    DEFAULT_MAX_OVERRIDES as u64,
                )?,
                0,
            )?,
            no_recurrence: a.no_recurrence.unwrap_or(false),
            web_page: a.web_page.unwrap_or(true),
            convert_inline: a.convert_inline.unwrap_or(false),
            max_concurrent_uploads,
            max_concurrent_uploads_per_user,
            max_rids: usize_of(
                "attachments.max_rids",
                count("attachments.max_rids", a.max_rids, DEFAULT_MAX_RIDS as u64)?,
                1,
            )?,
            max_recurrence_lines: usize_of(
                "attachments.max_recurrence_lines",
                count(
                    "attachments.max_recurrence_lines",
                    a.max_recurrence_lines,
                    DEFAULT_MAX_RECURRENCE_LINES as u64,
                )?,
                1,
            )?,
            max_expanded_instances: positive(
                "attachments.max_expanded_instances",
                count(
                    "attachments.max_expanded_instances",
                    a.max_expanded_instances,
                    DEFAULT_MAX_EXPANDED_INSTANCES,
                )?,
            )?,
            max_expansion_time: duration(
                "attachments.max_expansion_time",
                a.max_expansion_time,
                DEFAULT_MAX_EXPANSION_TIME,
            )?,
            commit_deadline: duration(
                "attachments.commit_deadline",
                a.commit_deadline,
                DEFAULT_COMMIT_DEADLINE,
            )?,
            download: match a.download.as_deref().unwrap_or("auth") {
                "auth" => DownloadMode::Auth,
                "capability" => DownloadMode::Capability,
                other => {
                    return Err(ConfigError::value(
                        "attachments.download",
                        other,
                        "expected \"auth\" or \"capability\" (\"redirect\" to presigned S3 URLs is not implemented)",
                    ))
                }
            },
        };

        let st = raw.storage;
        let storage_url = st.url.as_deref().unwrap_or(DEFAULT_STORAGE_URL);
        let part_size = size("storage.part_size", st.part_size, DEFAULT_PART_SIZE)?;
        const MIN_PART: u64 = 5 * 1024 * 1024;
        const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
        if !(MIN_PART..=MAX_PART).contains(&part_size) {
            return Err(ConfigError::value(
                "storage.part_size",
                part_size,
                "S3 parts are 5MiB to 5GiB",
            ));
        }
        // By default every upload slot can hold one part: the budget then only limits
        // the extra parts uploading in parallel, and never refuses an upload.
        let upload_buffer = size(
            "storage.upload_buffer",
            st.upload_buffer,
            part_size.saturating_mul(attachments.max_concurrent_uploads as u64),
        )?;
        if upload_buffer < part_size {
            return Err(ConfigError::value(
                "storage.upload_buffer",
                upload_buffer,
                format!("must hold at least one part (storage.part_size = {part_size})"),
            ));
        }
        let storage = StorageConfig {
            url: parse_storage_url(storage_url)?,
            part_size,
            upload_buffer,
            options: st
                .options
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        };

        let mut i = raw.identity;
        i.address_template = i.address_template.filter(|t| !t.is_empty());
        if let Some(t) = &i.address_template {
            if !t.contains("{user}") || !t.to_ascii_lowercase().starts_with("mailto:") {
                return Err(ConfigError::value(
                    "identity.address_template",
                    t,
                    "expected a mailto: URI containing {user}, e.g. mailto:{user}@example.org",
                ));
            }
        }
        let identity = IdentityConfig {
            address_template: i.address_template,
            cache_ttl: duration(
                "identity.cache_ttl",
                i.cache_ttl,
                DEFAULT_IDENTITY_CACHE_TTL,
            )?,
            cache_size: usize_of(
                "identity.cache_size",
                count(
                    "identity.cache_size",
                    i.cache_size,
                    DEFAULT_IDENTITY_CACHE_SIZE as u64,
                )?,
                1,
            )?,
        };

        let g = raw.gc;
        let gc = GcConfig {
            retention: duration_or_zero("gc.retention", g.retention, DEFAULT_GC_RETENTION)?,
            pending_grace: duration_or_zero(
                "gc.pending_grace",
                g.pending_grace,
                DEFAULT_GC_PENDING_GRACE,
            )?,
            interval: match g.interval.as_deref() {
                None | Some("") | Some("0") => None,
                Some(_) => Some(duration("gc.interval", g.interval, Duration::ZERO)?),
            },
            username: g.username.filter(|u| !u.is_empty()),
            password: g.password,
        };

        let l = raw.log;
        let format = match l.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::value(
                    "log.format",
                    other,
                    "expected \"text\" or \"json\"",
                ))
            }
        };
        let level = l.level.unwrap_or_else(|| "info".to_owned());
        if let Err(e) = level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(ConfigError::value("log.level", &level, e));
        }

        Ok(Config {
            server,
            upstream,
            attachments,
            storage,
            identity,
            gc,
            log: LogConfig { format, level },
        })
    }
}

/// Merges `CALATTACH_*` variables into the TOML tree.
fn apply_env(tree: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    let mut vars = env.vars();
    vars.sort();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Key {
                key: name.clone(),
                message: "expected CALATTACH_<SECTION>__<KEY>".into(),
            });
        }
        let mut table = &mut *tree;
        for part in &path[..path.len() - 1] {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Key {
                        key: name.clone(),
                        message: format!("{part} is not a section"),
                    })
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), env_value(&value));
    }
    Ok(())
}

/// `20` and `true` keep their TOML types; anything else is a string.
fn env_value(value: &str) -> toml::Value {
    match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_))) => v,
            _ => toml::Value::String(value.to_owned()),
        },
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::value(key, value, "expected an address like 127.0.0.1:8080"))
}

/// An http(s) URL with a host and no path, query or fragment beyond `/`.
fn parse_origin(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::value(key, value, e))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ConfigError::value(
            key,
            value,
            format!(
                "unsupported scheme {:?} (expected http or https)",
                url.scheme()
            ),
        ));
    }
    if url.host().is_none() {
        return Err(ConfigError::value(key, value, "missing host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::value(
            key,
            value,
            "must be scheme://host[:port] only; request paths are forwarded unchanged",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::value(
            key,
            "<redacted>",
            "must not carry credentials",
        ));
    }
    Ok(url)
}

fn parse_storage_url(value: &str) -> Result<Url, ConfigError> {
    const KEY: &str = "storage.url";
    // `file://./data` is the documented relative form; Url would read "." as a host.
    if let Some(rel) = value.strip_prefix("file://") {
        if !rel.starts_with('/') {
            let cwd = std::env::current_dir()
                .map_err(|e| ConfigError::value(KEY, value, format!("cannot resolve: {e}")))?;
            let abs = cwd.join(rel);
            return Url::from_directory_path(&abs)
                .map_err(|_| ConfigError::value(KEY, value, "not a usable directory path"));
        }
    }
    let url = Url::parse(value).map_err(|e| ConfigError::value(KEY, value, e))?;
    match url.scheme() {
        "file" => {
            let mut url = url;
            if !url.path().ends_with('/') {
                let p = format!("{}/", url.path());
                url.set_path(&p);
            }
            Ok(url)
        }
        "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "memory" => Ok(url),
        other => Err(ConfigError::value(
            KEY,
            value,
            format!("unsupported scheme {other:?} (expected file or s3)"),
        )),
    }
}

fn validate_prefix(prefix: &str) -> Result<(), ConfigError> {
    const KEY: &str = "attachments.prefix";
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/') || trimmed.is_empty() {
        return Err(ConfigError::value(
            KEY,
            prefix,
            "must start with / and name a path, e.g. /.attachments",
        ));
    }
    let ok = trimmed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-~".contains(&b));
    if !ok || trimmed.contains("//") || trimmed.split('/').any(|s| s == "..") {
        return Err(ConfigError::value(
            KEY,
            prefix,
            "only letters, digits and / . _ - ~ are allowed, without empty or .. segments",
        ));
    }
    Ok(())
}

fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v).map_err(|e| {
            ConfigError::value(
                key,
                &v,
                format!("{e} (expected a duration like 250ms, 30s, 5m, 1h)"),
            )
        }),
    }
}

/// Like [`duration`], and a bare `0` means zero.
fn duration_or_zero(
    key: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value.as_deref() {
        Some("0") => Ok(Duration::ZERO),
        _ => duration(key, value, default),
    }
}

fn count(key: &str, value: Option<i64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => u64::try_from(v).map_err(|_| ConfigError::value(key, v, "must not be negative")),
    }
}

fn positive(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(ConfigError::value(key, v, "must be at least 1"))
    } else {
        Ok(v)
    }
}

fn usize_of(key: &str, v: u64, min: usize) -> Result<usize, ConfigError> {
    let v = usize::try_from(v).map_err(|_| ConfigError::value(key, v, "too large"))?;
    if v < min {
        return Err(ConfigError::value(
            key,
            v,
            format!("must be at least {min}"),
        ));
    }
    Ok(v)
}

fn size(key: &str, value: Option<SizeValue>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(SizeValue::Bytes(n)) => {
            u64::try_from(n).map_err(|_| ConfigError::value(key, n, "must not be negative"))
        }
        Some(SizeValue::Text(t)) => parse_size(&t).ok_or_else(|| {
            ConfigError::value(
                key,
                &t,
                "expected bytes or a size like 512KiB, 10MiB, 1GiB, 10MB",
            )
        }),
    }
}

/// `"10MiB"` → 10485760. Binary (KiB, MiB, GiB) and decimal (kB, MB, GB) units.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:5232\"\n";

    #[test]
    fn example_file_loads_and_documents_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example");
        let cfg = Config::load(Path::new(path), &env(&[])).expect("example must load");
        assert_eq!(cfg.attachments.prefix, "/.attachments");
        assert_eq!(
            cfg.attachments.max_attachment_size,
            DEFAULT_MAX_ATTACHMENT_SIZE
        );
        let text = std::fs::read_to_string(path).unwrap();
        // Every field of the raw config appears in the example (commented or not).
        for key in [
            "listen",
            "admin_listen",
            "public_url",
            "shutdown_grace",
            "max_header_bytes",
            "max_headers",
            "body_idle_timeout",
            "threads",
            "max_concurrent_uploads",
            "max_concurrent_uploads_per_user",
            "max_rids",
            "max_recurrence_lines",
            "max_expanded_instances",
            "max_expansion_time",
            "allowed_origins",
            "url",
            "part_size",
            "upload_buffer",
            "ca_file",
            "connect_timeout",
            "response_timeout",
            "preserve_host",
            "forwarded_headers",
            "prefix",
            "max_attachment_size",
            "max_attachments_per_resource",
            "max_object_size",
            "max_overrides",
            "no_recurrence",
            "commit_deadline",
            "convert_inline",
            "download",
            "web_page",
            "address_template",
            "cache_ttl",
            "cache_size",
            "retention",
            "pending_grace",
            "interval",
            "username",
            "password",
            "format",
            "level",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
                "{key} is not documented in proxy.toml.example"
            );
        }
    }

    #[test]
    fn storage_part_size_and_upload_buffer_are_checked_and_default_to_one_part_per_slot() {
        let cfg = Config::parse(MINIMAL, "t", &env(&[])).unwrap();
        assert_eq!(cfg.storage.part_size, 5 * 1024 * 1024);
        assert_eq!(cfg.storage.upload_buffer, 64 * 5 * 1024 * 1024);
        let text = format!(
            "{MINIMAL}[attachments]\nmax_concurrent_uploads = 4\n[storage]\npart_size = \"8MiB\"\n"
        );
        let cfg = Config::parse(&text, "t", &env(&[])).unwrap();
        assert_eq!(cfg.storage.upload_buffer, 4 * 8 * 1024 * 1024);
        for (bad, key) in [
            ("part_size = \"4MiB\"", "storage.part_size"),
            ("part_size = \"6GiB\"", "storage.part_size"),
            ("upload_buffer = \"1MiB\"", "storage.upload_buffer"),
        ] {
            let err = Config::parse(&format!("{MINIMAL}[storage]\n{bad}\n"), "t", &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(key), "{bad}: {err}");
        }
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = Config::parse(
            "[upstream]\nurl = \"http://a\"\nconnect_timeout = 5s\n",
            "proxy.toml",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("proxy.toml:3:19: "), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let err = Config::parse("[upstream]\nurl = \"http://a\"\nurll = 1\n", "t", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream.urll") || err.contains("urll"),
            "{err}"
        );
    }

    #[test]
    fn bad_upstream_scheme_names_key_and_value() {
        let err = Config::parse("[upstream]\nurl = \"htp://x\"\n", "t", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("upstream.url = \"htp://x\""), "{err}");
        assert!(err.contains("unsupported scheme"), "{err}");
    }

    #[test]
    fn missing_upstream_url_is_required() {
        let err = Config::parse("", "t", &env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("upstream.url") && err.contains("required"),
            "{err}"
        );
    }

    #[test]
    fn env_override_wins_over_file() {
        let cfg = Config::parse(
            MINIMAL,
            "t",
            &env(&[
                ("CALATTACH_UPSTREAM__URL", "http://10.0.0.1:9999"),
                ("CALATTACH_ATTACHMENTS__MAX_ATTACHMENTS_PER_RESOURCE", "7"),
                ("CALATTACH_ATTACHMENTS__MAX_ATTACHMENT_SIZE", "1MiB"),
                ("CALATTACH_STORAGE__OPTIONS__AWS_REGION", "eu-west-1"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.upstream.url.as_str(), "http://10.0.0.1:9999/");
        assert_eq!(cfg.attachments.max_attachments_per_resource, 7);
        assert_eq!(cfg.attachments.max_attachment_size, 1 << 20);
        assert_eq!(
            cfg.storage.options,
            vec![("aws_region".to_owned(), "eu-west-1".to_owned())]
        );
    }

    #[test]
    fn env_override_with_unknown_key_is_an_error() {
        let err = Config::parse(MINIMAL, "t", &env(&[("CALATTACH_UPSTREAM__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn upstream_url_with_path_is_refused() {
        let err = Config::parse("[upstream]\nurl = \"http://a/dav.php\"\n", "t", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.url"), "{err}");
    }

    #[test]
    fn prefix_must_be_a_clean_absolute_path() {
        for bad in ["attachments", "/", "/a/../b", "/a b", "/a//b"] {
            let t = format!("{MINIMAL}[attachments]\nprefix = \"{bad}\"\n");
            let err = Config::parse(&t, "t", &env(&[])).unwrap_err().to_string();
            assert!(err.contains("attachments.prefix"), "{bad}: {err}");
        }
        let t = format!("{MINIMAL}[attachments]\nprefix = \"/att/\"\n");
        assert_eq!(
            Config::parse(&t, "t", &env(&[]))
                .unwrap()
                .attachments
                .prefix,
            "/att"
        );
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("1XB"), None);
        let t = format!("{MINIMAL}[server]\nshutdown_grace = \"soon\"\n");
        let err = Config::parse(&t, "t", &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("server.shutdown_grace = \"soon\""), "{err}");
    }

    #[test]
    fn relative_file_storage_resolves_against_working_directory() {
        let cfg = Config::parse(MINIMAL, "t", &env(&[])).unwrap();
        assert_eq!(cfg.storage.url.scheme(), "file");
        assert!(
            cfg.storage.url.path().ends_with("/data/"),
            "{}",
            cfg.storage.url
        );
    }
}
