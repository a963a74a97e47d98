//! Log output (DESIGN §10): tracing events to stderr, as text lines or JSON objects.
//!
//! The text lines have the shape of tracing-subscriber's default format —
//! `2026-11-30T23:25:41.294445Z  INFO request{id=… method=GET}: calattach::server:
//! message key=value …` — written by [`TextFormat`], a formatter that writes numbers
//! and strings straight into the line instead of through `core::fmt`, and formats the
//! date once per second. Every request writes an access line, so this is on the hot
//! path: the default formatter took about a sixth of calattach's CPU time on the
//! pass-through benchmark (docs/performance.md).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: `log.format` and `log.level` (a bare level is a plain
/// level comparison; directives such as `calattach=debug,info` need `EnvFilter`, which
/// costs more per event and span). Lines go to stderr with one `write(2)` each, as
/// nginx writes its access log: a writer thread would cost a cross-thread wake-up per
/// request instead, which measured slower.
pub fn init(cfg: &LogConfig) {
    // No colours: span fields are formatted when the span opens, for every line alike.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match (cfg.level.parse::<Level>(), cfg.format) {
        (Ok(level), LogFormat::Json) => builder
            .with_max_level(level)
            .json()
            .flatten_event(true)
            .init(),
        (Ok(level), LogFormat::Text) => builder
            .with_max_level(level)
            .event_format(TextFormat)
            .init(),
        (Err(_), format) => {
            let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let builder = builder.with_env_filter(filter);
            match format {
                LogFormat::Json => builder.json().flatten_event(true).init(),
                LogFormat::Text => builder.event_format(TextFormat).init(),
            }
        }
    }
}

/// One text line per event: UTC timestamp with microseconds, level, the spans from the
/// outermost in with their fields, the target, the message, then `key=value` fields
/// (strings quoted and escaped as Rust's `Debug` does, `%`-values as they display).
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_timestamp(&mut w, SystemTime::now())?;
        w.write_str(match *event.metadata().level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                w.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        w.write_char('{')?;
                        w.write_str(fields)?;
                        w.write_char('}')?;
                    }
                }
                w.write_char(':')?;
                any = true;
            }
            if any {
                w.write_char(' ')?;
            }
        }
        w.write_str(event.metadata().target())?;
        w.write_str(": ")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// `2026-11-30T23:25:41.294445Z`; the part up to the seconds is formatted once per
/// second per thread.
fn write_timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let date = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            cached.1.clear();
            let _ = write!(cached.1, "{}", date.format("%Y-%m-%dT%H:%M:%S."));
            cached.0 = secs;
        }
        w.write_str(&cached.1)
    })?;
    let micros = since.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let text = digits.format(micros);
    for _ in text.len()..6 {
        w.write_char('0')?;
    }
    w.write_str(text)?;
    w.write_char('Z')
}

/// Writes an event's fields: the message bare, the others as `name=value`.
struct Fields<'a, W: fmt::Write> {
    w: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.w.write_char(' ')?;
        }
        self.first = false;
        if field.name() != "message" {
            self.w.write_str(field.name())?;
            self.w.write_char('=')?;
        }
        Ok(())
    }

    fn write(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| value(self.w));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let bare = field.name() == "message";
        self.write(field, |w| {
            if bare {
                w.write_str(value)
            } else if value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                || value.is_empty()
            {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, |w| {
            write!(w, "{value}")?;
            let mut source = value.source();
            while let Some(inner) = source {
                write!(w, ": {inner}")?;
                source = inner.source();
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// Runs `f` under a text subscriber and returns what it logged.
    fn logged(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(TextFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// Strips the timestamp (checked separately) from each line.
    fn without_time(text: &str) -> Vec<&str> {
        text.lines().map(|l| &l[27..]).collect()
    }

    #[test]
    fn text_line_has_level_target_message_and_typed_fields() {
        let text = logged(|| {
            tracing::info!(
                id = "abc-1",
                status = 200u16,
                delta = -3i64,
                complete = true,
                peer = %"127.0.0.1",
                "access"
            );
        });
        assert_eq!(
            without_time(&text),
            [
                r#"  INFO calattach::logging::tests: access id="abc-1" status=200 delta=-3 complete=true peer=127.0.0.1"#
            ]
        );
    }

    #[test]
    fn text_line_names_spans_with_their_fields() {
        let text = logged(|| {
            let span = tracing::info_span!("request", id = "x-1", method = %"GET");
            let _entered = span.enter();
            tracing::warn!(error = "boom", "request failed");
        });
        assert_eq!(
            without_time(&text),
            [
                r#"  WARN request{id="x-1" method=GET}: calattach::logging::tests: request failed error="boom""#
            ]
        );
    }

    #[test]
    fn text_strings_with_quotes_or_controls_are_escaped() {
        let text = logged(|| tracing::debug!(path = "/a \"b\"\n", "odd"));
        assert_eq!(
            without_time(&text),
            [r#" DEBUG calattach::logging::tests: odd path="/a \"b\"\n""#]
        );
    }

    #[test]
    fn text_errors_carry_their_source_chain() {
        let inner = std::io::Error::other("disk on fire");
        let outer = OuterError(inner);
        let text = logged(|| {
            tracing::error!(
                error = &outer as &(dyn std::error::Error + 'static),
                "store"
            )
        });
        assert!(
            text.ends_with(" ERROR calattach::logging::tests: store error=outer: disk on fire\n"),
            "{text}"
        );
    }

    #[derive(Debug)]
    struct OuterError(std::io::Error);
    impl fmt::Display for OuterError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }
    impl std::error::Error for OuterError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_microseconds() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_796_083_541_000_042);
        let mut out = String::new();
        write_timestamp(&mut out, at).unwrap();
        assert_eq!(out, "2026-12-01T00:05:41.000042Z");
        // The cached second is reused, the microseconds are not.
        let mut again = String::new();
        write_timestamp(&mut again, at + std::time::Duration::from_micros(950_000)).unwrap();
        assert_eq!(again, "2026-12-01T00:05:41.950042Z");
        let mut next = String::new();
        write_timestamp(&mut next, at + std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(next, "2026-12-01T00:05:42.000042Z");
    }

    #[test]
    fn text_lines_start_with_the_current_time() {
        let text = logged(|| tracing::info!("tick"));
        let stamp = chrono::DateTime::parse_from_rfc3339(&text[..27]).unwrap();
        let age = chrono::Utc::now().signed_duration_since(stamp);
        assert!(
            age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(5),
            "{text}"
        );
    }
}
