//! Fuzz control-channel text messages and PUSH_REPLY parsing: a server's
//! push is untrusted input for a client.
#![no_main]

use ferrovpn_proto::push::{
    ControlMessage, Filtered, PullFilter, PullFilterAction, PushReply, apply_pull_filters,
    split_messages,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ControlMessage::parse(text);
    if let Ok(reply) = PushReply::parse(text) {
        // What we build from a parsed reply must parse again.
        for t in reply.to_texts(1024) {
            let _ = PushReply::parse(&t);
        }
    }
    let _ = split_messages(data);
    // pull-filter: what is kept is the message less some of its options.
    let filters = [
        PullFilter {
            action: PullFilterAction::Ignore,
            prefix: "route".into(),
        },
        PullFilter {
            action: PullFilterAction::Reject,
            prefix: "dhcp-option".into(),
        },
    ];
    if let Filtered::Kept { text: kept, .. } = apply_pull_filters(text, &filters) {
        assert!(kept.len() <= text.len());
        let _ = ControlMessage::parse(&kept);
    }
});
