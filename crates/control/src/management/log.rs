//! The server's log for `log N|all` and `>LOG:` notifications: a tracing
//! layer the binary installs next to its stderr output. Events are handed
//! to the management task with `try_send`; a thread that logs never waits
//! on a management client, and nothing is kept while no management
//! interface runs.

use std::fmt::Write as _;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::Notice;

/// Where log entries go while a management interface runs.
static SINK: Mutex<Option<mpsc::Sender<Notice>>> = Mutex::new(None);

pub(super) fn connect(notices: mpsc::Sender<Notice>) {
    *SINK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(notices);
}

/// Install with `tracing_subscriber`'s `.with(LogLayer)`; it sees what the
/// `verb` filter lets through.
pub struct LogLayer;

/// 2.6's flags: `I` info, `W` warning, `N` non-fatal error, `D` debug.
fn flag(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "N",
        Level::WARN => "W",
        Level::INFO => "I",
        _ => "D",
    }
}

struct Text(String);

/// An event's message and fields on one line, without control characters
/// (a line break would end a log entry, a syslog record or a notification).
pub fn event_line(event: &Event<'_>) -> String {
    let mut text = Text(String::new());
    event.record(&mut text);
    text.0.chars().filter(|c| !c.is_control()).collect()
}

/// [`event_line`] behind the label of the peer the event is about (see
/// [`crate::peer_log`]), as 2.6's lines carry `client1/1.2.3.4:5678`.
pub fn peer_line<S>(ctx: &Context<'_, S>, event: &Event<'_>) -> String
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let line = event_line(event);
    match crate::peer_log::event_peer(ctx, event) {
        Some(peer) => format!("{peer} {line}"),
        None => line,
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let sink = SINK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = sink.as_ref() else { return };
        let line = peer_line(&ctx, event);
        let entry = super::reply::log_entry(
            super::session::unix_now(),
            flag(event.metadata().level()),
            &line,
        );
        // Full: dropped; logging about it would only add to the flood.
        let _ = tx.try_send(Notice::Log(entry));
    }
}
