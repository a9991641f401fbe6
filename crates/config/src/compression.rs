//! The compression directives (`comp-lzo`, `compress`, `comp-noadapt`,
//! `allow-compression`) with OpenVPN 2.6.14's semantics (`options.c`,
//! `comp.h`, `comp.c`): 2.6 keeps an algorithm and a flag word, and several
//! directives rewrite the flags as a whole, so their order matters; this
//! keeps the same two fields so that the quirks match. The wire framing that
//! follows from them is `ferrovpn_proto::compress`.

use thiserror::Error;

/// 2.6's `struct compress_options` bits (`comp.h`), kept as 2.6 keeps them so
/// that the order-dependent quirks of the directives match.
pub mod flags {
    pub const ADAPTIVE: u16 = 1 << 0;
    pub const ALLOW_COMPRESS: u16 = 1 << 1;
    pub const SWAP: u16 = 1 << 2;
    pub const ADVERTISE_STUBS_ONLY: u16 = 1 << 3;
    pub const ALLOW_STUB_ONLY: u16 = 1 << 4;
    pub const ALLOW_ASYM: u16 = 1 << 6;
}

/// 2.6's `COMP_ALG_*` / `COMP_ALGV2_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Alg {
    #[default]
    Undef,
    Stub,
    Lzo,
    Lz4,
    V2Uncompressed,
    V2Lz4,
}

/// A compression directive that cannot be applied.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CompressError {
    #[error("bad {directive} option: {value} -- must be {expected}")]
    BadValue {
        directive: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("'{0}' takes at most one argument")]
    TooManyArgs(&'static str),
    #[error("'allow-compression' needs an argument: 'yes', 'no' or 'asym'")]
    MissingArg,
    #[error("cannot set allow-compression to '{0}' after it was set to 'no'")]
    AfterNo(String),
    #[error("'--allow-compression no' conflicts with enabling compression")]
    ConflictsWithNo,
    #[error(
        "compression is not allowed since allow-compression is set to 'stub-only' ('no', the default without other compression options); 'allow-compression asym' accepts compressed packets"
    )]
    StubOnly,
    #[error("'compress migrate' is not supported")]
    Migrate,
}

/// The compression settings of one side (2.6's `options->comp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CompressOptions {
    pub alg: Alg,
    pub flags: u16,
}

/// 2.6's warning when a real algorithm is enabled without `allow-compression yes`.
pub const RECEIVE_ONLY_WARNING: &str = "compression for receiving enabled; sent packets are not compressed (ferrovpn never compresses what it sends)";

impl CompressOptions {
    /// The names [`CompressOptions::apply`] understands.
    pub fn is_directive(name: &str) -> bool {
        matches!(
            name,
            "comp-lzo" | "comp-noadapt" | "compress" | "allow-compression"
        )
    }

    /// Whether a real algorithm (not a stub) is on (`comp_non_stub_enabled`).
    pub fn non_stub_enabled(&self) -> bool {
        !matches!(self.alg, Alg::Undef | Alg::Stub | Alg::V2Uncompressed)
    }

