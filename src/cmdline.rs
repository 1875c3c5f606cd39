//! The kernel command line: `key=value` words, values may be double-quoted.

/// Splits a kernel command line into `(key, value)` pairs, in order.
/// Words without `=` have an empty value. Quotes group words as the kernel
/// does (`key="a b"`), and are removed.
pub fn parse(cmdline: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut push = |word: &mut String| {
        if !word.is_empty() {
            let (k, v) = word.split_once('=').unwrap_or((word.as_str(), ""));
            out.push((k.to_owned(), v.to_owned()));
            word.clear();
        }
    };
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => push(&mut word),
            c => word.push(c),
        }
    }
    push(&mut word);
    out
}

/// The value of the last occurrence of `key` (later words win, as in the kernel).
pub fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "root=/dev/vda2 didymos.slot=A quiet",
                "didymos.slot",
                Some("A"),
            ),
            ("didymos.slot=A didymos.slot=B", "didymos.slot", Some("B")),
            ("quiet\n", "quiet", Some("")),
            ("x=\"a b\" y=1", "x", Some("a b")),
            ("x=\"a b\" y=1", "y", Some("1")),
            ("", "didymos.slot", None),
            ("didymos.slotty=A", "didymos.slot", None),
            ("init=/bin/sh -- didymos.slot=A", "didymos.slot", Some("A")),
        ];
        for (line, key, want) in cases {
            assert_eq!(get(&parse(line), key), *want, "{line:?} {key}");
        }
    }
}
