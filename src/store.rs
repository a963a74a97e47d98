//! Attachment storage on `object_store` (DESIGN.md §8; RFC 8607 §3.4–3.12 needs the bytes,
//! the metadata and the lifecycle state of every managed attachment).
//!
//! # Layout
//!
//! ```text
//! blobs/<id>                   attachment bytes, written once, never modified
//! meta/<id>.json               immutable facts (Meta), written once with PutMode::Create
//! state/<id>/live              marker (Create): an upstream object was seen to reference <id>
//! state/<id>/removed           marker (Create): tombstone; body = RFC 3339 time + reason
//! refs/<sha256(href) hex>/<id> empty marker: index from a calendar object to its ids
//! holders/<id>/<sha256(href) hex> marker (JSON Holder): reverse index, written by the guard
//! audience/<id>.json           organizer + attendees (Audience); the one overwritten object
//! uploads/<id>.json            UploadRecord: an upload in progress (deleted when it ends)
//! ```
//!
//! Every object but `audience/<id>.json` (advisory, see [`Audience`]) and the short-lived
//! `uploads/<id>.json` is written exactly once and never updated: `LocalFileSystem` has no
//! `PutMode::Update`, and write-once objects let any number of calattach instances and `gc`
//! runs race without locks. The state of an id follows from which objects exist:
//!
//! | `meta` | `live` | `removed` | state |
//! |---|---|---|---|
//! | no | any | any | unknown (`Store::state` answers `None`) |
//! | yes | no | no | [`State::Pending`] |
//! | yes | yes | no | [`State::Live`] |
//! | yes | any | yes | [`State::Removed`] |
//!
//! A marker that already exists counts as written, so marking is idempotent and concurrent
//! markers of the same kind both succeed. `removed` wins over `live`, so a tombstone never
//! depends on which of two racing writers came first.
//!
//! # Write order and crash points (DESIGN §4 invariant)
//!
//! An add runs: `put_blob` → `put_meta` → `add_ref` → upstream commit → `mark_live`; a
//! replaced or removed id gets `mark_removed` after the commit, then `remove_ref`. The refs
//! index is thus a superset of what the upstream object references, never a subset: `gc`
//! checks the upstream anyway, and a quota counted from it errs on the safe side.
//!
//! * crash during `put_blob`: nothing is visible under `blobs/<id>`. Its local staging
//!   file `blobs/<id>#0` (hidden from listings) or its incomplete S3 multipart upload is
//!   named by `uploads/<id>.json`, written before either exists, with the owner process;
//!   `gc` clears both once the record is older than `pending_grace` and the process is
//!   gone ([`Store::list_uploads`], [`Store::clear_upload`]). The one gap: a crash between
//!   creating a multipart upload and writing its record leaves an upload without parts.
//! * crash between `put_blob` and `put_meta`: a blob without metadata. Nothing references
//!   it (the upstream commit comes later); [`Store::list_blobs`] lets `gc` find blobs
//!   whose metadata is missing and older than any upload in progress.
//! * crash between `put_meta` and the commit, or after it: the id stays `pending`; `gc`
//!   (or the next request touching the object) asks the upstream whether it is referenced
//!   and then marks it live or discards it. Nothing is deleted on a guess.
//!
//! [`Store::discard`] deletes in the order refs → blob → audience → holders → `live` →
//! `removed` → meta. Meta goes last because [`Store::list_ids`] lists `meta/`: a crash
//! part-way leaves the id listed, and a second `discard` (from `gc`) finishes the job,
//! since deleting what is already gone succeeds. Until then the id may read as `pending`
//! with no blob; only ids known to be unreferenced are ever discarded, so no `ATTACH`
//! points at it.
//!
//! # Backends
//!
//! * `file://<dir>`: created if missing. `fsync` (default `true`) makes every completed
//!   write durable before it returns, so a blob the upstream already references survives
//!   power loss as it would on S3. Empty `state/<id>/` and `refs/<hash>/` directories are
//!   removed with their last file.
//! * `s3://<bucket>[/<prefix>]`: path-style unless `virtual_hosted_style_request` is set;
//!   credentials from the options or the standard `AWS_*` environment variables. Requests
//!   have an idle (read) timeout rather than object_store's whole-request timeout, which
//!   would cut long downloads, and only four retries, so an unreachable store surfaces
//!   as [`StoreError::Unavailable`] quickly. `PutMode::Create` relies on the server
//!   honouring `If-None-Match: *` (moto, SeaweedFS and AWS do; rclone does not).
//! * `memory://`: for tests.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, GetResultPayload, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Read size for local downloads; `LocalFileSystem`'s own stream reads 8 KiB at a time,
/// one blocking-pool hop per read, which caps throughput.
const LOCAL_READ_CHUNK: usize = 256 * 1024;

/// S3 retries: few, so a refused connection becomes a 503 within about two seconds
/// rather than after object_store's default ten retries (about a minute).
const S3_MAX_RETRIES: usize = 4;

/// An S3 read that makes no progress for this long fails (and object_store resumes the
/// download with a range request while its retries last).
const S3_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// object_store's default 30 s timeout covers a whole request including its body, which
/// would cut every download slower than that (a 1 GiB attachment to a phone). Use an
/// idle timeout instead; `timeout`, `read_timeout` and `connect_timeout` options still
/// override these.
fn s3_client_defaults() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_read_timeout(S3_READ_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(5))
}

// === AttachmentId ===

/// A managed attachment id: 128 random bits, URL-safe base64 without padding (22 chars).
///
/// Never derived from content (content hashes would reveal whether two users hold the same
/// file). [`AttachmentId::parse`] accepts only the canonical spelling of 16 bytes, so an id
/// is safe to place in an object key or URL and two spellings never name one id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentId(String);

const ID_LEN: usize = 22;

impl AttachmentId {
    /// A fresh random id.
    pub fn new() -> Self {
        let bits: [u8; 16] = rand::random();
        AttachmentId(URL_SAFE_NO_PAD.encode(bits))
    }

    /// Validates `s` as an id; anything else (other lengths, characters outside
    /// `A-Za-z0-9-_`, non-canonical trailing bits) is `None`, which callers treat as unknown.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != ID_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        match URL_SAFE_NO_PAD.decode(s) {
            Ok(bytes) if bytes.len() == 16 => Some(AttachmentId(s.to_owned())),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for AttachmentId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttachmentId({})", self.0)
    }
}

impl std::str::FromStr for AttachmentId {
    type Err = InvalidAttachmentId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or(InvalidAttachmentId)
    }
}

/// The text is not an attachment id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid attachment id")]
pub struct InvalidAttachmentId;

impl Serialize for AttachmentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AttachmentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid attachment id"))
    }
}

// === Meta, State, BlobInfo ===

/// Immutable facts about an attachment, stored as `meta/<id>.json` before the upstream
/// commit. Unknown fields are ignored on read so later versions can add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: AttachmentId,
    /// Principal URL or user name of the uploader.
    pub creator: String,
    /// Path of the calendar object the attachment was added to.
    pub href: String,
    /// UID of that calendar object.
    pub uid: String,
    /// Sanitised filename (RFC 6266 §4.3).
    pub filename: String,
    /// `type/subtype`, as in `FMTTYPE`.
    pub media_type: String,
    pub size: u64,
    /// SHA-256 of the blob, lowercase hex.
    pub sha256: String,
    #[serde(with = "rfc3339")]
    pub created: DateTime<Utc>,
}

/// Lifecycle state of an id whose metadata exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Written, upstream reference not yet confirmed (may be referenced after a crash or an
    /// ambiguous commit failure: never delete without asking the upstream).
    Pending,
    /// An upstream object was seen to reference it.
    Live,
    /// Tombstone: replaced or removed; `since` is the store's time of the marker.
    Removed { since: DateTime<Utc> },
    /// An update or remove POST at `href` is about to drop this (live) id: its commit
    /// may or may not have happened. Served like [`State::Live`]; `gc` asks the object
    /// at `href` and either tombstones the id or clears the marker (see [`Store::mark_releasing`]).
    Releasing { since: DateTime<Utc>, href: String },
}

/// What [`Store::put_blob`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// A byte range of a download, in the three forms of an HTTP `byte-range-spec`
/// (RFC 9110 §14.1.1), half-open in Rust style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last` is `Bounded(first..last + 1)`; an end past the blob is clipped.
    Bounded(Range<u64>),
    /// `bytes=first-`
    From(u64),
    /// `bytes=-n`: the last `n` bytes (the whole blob when it is shorter).
    Suffix(u64),
}

