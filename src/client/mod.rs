//! `calattach attach …`: a small client for CalDAV Managed Attachments (RFC 8607) that
//! talks HTTP to any server offering them, calattach or not.
//!
//! * `add` / `update` / `remove`: `POST <event>?action=attachment-add|update|remove`
//!   (RFC 8607 §3.4–3.6) with `rid` and `managed-id` parameters (§3.3). The file is
//!   streamed from disk with its `Content-Length` (so a server can refuse an oversized
//!   upload before the body, §3.12.1), `Content-Type` and a `Content-Disposition`
//!   carrying the name (RFC 6266, RFC 8187 `filename*`).
//! * `list`: `GET <event>` and the `ATTACH` properties in it (§4).
//! * `get`: `GET <attachment-url>` into a file.
//!
//! Only `http://` URLs: put the client next to the server or use a TLS terminator's
//! plain side. Credentials: `--user`/`--password`, else `CALDAV_USER`/`CALDAV_PASSWORD`,
//! else `~/.netrc` (or `$NETRC`). (`CALATTACH_*` names are taken by the server's
//! configuration overrides.) Refusals are explained from their `DAV:error` body
//! ([`problem`]).

pub mod attachments;
pub mod netrc;
pub mod problem;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::TryStreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, BodyStream, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::body::{self, Body};

/// Bodies larger than this get a progress bar (when stderr is a terminal).
pub const PROGRESS_THRESHOLD: u64 = 1024 * 1024;
/// The most of an error body read to explain a refusal.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// User name (default: CALDAV_USER, then the netrc entry for the host).
    #[arg(short, long, global = true, env = "CALDAV_USER")]
    pub user: Option<String>,
    /// Password (default: CALDAV_PASSWORD, then the netrc entry for the host).
    #[arg(
        short,
        long,
        global = true,
        env = "CALDAV_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// netrc file to read credentials from (default: $NETRC, then ~/.netrc).
    #[arg(long, global = true, value_name = "FILE")]
    pub netrc: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: AttachCommand,
}

#[derive(Debug, Subcommand)]
pub enum AttachCommand {
    /// Upload FILE and attach it to the event; prints the managed id and the URL.
    Add {
        /// URL of the event (the calendar object resource, `.../name.ics`).
        event_url: String,
        /// The file to upload (streamed from disk).
        file: PathBuf,
        /// Attach to these instances only (RECURRENCE-ID values; repeatable).
        #[arg(long = "rid", value_name = "RID")]
        rids: Vec<String>,
        /// Media type (default: guessed from the file name).
        #[arg(long)]
        content_type: Option<String>,
        /// Name shown to calendar users (default: the file's name).
        #[arg(long)]
        filename: Option<String>,
    },
    /// Replace the attachment MANAGED_ID with FILE; prints the new managed id.
    Update {
        /// URL of the event (the calendar object resource, `.../name.ics`).
        event_url: String,
        /// MANAGED-ID of the attachment (as `list` shows it). May start with `-`.
        #[arg(allow_hyphen_values = true)]
        managed_id: String,
        /// The file to upload (streamed from disk).
        file: PathBuf,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long)]
        filename: Option<String>,
    },
    /// Remove the attachment MANAGED_ID from the event (or from some instances).
    Remove {
        /// URL of the event (the calendar object resource, `.../name.ics`).
        event_url: String,
        /// MANAGED-ID of the attachment (as `list` shows it). May start with `-`.
        #[arg(allow_hyphen_values = true)]
        managed_id: String,
        #[arg(long = "rid", value_name = "RID")]
        rids: Vec<String>,
    },
    /// List the event's attachments: managed id, size, type, name, instance, URL
    /// (tab-separated, one per line).
    List {
        /// URL of the event (the calendar object resource, `.../name.ics`).
        event_url: String,
    },
    /// Download an attachment into a file (`-o -` for standard output).
    Get {
        /// The attachment URL (as `add` and `list` show it).
        attachment_url: String,
        /// File to write (`-` for standard output). Written under a temporary name in
        /// the same directory and renamed when complete.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// A failed client command, printed as `calattach: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: {refusal}")]
    Refused {
        url: String,
        refusal: problem::Refusal,
    },
}

