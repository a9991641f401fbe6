//! From the compression directives (configured, and for a client also
//! pushed) to the framing the data plane applies, as OpenVPN 2.6.14 does it:
//! a server frames every client's payloads with its own configured settings
//! (it pushes nothing by itself; `push "comp-lzo no"` is the operator's), a
//! client starts each connection from its configured settings, applies the
//! pushed `comp-lzo` / `compress` / `comp-noadapt` on top and refuses the
//! push when the result is not allowed (`do_deferred_options`).

use ferrovpn_config::{CompressAlg, CompressError, CompressOptions};
use ferrovpn_proto::compress::Framing;
use ferrovpn_proto::push::PushOption;
use tracing::{debug, warn};

/// The data-channel framing for `o`.
pub fn framing(o: &CompressOptions) -> Framing {
    match o.alg {
        CompressAlg::Undef => Framing::None,
        CompressAlg::Stub if o.swap() => Framing::StubSwap,
        CompressAlg::Stub => Framing::StubLzo,
        CompressAlg::Lzo => Framing::Lzo,
        CompressAlg::Lz4 => Framing::Lz4,
        CompressAlg::V2Uncompressed => Framing::StubV2,
        CompressAlg::V2Lz4 => Framing::Lz4V2,
    }
}

/// The framing a client uses after a push reply with `pushed` options, or
/// why 2.6 would refuse the push.
pub fn pushed(
    configured: &CompressOptions,
    pushed: &[PushOption],
) -> Result<Framing, CompressError> {
    let mut o = *configured;
    let mut found = false;
    for opt in pushed {
        let PushOption::Other(name, args) = opt else {
            continue;
        };
        match name.as_str() {
            "comp-lzo" | "compress" | "comp-noadapt" => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                if let Some(w) = o.apply(name, &args)? {
                    warn!("pushed '{name}': {w}");
                }
                found = true;
            }
            // Not a pushable option in 2.6 (OPT_P_GENERAL): ignored there too.
            "allow-compression" => debug!("pushed 'allow-compression' ignored (not pushable)"),
            _ => {}
        }
    }
    if found {
        o.check()?;
    }
    Ok(framing(&o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(line: &str) -> PushOption {
        let mut w = line.split(' ').map(str::to_owned);
        let name = w.next().unwrap_or_default();
        PushOption::Other(name, w.collect())
    }

    fn configured(lines: &[&[&str]]) -> CompressOptions {
        let mut o = CompressOptions::default();
        for l in lines {
            o.apply(l[0], &l[1..]).expect("valid directive");
        }
        o.finish();
        o
    }

    #[test]
    fn a_client_applies_pushed_framing_like_2_6() {
        let plain = configured(&[]);
        assert_eq!(pushed(&plain, &[]), Ok(Framing::None));
        assert_eq!(
            pushed(&plain, &[other("comp-lzo no")]),
            Ok(Framing::StubLzo)
        );
        assert_eq!(
            pushed(&plain, &[other("compress stub-v2")]),
            Ok(Framing::StubV2)
        );
        assert_eq!(pushed(&plain, &[other("compress")]), Ok(Framing::StubSwap));
        // 2.6's default refuses a pushed real algorithm: the push fails.
        assert_eq!(
            pushed(&plain, &[other("compress lz4")]),
            Err(CompressError::StubOnly)
        );
        let asym = configured(&[&["allow-compression", "asym"]]);
        assert_eq!(pushed(&asym, &[other("compress lz4")]), Ok(Framing::Lz4));
        assert_eq!(pushed(&asym, &[other("comp-lzo")]), Ok(Framing::Lzo));
        // Configured framing stays when nothing is pushed; a push overrides it.
        let lz4 = configured(&[&["compress", "lz4-v2"]]);
        assert_eq!(pushed(&lz4, &[]), Ok(Framing::Lz4V2));
        assert_eq!(pushed(&lz4, &[other("comp-lzo no")]), Ok(Framing::StubLzo));
    }
}