/// A blob download: a stream of bytes plus what the HTTP layer needs for its headers.
pub struct BlobStream {
    /// Size of the whole blob (`Content-Range: bytes a-b/size`).
    pub size: u64,
    /// The bytes this stream yields, a sub-range of `0..size`.
    pub range: Range<u64>,
    stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

// === errors ===

/// A storage failure, in the classes callers branch on: [`StoreError::NotFound`],
/// [`StoreError::Unavailable`] (transient: the HTTP layer answers 503),
/// [`StoreError::RangeNotSatisfiable`] (416) and the rest (500).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path} not found in storage")]
    NotFound {
        path: String,
        #[source]
        source: Option<object_store::Error>,
    },
    /// The requested range does not overlap the blob.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// Connection refused, timeout, reset: worth retrying later.
    #[error("storage unavailable")]
    Unavailable {
        #[source]
        source: object_store::Error,
    },
    /// No space left on the device or quota exhausted.
    #[error("storage full")]
    Full {
        #[source]
        source: object_store::Error,
    },
    /// A write-once object exists with other content (e.g. a reused id).
    #[error("{path} already exists in storage with other content")]
    AlreadyExists { path: String },
    /// An object calattach wrote does not parse.
    #[error("{path} is corrupt")]
    Corrupt {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The storage URL or its options are unusable.
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("storage error")]
    Other {
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True when a later retry may succeed (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    fn from_object_store(source: object_store::Error, path: &Path) -> Self {
        if let object_store::Error::NotFound { .. } = source {
            return StoreError::NotFound {
                path: path.to_string(),
                source: Some(source),
            };
        }
        // An S3 request that still fails after the client's retries (a 5xx, a
        // throttling answer) is the store being unwell, not calattach: a client may try
        // again later (503). object_store reports those as `Generic` from its S3 store;
        // not-found, precondition and permission errors have variants of their own.
        if let object_store::Error::Generic { store: "S3", .. } = &source {
            return StoreError::Unavailable { source };
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&source);
        while let Some(err) = cause {
            if let Some(http) = err.downcast_ref::<object_store::client::HttpError>() {
                use object_store::client::HttpErrorKind as K;
                if matches!(
                    http.kind(),
                    K::Connect | K::Request | K::Timeout | K::Interrupted
                ) {
                    return StoreError::Unavailable { source };
                }
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::StorageFull {
                    return StoreError::Full { source };
                }
            }
            cause = err.source();
        }
        StoreError::Other { source }
    }
}

/// Failure of [`Store::put_blob`]. In every case nothing remains under `blobs/<id>`.
#[derive(Debug, thiserror::Error)]
pub enum PutBlobError<E> {
    /// The body exceeded `max_size` bytes (RFC 8607 §3.12.1 `max-attachment-size`).
    #[error("attachment larger than {max_size} bytes")]
    TooLarge { max_size: u64 },
    /// Reading the body failed (client went away, idle timeout).
    #[error("reading the attachment body")]
    Body(#[source] E),
    #[error("writing the attachment")]
    Store(#[source] StoreError),
    /// The upload-buffer budget (`storage.upload_buffer`) had no room for another
    /// upload within [`UPLOAD_BUFFER_WAIT`]; nothing was read or written (HTTP 503).
    #[error("the upload buffer of {budget} bytes is in use (storage.upload_buffer)")]
    Busy { budget: u64 },
}

// === Store ===

/// Handle on the attachment store; cloning is cheap.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Location without credentials, for logs.
    describe: Arc<str>,
    uploads: Uploads,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.describe)
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

fn blob_path(id: &AttachmentId) -> Path {
    Path::from_iter(["blobs", id.as_str()])
}

fn meta_path(id: &AttachmentId) -> Path {
    Path::from_iter(["meta", &format!("{id}.json")])
}

fn state_dir(id: &AttachmentId) -> Path {
    Path::from_iter(["state", id.as_str()])
}

fn live_path(id: &AttachmentId) -> Path {
    Path::from_iter(["state", id.as_str(), "live"])
}

fn removed_path(id: &AttachmentId) -> Path {
    Path::from_iter(["state", id.as_str(), "removed"])
}

fn releasing_path(id: &AttachmentId) -> Path {
    Path::from_iter(["state", id.as_str(), "releasing"])
}

fn refs_dir(href: &str) -> Path {
    Path::from_iter(["refs", &hex(&Sha256::digest(href.as_bytes()))])
}

fn ref_path(href: &str, id: &AttachmentId) -> Path {
    Path::from_iter(["refs", &hex(&Sha256::digest(href.as_bytes())), id.as_str()])
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn create() -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, StoreError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(StoreError::Config(format!(
            "option {key} = {value:?}: expected true or false"
        ))),
    }
}

impl Store {
    /// Opens the store named by `url` (`file://`, `s3://`, `memory://`) with `options`
    /// (`file`: `fsync`; `s3`: object_store's `AmazonS3ConfigKey` names such as
    /// `aws_endpoint`, `aws_region`, `aws_allow_http`, `aws_access_key_id`, `timeout`).
    /// Unknown option names are refused rather than ignored. Nothing is contacted: use
    /// [`Store::probe`] to check reachability.
    pub fn from_url(url: &url::Url, options: &[(String, String)]) -> Result<Store, StoreError> {
        match url.scheme() {
            "file" => {
                let dir = url.to_file_path().map_err(|()| {
                    StoreError::Config(format!("{url}: not a local directory path"))
                })?;
                let mut fsync = true;
                for (key, value) in options {
                    match key.to_ascii_lowercase().as_str() {
                        "fsync" => fsync = parse_bool(key, value)?,
                        _ => {
                            return Err(StoreError::Config(format!(
                                "unknown option {key} for file storage"
                            )))
                        }
                    }
                }
                Store::local(&dir, fsync)
            }
            "memory" => {
                if let Some((key, _)) = options.first() {
                    return Err(StoreError::Config(format!(
                        "unknown option {key} for memory storage"
                    )));
                }
                Ok(Store::in_memory())
            }
            "s3" | "s3a" => {
                let bucket = url.host_str().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(StoreError::Config(format!("{url}: no bucket name")));
                }
                let mut builder = AmazonS3Builder::new()
                    .with_client_options(s3_client_defaults())
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: S3_MAX_RETRIES,
                        ..RetryConfig::default()
                    });
                // AWS_* variables as AmazonS3Builder::from_env reads them (which would
                // replace the client defaults above), then explicit options over them.
                for (key, value) in std::env::vars_os() {
                    let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                        continue;
                    };
                    if key.starts_with("AWS_") {
                        if let Ok(parsed) = key.to_ascii_lowercase().parse() {
                            builder = builder.with_config(parsed, value);
                        }
                    }
                }
                for (key, value) in options {
                    let parsed: AmazonS3ConfigKey =
                        key.to_ascii_lowercase().parse().map_err(|_| {
                            StoreError::Config(format!("unknown option {key} for s3 storage"))
                        })?;
                    builder = builder.with_config(parsed, value);
                }
                builder = builder.with_url(url.as_str());
                let s3 = builder
                    .build()
                    .map_err(|e| StoreError::Config(format!("{url}: {e}")))?;
                let prefix = url.path().trim_matches('/');
                let describe: Arc<str> = format!("s3://{bucket}/{prefix}").into();
                let s3 = Arc::new(s3);
                let (inner, prefix): (Arc<dyn ObjectStore>, _) = if prefix.is_empty() {
                    (s3.clone(), None)
                } else {
                    let prefix = Path::parse(prefix)
                        .map_err(|e| StoreError::Config(format!("{url}: {e}")))?;
                    (
                        Arc::new(PrefixStore::new(s3.clone(), prefix.clone())),
                        Some(prefix),
                    )
                };
                Ok(Store {
                    inner,
                    describe,
                    uploads: Uploads::Parts(Arc::new(PartUploads::new(s3, prefix))),
                })
            }
            other => Err(StoreError::Config(format!(
                "{url}: unsupported storage scheme {other} (file, s3 or memory)"
            ))),
        }
    }

    /// A store in the local directory `dir`, created if missing (relative paths resolve
    /// against the working directory). `fsync` makes every completed write durable
    /// before it returns.
    pub fn local(dir: &std::path::Path, fsync: bool) -> Result<Store, StoreError> {
        let fail = |e: &dyn fmt::Display| {
            StoreError::Config(format!("storage directory {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| fail(&e))?
            // Empty state/<id>/ and refs/<hash>/ directories would otherwise pile up.
            .with_automatic_cleanup(true)
            .with_fsync(fsync);
        let canonical = std::fs::canonicalize(dir).map_err(|e| fail(&e))?;
        Ok(Store {
            inner: Arc::new(fs),
            describe: format!("file://{}", canonical.display()).into(),
            uploads: Uploads::Local {
                root: canonical,
                fsync,
            },
        })
    }

    /// An empty store in memory, for tests.
    pub fn in_memory() -> Store {
        let memory = Arc::new(InMemory::new());
        Store {
            inner: memory.clone(),
            describe: "memory://".into(),
            uploads: Uploads::Parts(Arc::new(PartUploads::new(memory, None))),
        }
    }

    /// Sets the multipart part size and the upload-buffer budget shared by all uploads
    /// (`storage.part_size`, `storage.upload_buffer`). Local storage uses neither: it
    /// writes each upload to its staging file as it arrives.
    pub fn with_upload_buffer(mut self, part_size: u64, budget: u64) -> Store {
        if let Uploads::Parts(parts) = &self.uploads {
            let mut tuned = PartUploads::new(parts.store.clone(), parts.prefix.clone());
            tuned.set_limits(part_size, budget);
            self.uploads = Uploads::Parts(Arc::new(tuned));
        }
        self
    }

    /// Streams `body` into `blobs/<id>`, counting and hashing as it goes.
    ///
    /// * Local disk: the body goes to a staging file `blobs/<id>#0` as it arrives, in
    ///   `LOCAL_WRITE_CHUNK` writes with one write in flight (at most two chunks in
    ///   memory per upload), then `fsync` and rename to `blobs/<id>`.
    /// * S3 (and memory): a body up to one part (`storage.part_size`) is buffered and
    ///   written with a single put; a larger one becomes a multipart upload with up to
    ///   `PARTS_IN_FLIGHT` parts uploading while the next fills. Every part buffer is
    ///   reserved from the store's upload-buffer budget (`storage.upload_buffer`): the
    ///   first one before the body is read (waiting up to [`UPLOAD_BUFFER_WAIT`], else
    ///   [`PutBlobError::Busy`]), further ones only when free, so an upload that finds
    ///   none uploads its parts one at a time instead of exceeding the budget.
    ///
    /// Before a staging file or a multipart upload exists, an [`UploadRecord`] is written
    /// to `uploads/<id>.json`; it goes when the blob is complete or the upload discarded,
    /// and `gc` clears what a crashed process left behind from it.
    ///
    /// On any error (`TooLarge` as soon as the count passes `max_size`, `Body`, `Store`)
    /// the staging file is deleted or the multipart upload aborted, and nothing remains
    /// under `blobs/<id>`; dropping the future does the same. The blob is not referenced
    /// by anything until [`Store::put_meta`].
    pub async fn put_blob<S, E>(
        &self,
        id: &AttachmentId,
        body: S,
        max_size: u64,
    ) -> Result<BlobInfo, PutBlobError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        match &self.uploads {
            Uploads::Local { root, fsync } => {
                self.put_local(root, *fsync, id, body, max_size).await
            }
            Uploads::Parts(parts) => self.put_parts(parts, id, body, max_size).await,
        }
    }

    /// Writes `meta/<id>.json` once. Writing identical metadata again succeeds (a retried
    /// request); different metadata under the same id is [`StoreError::AlreadyExists`].
    pub async fn put_meta(&self, meta: &Meta) -> Result<(), StoreError> {
        let path = meta_path(&meta.id);
        let json = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Corrupt {
            path: path.to_string(),
            source: Box::new(e),
        })?;
        match self.inner.put_opts(&path, json.into(), create()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match self.read_meta(&meta.id).await? {
                    Some(existing) if existing == *meta => Ok(()),
                    _ => Err(StoreError::AlreadyExists {
                        path: path.to_string(),
                    }),
                }
            }
            Err(e) => Err(StoreError::from_object_store(e, &path)),
        }
    }

    async fn read_meta(&self, id: &AttachmentId) -> Result<Option<Meta>, StoreError> {
        let path = meta_path(id);
        let bytes = match self.inner.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::from_object_store(e, &path)),
        };
        let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Corrupt {
            path: path.to_string(),
            source,
        };
        let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| corrupt(Box::new(e)))?;
        if meta.id != *id {
            return Err(corrupt(format!("holds id {}", meta.id).into()));
        }
        Ok(Some(meta))
    }

    /// Write-once marker: an existing marker counts as success.
    async fn put_marker(&self, path: &Path, body: String) -> Result<(), StoreError> {
        match self.inner.put_opts(path, body.into(), create()).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e, path)),
        }
    }

    /// Records that an upstream object references `id` (idempotent).
    pub async fn mark_live(&self, id: &AttachmentId) -> Result<(), StoreError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        self.put_marker(&live_path(id), format!("{now}\n")).await
    }

    /// Tombstones `id` (idempotent; the first marker's time stands). `reason` is kept in
    /// the marker for operators reading the bucket.
    pub async fn mark_removed(&self, id: &AttachmentId, reason: &str) -> Result<(), StoreError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        self.put_marker(&removed_path(id), format!("{now}\n{reason}\n"))
            .await
    }

    /// Records, before the commit of an update or remove POST at `href`, that `id` is about
    /// to lose its reference there. Without it a crash (or a lost answer) after the
    /// upstream applied the commit but before the tombstone was written would leave `id`
    /// live and unreferenced forever; with it, `gc` can find and settle the id.
    pub async fn mark_releasing(&self, id: &AttachmentId, href: &str) -> Result<(), StoreError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        self.put_marker(&releasing_path(id), format!("{now}\n{href}\n"))
            .await
    }

    /// Clears the marker of [`Store::mark_releasing`] once the outcome is known.
    pub async fn clear_releasing(&self, id: &AttachmentId) -> Result<(), StoreError> {
        self.delete_if_present(&releasing_path(id)).await
    }

    /// Metadata and state of `id`; `None` when no metadata exists (unknown id, or one
    /// whose discard has finished).
    pub async fn state(&self, id: &AttachmentId) -> Result<Option<(Meta, State)>, StoreError> {
        let dir = state_dir(id);
        let markers = async {
            self.inner
                .list(Some(&dir))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| StoreError::from_object_store(e, &dir))
        };
        let (meta, markers) = futures_util::future::join(self.read_meta(id), markers).await;
        let Some(meta) = meta? else {
            return Ok(None);
        };
        let markers = markers?;
        let marker = |name: &str| markers.iter().find(|m| m.location.filename() == Some(name));
        let state = if let Some(removed) = marker("removed") {
            State::Removed {
                since: removed.last_modified,
            }
        } else if let Some(releasing) = marker("releasing") {
            let path = releasing.location.clone();
            let body = match self.inner.get(&path).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map_err(|e| StoreError::from_object_store(e, &path))?,
                // Cleared meanwhile: the id is live again.
                Err(object_store::Error::NotFound { .. }) => Bytes::new(),
                Err(e) => return Err(StoreError::from_object_store(e, &path)),
            };
            let href = String::from_utf8_lossy(&body)
                .lines()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            if href.is_empty() {
                State::Live
            } else {
                State::Releasing {
                    since: releasing.last_modified,
                    href,
                }
            }
        } else if marker("live").is_some() {
            State::Live
        } else {
            State::Pending
        };
        Ok(Some((meta, state)))
    }

    /// Streams `blobs/<id>`, or the part `range` selects.
    ///
    /// A range that selects no byte of the blob (it starts at or past the end, is empty,
    /// or the blob is empty) is [`StoreError::RangeNotSatisfiable`]; the HTTP layer may
    /// prefer a plain 200 for empty blobs. A missing blob is [`StoreError::NotFound`].
    pub async fn get_blob(
        &self,
        id: &AttachmentId,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, StoreError> {
        let path = blob_path(id);
        let get_range = match &range {
            None => None,
            Some(ByteRange::Bounded(r)) if r.end == u64::MAX => Some(GetRange::Offset(r.start)),
            Some(ByteRange::Bounded(r)) if r.start < r.end => Some(GetRange::Bounded(r.clone())),
            Some(ByteRange::From(start)) => Some(GetRange::Offset(*start)),
            Some(ByteRange::Suffix(n)) if *n > 0 => Some(GetRange::Suffix(*n)),
            // Empty ranges select nothing whatever the size.
            Some(_) => return Err(self.unsatisfiable(&path).await),
        };
        let ranged = get_range.is_some();
        let options = GetOptions {
            range: get_range,
            ..Default::default()
        };
        let got = match self.inner.get_opts(&path, options).await {
            Ok(got) => got,
            Err(e @ object_store::Error::NotFound { .. }) => {
                return Err(StoreError::from_object_store(e, &path))
            }
            // Stores word an out-of-bounds range differently (S3 416, local InvalidRange):
            // decide from the size instead of the error.
            Err(e) if ranged => {
                return Err(match self.inner.head(&path).await {
                    Ok(head) if !range_overlaps(range.as_ref(), head.size) => {
                        StoreError::RangeNotSatisfiable { size: head.size }
                    }
                    _ => StoreError::from_object_store(e, &path),
                })
            }
            Err(e) => return Err(StoreError::from_object_store(e, &path)),
        };
        let size = got.meta.size;
        let served = got.range.clone();
        if ranged && served.is_empty() {
            return Err(StoreError::RangeNotSatisfiable { size });
        }
        let stream = match got.payload {
            GetResultPayload::File(file, _) => local_stream(file, served.clone(), path.clone()),
            GetResultPayload::Stream(stream) => {
                let path = path.clone();
                stream
                    .map_err(move |e| StoreError::from_object_store(e, &path))
                    .boxed()
            }
        };
        Ok(BlobStream {
            size,
            range: served,
            stream,
        })
    }

    async fn unsatisfiable(&self, path: &Path) -> StoreError {
        match self.inner.head(path).await {
            Ok(head) => StoreError::RangeNotSatisfiable { size: head.size },
            Err(e) => StoreError::from_object_store(e, path),
        }
    }

    /// Indexes `id` under the calendar object `href` (idempotent).
    pub async fn add_ref(&self, href: &str, id: &AttachmentId) -> Result<(), StoreError> {
        self.put_marker(&ref_path(href, id), String::new()).await
    }

    /// Drops `id` from the index of `href`; removing an absent entry succeeds.
    pub async fn remove_ref(&self, href: &str, id: &AttachmentId) -> Result<(), StoreError> {
        self.delete_if_present(&ref_path(href, id)).await
    }

    /// Ids indexed under `href`, sorted.
    pub async fn refs(&self, href: &str) -> Result<Vec<AttachmentId>, StoreError> {
        let dir = refs_dir(href);
        let mut ids: Vec<AttachmentId> = self
            .inner
            .list(Some(&dir))
            .map_err(|e| StoreError::from_object_store(e, &dir))
            .try_filter_map(
                |m| async move { Ok(m.location.filename().and_then(AttachmentId::parse)) },
            )
            .try_collect()
            .await?;
        ids.sort();
        Ok(ids)
    }

    async fn delete_if_present(&self, path: &Path) -> Result<(), StoreError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e, path)),
        }
    }

    /// Deletes everything about `id`: its refs (found through its metadata), blob,
    /// audience, holders, markers, then its metadata (last, so a crash part-way leaves it
    /// listed for `gc`; see the module docs). Only for ids known to be unreferenced: a
    /// definite upstream refusal, or `gc`'s proof. Safe to repeat and to run concurrently.
    pub async fn discard(&self, id: &AttachmentId) -> Result<(), StoreError> {
        // Corrupt metadata must not block cleanup: the href only finds the ref.
        let meta = match self.read_meta(id).await {
            Ok(meta) => meta,
            Err(StoreError::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(meta) = &meta {
            self.remove_ref(&meta.href, id).await?;
        }
        self.delete_if_present(&blob_path(id)).await?;
        self.delete_if_present(&audience_path(id)).await?;
        let dir = holders_dir(id);
        let holders: Vec<_> = self
            .inner
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| StoreError::from_object_store(e, &dir))?;
        for h in holders {
            self.delete_if_present(&h.location).await?;
        }
        self.delete_if_present(&live_path(id)).await?;
        self.delete_if_present(&releasing_path(id)).await?;
        self.delete_if_present(&removed_path(id)).await?;
        self.delete_if_present(&meta_path(id)).await
    }

    /// Every id with metadata, in no particular order (for `gc`).
    pub fn list_ids(&self) -> impl Stream<Item = Result<AttachmentId, StoreError>> + Send {
        let dir = Path::from("meta");
        let err_dir = dir.clone();
        self.inner
            .list(Some(&dir))
            .map_err(move |e| StoreError::from_object_store(e, &err_dir))
            .try_filter_map(|m| async move {
                let id = m
                    .location
                    .filename()
                    .and_then(|name| name.strip_suffix(".json"))
                    .and_then(AttachmentId::parse);
                if id.is_none() {
                    tracing::warn!(location = %m.location, "ignoring unexpected object in meta/");
                }
                Ok(id)
            })
    }

    /// Every blob with the time it was completed, for `gc` to find blobs whose metadata
    /// was never written (a crash between [`Store::put_blob`] and [`Store::put_meta`]).
    pub fn list_blobs(
        &self,
    ) -> impl Stream<Item = Result<(AttachmentId, DateTime<Utc>), StoreError>> + Send {
        let dir = Path::from("blobs");
        let err_dir = dir.clone();
        self.inner
            .list(Some(&dir))
            .map_err(move |e| StoreError::from_object_store(e, &err_dir))
            .try_filter_map(|m| async move {
                Ok(m.location
                    .filename()
                    .and_then(AttachmentId::parse)
                    .map(|id| (id, m.last_modified)))
            })
    }

    /// Writes, reads back and deletes a probe object (readiness, `check-config`).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let path = Path::from_iter(["probe", AttachmentId::new().as_str()]);
        let body = Bytes::from_static(b"calattach probe\n");
        self.inner
            .put_opts(&path, body.clone().into(), create())
            .await
            .map_err(|e| StoreError::from_object_store(e, &path))?;
        let read = match self.inner.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        let deleted = self.delete_if_present(&path).await;
        let read = read.map_err(|e| StoreError::from_object_store(e, &path))?;
        if read != body {
            return Err(StoreError::Corrupt {
                path: path.to_string(),
                source: "probe read back different bytes".into(),
            });
        }
        deleted
    }
}