pub fn run(args: AttachArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calattach: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calattach: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(args: AttachArgs) -> Result<(), ClientError> {
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let creds = Credentials {
        user: args.user,
        password: args.password,
        netrc: args.netrc,
    };
    let client = Http::new(progress);
    match args.command {
        AttachCommand::Add {
            event_url,
            file,
            rids,
            content_type,
            filename,
        } => {
            let mut url = parse_url(&event_url)?;
            set_query(&mut url, "attachment-add", None, &rids);
            let resp = client
                .upload(&url, &creds, &file, content_type, filename)
                .await?;
            let id = header_str(&resp, "cal-managed-id");
            let location = header_str(&resp, "location");
            println!("{id}\t{location}");
            Ok(())
        }
        AttachCommand::Update {
            event_url,
            managed_id,
            file,
            content_type,
            filename,
        } => {
            let mut url = parse_url(&event_url)?;
            set_query(&mut url, "attachment-update", Some(&managed_id), &[]);
            let resp = client
                .upload(&url, &creds, &file, content_type, filename)
                .await?;
            println!("{}", header_str(&resp, "cal-managed-id"));
            Ok(())
        }
        AttachCommand::Remove {
            event_url,
            managed_id,
            rids,
        } => {
            let mut url = parse_url(&event_url)?;
            set_query(&mut url, "attachment-remove", Some(&managed_id), &rids);
            let req = client.request(Method::POST, &url, &creds, body::empty())?;
            let resp = client.send_ok(&url, req).await?;
            drain(resp).await;
            Ok(())
        }
        AttachCommand::List { event_url } => {
            let url = parse_url(&event_url)?;
            let mut req = client.request(Method::GET, &url, &creds, body::empty())?;
            req.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static("text/calendar"));
            let resp = client.send_ok(&url, req).await?;
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http_error(&url, format!("reading the event: {e}")))?
                .to_bytes();
            let list = attachments::list(&bytes)
                .map_err(|e| http_error(&url, format!("not an iCalendar object: {e}")))?;
            for a in list {
                println!("{}", a.tsv());
            }
            Ok(())
        }
        AttachCommand::Get {
            attachment_url,
            output,
        } => {
            let url = parse_url(&attachment_url)?;
            let req = client.request(Method::GET, &url, &creds, body::empty())?;
            let resp = client.send_ok(&url, req).await?;
            client.download(&url, resp, &output).await
        }
    }
}

fn parse_url(text: &str) -> Result<Url, ClientError> {
    let url = Url::parse(text).map_err(|e| ClientError::Usage(format!("{text}: {e}")))?;
    match url.scheme() {
        "http" => Ok(url),
        "https" => Err(ClientError::Usage(format!(
            "{text}: https is not supported by this client; use the http:// address of \
             calattach (or of the TLS terminator's backend) on a trusted network"
        ))),
        other => Err(ClientError::Usage(format!(
            "{text}: unsupported scheme {other:?} (expected http)"
        ))),
    }
}

/// Adds `action`, `managed-id` and `rid` (comma-separated, RFC 8607 §3.3) to the query,
/// keeping whatever query the URL already had.
fn set_query(url: &mut Url, action: &str, managed_id: Option<&str>, rids: &[String]) {
    let mut q = url.query_pairs_mut();
    q.append_pair("action", action);
    if let Some(id) = managed_id {
        q.append_pair("managed-id", id);
    }
    if !rids.is_empty() {
        q.append_pair("rid", &rids.join(","));
    }
}

fn header_str<B>(resp: &Response<B>, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn http_error(url: &Url, message: impl Into<String>) -> ClientError {
    ClientError::Http {
        url: url.to_string(),
        message: message.into(),
    }
}

/// Where the credentials for a request come from, in order.
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub netrc: Option<PathBuf>,
}

impl Credentials {
    /// The `Authorization` value for `url`, if any credentials apply.
    pub fn authorization(&self, url: &Url) -> Result<Option<HeaderValue>, ClientError> {
        let (user, password) = match (&self.user, &self.password) {
            (Some(u), Some(p)) => (u.clone(), p.clone()),
            (user, password) => match self.netrc_entry(url)? {
                // As curl: the netrc password only goes with the netrc login.
                Some((login, pw)) => match user {
                    Some(u) if *u != login => (u.clone(), password.clone().unwrap_or_default()),
                    _ => (login, password.clone().or(pw).unwrap_or_default()),
                },
                None => match user {
                    Some(u) => (u.clone(), password.clone().unwrap_or_default()),
                    None => return Ok(None),
                },
            },
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}"))
            .map(Some)
            .map_err(|_| ClientError::Usage("credentials contain invalid characters".into()))
    }

