//! Prometheus metrics (DESIGN §10), served as text (format 0.0.4) at `/metrics` on the
//! admin listener.
//!
//! One process-wide registry ([`get`]) so the hooks in the request path stay one line
//! each and need no handle threaded through every function. Label values come from
//! small closed sets (route classes, status codes, actions, outcomes): nothing a client
//! chooses (paths, user names, ids) ever becomes a label, so the number of series stays
//! bounded.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `calattach_requests_total` | counter | `route`, `status` |
//! | `calattach_upstream_response_seconds` | histogram | – |
//! | `calattach_attachment_bytes_total` | counter | `direction` (`in`, `out`) |
//! | `calattach_attachment_operations_total` | counter | `action`, `outcome` |
//! | `calattach_store_errors_total` | counter | `kind` |
//! | `calattach_commit_retries_total` | counter | – |
//! | `calattach_commits_total` | counter | – |
//! | `calattach_committed_changes_total` | counter | – |
//! | `calattach_uploads_in_progress` | gauge | – |
//! | `calattach_gc_runs_total` | counter | `outcome` |
//! | `calattach_gc_objects_total` | counter | `result` |
//! | `calattach_gc_last_run_timestamp_seconds` | gauge | – |

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Instant;

use http::{Method, StatusCode, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::StoreError;

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The attachment action of a `POST ?action=…` (RFC 8607 §3.3), as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachAction(&'static str);

/// Every metric calattach exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_seconds: Histogram,
    attachment_bytes: Family<DirectionLabels, Counter>,
    operations: Family<OperationLabels, Counter>,
    store_errors: Family<KindLabels, Counter>,
    commit_retries: Counter,
    commits: Counter,
    committed_changes: Counter,
    uploads: Gauge,
    gc_runs: Family<OutcomeLabels, Counter>,
    gc_objects: Family<ResultLabels, Counter>,
    gc_last_run: Gauge<f64, AtomicU64>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh, independent set (tests); production code uses [`get`].
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("calattach");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route class and status code",
            requests.clone(),
        );
        // 5 ms .. ~41 s: a Radicale answer on a LAN up to a stuck upstream.
        let upstream_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response head (or failure)",
            upstream_seconds.clone(),
        );
        let attachment_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "attachment_bytes",
            "Attachment bytes stored from uploads (in) and sent in downloads (out)",
            attachment_bytes.clone(),
        );
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "attachment_operations",
            "Attachment POSTs by action (add, update, remove) and outcome",
            operations.clone(),
        );
        let store_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Object store failures seen by requests, by kind",
            store_errors.clone(),
        );
        let commit_retries = Counter::default();
        registry.register(
            "commit_retries",
            "Attachment commit PUTs the upstream answered with 412 or 423 (re-applied until attachments.commit_deadline)",
            commit_retries.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "commits",
            "Attachment commit PUTs sent to the upstream (one per batch of changes to one object, plus retries)",
            commits.clone(),
        );
        let committed_changes = Counter::default();
        registry.register(
            "committed_changes",
            "Attachment changes (add, update, remove) committed upstream; divided by calattach_commits_total, the changes per PUT",
            committed_changes.clone(),
        );
        let uploads = Gauge::default();
        registry.register(
            "uploads_in_progress",
            "Attachment bodies being streamed into the store right now",
            uploads.clone(),
        );
        let gc_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "gc_runs",
            "Garbage collection passes by outcome (ok, errors)",
            gc_runs.clone(),
        );
        let gc_objects = Family::<ResultLabels, Counter>::default();
        registry.register(
            "gc_objects",
            "Attachments handled by garbage collection, by result",
            gc_objects.clone(),
        );
        let gc_last_run = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "gc_last_run_timestamp_seconds",
            "Unix time at which the last garbage collection pass ended",
            gc_last_run.clone(),
        );
        // Series that exist from the start, at zero: a dashboard or an alert on
        // `rate(...)` then sees 0, not "no data", before the first event.
        for direction in ["in", "out"] {
            drop(attachment_bytes.get_or_create(&DirectionLabels { direction }));
        }
        for kind in ["unavailable", "full", "other"] {
            drop(store_errors.get_or_create(&KindLabels { kind }));
        }
        for outcome in ["ok", "errors"] {
            drop(gc_runs.get_or_create(&OutcomeLabels { outcome }));
        }
        Metrics {
            registry,
            requests,
            upstream_seconds,
            attachment_bytes,
            operations,
            store_errors,
            commit_retries,
            commits,
            committed_changes,
            uploads,
            gc_runs,
            gc_objects,
            gc_last_run,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the
        // encoder, and an empty scrape is the honest answer to it.
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// One answered request of the route labelled `route` (`router::Route::as_str`),
    /// when its response body ended (the access log line). A successful download's bytes
    /// count as attachment bytes out.
    pub fn request_done(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        bytes: u64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                status: status.as_u16(),
            })
            .inc();
        if route == "download" && *method == Method::GET && status.is_success() {
            self.attachment_bytes
                .get_or_create(&DirectionLabels { direction: "out" })
                .inc_by(bytes);
        }
    }

    /// Starts timing one upstream request; the time is recorded when the guard drops.
    pub fn upstream_timer(&self) -> UpstreamTimer<'_> {
        UpstreamTimer {
            histogram: &self.upstream_seconds,
            started: Instant::now(),
        }
    }

    /// The action of an attachment POST (the `attach` route), read from its query
    /// before the request is consumed.
    pub fn attach_action(uri: &Uri) -> AttachAction {
        let query = uri.query().unwrap_or("");
        let action = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "action")
            .map(|(_, v)| v);
        AttachAction(match action.as_deref() {
            Some("attachment-add") => "add",
            Some("attachment-update") => "update",
            Some("attachment-remove") => "remove",
            _ => "invalid",
        })
    }

    /// The outcome of an attachment POST, from the status calattach answered with.
    pub fn attachment_done(&self, action: Option<AttachAction>, status: StatusCode) {
        let Some(AttachAction(action)) = action else {
            return;
        };
        self.operations
            .get_or_create(&OperationLabels {
                action,
                outcome: outcome_label(status),
            })
            .inc();
    }

    /// An upload body stored completely (`size` bytes).
    pub fn attachment_stored(&self, size: u64) {
        self.attachment_bytes
            .get_or_create(&DirectionLabels { direction: "in" })
            .inc_by(size);
    }

    /// Counts an upload in progress until the guard drops.
    pub fn upload_started(&self) -> UploadGuard<'_> {
        self.uploads.inc();
        UploadGuard {
            gauge: &self.uploads,
        }
    }

    /// A store failure that reached a request.
    pub fn store_error(&self, e: &StoreError) {
        let kind = match e {
            StoreError::NotFound { .. } => "not_found",
            StoreError::RangeNotSatisfiable { .. } => return,
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Full { .. } => "full",
            StoreError::AlreadyExists { .. } => "already_exists",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Config(_) => "config",
            _ => "other",
        };
        self.store_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// A commit PUT answered `412` and is about to be re-applied.
    pub fn commit_retry(&self) {
        self.commit_retries.inc();
    }

    /// A commit PUT sent upstream.
    pub fn commit_sent(&self) {
        self.commits.inc();
    }

    /// `n` changes committed by one PUT.
    pub fn changes_committed(&self, n: u64) {
        self.committed_changes.inc_by(n);
    }

    /// The end of one gc pass: `results` pairs a result name (e.g.
    /// `"tombstones_deleted"`) with how many attachments it applied to; `errors` is the
    /// number of failures in the pass.
    pub fn gc_pass(&self, results: &[(&'static str, u64)], errors: u64) {
        for &(result, n) in results {
            self.gc_objects
                .get_or_create(&ResultLabels { result })
                .inc_by(n);
        }
        if errors > 0 {
            self.gc_objects
                .get_or_create(&ResultLabels { result: "errors" })
                .inc_by(errors);
        }
        let outcome = if errors == 0 { "ok" } else { "errors" };
        self.gc_runs.get_or_create(&OutcomeLabels { outcome }).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.gc_last_run.set(now);
    }
}

/// Records the elapsed time into the upstream latency histogram on drop, so every exit
/// of the timed function (success, error, timeout) is measured.
pub struct UpstreamTimer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for UpstreamTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Decrements the uploads-in-progress gauge on drop (also when the upload fails or the
/// client goes away).
pub struct UploadGuard<'a> {
    gauge: &'a Gauge,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// RFC 8607 §3.11 refusals are 403/409 with a precondition body; everything else by
/// class.
fn outcome_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        412 => "precondition_failed",
        400..=499 => "client_error",
        507 => "storage_full",
        502..=504 => "upstream_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_action_is_read_from_the_query() {
        let uri: Uri = "/u/c/e.ics?action=attachment-update&managed-id=x"
            .parse()
            .unwrap();
        assert_eq!(Metrics::attach_action(&uri), AttachAction("update"));
        let bogus: Uri = "/u/c/e.ics?action=bogus".parse().unwrap();
        assert_eq!(Metrics::attach_action(&bogus), AttachAction("invalid"));
    }

    #[test]
    fn counters_show_up_in_the_text_exposition_with_their_labels() {
        let m = Metrics::new();
        m.request_done("download", &Method::GET, StatusCode::OK, 10);
        m.request_done("download", &Method::HEAD, StatusCode::OK, 0);
        m.attachment_done(Some(AttachAction("add")), StatusCode::CREATED);
        m.attachment_stored(7);
        m.commit_retry();
        {
            let _u = m.upload_started();
            assert!(m.encode().contains("calattach_uploads_in_progress 1\n"));
        }
        drop(m.upstream_timer());
        m.gc_pass(&[("tombstones_deleted", 2)], 0);
        let text = m.encode();
        for line in [
            "calattach_requests_total{route=\"download\",status=\"200\"} 2\n",
            "calattach_attachment_bytes_total{direction=\"out\"} 10\n",
            "calattach_attachment_bytes_total{direction=\"in\"} 7\n",
            "calattach_attachment_operations_total{action=\"add\",outcome=\"ok\"} 1\n",
            "calattach_commit_retries_total 1\n",
            "calattach_uploads_in_progress 0\n",
            "calattach_upstream_response_seconds_count 1\n",
            "calattach_gc_objects_total{result=\"tombstones_deleted\"} 2\n",
            "calattach_gc_runs_total{outcome=\"ok\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