    /// Apply one directive as 2.6's `add_option` does. `Ok(Some(w))` carries
    /// a warning 2.6 also prints.
    pub fn apply(
        &mut self,
        name: &str,
        args: &[&str],
    ) -> Result<Option<&'static str>, CompressError> {
        use flags::*;
        match name {
            "allow-compression" => {
                let [value] = args else {
                    return Err(if args.is_empty() {
                        CompressError::MissingArg
                    } else {
                        CompressError::TooManyArgs("allow-compression")
                    });
                };
                match *value {
                    "no" => {
                        self.flags = ALLOW_STUB_ONLY | ADVERTISE_STUBS_ONLY;
                        if self.non_stub_enabled() {
                            return Err(CompressError::ConflictsWithNo);
                        }
                    }
                    v if self.flags & ALLOW_STUB_ONLY != 0 => {
                        return Err(CompressError::AfterNo(v.to_owned()));
                    }
                    "asym" => {
                        self.flags &= !ALLOW_COMPRESS;
                        self.flags |= ALLOW_ASYM;
                    }
                    "yes" => self.flags |= ALLOW_COMPRESS,
                    v => {
                        return Err(CompressError::BadValue {
                            directive: "allow-compression",
                            value: v.to_owned(),
                            expected: "'yes', 'no', or 'asym'",
                        });
                    }
                }
                return Ok(None);
            }
            "comp-lzo" => {
                if args.len() > 1 {
                    return Err(CompressError::TooManyArgs("comp-lzo"));
                }
                self.flags &= !SWAP;
                match args.first().copied() {
                    Some("no") => {
                        self.alg = Alg::Stub;
                        self.flags &= !ADAPTIVE;
                    }
                    Some("yes") => {
                        self.alg = Alg::Lzo;
                        self.flags &= !ADAPTIVE;
                    }
                    Some("adaptive") | None => {
                        self.alg = Alg::Lzo;
                        self.flags |= ADAPTIVE;
                    }
                    Some(v) => {
                        return Err(CompressError::BadValue {
                            directive: "comp-lzo",
                            value: v.to_owned(),
                            expected: "'yes', 'no', or 'adaptive'",
                        });
                    }
                }
            }
            "comp-noadapt" => {
                if !args.is_empty() {
                    return Err(CompressError::TooManyArgs("comp-noadapt"));
                }
                self.flags &= !ADAPTIVE;
                return Ok(None);
            }
            "compress" => {
                if args.len() > 1 {
                    return Err(CompressError::TooManyArgs("compress"));
                }
                match args.first().copied().unwrap_or("stub") {
                    "stub" => {
                        self.alg = Alg::Stub;
                        self.flags |= SWAP | ADVERTISE_STUBS_ONLY;
                    }
                    "stub-v2" => {
                        self.alg = Alg::V2Uncompressed;
                        self.flags |= ADVERTISE_STUBS_ONLY;
                    }
                    "migrate" => return Err(CompressError::Migrate),
                    "lzo" => {
                        self.alg = Alg::Lzo;
                        self.flags &= !(ADAPTIVE | SWAP);
                    }
                    "lz4" => {
                        self.alg = Alg::Lz4;
                        self.flags |= SWAP;
                    }
                    "lz4-v2" => self.alg = Alg::V2Lz4,
                    v => {
                        return Err(CompressError::BadValue {
                            directive: "compress",
                            value: v.to_owned(),
                            expected: "stub, stub-v2, lzo, lz4 or lz4-v2",
                        });
                    }
                }
            }
            _ => return Ok(None),
        }
        Ok(self
            .non_stub_enabled()
            .then_some(RECEIVE_ONLY_WARNING)
            .filter(|_| self.flags & ALLOW_COMPRESS == 0))
    }

    /// The 2.6 default applied after the whole configuration was read
    /// (`options_postprocess_mutate`): with no compression flag set and no
    /// real algorithm, only stubs are allowed and announced.
    pub fn finish(&mut self) {
        if self.flags == 0 && !self.non_stub_enabled() {
            self.flags = flags::ALLOW_STUB_ONLY | flags::ADVERTISE_STUBS_ONLY;
        }
    }

    /// 2.6's `check_compression_settings_valid` (ferrovpn has both LZ4 and LZO).
    pub fn check(&self) -> Result<(), CompressError> {
        if self.flags & flags::ALLOW_STUB_ONLY != 0 && self.non_stub_enabled() {
            return Err(CompressError::StubOnly);
        }
        Ok(())
    }

    /// Whether the payload's first byte is moved to its end (`COMP_F_SWAP`).
    pub fn swap(&self) -> bool {
        self.flags & flags::SWAP != 0
    }

    /// The peer-info lines a 2.6 client sends for these settings
    /// (`comp_generate_peer_info_string`): ferrovpn can decompress LZ4 and LZO.
    pub fn peer_info(&self) -> &'static str {
        if self.flags & flags::ADVERTISE_STUBS_ONLY != 0 {
            "IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n"
        } else {
            "IV_LZ4=1\nIV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(lines: &[&[&str]]) -> Result<CompressOptions, CompressError> {
        let mut o = CompressOptions::default();
        for l in lines {
            o.apply(l[0], &l[1..])?;
        }
        o.finish();
        o.check()?;
        Ok(o)
    }

    #[test]
    fn directives_choose_the_framing_as_2_6() {
        let f = |l: &[&[&str]]| opts(l).map(|o| (o.alg, o.swap()));
        assert_eq!(f(&[]), Ok((Alg::Undef, false)));
        assert_eq!(f(&[&["comp-lzo", "no"]]), Ok((Alg::Stub, false)));
        assert_eq!(f(&[&["comp-lzo"]]), Ok((Alg::Lzo, false)));
        assert_eq!(f(&[&["comp-lzo", "yes"]]), Ok((Alg::Lzo, false)));
        assert_eq!(f(&[&["compress"]]), Ok((Alg::Stub, true)));
        assert_eq!(f(&[&["compress", "stub"]]), Ok((Alg::Stub, true)));
        assert_eq!(
            f(&[&["compress", "stub-v2"]]),
            Ok((Alg::V2Uncompressed, false))
        );
        assert_eq!(f(&[&["compress", "lz4"]]), Ok((Alg::Lz4, true)));
        assert_eq!(f(&[&["compress", "lz4-v2"]]), Ok((Alg::V2Lz4, false)));
        assert_eq!(f(&[&["compress", "lzo"]]), Ok((Alg::Lzo, false)));
        // comp-lzo after compress lz4 drops the swap: LZO-style stub prefix.
        assert_eq!(
            f(&[&["compress", "lz4"], &["comp-lzo", "no"]]),
            Ok((Alg::Stub, false))
        );
        // 2.6 quirk: allow-compression no resets the flags, swap included.
        assert_eq!(
            f(&[&["compress", "stub"], &["allow-compression", "no"]]),
            Ok((Alg::Stub, false))
        );
    }

    #[test]
    fn allow_compression_rules_match_2_6() {
        assert_eq!(
            opts(&[&["allow-compression", "no"], &["compress", "lz4"]]),
            Err(CompressError::StubOnly)
        );
        assert_eq!(
            opts(&[&["compress", "lz4"], &["allow-compression", "no"]]),
            Err(CompressError::ConflictsWithNo)
        );
        assert_eq!(
            opts(&[&["allow-compression", "no"], &["allow-compression", "yes"]]),
            Err(CompressError::AfterNo("yes".into()))
        );
        assert!(opts(&[&["allow-compression", "maybe"]]).is_err());
        assert_eq!(
            opts(&[&["compress", "migrate"]]),
            Err(CompressError::Migrate)
        );
        // A real algorithm alone is receive-only (asym), not refused.
        assert!(opts(&[&["compress", "lz4-v2"]]).is_ok());
        assert!(opts(&[&["allow-compression", "asym"], &["comp-lzo", "yes"]]).is_ok());
        // Nothing configured: stubs only, so a pushed `compress lz4` is refused.
        let mut o = opts(&[]).unwrap();
        assert_eq!(
            o.peer_info(),
            "IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n"
        );
        o.apply("compress", &["lz4"]).unwrap();
        assert_eq!(o.check(), Err(CompressError::StubOnly));
        let mut o = opts(&[]).unwrap();
        o.apply("comp-lzo", &["no"]).unwrap();
        assert_eq!(o.check(), Ok(()));
        assert_eq!((o.alg, o.swap()), (Alg::Stub, false));
        let o = opts(&[&["allow-compression", "yes"]]).unwrap();
        assert!(o.peer_info().contains("IV_LZ4v2=1"));
    }
}
