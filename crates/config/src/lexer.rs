//! Tokenizer for one configuration line, following OpenVPN's rules:
//! whitespace separates arguments, `#`/`;` start a comment at the start of a
//! token, `"..."` and `'...'` group, backslash escapes the next character
//! everywhere except inside single quotes.

use crate::error::Reason;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Between,
    Unquoted,
    Double,
    Single,
}

/// Split one line into tokens. An empty result means a blank/comment line.
pub fn tokenize(line: &str) -> Result<Vec<String>, Reason> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut state = State::Between;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match state {
            State::Between => {
                if c.is_whitespace() {
                    continue;
                }
                match c {
                    '#' | ';' => return Ok(tokens),
                    '"' => state = State::Double,
                    '\'' => state = State::Single,
                    '\\' => {
                        cur.push(chars.next().ok_or(Reason::TrailingBackslash)?);
                        state = State::Unquoted;
                    }
                    _ => {
                        cur.push(c);
                        state = State::Unquoted;
                    }
                }
            }
            State::Unquoted => {
                if c.is_whitespace() {
                    tokens.push(std::mem::take(&mut cur));
                    state = State::Between;
                } else if c == '\\' {
                    cur.push(chars.next().ok_or(Reason::TrailingBackslash)?);
                } else {
                    cur.push(c);
                }
            }
            State::Double => match c {
                '"' => {
                    tokens.push(std::mem::take(&mut cur));
                    state = State::Between;
                }
                '\\' => cur.push(chars.next().ok_or(Reason::UnterminatedQuote("double"))?),
                _ => cur.push(c),
            },
            State::Single => {
                if c == '\'' {
                    tokens.push(std::mem::take(&mut cur));
                    state = State::Between;
                } else {
                    cur.push(c);
                }
            }
        }
    }
    match state {
        State::Between => {}
        State::Unquoted => tokens.push(cur),
        State::Double => return Err(Reason::UnterminatedQuote("double")),
        State::Single => return Err(Reason::UnterminatedQuote("single")),
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<String> {
        tokenize(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn basics() {
        assert_eq!(t("  port   1194 \r"), ["port", "1194"]);
        assert_eq!(t("# comment"), Vec::<String>::new());
        assert_eq!(t("   ; comment"), Vec::<String>::new());
        assert_eq!(t("port 1194 # trailing"), ["port", "1194"]);
        assert_eq!(t("port 1194 ;trailing"), ["port", "1194"]);
        assert_eq!(t("dev tun#0"), ["dev", "tun#0"]);
        assert_eq!(
            t(r#"push "route 10.0.0.0 255.0.0.0""#),
            ["push", "route 10.0.0.0 255.0.0.0"]
        );
        assert_eq!(t("x 'a \\b \"c'"), ["x", "a \\b \"c"]);
        assert_eq!(t(r#"x "a \"q\" \\ b""#), ["x", r#"a "q" \ b"#]);
        assert_eq!(t(r"x a\ b"), ["x", "a b"]);
        assert_eq!(t(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(
            t("x \"#no-comment-in-quotes\""),
            ["x", "#no-comment-in-quotes"]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            tokenize("x \"abc"),
            Err(Reason::UnterminatedQuote("double"))
        );
        assert_eq!(tokenize("x 'abc"), Err(Reason::UnterminatedQuote("single")));
        assert_eq!(tokenize("x abc\\"), Err(Reason::TrailingBackslash));
        assert_eq!(
            tokenize("x \"abc\\"),
            Err(Reason::UnterminatedQuote("double"))
        );
    }
}
