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
//! ```
//!
//! Every object but `audience/<id>.json` (advisory, see [`Audience`]) is written exactly
//! once and never updated: `LocalFileSystem` has no
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
//! * crash during `put_blob`: nothing is visible under `blobs/<id>`. A multipart upload
//!   that was neither completed nor aborted may linger as an incomplete S3 upload (give the
//!   bucket an `AbortIncompleteMultipartUpload` lifecycle rule) or as a `blobs/<id>#<n>`
//!   staging file on a local disk; neither is listed nor ever referenced.
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
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, GetResultPayload, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Size of one multipart part. S3 wants at least 5 MiB for every part but the last.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploading at once. With one part filling, an upload holds at most
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` bytes, whatever the attachment size.
const PARTS_IN_FLIGHT: usize = 2;

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
}

// === Store ===

/// Handle on the attachment store; cloning is cheap.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Location without credentials, for logs.
    describe: Arc<str>,
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
                let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    let prefix = Path::parse(prefix)
                        .map_err(|e| StoreError::Config(format!("{url}: {e}")))?;
                    Arc::new(PrefixStore::new(s3, prefix))
                };
                Ok(Store { inner, describe })
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
        })
    }

    /// An empty store in memory, for tests.
    pub fn in_memory() -> Store {
        Store {
            inner: Arc::new(InMemory::new()),
            describe: "memory://".into(),
        }
    }

    /// Streams `body` into `blobs/<id>`, counting and hashing as it goes.
    ///
    /// Memory stays below `(PARTS_IN_FLIGHT + 1) * PART_SIZE` whatever the size: bodies
    /// up to one part are written with a single put, larger ones with a multipart upload
    /// whose parts are awaited before more of the body is read. On any error
    /// (`TooLarge` as soon as the count passes `max_size`, `Body`, `Store`) the upload is
    /// aborted and nothing remains under `blobs/<id>`; dropping the future aborts too.
    /// The blob is not referenced by anything until [`Store::put_meta`].
    pub async fn put_blob<S, E>(
        &self,
        id: &AttachmentId,
        body: S,
        max_size: u64,
    ) -> Result<BlobInfo, PutBlobError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let path = blob_path(id);
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let too_large = PutBlobError::TooLarge { max_size };

        // Buffer the first part: most attachments fit and then take one request.
        let mut first: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        while buffered < PART_SIZE {
            match body.next().await {
                None => {
                    let payload: PutPayload = first.into_iter().collect();
                    // Overwrite, not Create: a retried request whose first attempt
                    // succeeded would fail with AlreadyExists; ids are random and fresh.
                    self.inner.put(&path, payload).await.map_err(|e| {
                        PutBlobError::Store(StoreError::from_object_store(e, &path))
                    })?;
                    return Ok(BlobInfo {
                        size,
                        sha256: hex(&hasher.finalize()),
                    });
                }
                Some(Err(e)) => return Err(PutBlobError::Body(e)),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > max_size {
                        return Err(too_large);
                    }
                    hasher.update(&chunk);
                    buffered += chunk.len();
                    first.push(chunk);
                }
            }
        }

        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| PutBlobError::Store(StoreError::from_object_store(e, &path)))?;
        let mut writer = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
        for chunk in first {
            writer.get().put(chunk);
        }
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(PutBlobError::Body(e)),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > max_size {
                        break Some(too_large);
                    }
                    hasher.update(&chunk);
                    if let Err(e) = writer.get().wait_for_capacity(PARTS_IN_FLIGHT).await {
                        break Some(PutBlobError::Store(StoreError::from_object_store(e, &path)));
                    }
                    writer.get().put(chunk);
                }
            }
        };
        let Some(writer) = writer.0.take() else {
            unreachable!("writer is only taken here")
        };
        if let Some(failure) = failure {
            if let Err(e) = writer.abort().await {
                tracing::warn!(%path, error = %e, "aborting multipart upload failed");
            }
            return Err(failure);
        }
        // finish() aborts the upload itself when completing fails.
        writer
            .finish()
            .await
            .map_err(|e| PutBlobError::Store(StoreError::from_object_store(e, &path)))?;
        Ok(BlobInfo {
            size,
            sha256: hex(&hasher.finalize()),
        })
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

/// Aborts a multipart upload whose `put_blob` future was dropped (client gone), so S3
/// keeps no parts and the local staging file goes away.
struct AbortOnDrop(Option<WriteMultipart>);

impl AbortOnDrop {
    fn get(&mut self) -> &mut WriteMultipart {
        match &mut self.0 {
            Some(writer) => writer,
            None => unreachable!("writer is present until put_blob takes it at the end"),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(error = %e, "aborting abandoned multipart upload failed");
                    }
                });
            }
        }
    }
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
}