    fn netrc_entry(&self, url: &Url) -> Result<Option<(String, Option<String>)>, ClientError> {
        let explicit = self.netrc.clone().or_else(|| {
            std::env::var_os("NETRC")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let path = match explicit {
            Some(p) => p,
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".netrc"),
                None => return Ok(None),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // A missing default ~/.netrc is normal; a named one must exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.netrc.is_none() => {
                return Ok(None)
            }
            Err(source) => {
                return Err(ClientError::File {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(netrc::lookup(&text, url.host_str().unwrap_or("")))
    }
}

/// hyper-util's pooled client; bodies stream in both directions.
struct Http {
    client: Client<HttpConnector, Body>,
    progress: bool,
}

impl Http {
    fn new(progress: bool) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Http { client, progress }
    }

    fn request(
        &self,
        method: Method,
        url: &Url,
        creds: &Credentials,
        body: Body,
    ) -> Result<Request<Body>, ClientError> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|e| ClientError::Usage(format!("{url}: {e}")))?;
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("calattach/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(auth) = creds.authorization(url)? {
            req.headers_mut().insert(header::AUTHORIZATION, auth);
        }
        Ok(req)
    }

    /// Sends `req`; any status outside 2xx becomes a [`ClientError::Refused`].
    async fn send_ok(
        &self,
        url: &Url,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, ClientError> {
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| http_error(url, crate::error::error_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let content_type = header_str(&resp, "content-type");
        let body = Limited::new(resp.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Err(ClientError::Refused {
            url: url.to_string(),
            refusal: problem::refusal(status, Some(&content_type), &body),
        })
    }

    /// POSTs `file` to `url`, streamed from disk with a progress bar when large.
    async fn upload(
        &self,
        url: &Url,
        creds: &Credentials,
        file: &Path,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<Response<Incoming>, ClientError> {
        let file_err = |source| ClientError::File {
            path: file.display().to_string(),
            source,
        };
        let f = tokio::fs::File::open(file).await.map_err(file_err)?;
        let meta = f.metadata().await.map_err(file_err)?;
        if !meta.is_file() {
            return Err(ClientError::Usage(format!(
                "{}: not a regular file",
                file.display()
            )));
        }
        let size = meta.len();
        let name = filename.unwrap_or_else(|| {
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "attachment".to_owned())
        });
        let media_type = content_type.unwrap_or_else(|| guess_media_type(&name).to_owned());
        let bar = self.bar(size, "uploading");
        let bar2 = bar.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK)
            .inspect_ok(move |chunk| {
                if let Some(b) = &bar2 {
                    b.inc(chunk.len() as u64);
                }
            })
            .map_ok(Frame::data)
            .map_err(|e| -> body::BoxError { Box::new(e) });
        let body = BodyExt::boxed_unsync(StreamBody::new(stream));
        let mut req = self.request(Method::POST, url, creds, body)?;
        let h = req.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&media_type)
                .map_err(|_| ClientError::Usage(format!("invalid media type {media_type:?}")))?,
        );
        if let Ok(v) = HeaderValue::from_str(&content_disposition(&name)) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        let result = self.send_ok(url, req).await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let resp = result?;
        Ok(resp)
    }

    /// Streams a response body into `output` (`-`: standard output). A file is written
    /// under a temporary name and renamed at the end, so a failed download never leaves
    /// a truncated file under the requested name.
    async fn download(
        &self,
        url: &Url,
        resp: Response<Incoming>,
        output: &Path,
    ) -> Result<(), ClientError> {
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bar = size.and_then(|s| self.bar(s, "downloading"));
        let to_stdout = output.as_os_str() == "-";
        let tmp = output.with_file_name(format!(
            ".{}.part",
            output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "download".into())
        ));
        let file_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| ClientError::File { path, source }
        };
        let mut sink = if to_stdout {
            Sink::Stdout(std::io::stdout())
        } else {
            Sink::File(
                tokio::fs::File::create(&tmp)
                    .await
                    .map_err(file_err(&tmp))?,
            )
        };
        let mut stream = BodyStream::new(resp.into_body());
        let copied: Result<(), ClientError> = async {
            while let Some(frame) = stream
                .try_next()
                .await
                .map_err(|e| http_error(url, format!("download interrupted: {e}")))?
            {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let data: Bytes = data;
                sink.write_all(&data).await.map_err(file_err(output))?;
                if let Some(b) = &bar {
                    b.inc(data.len() as u64);
                }
            }
            sink.flush().await.map_err(file_err(output))?;
            Ok(())
        }
        .await;
        drop(sink);
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if to_stdout {
            return copied;
        }
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, output)
            .await
            .map_err(file_err(output))
    }

    fn bar(&self, size: u64, what: &str) -> Option<ProgressBar> {
        if !self.progress || size < PROGRESS_THRESHOLD {
            return None;
        }
        let bar = ProgressBar::new(size);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        Some(bar)
    }
}

