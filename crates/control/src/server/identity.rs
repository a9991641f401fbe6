//! A client's common name as the server uses it outside certificate checks
//! (logs, status files, pool-persist, duplicate-cn).

/// The common name with every byte that is not printable ASCII, and CR and
/// LF, replaced by `_`, as OpenVPN 2.6 remaps it (`string_mod_remap_name`:
/// `CC_PRINT` kept, `CC_CRLF` removed, byte by byte) before using it. A
/// newline in a CN can then not forge rows in the status file.
pub fn remap_common_name(cn: &str) -> String {
    cn.bytes()
        .map(|b| {
            if (0x20..=0x7e).contains(&b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_non_ascii_bytes_become_underscores() {
        assert_eq!(remap_common_name("client1"), "client1");
        assert_eq!(
            remap_common_name("Jane Doe, Ops@x.org"),
            "Jane Doe, Ops@x.org"
        );
        assert_eq!(
            remap_common_name("evil\nCLIENT_LIST,root\r"),
            "evil_CLIENT_LIST,root_"
        );
        assert_eq!(remap_common_name("tab\there\0"), "tab_here_");
        // One underscore per byte, as OpenVPN works on bytes.
        assert_eq!(remap_common_name("é"), "__");
        assert_eq!(remap_common_name("\u{7f}"), "_");
    }
}
