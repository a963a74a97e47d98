//! The one body type calattach's handlers return and send upstream.

use std::future::Future;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request body sent upstream and every response body sent to a client.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Wraps any body whose errors convert to [`BoxError`] (for example hyper's `Incoming`).
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Boxes a body that already yields [`BoxError`], without a `map_err` layer in between
/// (one indirection per frame less on the forwarding path).
pub fn boxed_direct<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    body.boxed_unsync()
}

/// A request body that fails when no frame arrives for `idle` — a client that stalls
/// mid-upload must not hold an upload slot, a store multipart upload or an upstream
/// connection forever. The deadline restarts with every frame, so slow but moving
/// uploads of any size are fine. The timer is only armed the first time the body has to
/// wait, so a request without a body (most of them) never sets one.
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: None,
        }
    }
}

/// The error an [`IdleTimeout`] body yields.
#[derive(Debug, thiserror::Error)]
#[error("no request body data for {0:?}")]
pub struct BodyIdleTimeout(pub std::time::Duration);

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Longest a [`Lingering`] body is read after it was dropped unfinished.
pub const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest a [`Lingering`] body may send nothing before its connection is closed.
pub const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes read and discarded from a [`Lingering`] body.
pub const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// A request body that is read to its end and discarded when dropped unfinished:
/// lingering close, as nginx's `lingering_close`.
///
/// A handler that answers before reading the body (a size, credential, count or busy
/// refusal) would otherwise leave unread data on the connection; hyper then closes it,
/// the kernel answers the data still arriving with a reset, and a client that writes its
/// whole body before reading (no `Expect: 100-continue`: Python's `http.client`, many
/// libraries) never reads the refusal. Reading on in the background, for at most
/// [`LINGER_TIME`], [`LINGER_BYTES`], and [`LINGER_IDLE`] between two reads, lets the
/// answer arrive; past any bound the body is dropped and the connection closed.
///
/// A client that sent `Expect: 100-continue` and whose body was never read is left
/// alone: reading it now would make hyper send `100 Continue` after the final answer.
pub struct Lingering<B>
where
    B: http_body::Body + Unpin + Send + 'static,
{
    inner: Option<B>,
    /// Whether the body was polled (then a `100 Continue` already went out, if asked).
    polled: bool,
    expects_continue: bool,
}

impl<B> Lingering<B>
where
    B: http_body::Body + Unpin + Send + 'static,
{
    /// Wraps the body of a request with these `headers`.
    pub fn new(inner: B, headers: &http::HeaderMap) -> Self {
        let expects_continue = headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        Lingering {
            inner: Some(inner),
            polled: false,
            expects_continue,
        }
    }
}

impl<B> http_body::Body for Lingering<B>
where
    B: http_body::Body + Unpin + Send + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        this.polled = true;
        match this.inner.as_mut() {
            Some(inner) => {
                let polled = std::pin::Pin::new(&mut *inner).poll_frame(cx);
                if let std::task::Poll::Ready(None | Some(Err(_))) = polled {
                    // Ended or broken: nothing to linger on.
                    this.inner = None;
                }
                polled
            }
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl<B> Drop for Lingering<B>
where
    B: http_body::Body + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() || (self.expects_continue && !self.polled) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(discard(inner));
        }
    }
}

/// Reads `body` to its end within the lingering bounds, discarding it.
async fn discard<B>(mut body: B)
where
    B: http_body::Body + Unpin,
{
    use http_body_util::BodyExt;
    let read = async {
        let mut bytes = 0u64;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(LINGER_IDLE, body.frame()).await {
            if let Some(data) = frame.data_ref() {
                bytes += bytes::Buf::remaining(data) as u64;
                if bytes > LINGER_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, read).await;
}
