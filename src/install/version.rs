//! Comparing bundle versions: parts split at `.`, `-`, `+`, `_`, `~`, each
//! compared "naturally" (runs of digits as numbers, the rest as text), so
//! `1.10 > 1.9` and `1.0-rc2 < 1.0-rc10`. A trailing part that starts with a
//! letter marks a pre-release: `1.0-rc1 < 1.0 < 1.0.1`.

use std::cmp::Ordering;

pub fn compare(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> Vec<String> {
        s.split(['.', '-', '+', '_', '~'])
            .map(str::to_owned)
            .collect()
    };
    let (pa, pb) = (split(a), split(b));
    for i in 0..pa.len().max(pb.len()) {
        let (x, y) = (pa.get(i), pb.get(i));
        let ord = match (x, y) {
            (Some(x), Some(y)) if starts_alpha(x) != starts_alpha(y) => {
                if starts_alpha(x) {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (Some(x), Some(y)) => natural(x, y),
            (Some(x), None) if starts_alpha(x) => Ordering::Less,
            (None, Some(y)) if starts_alpha(y) => Ordering::Greater,
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn starts_alpha(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// Compares runs of digits numerically and everything else as text.
fn natural(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(rb.iter()) {
        let ord = match (x.parse::<u128>(), y.parse::<u128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn table() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.10", "1.9", Greater),
            ("2", "1.99", Greater),
            ("1.0", "1.0.1", Less),
            ("2024.04", "2024.10", Less),
            ("1.0-rc2", "1.0-rc10", Less),
            ("1.0-rc1", "1.0", Less),
            ("1.0", "1.0.1", Less),
            ("2.0-rc1", "2.0.1", Less),
            ("v3", "v12", Less),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
        }
    }
}