// === uploads in progress (put_blob, and what gc clears after a crash) ===

/// How [`Store::put_blob`] writes for this backend.
#[derive(Clone)]
enum Uploads {
    /// Straight to a staging file in the store's directory.
    Local { root: PathBuf, fsync: bool },
    /// Single put or multipart upload through [`MultipartStore`] (S3, memory).
    Parts(Arc<PartUploads>),
}

/// Multipart settings and the upload-buffer budget shared by every upload of a store.
struct PartUploads {
    store: Arc<dyn MultipartStore>,
    /// The key prefix of an `s3://bucket/prefix` URL: [`MultipartStore`] calls take the
    /// full key, unlike `inner` (a [`PrefixStore`]).
    prefix: Option<Path>,
    part_size: usize,
    /// Bytes of part buffers all uploads may hold at once (`storage.upload_buffer`).
    budget_bytes: u64,
    /// The budget in KiB permits.
    budget: Arc<tokio::sync::Semaphore>,
}

impl PartUploads {
    fn new(store: Arc<dyn MultipartStore>, prefix: Option<Path>) -> PartUploads {
        let mut p = PartUploads {
            store,
            prefix,
            part_size: 0,
            budget_bytes: 0,
            budget: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        p.set_limits(DEFAULT_PART_SIZE, DEFAULT_UPLOAD_BUFFER);
        p
    }

    fn set_limits(&mut self, part_size: u64, budget: u64) {
        self.part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        self.budget_bytes = budget;
        let permits = usize::try_from(budget / 1024)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        self.budget = Arc::new(tokio::sync::Semaphore::new(permits));
    }

    /// Permits of one part buffer.
    fn part_permits(&self) -> u32 {
        u32::try_from(self.part_size.div_ceil(1024)).unwrap_or(u32::MAX)
    }

    fn full_path(&self, path: &Path) -> Path {
        match &self.prefix {
            Some(prefix) => Path::from_iter(prefix.parts().chain(path.parts())),
            None => path.clone(),
        }
    }
}

use crate::config::{DEFAULT_PART_SIZE, DEFAULT_UPLOAD_BUFFER};

/// Parts uploading at once per upload (when the budget has room), besides the one filling.
const PARTS_IN_FLIGHT: usize = 2;

/// How long an S3 upload waits for room in the upload-buffer budget before it is refused.
pub const UPLOAD_BUFFER_WAIT: Duration = Duration::from_secs(5);

/// One write to a local staging file; with one write in flight while the next chunk
/// fills, a local upload holds at most two.
const LOCAL_WRITE_CHUNK: usize = 256 * 1024;

fn upload_record_path(id: &AttachmentId) -> Path {
    Path::from_iter(["uploads", &format!("{id}.json")])
}

/// The local staging file of `id`, relative to the store's directory (`#` + digits:
/// object_store's listings skip it; not a [`Path`], which would escape the `#`).
fn staging_name(id: &AttachmentId) -> String {
    format!("blobs/{id}#0")
}

fn local_file(root: &std::path::Path, path: &Path) -> PathBuf {
    path.parts()
        .fold(root.to_path_buf(), |p, part| p.join(part.as_ref()))
}

/// `uploads/<id>.json`: an attachment upload in progress, written before its staging
/// file or multipart upload exists and deleted after the blob is complete or discarded.
/// One that outlives its process names what `gc` must clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: AttachmentId,
    #[serde(with = "rfc3339")]
    pub started: DateTime<Utc>,
    pub owner: Owner,
    /// The S3 multipart upload id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_id: Option<String>,
    /// The local staging file, relative to the store's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
}

