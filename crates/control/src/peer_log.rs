//! Which peer a log line is about. With many clients a line like "new
//! session" is useless without the client: like OpenVPN's
//! `client1/1.2.3.4:5678` prefix, every line logged while per-peer work
//! runs names the peer (common name, once known, and address).
//!
//! The runtimes enter a [`peer_span`] around per-peer work (a control
//! packet, a session's events, a timeout, a removal; the client's whole
//! connection). [`PeerLabels`] remembers each such span's label, and the
//! outputs put it in front of the message: [`PeerFormat`] for stderr and
//! `log FILE`, [`event_peer`] for the management log and syslog.

use std::fmt;
use std::net::SocketAddr;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The span field holding the peer's label.
const PEER_FIELD: &str = "peer";

/// `common_name/address` as OpenVPN prints a multi-client peer, or the
/// bare address while the common name is unknown. Control characters of
/// the name (it comes from the peer's certificate) are left out, so that
/// a name cannot break a log line in two.
pub fn peer_label(common_name: Option<&str>, addr: SocketAddr) -> String {
    match common_name {
        Some(cn) => {
            let cn: String = cn.chars().filter(|c| !c.is_control()).collect();
            format!("{cn}/{addr}")
        }
        None => addr.to_string(),
    }
}

/// The span to enter around work for one peer. It is an error-level span
/// so that it is enabled whatever `verb` lets through: an error line
/// needs its peer most.
pub fn peer_span(common_name: Option<&str>, addr: SocketAddr) -> Span {
    tracing::error_span!("peer", peer = %peer_label(common_name, addr))
}

/// Set the label of the current peer span (the client learns the
/// server's common name during the connection).
pub fn relabel_current(common_name: Option<&str>, addr: SocketAddr) {
    Span::current().record(
        PEER_FIELD,
        tracing::field::display(peer_label(common_name, addr)),
    );
}

/// A peer span's label, kept in the span's extensions by [`PeerLabels`].
struct PeerLabel(String);

/// Layer that keeps the label of every peer span for the outputs; install
/// it next to them (`registry().with(PeerLabels).with(...)`).
pub struct PeerLabels;

struct LabelVisitor(Option<String>);

impl Visit for LabelVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == PEER_FIELD {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == PEER_FIELD {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PeerLabels {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = LabelVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(label), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(PeerLabel(label));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut visitor = LabelVisitor(None);
        values.record(&mut visitor);
        if let (Some(label), Some(span)) = (visitor.0, ctx.span(id)) {
            let mut extensions = span.extensions_mut();
            match extensions.get_mut::<PeerLabel>() {
                Some(old) => old.0 = label,
                None => extensions.insert(PeerLabel(label)),
            }
        }
    }
}

/// The label of the innermost peer span `event` happens in.
pub fn event_peer<S>(ctx: &Context<'_, S>, event: &Event<'_>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.event_scope(event)?
        .find_map(|span| span.extensions().get::<PeerLabel>().map(|l| l.0.clone()))
}

/// The stderr / `log FILE` line: `TIME LEVEL [PEER ]MESSAGE FIELDS`, the
/// layout of tracing's default format with the peer label in place of the
/// span list.
pub struct PeerFormat;

impl<S, N> FormatEvent<S, N> for PeerFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} ", event.metadata().level())?;
        let peer = ctx.event_scope().and_then(|mut scope| {
            scope.find_map(|span| span.extensions().get::<PeerLabel>().map(|l| l.0.clone()))
        });
        if let Some(peer) = peer {
            write!(writer, "{peer} ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    /// Run `f` with the binary's stderr format writing into the result.
    fn capture(f: impl FnOnce()) -> Vec<String> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(PeerLabels).with(
            tracing_subscriber::fmt::layer()
                .event_format(PeerFormat)
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        out.lines()
    }

    #[test]
    fn lines_in_a_peer_span_carry_the_peer_as_openvpn_does() {
        let addr: SocketAddr = "1.2.3.4:5678".parse().unwrap();
        let lines = capture(|| {
            tracing::info!("server listening");
            let _peer = peer_span(Some("client1"), addr).entered();
            tracing::info!("client connected");
            tracing::warn!(code = 3, "renegotiation failed");
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with(" INFO server listening"), "{lines:?}");
        assert!(
            lines[1].ends_with(" INFO client1/1.2.3.4:5678 client connected"),
            "{lines:?}"
        );
        assert!(
            lines[2].ends_with(" WARN client1/1.2.3.4:5678 renegotiation failed code=3"),
            "{lines:?}"
        );
    }

    #[test]
    fn the_innermost_peer_wins_and_a_label_can_change() {
        let first: SocketAddr = "10.0.0.1:1194".parse().unwrap();
        let second: SocketAddr = "[2001:db8::2]:40000".parse().unwrap();
        let lines = capture(|| {
            let _outer = peer_span(None, first).entered();
            tracing::info!("one");
            {
                let _inner = peer_span(None, second).entered();
                tracing::info!("two");
            }
            relabel_current(Some("server"), first);
            tracing::info!("three");
        });
        assert!(lines[0].ends_with(" INFO 10.0.0.1:1194 one"), "{lines:?}");
        assert!(
            lines[1].ends_with(" INFO [2001:db8::2]:40000 two"),
            "{lines:?}"
        );
        assert!(
            lines[2].ends_with(" INFO server/10.0.0.1:1194 three"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_common_name_cannot_break_the_line() {
        let addr: SocketAddr = "1.2.3.4:5678".parse().unwrap();
        assert_eq!(
            peer_label(Some("evil\nWARN forged\r"), addr),
            "evilWARN forged/1.2.3.4:5678"
        );
    }

    #[test]
    fn layers_find_the_peer_of_an_event() {
        struct Seen(Arc<Mutex<Vec<Option<String>>>>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
            fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
                self.0.lock().unwrap().push(event_peer(&ctx, event));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(PeerLabels)
            .with(Seen(seen.clone()));
        let addr: SocketAddr = "1.2.3.4:5678".parse().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            let _peer = peer_span(Some("client1"), addr).entered();
            tracing::info!("inside");
        });
        assert_eq!(
            *seen.lock().unwrap(),
            vec![None, Some("client1/1.2.3.4:5678".to_owned())]
        );
    }
}