/// Where a download goes. Standard output is written synchronously: a terminal or pipe
/// and one download at a time.
enum Sink {
    File(tokio::fs::File),
    Stdout(std::io::Stdout),
}

impl Sink {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(data).await,
            Sink::Stdout(s) => std::io::Write::write_all(s, data),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => {
                f.flush().await?;
                f.sync_all().await
            }
            Sink::Stdout(s) => std::io::Write::flush(s),
        }
    }
}

async fn drain(resp: Response<Incoming>) {
    let _ = Limited::new(resp.into_body(), ERROR_BODY_LIMIT)
        .collect()
        .await;
}

/// The server's own header builder: an upload names its file the way downloads do
/// (RFC 6266 §4.3: ASCII fallback, then the UTF-8 `filename*` that wins where understood).
pub use crate::rfc6266::content_disposition;

/// A media type from the file name's extension; `application/octet-stream` otherwise.
pub fn guess_media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "text" => "text/plain",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "ics" => "text/calendar",
        "vcf" => "text/vcard",
        "json" => "application/json",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "heic" => "image/heic",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "odp" => "application/vnd.oasis.opendocument.presentation",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Managed ids are URL-safe base64 and may start with `-` (RFC 8607 leaves their
    /// form to the server): the command line must take them as values, not options.
    #[test]
    fn managed_id_starting_with_a_hyphen_is_a_value() {
        use clap::Parser;
        for args in [
            &[
                "calattach",
                "attach",
                "remove",
                "http://h/c/e.ics",
                "-IV86QE",
            ][..],
            &[
                "calattach",
                "attach",
                "update",
                "http://h/c/e.ics",
                "-IV86QE",
                "f.pdf",
            ][..],
        ] {
            let cli = crate::cli::Cli::try_parse_from(args).unwrap();
            let rendered = format!("{cli:?}");
            assert!(rendered.contains("managed_id: \"-IV86QE\""), "{rendered}");
        }
    }

    #[test]
    fn content_disposition_carries_an_ascii_fallback_and_the_utf8_name() {
        assert_eq!(
            content_disposition("Agenda €.pdf"),
            "attachment; filename=\"Agenda _.pdf\"; filename*=UTF-8''Agenda%20%E2%82%AC.pdf"
        );
        assert_eq!(
            content_disposition("a\"b.txt"),
            "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%22b.txt"
        );
    }

    #[test]
    fn query_keeps_existing_parameters_and_joins_rids() {
        let mut url = Url::parse("http://h/u/c/e.ics?x=1").unwrap();
        set_query(
            &mut url,
            "attachment-remove",
            Some("m1"),
            &["20261201T100000Z".into(), "M".into()],
        );
        assert_eq!(
            url.query(),
            Some("x=1&action=attachment-remove&managed-id=m1&rid=20261201T100000Z%2CM")
        );
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(parse_url("http://h/e.ics").is_ok());
        let e = parse_url("https://h/e.ics").unwrap_err().to_string();
        assert!(e.contains("https is not supported"), "{e}");
        assert!(parse_url("ftp://h/e.ics").is_err());
    }

    #[test]
    fn explicit_credentials_win_and_netrc_fills_the_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join("netrc");
        std::fs::write(&netrc, "machine h login nuser password npass\n").unwrap();
        let url = Url::parse("http://h:8080/e.ics").unwrap();
        let decode = |v: HeaderValue| {
            let t = v
                .to_str()
                .unwrap()
                .strip_prefix("Basic ")
                .unwrap()
                .to_owned();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(t).unwrap()).unwrap()
        };
        let c = |user: Option<&str>, password: Option<&str>| Credentials {
            user: user.map(str::to_owned),
            password: password.map(str::to_owned),
            netrc: Some(netrc.clone()),
        };
        let auth = |c: Credentials| c.authorization(&url).unwrap().map(decode);
        assert_eq!(auth(c(Some("u"), Some("p"))).unwrap(), "u:p");
        assert_eq!(auth(c(None, None)).unwrap(), "nuser:npass");
        assert_eq!(auth(c(Some("nuser"), None)).unwrap(), "nuser:npass");
        assert_eq!(auth(c(Some("u"), None)).unwrap(), "u:");
        let other = Url::parse("http://elsewhere/e.ics").unwrap();
        assert!(c(None, None).authorization(&other).unwrap().is_none());
    }

    #[test]
    fn media_type_is_guessed_from_the_extension() {
        assert_eq!(guess_media_type("x.PDF"), "application/pdf");
        assert_eq!(guess_media_type("noext"), "application/octet-stream");
    }
}