/// The process that runs an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: a different one means the host rebooted since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Start time of the process in clock ticks after boot (`/proc/<pid>/stat` field 22),
    /// so a reused pid (pid 1 of a restarted container) is not taken for the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn current() -> &'static Owner {
        static CURRENT: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                host: hostname(),
                boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
                start_ticks: process_start_ticks(pid),
            }
        })
    }

    /// Whether the owner is still running: `Some` when that can be known (it ran on this
    /// host, Linux `/proc`), `None` otherwise (another host: only age tells).
    pub fn is_alive(&self) -> Option<bool> {
        let me = Owner::current();
        if self.host != me.host {
            return None;
        }
        match (&self.boot_id, &me.boot_id) {
            (Some(then), Some(now)) if then != now => return Some(false),
            (_, None) => return None,
            _ => {}
        }
        me.start_ticks?;
        match process_start_ticks(self.pid) {
            None => Some(false),
            Some(ticks) => Some(self.start_ticks.is_none_or(|then| then == ticks)),
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`; `None` when there is no such process (or no `/proc`).
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// An upload record as listed, with the time the store gives its object.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub record: UploadRecord,
    pub written: DateTime<Utc>,
}

/// Deletes a local upload's staging file, then its record, unless disarmed (the upload
/// finished or was cleaned up explicitly). Synchronous: both are unlinks.
struct LocalGuard {
    staging: PathBuf,
    record: PathBuf,
    armed: bool,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        if self.armed {
            // Staging first: a crash in between leaves the record, which gc finds.
            let _ = std::fs::remove_file(&self.staging);
            if let Err(e) = std::fs::remove_file(&self.record) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(record = %self.record.display(), error = %e, "removing upload record failed");
                }
            }
        }
    }
}

/// Aborts a multipart upload whose `put_blob` future was dropped (client gone), then
/// deletes its record, in a spawned task.
struct AbortOnDrop {
    parts: Arc<PartUploads>,
    inner: Arc<dyn ObjectStore>,
    path: Path,
    record: Path,
    multipart_id: String,
    armed: bool,
}

impl AbortOnDrop {
    async fn abort(mut self) {
        self.armed = false;
        abort_and_forget(
            self.parts.clone(),
            self.inner.clone(),
            self.path.clone(),
            self.record.clone(),
            self.multipart_id.clone(),
        )
        .await
    }
}

async fn abort_and_forget(
    parts: Arc<PartUploads>,
    inner: Arc<dyn ObjectStore>,
    path: Path,
    record: Path,
    multipart_id: String,
) {
    let full = parts.full_path(&path);
    match parts.store.abort_multipart(&full, &multipart_id).await {
        Err(e) if !upload_gone(&e) => {
            tracing::warn!(%path, error = %e, "aborting multipart upload failed; gc retries it")
        }
        _ => {
            // Only once nothing remains: a record left behind lets gc retry the abort.
            if let Err(e) = inner.delete(&record).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::warn!(%record, error = %e, "removing upload record failed");
                }
            }
        }
    }
}

/// The multipart upload does not exist (any more): S3 answers `NoSuchUpload` (404),
/// the in-memory store `UploadNotFound`.
fn upload_gone(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::NotFound { .. } => true,
        object_store::Error::Generic { store, .. } => *store == "InMemory",
        _ => false,
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(abort_and_forget(
                    self.parts.clone(),
                    self.inner.clone(),
                    self.path.clone(),
                    self.record.clone(),
                    self.multipart_id.clone(),
                ));
            }
        }
    }
}

fn io_store_error(e: std::io::Error, path: &Path) -> StoreError {
    StoreError::from_object_store(
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        },
        path,
    )
}

fn join_error(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e)
}

impl Store {
    async fn put_record(&self, record: &UploadRecord) -> Result<(), StoreError> {
        let path = upload_record_path(&record.id);
        let json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
            path: path.to_string(),
            source: Box::new(e),
        })?;
        self.inner
            .put_opts(&path, json.into(), create())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(e, &path))
    }

    async fn put_local<S, E>(
        &self,
        root: &std::path::Path,
        fsync: bool,
        id: &AttachmentId,
        body: S,
        max_size: u64,
    ) -> Result<BlobInfo, PutBlobError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let path = blob_path(id);
        let staging = staging_name(id);
        let record = UploadRecord {
            id: id.clone(),
            started: Utc::now(),
            owner: Owner::current().clone(),
            multipart_id: None,
            staging: Some(staging.clone()),
        };
        self.put_record(&record)
            .await
            .map_err(PutBlobError::Store)?;
        let mut guard = LocalGuard {
            staging: root.join(&staging),
            record: local_file(root, &upload_record_path(id)),
            armed: true,
        };
        let store_err = |e: std::io::Error| PutBlobError::Store(io_store_error(e, &path));

        let staging_file = guard.staging.clone();
        let file = tokio::task::spawn_blocking(move || {
            if let Some(dir) = staging_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create_new(&staging_file)
        })
        .await
        .map_err(join_error)
        .and_then(|r| r)
        .map_err(store_err)?;

        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut file = Some(file);
        let mut writing: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>> = None;
        let mut buf: Vec<u8> = Vec::new();
        // Waits for the write in flight and gets the file back.
        async fn settle(
            file: &mut Option<std::fs::File>,
            writing: &mut Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
        ) -> std::io::Result<std::fs::File> {
            if let Some(w) = writing.take() {
                *file = Some(w.await.map_err(join_error)??);
            }
            file.take()
                .ok_or_else(|| std::io::Error::other("staging file lost after a failed write"))
        }
        loop {
            match body.next().await {
                None => break,
                Some(Err(e)) => return Err(PutBlobError::Body(e)),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > max_size {
                        return Err(PutBlobError::TooLarge { max_size });
                    }
                    hasher.update(&chunk);
                    if buf.capacity() == 0 {
                        buf.reserve_exact(LOCAL_WRITE_CHUNK.max(chunk.len()));
                    }
                    buf.extend_from_slice(&chunk);
                    if buf.len() >= LOCAL_WRITE_CHUNK {
                        let f = settle(&mut file, &mut writing).await.map_err(store_err)?;
                        let data = std::mem::take(&mut buf);
                        writing = Some(tokio::task::spawn_blocking(move || {
                            use std::io::Write as _;
                            (&f).write_all(&data)?;
                            Ok(f)
                        }));
                    }
                }
            }
        }
        let f = settle(&mut file, &mut writing).await.map_err(store_err)?;
        let target = local_file(root, &path);
        let staging_file = guard.staging.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            (&f).write_all(&buf)?;
            if fsync {
                f.sync_all()?;
            }
            drop(f);
            std::fs::rename(&staging_file, &target)?;
            if fsync {
                if let Some(dir) = target.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
            }
            Ok(())
        })
        .await
        .map_err(join_error)
        .and_then(|r| r)
        .map_err(store_err)?;
        // The blob is complete: only the record remains to go.
        let _ = std::fs::remove_file(&guard.record);
        guard.armed = false;
        Ok(BlobInfo {
            size,
            sha256: hex(&hasher.finalize()),
        })
    }

    async fn put_parts<S, E>(
        &self,
        parts: &Arc<PartUploads>,
        id: &AttachmentId,
        body: S,
        max_size: u64,
    ) -> Result<BlobInfo, PutBlobError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let path = blob_path(id);
        let unit = parts.part_permits();
        // The buffer of the first part, before anything is read.
        let first_permit = match tokio::time::timeout(
            UPLOAD_BUFFER_WAIT,
            parts.budget.clone().acquire_many_owned(unit),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(PutBlobError::Busy {
                    budget: parts.budget_bytes,
                })
            }
        };
        let mut permits = vec![first_permit];
        let store_err =
            |e: object_store::Error| PutBlobError::Store(StoreError::from_object_store(e, &path));

        let mut filler = Filler {
            body: std::pin::pin!(body),
            hasher: Sha256::new(),
            size: 0,
            max_size,
            part_size: parts.part_size,
            part: Vec::new(),
            len: 0,
            carry: None,
            ended: false,
        };
        filler.fill().await?;
        if filler.finished() {
            // One part or less: a single request, no multipart upload. Overwrite, not
            // Create: a retried request whose first attempt succeeded would fail with
            // AlreadyExists; ids are random and fresh.
            self.inner
                .put(&path, filler.take())
                .await
                .map_err(store_err)?;
            return Ok(filler.info());
        }

        let full = parts.full_path(&path);
        let multipart_id = parts
            .store
            .create_multipart(&full)
            .await
            .map_err(store_err)?;
        let guard = AbortOnDrop {
            parts: parts.clone(),
            inner: self.inner.clone(),
            path: path.clone(),
            record: upload_record_path(id),
            multipart_id: multipart_id.clone(),
            armed: true,
        };
        let record = UploadRecord {
            id: id.clone(),
            started: Utc::now(),
            owner: Owner::current().clone(),
            multipart_id: Some(multipart_id.clone()),
            staging: None,
        };
        if let Err(e) = self.put_record(&record).await {
            guard.abort().await;
            return Err(PutBlobError::Store(e));
        }

        type PartResult = Result<(usize, PartId), object_store::Error>;
        let mut uploading: tokio::task::JoinSet<PartResult> = tokio::task::JoinSet::new();
        let mut done: Vec<Option<PartId>> = Vec::new();
        let joined = |r: Option<Result<PartResult, tokio::task::JoinError>>,
                      done: &mut Vec<Option<PartId>>| match r {
            Some(Ok(Ok((i, part_id)))) => {
                done[i] = Some(part_id);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(store_err(e)),
            Some(Err(e)) => Err(store_err(object_store::Error::JoinError { source: e })),
            None => Ok(()),
        };
        let outcome: Result<(), PutBlobError<E>> = async {
            loop {
                let idx = done.len();
                done.push(None);
                let store = parts.store.clone();
                let (full, mid, payload) = (full.clone(), multipart_id.clone(), filler.take());
                uploading.spawn(async move {
                    let part_id = store.put_part(&full, &mid, idx, payload).await?;
                    Ok((idx, part_id))
                });
                if filler.finished() {
                    break;
                }
                // Room for the next buffer: a reservation this upload holds, a new one if
                // the budget has it, or one a finishing part frees.
                while uploading.len() + 1 > permits.len() {
                    if permits.len() < PARTS_IN_FLIGHT + 1 {
                        if let Ok(p) = parts.budget.clone().try_acquire_many_owned(unit) {
                            permits.push(p);
                            continue;
                        }
                    }
                    joined(uploading.join_next().await, &mut done)?;
                }
                filler.fill().await?;
                if filler.len == 0 {
                    // The body ended exactly at a part boundary.
                    break;
                }
            }
            while let Some(r) = uploading.join_next().await {
                joined(Some(r), &mut done)?;
            }
            Ok(())
        }
        .await;
        uploading.abort_all();
        drop(permits);
        if let Err(e) = outcome {
            guard.abort().await;
            return Err(e);
        }
        let part_ids: Vec<PartId> = done.into_iter().flatten().collect();
        if let Err(e) = parts
            .store
            .complete_multipart(&full, &multipart_id, part_ids)
            .await
        {
            guard.abort().await;
            return Err(store_err(e));
        }
        let mut guard = guard;
        guard.armed = false;
        if let Err(e) = self.delete_if_present(&guard.record).await {
            // The blob is complete; gc removes the record.
            tracing::warn!(record = %guard.record, error = %e, "removing upload record failed");
        }
        Ok(filler.info())
    }

    /// Upload records in the store (for `gc`), with the time each was written.
    /// Unreadable records are reported as errors in the stream.
    pub async fn list_uploads(&self) -> Result<Vec<Result<Leftover, StoreError>>, StoreError> {
        let dir = Path::from("uploads");
        let listed: Vec<_> = self
            .inner
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| StoreError::from_object_store(e, &dir))?;
        let mut out = Vec::with_capacity(listed.len());
        for m in listed {
            let bytes = match self.inner.get(&m.location).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match bytes {
                Ok(b) => b,
                // Finished meanwhile.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    out.push(Err(StoreError::from_object_store(e, &m.location)));
                    continue;
                }
            };
            out.push(
                serde_json::from_slice::<UploadRecord>(&bytes)
                    .map(|record| Leftover {
                        record,
                        written: m.last_modified,
                    })
                    .map_err(|e| StoreError::Corrupt {
                        path: m.location.to_string(),
                        source: Box::new(e),
                    }),
            );
        }
        Ok(out)
    }

    /// Clears what the upload `record` left (its staging file, or its multipart upload,
    /// aborted), then the record. Only for uploads whose process is gone. True when this
    /// call removed the staging file or aborted the upload; false when it was already
    /// gone (another gc run, or the upload had finished). Safe to repeat and to run
    /// concurrently.
    pub async fn clear_upload(&self, record: &UploadRecord) -> Result<bool, StoreError> {
        let path = blob_path(&record.id);
        let removed = match (&self.uploads, &record.multipart_id) {
            (Uploads::Local { root, .. }, _) => {
                // Only ever the staging file of this id, whatever the record says.
                let file = root.join(staging_name(&record.id));
                match tokio::task::spawn_blocking(move || std::fs::remove_file(file))
                    .await
                    .map_err(join_error)
                    .and_then(|r| r)
                {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => return Err(io_store_error(e, &path)),
                }
            }
            (Uploads::Parts(parts), Some(mid)) => {
                let full = parts.full_path(&path);
                match parts.store.abort_multipart(&full, mid).await {
                    Ok(()) => true,
                    Err(e) if upload_gone(&e) => false,
                    Err(e) => return Err(StoreError::from_object_store(e, &path)),
                }
            }
            (Uploads::Parts(_), None) => false,
        };
        self.delete_if_present(&upload_record_path(&record.id))
            .await?;
        Ok(removed)
    }
}

/// Reads a body into part-sized buffers, counting and hashing.
struct Filler<B> {
    body: B,
    hasher: Sha256,
    size: u64,
    max_size: u64,
    part_size: usize,
    part: Vec<Bytes>,
    len: usize,
    /// The rest of a chunk that crossed the end of the previous part.
    carry: Option<Bytes>,
    ended: bool,
}

impl<B, E> Filler<B>
where
    B: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// Reads until the part is full or the body ends.
    async fn fill(&mut self) -> Result<(), PutBlobError<E>> {
        while self.len < self.part_size {
            let chunk = match self.carry.take() {
                Some(c) => c,
                None if self.ended => return Ok(()),
                None => match self.body.next().await {
                    None => {
                        self.ended = true;
                        return Ok(());
                    }
                    Some(Err(e)) => return Err(PutBlobError::Body(e)),
                    Some(Ok(chunk)) => {
                        self.size += chunk.len() as u64;
                        if self.size > self.max_size {
                            return Err(PutBlobError::TooLarge {
                                max_size: self.max_size,
                            });
                        }
                        self.hasher.update(&chunk);
                        chunk
                    }
                },
            };
            let room = self.part_size - self.len;
            if chunk.len() > room {
                self.carry = Some(chunk.slice(room..));
                self.part.push(chunk.slice(..room));
                self.len += room;
            } else {
                self.len += chunk.len();
                self.part.push(chunk);
            }
        }
        Ok(())
    }

    /// The body has ended and everything read is in `part`.
    fn finished(&self) -> bool {
        self.ended && self.carry.is_none()
    }

    fn take(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.part).into_iter().collect()
    }

    fn info(&self) -> BlobInfo {
        BlobInfo {
            size: self.size,
            sha256: hex(&self.hasher.clone().finalize()),
        }
    }
}

// === audience and holders (access rules, DESIGN §5–6) ===

/// Who may see an attachment because of the event it belongs to: the organizer and
/// attendees of the organizer's object, as last written. Stored as
/// `audience/<id>.json` and **overwritten** (`PutMode::Overwrite`) on every commit and
/// every successful guarded PUT of the organizer's object, so an attendee who is
/// uninvited loses access. It is advisory and last-writer-wins: two concurrent PUTs of
/// the same event may leave either one's list, which the next PUT corrects. Unlike
/// `meta/` it is mutable; nothing else in the store is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Audience {
    /// UID of the event the lists come from.
    pub uid: String,
    /// `ORGANIZER` value, normalised (`mailto:` lower-cased); `None` for an event
    /// without scheduling.
    pub organizer: Option<String>,
    /// `ATTENDEE` values, normalised.
    pub attendees: Vec<String>,
}

/// A calendar object (other than the one the attachment was created in) that holds an
/// id, as recorded by the guard: `holders/<id>/<sha256(href) hex>` (write-once marker
/// whose body is this JSON). The reverse of `refs/`, so "does any object still
/// reference this id" needs no scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub href: String,
    /// The object is on the organizer's side (not an attendee's copy): those who can
    /// read it may download (sharees, delegates).
    pub organizer_side: bool,
}

fn audience_path(id: &AttachmentId) -> Path {
    Path::from_iter(["audience", &format!("{id}.json")])
}

fn holders_dir(id: &AttachmentId) -> Path {
    Path::from_iter(["holders", id.as_str()])
}

fn holder_path(id: &AttachmentId, href: &str) -> Path {
    Path::from_iter([
        "holders",
        id.as_str(),
        &hex(&Sha256::digest(href.as_bytes())),
    ])
}

impl Store {
    /// Overwrites `audience/<id>.json` (see [`Audience`]).
    pub async fn put_audience(&self, id: &AttachmentId, a: &Audience) -> Result<(), StoreError> {
        let path = audience_path(id);
        let json = serde_json::to_vec(a).map_err(|e| StoreError::Corrupt {
            path: path.to_string(),
            source: Box::new(e),
        })?;
        self.inner
            .put(&path, json.into())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(e, &path))
    }

    /// The recorded audience of `id`, if any.
    pub async fn audience(&self, id: &AttachmentId) -> Result<Option<Audience>, StoreError> {
        let path = audience_path(id);
        let bytes = match self.inner.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        match bytes {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path: path.to_string(),
                    source: Box::new(e),
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from_object_store(e, &path)),
        }
    }

    /// Records that the object `href` holds `id` (idempotent: the first marker stands).
    /// Whether something other than `href` keeps the id of `meta` alive (DESIGN §5): its
    /// home object (`meta.href`, when that is not `href`) still references it, or
    /// another organizer-side holder does (the creator's reuse, RFC 8607 §3.7).
    /// Attendee copies do not: the organizer's removal must revoke access.
    pub async fn held_elsewhere(&self, meta: &Meta, href: &str) -> Result<bool, StoreError> {
        if meta.href != href && self.refs(&meta.href).await?.contains(&meta.id) {
            return Ok(true);
        }
        Ok(self
            .holders(&meta.id)
            .await?
            .iter()
            .any(|h| h.href != href && h.href != meta.href && h.organizer_side))
    }

    pub async fn add_holder(&self, id: &AttachmentId, holder: &Holder) -> Result<(), StoreError> {
        let body = serde_json::to_string(holder).unwrap_or_default();
        self.put_marker(&holder_path(id, &holder.href), body).await
    }

    /// Forgets that `href` holds `id`; absent entries succeed.
    pub async fn remove_holder(&self, id: &AttachmentId, href: &str) -> Result<(), StoreError> {
        self.delete_if_present(&holder_path(id, href)).await
    }

    /// Objects recorded as holding `id` (unreadable markers are skipped).
    pub async fn holders(&self, id: &AttachmentId) -> Result<Vec<Holder>, StoreError> {
        let dir = holders_dir(id);
        let metas: Vec<_> = self
            .inner
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| StoreError::from_object_store(e, &dir))?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let bytes = match self.inner.get(&m.location).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match bytes {
                Ok(b) => {
                    if let Ok(h) = serde_json::from_slice::<Holder>(&b) {
                        out.push(h);
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StoreError::from_object_store(e, &m.location)),
            }
        }
        Ok(out)
    }
}

/// Whether `range` selects at least one byte of a blob of `size` bytes.
fn range_overlaps(range: Option<&ByteRange>, size: u64) -> bool {
    match range {
        None => true,
        Some(ByteRange::Bounded(r)) => r.start < r.end && r.start < size,
        Some(ByteRange::From(start)) => *start < size,
        Some(ByteRange::Suffix(n)) => *n > 0 && size > 0,
    }
}

/// Reads `range` of a local file in `LOCAL_READ_CHUNK` pieces on the blocking pool: one
/// chunk in memory at a time.
fn local_stream(
    file: std::fs::File,
    range: Range<u64>,
    path: Path,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    futures_util::stream::try_unfold(
        (Some(file), range.start, range.end),
        move |(file, pos, end)| {
            let path = path.clone();
            async move {
                let Some(mut file) = file else {
                    return Ok(None);
                };
                if pos >= end {
                    return Ok(None);
                }
                let want = (end - pos).min(LOCAL_READ_CHUNK as u64);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = Vec::with_capacity(want as usize);
                    file.seek(SeekFrom::Start(pos))?;
                    (&mut file).take(want).read_to_end(&mut buf)?;
                    Ok::<_, std::io::Error>((file, buf))
                })
                .await;
                let io_err = |e: std::io::Error| StoreError::Other {
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                };
                let (file, buf) = match read {
                    Ok(Ok(done)) => done,
                    Ok(Err(e)) => return Err(io_err(e)),
                    Err(join) => return Err(io_err(std::io::Error::other(join))),
                };
                if buf.is_empty() {
                    // The file shrank under us: blobs are never modified, so this is damage.
                    return Err(StoreError::Corrupt {
                        path: path.to_string(),
                        source: "blob shorter than its size".into(),
                    });
                }
                let next = pos + buf.len() as u64;
                Ok(Some((Bytes::from(buf), (Some(file), next, end))))
            }
        },
    )
    .boxed()
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    //! Conformance suite run against every backend (InMemory, LocalFileSystem in a temp
    //! directory, S3 on a real moto server), plus backend-independent unit tests.

    use super::*;
    use futures_util::stream;
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::sync::{Mutex, Weak};

    const MIB: u64 = 1024 * 1024;

    // === test environment ===

    struct Env {
        store: Store,
        /// Root directory of a local store, to look for staging files object_store hides.
        local_root: Option<PathBuf>,
        /// Port and bucket of an S3 store on moto, to list incomplete multipart uploads.
        moto: Option<(Arc<Moto>, String)>,
        _dir: Option<tempfile::TempDir>,
    }

    fn memory_env() -> Env {
        Env {
            store: Store::in_memory(),
            local_root: None,
            moto: None,
            _dir: None,
        }
    }

    fn local_env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("attachments");
        let url = url::Url::from_directory_path(&root).unwrap();
        let store = Store::from_url(&url, &[]).unwrap();
        Env {
            store,
            local_root: Some(std::fs::canonicalize(&root).unwrap()),
            moto: None,
            _dir: Some(dir),
        }
    }

    fn s3_env() -> Env {
        let moto = shared_moto();
        let bucket = format!("calattach-{}", hex(&rand::random::<[u8; 6]>()));
        create_bucket(moto.port, &bucket);
        let url = url::Url::parse(&format!("s3://{bucket}")).unwrap();
        let options = s3_options(moto.port);
        let store = Store::from_url(&url, &options).unwrap();
        Env {
            store,
            local_root: None,
            moto: Some((moto, bucket)),
            _dir: None,
        }
    }

    fn s3_options(port: u16) -> Vec<(String, String)> {
        [
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_allow_http", "true".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
            ("aws_access_key_id", "testing".to_owned()),
            ("aws_secret_access_key", "testing".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    // === moto launcher ===

    /// A `moto_server` on a free loopback port, killed on drop.
    struct Moto {
        child: std::process::Child,
        port: u16,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts `moto_server` from the project venv (`$CALATTACH_VENV` or `.venv`, made by
    /// `scripts/venv.sh`). A missing server fails the test: S3 coverage is never skipped.
    fn start_moto() -> Moto {
        let venv = std::env::var_os("CALATTACH_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
        let bin = venv.join("bin").join("moto_server");
        assert!(
            bin.is_file(),
            "moto_server not found at {}: run scripts/venv.sh (S3 tests need it)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut moto = Moto { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited early with {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server not listening on port {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One moto for all S3 tests running at the same time; the last one to finish stops it.
    fn shared_moto() -> Arc<Moto> {
        static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(moto) = shared.upgrade() {
            return moto;
        }
        let moto = Arc::new(start_moto());
        *shared = Arc::downgrade(&moto);
        moto
    }

    /// Plain HTTP/1.1 to moto (which does not check signatures): object_store cannot
    /// create buckets or list multipart uploads.
    fn raw_http(port: u16, method: &str, target: &str) -> String {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            conn,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    }

    fn create_bucket(port: u16, bucket: &str) {
        let response = raw_http(port, "PUT", &format!("/{bucket}"));
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {response}"
        );
    }

    // === generated bodies ===

    /// Byte at offset `i` of every generated body, so ranges can be checked anywhere.
    fn byte_at(i: u64) -> u8 {
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ i as u8
    }

    fn pattern(range: Range<u64>) -> Vec<u8> {
        range.map(byte_at).collect()
    }

    fn pattern_sha256(len: u64) -> String {
        let mut hasher = Sha256::new();
        let mut pos = 0;
        while pos < len {
            let end = (pos + MIB).min(len);
            hasher.update(pattern(pos..end));
            pos = end;
        }
        hex(&hasher.finalize())
    }

    /// `total` generated bytes in 64 KiB chunks, produced lazily; with `fail_at`, the
    /// stream breaks with an error after that many bytes instead.
    fn body(
        total: u64,
        fail_at: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        const CHUNK: u64 = 64 * 1024;
        let end = fail_at.unwrap_or(total).min(total);
        let chunks = (0..end.div_ceil(CHUNK)).map(move |i| {
            let start = i * CHUNK;
            Ok(Bytes::from(pattern(start..(start + CHUNK).min(end))))
        });
        let failure = fail_at.map(|_| Err(std::io::Error::other("connection reset by client")));
        stream::iter(chunks.chain(failure))
    }

    async fn read_all(store: &Store, id: &AttachmentId, range: Option<ByteRange>) -> Vec<u8> {
        let mut got = store.get_blob(id, range).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = got.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    /// Everything the backend holds about `id` under `blobs/`, including what object_store
    /// does not list: local staging files and incomplete S3 multipart uploads.
    async fn blob_leftovers(env: &Env, id: &AttachmentId) -> Vec<String> {
        let mut found: Vec<String> = env
            .store
            .inner
            .list(Some(&Path::from("blobs")))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.contains(id.as_str()))
            .collect();
        let records: Vec<String> = env
            .store
            .inner
            .list(Some(&Path::from("uploads")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        found.extend(records.into_iter().filter(|p| p.contains(id.as_str())));
        if let Some(root) = &env.local_root {
            if let Ok(entries) = std::fs::read_dir(root.join("blobs")) {
                for entry in entries {
                    let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                    if name.contains(id.as_str()) && name != id.as_str() {
                        found.push(format!("staging file blobs/{name}"));
                    }
                }
            }
        }
        if let Some((moto, bucket)) = &env.moto {
            let uploads = raw_http(moto.port, "GET", &format!("/{bucket}?uploads"));
            if uploads.contains(id.as_str()) {
                found.push(format!("multipart upload: {uploads}"));
            }
        }
        found
    }

    async fn everything(env: &Env) -> Vec<String> {
        env.store
            .inner
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    }

    fn meta_for(id: &AttachmentId, href: &str, info: &BlobInfo) -> Meta {
        Meta {
            id: id.clone(),
            creator: "/principals/alice/".to_owned(),
            href: href.to_owned(),
            uid: "event-1@example.com".to_owned(),
            filename: "report.pdf".to_owned(),
            media_type: "application/pdf".to_owned(),
            size: info.size,
            sha256: info.sha256.clone(),
            created: DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    // === conformance suite ===

    async fn empty_blob_round_trips(env: Env) {
        let id = AttachmentId::new();
        let info = env.store.put_blob(&id, body(0, None), 10).await.unwrap();
        assert_eq!(info.size, 0);
        assert_eq!(
            info.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let got = env.store.get_blob(&id, None).await.unwrap();
        assert_eq!((got.size, got.range.clone()), (0, 0..0));
        assert!(read_all(&env.store, &id, None).await.is_empty());
    }

    async fn all_byte_values_round_trip(env: Env) {
        let id = AttachmentId::new();
        let bytes: Vec<u8> = (0..=255u8).collect();
        let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes.clone()))]);
        let info = env.store.put_blob(&id, chunks, 256).await.unwrap();
        assert_eq!(info.size, 256);
        assert_eq!(info.sha256, hex(&Sha256::digest(&bytes)));
        assert_eq!(read_all(&env.store, &id, None).await, bytes);
    }

    async fn twenty_mb_round_trips_through_multipart(env: Env) {
        let id = AttachmentId::new();
        let len = 20 * 1000 * 1000;
        let info = env
            .store
            .put_blob(&id, body(len, None), 25 * MIB)
            .await
            .unwrap();
        assert_eq!(info.size, len);
        assert_eq!(info.sha256, pattern_sha256(len));
        let got = env.store.get_blob(&id, None).await.unwrap();
        assert_eq!((got.size, got.range.clone()), (len, 0..len));
        let bytes = read_all(&env.store, &id, None).await;
        assert_eq!(bytes.len() as u64, len);
        assert_eq!(hex(&Sha256::digest(&bytes)), info.sha256);
        assert_eq!(blob_leftovers(&env, &id).await, vec![format!("blobs/{id}")]);
    }

    async fn too_large_within_first_part_leaves_no_blob(env: Env) {
        let id = AttachmentId::new();
        let err = env.store.put_blob(&id, body(MIB, None), 1000).await;
        assert!(matches!(
            err,
            Err(PutBlobError::TooLarge { max_size: 1000 })
        ));
        assert_eq!(blob_leftovers(&env, &id).await, Vec::<String>::new());
    }

    async fn too_large_after_first_part_aborts_upload(env: Env) {
        let id = AttachmentId::new();
        let err = env
            .store
            .put_blob(&id, body(30 * MIB, None), 20 * MIB)
            .await;
        assert!(matches!(err, Err(PutBlobError::TooLarge { .. })));
        assert_eq!(blob_leftovers(&env, &id).await, Vec::<String>::new());
    }

    async fn size_equal_to_limit_is_accepted(env: Env) {
        let id = AttachmentId::new();
        let info = env.store.put_blob(&id, body(4096, None), 4096).await;
        assert_eq!(info.unwrap().size, 4096);
    }

    async fn body_error_within_first_part_leaves_no_blob(env: Env) {
        let id = AttachmentId::new();
        let err = env
            .store
            .put_blob(&id, body(MIB, Some(1000)), 10 * MIB)
            .await;
        assert!(matches!(err, Err(PutBlobError::Body(_))));
        assert_eq!(blob_leftovers(&env, &id).await, Vec::<String>::new());
    }

    async fn body_error_mid_multipart_aborts_upload(env: Env) {
        let id = AttachmentId::new();
        let err = env
            .store
            .put_blob(&id, body(30 * MIB, Some(18 * MIB + 5)), 40 * MIB)
            .await;
        assert!(matches!(err, Err(PutBlobError::Body(_))));
        assert_eq!(blob_leftovers(&env, &id).await, Vec::<String>::new());
    }

    async fn ranges_select_bytes_and_refuse_outside(env: Env) {
        let id = AttachmentId::new();
        let len = 100_000;
        env.store.put_blob(&id, body(len, None), len).await.unwrap();
        let cases = [
            (ByteRange::Bounded(10..20), 10..20),
            (ByteRange::Bounded(99_990..200_000), 99_990..len),
            (ByteRange::Bounded(5..u64::MAX), 5..len),
            (ByteRange::From(70_000), 70_000..len),
            (ByteRange::Suffix(100), len - 100..len),
            (ByteRange::Suffix(10 * len), 0..len),
        ];
        for (range, expected) in cases {
            let got = env.store.get_blob(&id, Some(range.clone())).await.unwrap();
            assert_eq!((got.size, got.range.clone()), (len, expected.clone()));
            let bytes = read_all(&env.store, &id, Some(range.clone())).await;
            assert_eq!(bytes, pattern(expected), "{range:?}");
        }
        for range in [
            ByteRange::Bounded(len..len + 10),
            ByteRange::Bounded(200_000..300_000),
            ByteRange::Bounded(20..20),
            ByteRange::From(len),
            ByteRange::Suffix(0),
        ] {
            let err = env.store.get_blob(&id, Some(range.clone())).await;
            assert!(
                matches!(err, Err(StoreError::RangeNotSatisfiable { size }) if size == len),
                "{range:?}: {err:?}"
            );
        }
        let empty = AttachmentId::new();
        env.store.put_blob(&empty, body(0, None), 0).await.unwrap();
        let err = env.store.get_blob(&empty, Some(ByteRange::Suffix(5))).await;
        assert!(matches!(
            err,
            Err(StoreError::RangeNotSatisfiable { size: 0 })
        ));
    }

    async fn missing_blob_is_not_found(env: Env) {
        let id = AttachmentId::new();
        let err = env.store.get_blob(&id, None).await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        let err = env
            .store
            .get_blob(&id, Some(ByteRange::Bounded(0..10)))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert!(env.store.state(&id).await.unwrap().is_none());
    }

    async fn state_moves_pending_live_removed_idempotently(env: Env) {
        let id = AttachmentId::new();
        let info = env.store.put_blob(&id, body(10, None), 10).await.unwrap();
        assert!(env.store.state(&id).await.unwrap().is_none());
        let meta = meta_for(&id, "/cal/alice/home/e1.ics", &info);
        env.store.put_meta(&meta).await.unwrap();
        let (read, state) = env.store.state(&id).await.unwrap().unwrap();
        assert_eq!((read, state), (meta.clone(), State::Pending));

        env.store.mark_live(&id).await.unwrap();
        env.store.mark_live(&id).await.unwrap();
        assert_eq!(env.store.state(&id).await.unwrap().unwrap().1, State::Live);

        let before = Utc::now() - chrono::Duration::seconds(5);
        env.store.mark_removed(&id, "replaced").await.unwrap();
        let Some((_, State::Removed { since })) = env.store.state(&id).await.unwrap() else {
            panic!("not removed");
        };
        assert!(since > before && since < Utc::now() + chrono::Duration::seconds(5));
        env.store.mark_removed(&id, "again").await.unwrap();
        // Live after removed does not revive it.
        env.store.mark_live(&id).await.unwrap();
        assert_eq!(
            env.store.state(&id).await.unwrap().unwrap().1,
            State::Removed { since }
        );
    }

    async fn concurrent_mark_removed_both_succeed(env: Env) {
        let id = AttachmentId::new();
        let info = env.store.put_blob(&id, body(10, None), 10).await.unwrap();
        env.store
            .put_meta(&meta_for(&id, "/e.ics", &info))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|i| {
                let store = env.store.clone();
                let id = id.clone();
                tokio::spawn(async move { store.mark_removed(&id, &format!("task {i}")).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(matches!(
            env.store.state(&id).await.unwrap(),
            Some((_, State::Removed { .. }))
        ));
    }

    async fn put_meta_is_write_once(env: Env) {
        let id = AttachmentId::new();
        let info = BlobInfo {
            size: 3,
            sha256: "00".repeat(32),
        };
        let meta = meta_for(&id, "/e.ics", &info);
        env.store.put_meta(&meta).await.unwrap();
        // The same facts again: a retried request.
        env.store.put_meta(&meta).await.unwrap();
        let other = Meta {
            filename: "other.txt".to_owned(),
            ..meta.clone()
        };
        let err = env.store.put_meta(&other).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(env.store.state(&id).await.unwrap().unwrap().0, meta);
    }

    async fn refs_add_list_remove(env: Env) {
        let href = "/cal/alice/home/event with spaces & ünïcode.ics";
        let (a, b) = (AttachmentId::new(), AttachmentId::new());
        assert!(env.store.refs(href).await.unwrap().is_empty());
        env.store.add_ref(href, &a).await.unwrap();
        env.store.add_ref(href, &b).await.unwrap();
        env.store.add_ref(href, &a).await.unwrap();
        env.store
            .add_ref("/cal/alice/home/other.ics", &b)
            .await
            .unwrap();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        assert_eq!(env.store.refs(href).await.unwrap(), expected);
        env.store.remove_ref(href, &a).await.unwrap();
        env.store.remove_ref(href, &a).await.unwrap();
        assert_eq!(env.store.refs(href).await.unwrap(), vec![b.clone()]);
        assert_eq!(
            env.store.refs("/cal/alice/home/other.ics").await.unwrap(),
            vec![b]
        );
    }

    async fn discard_removes_everything(env: Env) {
        let keep = AttachmentId::new();
        env.store.put_blob(&keep, body(5, None), 5).await.unwrap();
        let before = everything(&env).await;

        let id = AttachmentId::new();
        let href = "/cal/alice/home/e1.ics";
        let info = env
            .store
            .put_blob(&id, body(9 * MIB, None), 10 * MIB)
            .await
            .unwrap();
        env.store
            .put_meta(&meta_for(&id, href, &info))
            .await
            .unwrap();
        env.store.add_ref(href, &id).await.unwrap();
        env.store.mark_live(&id).await.unwrap();
        env.store.mark_removed(&id, "removed").await.unwrap();
        assert!(everything(&env).await.len() >= before.len() + 5);

        env.store.discard(&id).await.unwrap();
        assert_eq!(everything(&env).await, before);
        assert!(env.store.state(&id).await.unwrap().is_none());
        assert!(env.store.refs(href).await.unwrap().is_empty());
        // Repeating a finished discard succeeds (gc after a crash mid-discard).
        env.store.discard(&id).await.unwrap();
        if let Some(root) = &env.local_root {
            assert!(!root.join("state").join(id.as_str()).exists());
        }
    }

    async fn list_ids_and_blobs_find_written_ids(env: Env) {
        let with_meta = AttachmentId::new();
        let info = env
            .store
            .put_blob(&with_meta, body(1, None), 1)
            .await
            .unwrap();
        env.store
            .put_meta(&meta_for(&with_meta, "/e.ics", &info))
            .await
            .unwrap();
        let blob_only = AttachmentId::new();
        env.store
            .put_blob(&blob_only, body(1, None), 1)
            .await
            .unwrap();

        let ids: Vec<_> = env.store.list_ids().try_collect().await.unwrap();
        assert_eq!(ids, vec![with_meta.clone()]);
        let mut blobs: Vec<_> = env
            .store
            .list_blobs()
            .map_ok(|(id, _)| id)
            .try_collect()
            .await
            .unwrap();
        blobs.sort();
        let mut expected = vec![with_meta, blob_only];
        expected.sort();
        assert_eq!(blobs, expected);
    }

    async fn probe_leaves_nothing(env: Env) {
        env.store.probe().await.unwrap();
        assert!(everything(&env).await.is_empty());
    }

    async fn dropped_upload_leaves_nothing(env: Env) {
        let id = AttachmentId::new();
        let stalled = body(10 * MIB, None).chain(stream::pending());
        let upload = env.store.put_blob(&id, stalled, 20 * MIB);
        assert!(tokio::time::timeout(Duration::from_millis(1500), upload)
            .await
            .is_err());
        // The abort runs in a task spawned on drop.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = blob_leftovers(&env, &id).await;
            if left.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "left: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A body that sends `len` bytes, then nothing ever again.
    fn stalled_after(len: u64) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        body(len, None).chain(stream::pending())
    }

    async fn wait_for_record(env: &Env, id: &AttachmentId) -> Leftover {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = env
                .store
                .list_uploads()
                .await
                .unwrap()
                .into_iter()
                .map(Result::unwrap)
                .find(|l| l.record.id == *id);
            if let Some(found) = found {
                return found;
            }
            assert!(std::time::Instant::now() < deadline, "no upload record");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn upload_in_progress_is_recorded_until_it_ends(env: Env) {
        let id = AttachmentId::new();
        let mut upload = Box::pin(env.store.put_blob(&id, stalled_after(6 * MIB), 20 * MIB));
        let found = tokio::select! {
            found = wait_for_record(&env, &id) => found,
            _ = &mut upload => panic!("the stalled upload ended"),
        };
        assert_eq!(found.record.owner, *Owner::current());
        assert_eq!(found.record.owner.is_alive(), Some(true));
        if env.local_root.is_some() {
            assert_eq!(found.record.staging, Some(format!("blobs/{id}#0")));
            assert_eq!(found.record.multipart_id, None);
        } else {
            assert!(found.record.multipart_id.is_some(), "{found:?}");
        }
        drop(upload);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !blob_leftovers(&env, &id).await.is_empty() {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn clear_upload_removes_what_a_dead_upload_left(env: Env) {
        let id = AttachmentId::new();
        let mut upload = Box::pin(env.store.put_blob(&id, stalled_after(6 * MIB), 20 * MIB));
        let found = tokio::select! {
            found = wait_for_record(&env, &id) => found,
            _ = &mut upload => panic!("the stalled upload ended"),
        };
        // Let the first part or the first writes reach the store.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut upload)
                .await
                .is_err()
        );
        // A crash: nothing the upload would do on drop happens.
        std::mem::forget(upload);
        assert_ne!(blob_leftovers(&env, &id).await, Vec::<String>::new());
        assert!(env.store.clear_upload(&found.record).await.unwrap());
        assert_eq!(blob_leftovers(&env, &id).await, Vec::<String>::new());
        // A second clear (another gc run) finds nothing and succeeds.
        env.store.clear_upload(&found.record).await.unwrap();
        assert!(env.store.list_uploads().await.unwrap().is_empty());
    }

    macro_rules! conformance {
        ($backend:ident, $env:expr) => {
            mod $backend {
                use super::*;

                #[tokio::test]
                async fn empty_blob_round_trips_with_sha256_of_nothing() {
                    empty_blob_round_trips($env).await
                }
                #[tokio::test]
                async fn all_256_byte_values_round_trip() {
                    all_byte_values_round_trip($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn twenty_mb_blob_round_trips_through_multipart() {
                    twenty_mb_round_trips_through_multipart($env).await
                }
                #[tokio::test]
                async fn too_large_within_first_part_leaves_no_blob() {
                    super::too_large_within_first_part_leaves_no_blob($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn too_large_after_first_part_aborts_upload_and_leaves_no_blob() {
                    too_large_after_first_part_aborts_upload($env).await
                }
                #[tokio::test]
                async fn size_equal_to_limit_is_accepted() {
                    super::size_equal_to_limit_is_accepted($env).await
                }
                #[tokio::test]
                async fn body_error_within_first_part_leaves_no_blob() {
                    super::body_error_within_first_part_leaves_no_blob($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn body_error_mid_multipart_aborts_upload_and_leaves_no_blob() {
                    body_error_mid_multipart_aborts_upload($env).await
                }
                #[tokio::test]
                async fn ranges_select_bytes_and_refuse_outside_as_unsatisfiable() {
                    ranges_select_bytes_and_refuse_outside($env).await
                }
                #[tokio::test]
                async fn missing_blob_is_not_found_and_state_unknown() {
                    missing_blob_is_not_found($env).await
                }
                #[tokio::test]
                async fn state_moves_pending_live_removed_and_markers_are_idempotent() {
                    state_moves_pending_live_removed_idempotently($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn concurrent_mark_removed_from_two_tasks_both_succeed() {
                    concurrent_mark_removed_both_succeed($env).await
                }
                #[tokio::test]
                async fn put_meta_is_write_once_and_idempotent_for_equal_meta() {
                    put_meta_is_write_once($env).await
                }
                #[tokio::test]
                async fn refs_add_list_remove_per_href() {
                    refs_add_list_remove($env).await
                }
                #[tokio::test]
                async fn discard_removes_blob_meta_markers_and_refs() {
                    discard_removes_everything($env).await
                }
                #[tokio::test]
                async fn list_ids_lists_meta_and_list_blobs_lists_blobs() {
                    list_ids_and_blobs_find_written_ids($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn dropping_put_blob_mid_multipart_aborts_upload() {
                    dropped_upload_leaves_nothing($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn upload_in_progress_is_recorded_until_it_ends() {
                    super::upload_in_progress_is_recorded_until_it_ends($env).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn clear_upload_removes_staging_file_or_multipart_of_a_dead_upload() {
                    clear_upload_removes_what_a_dead_upload_left($env).await
                }
                #[tokio::test]
                async fn probe_writes_reads_and_deletes() {
                    probe_leaves_nothing($env).await
                }
            }
        };
    }

    conformance!(memory, memory_env());
    conformance!(local, local_env());
    conformance!(s3, s3_env());

    // === backend-independent ===

    #[test]
    fn attachment_id_is_22_url_safe_chars_and_parses_back() {
        let id = AttachmentId::new();
        assert_eq!(id.as_str().len(), 22);
        assert_eq!(AttachmentId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(AttachmentId::new(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<AttachmentId>(&json).unwrap(), id);
    }

    #[test]
    fn attachment_id_parse_rejects_traversal_wrong_length_and_chars() {
        for bad in [
            "",
            "../x",
            "../../../../etc/passwd",
            "AAAAAAAAAAAAAAAAAAAA/.",
            "AAAAAAAAAAAAAAAAAAAAA",   // 21
            "AAAAAAAAAAAAAAAAAAAAAAA", // 23
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "AAAAAAAAAAAAAAAAAAAA+A",
            "AAAAAAAAAAAAAAAAAAAA%2",
            "AAAAAAAAAAAAAAAAAAAAA.",
            "ÄAAAAAAAAAAAAAAAAAAAA",
            // 22 valid characters, but the last one sets bits beyond 128.
            "AAAAAAAAAAAAAAAAAAAAAB",
        ] {
            assert_eq!(AttachmentId::parse(bad), None, "{bad:?}");
            assert!(serde_json::from_str::<AttachmentId>(&format!("{bad:?}")).is_err());
        }
        assert!(AttachmentId::parse("AAAAAAAAAAAAAAAAAAAAAA").is_some());
        assert!(AttachmentId::parse("_-_-_-_-_-_-_-_-_-_-_w").is_some());
    }

    #[test]
    fn meta_json_round_trips_and_ignores_unknown_fields() {
        let id = AttachmentId::new();
        let meta = meta_for(
            &id,
            "/e.ics",
            &BlobInfo {
                size: 1,
                sha256: "ab".repeat(32),
            },
        );
        let mut json: serde_json::Value = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["created"], "2026-11-30T12:00:00Z");
        json["added_later"] = serde_json::Value::Bool(true);
        assert_eq!(serde_json::from_value::<Meta>(json).unwrap(), meta);
    }

    #[test]
    fn file_url_creates_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a").join("b");
        let url = url::Url::from_file_path(&root).unwrap();
        let store = Store::from_url(&url, &[("fsync".into(), "false".into())]).unwrap();
        assert!(root.is_dir());
        assert!(store.to_string().starts_with("file:///"));
    }

    #[test]
    fn unknown_options_and_schemes_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = url::Url::from_directory_path(dir.path()).unwrap();
        let s3 = url::Url::parse("s3://bucket").unwrap();
        let cases = [
            (file.clone(), vec![("colour".to_owned(), "red".to_owned())]),
            (file, vec![("fsync".to_owned(), "maybe".to_owned())]),
            (s3, vec![("aws_endpiont".to_owned(), "x".to_owned())]),
            (url::Url::parse("ftp://host/dir").unwrap(), vec![]),
            (url::Url::parse("s3:///no-bucket").unwrap(), vec![]),
        ];
        for (url, options) in cases {
            let err = Store::from_url(&url, &options).unwrap_err();
            assert!(matches!(err, StoreError::Config(_)), "{url}: {err:?}");
        }
    }

    #[test]
    fn s3_url_prefix_is_kept_in_description() {
        let url = url::Url::parse("s3://bucket/tenant/a").unwrap();
        let store = Store::from_url(&url, &s3_options(9)).unwrap();
        assert_eq!(store.to_string(), "s3://bucket/tenant/a");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_s3_times_out_as_unavailable() {
        // Accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            listener
                .incoming()
                .take(S3_MAX_RETRIES + 1)
                .collect::<Vec<_>>()
        });
        let url = url::Url::parse("s3://bucket").unwrap();
        let mut options = s3_options(port);
        options.push(("read_timeout".to_owned(), "200ms".to_owned()));
        let store = Store::from_url(&url, &options).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(30), store.probe())
            .await
            .expect("a stalled store must time out")
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        drop(held);
    }

    #[tokio::test]
    async fn unreachable_s3_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = url::Url::parse("s3://bucket").unwrap();
        let store = Store::from_url(&url, &s3_options(port)).unwrap();
        let err = store.probe().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let err = store
            .get_blob(&AttachmentId::new(), None)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upload_buffer_budget_refuses_rather_than_exceeding_itself() {
        let store = Store::in_memory().with_upload_buffer(5 * MIB, 5 * MIB);
        // Holds the only part buffer: 6 MiB read, the first part uploaded, the next filling.
        let holder_id = AttachmentId::new();
        let mut holder = Box::pin(store.put_blob(&holder_id, stalled_after(6 * MIB), 20 * MIB));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut holder)
                .await
                .is_err()
        );
        let started = std::time::Instant::now();
        let refused = store
            .put_blob(&AttachmentId::new(), body(10, None), 20 * MIB)
            .await;
        assert!(
            matches!(refused, Err(PutBlobError::Busy { budget }) if budget == 5 * MIB),
            "{refused:?}"
        );
        assert!(started.elapsed() >= UPLOAD_BUFFER_WAIT);
        drop(holder);
        // Room again: uploads larger than the budget go through one part at a time,
        // several at once wait for each other, and every one is stored exactly.
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = AttachmentId::new();
                    let len = 12 * MIB + 7;
                    let info = store
                        .put_blob(&id, body(len, None), 20 * MIB)
                        .await
                        .unwrap();
                    assert_eq!(info.sha256, pattern_sha256(len));
                    let got = read_all(&store, &id, None).await;
                    assert_eq!(hex(&Sha256::digest(&got)), pattern_sha256(len));
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[test]
    fn owner_liveness_tells_this_process_from_dead_and_foreign_ones() {
        let me = Owner::current().clone();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.is_alive(), Some(true));
        // The same pid started at another time: a reused pid, not the owner.
        let reused = Owner {
            start_ticks: me.start_ticks.map(|t| t + 1),
            ..me.clone()
        };
        assert_eq!(reused.is_alive(), Some(false));
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert_eq!(gone.is_alive(), Some(false));
        let rebooted = Owner {
            boot_id: Some("another boot".into()),
            ..me.clone()
        };
        assert_eq!(rebooted.is_alive(), Some(false));
        let elsewhere = Owner {
            host: format!("{}-elsewhere", me.host),
            ..me
        };
        assert_eq!(elsewhere.is_alive(), None);
    }
}
