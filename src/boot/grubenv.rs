//! The GRUB environment block (`grubenv`), parsed and rendered without I/O.
//!
//! Format, as `grub-editenv` writes it: the line `# GRUB Environment Block`,
//! then `name=value` lines, then `#` padding up to the block's size (1024
//! bytes unless an existing block is larger). In values, a backslash and a
//! newline are escaped by a preceding backslash. Other lines starting with
//! `#` are comments.

use std::fmt;

/// The first line of every environment block.
pub const SIGNATURE: &[u8] = b"# GRUB Environment Block\n";
/// The size `grub-editenv create` uses.
pub const DEFAULT_SIZE: usize = 1024;
/// Largest block accepted (GRUB itself reads whatever the file holds; we
/// bound it before use).
pub const MAX_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubenvError {
    #[error(
        "not a GRUB environment block: it does not start with \"# GRUB Environment Block\"; \
         recreate it with grub-editenv FILE create"
    )]
    NoSignature,
    #[error("environment block is {0} bytes, more than the {MAX_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("line {line}: expected name=value, found {found:?}")]
    BadLine { line: usize, found: String },
    #[error("line {line}: the variable is not terminated by a newline (block truncated?)")]
    Unterminated { line: usize },
    #[error(
        "the variables need {needed} bytes but the environment block holds {size}; \
         remove unused variables with grub-editenv FILE unset NAME"
    )]
    Full { needed: usize, size: usize },
    #[error("invalid variable name {0:?}: names must be non-empty without '=', '#' or newlines")]
    BadName(String),
}

/// A parsed environment block: variables in file order and the block size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grubenv {
    size: usize,
    vars: Vec<(String, String)>,
}

impl Default for Grubenv {
    fn default() -> Self {
        Self {
            size: DEFAULT_SIZE,
            vars: Vec::new(),
        }
    }
}

impl Grubenv {
    pub fn parse(bytes: &[u8]) -> Result<Self, GrubenvError> {
        if bytes.len() > MAX_SIZE {
            return Err(GrubenvError::TooLarge(bytes.len()));
        }
        let body = bytes
            .strip_prefix(SIGNATURE)
            .ok_or(GrubenvError::NoSignature)?;
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        let mut line = 2;
        while pos < body.len() {
            let rest = &body[pos..];
            if rest[0] == b'#' || rest[0] == b'\n' {
                // Comment or padding: skip to the end of the line (padding has none).
                match rest.iter().position(|&c| c == b'\n') {
                    Some(n) => {
                        pos += n + 1;
                        line += 1;
                        continue;
                    }
                    None => break,
                }
            }
            let eq = rest.iter().position(|&c| c == b'=' || c == b'\n');
            let Some(eq) = eq.filter(|&n| rest[n] == b'=') else {
                let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                return Err(GrubenvError::BadLine {
                    line,
                    found: String::from_utf8_lossy(&rest[..end.min(60)]).into_owned(),
                });
            };
            let name = String::from_utf8_lossy(&rest[..eq]).into_owned();
            let mut value = Vec::new();
            let mut i = eq + 1;
            let mut terminated = false;
            while i < rest.len() {
                match rest[i] {
                    b'\\' if i + 1 < rest.len() => {
                        if rest[i + 1] == b'\n' {
                            line += 1;
                        }
                        value.push(rest[i + 1]);
                        i += 2;
                    }
                    b'\n' => {
                        terminated = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !terminated {
                return Err(GrubenvError::Unterminated { line });
            }
            let value = String::from_utf8_lossy(&value).into_owned();
            // A later assignment wins, as in GRUB.
            match vars.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => vars.push((name, value)),
            }
            pos += i;
            line += 1;
        }
        Ok(Self {
            size: bytes.len().max(DEFAULT_SIZE),
            vars,
        })
    }

    /// The block, padded with `#` to its size.
    pub fn render(&self) -> Result<Vec<u8>, GrubenvError> {
        let mut out = SIGNATURE.to_vec();
        for (name, value) in &self.vars {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            for &c in value.as_bytes() {
                if c == b'\\' || c == b'\n' {
                    out.push(b'\\');
                }
                out.push(c);
            }
            out.push(b'\n');
        }
        if out.len() > self.size {
            return Err(GrubenvError::Full {
                needed: out.len(),
                size: self.size,
            });
        }
        out.resize(self.size, b'#');
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) -> Result<(), GrubenvError> {
        if name.is_empty() || name.contains(['=', '\n', '#']) {
            return Err(GrubenvError::BadName(name.chars().take(60).collect()));
        }
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.vars.push((name.to_owned(), value.to_owned())),
        }
        Ok(())
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// `name=value` lines, as `grub-editenv FILE list` prints them.
impl fmt::Display for Grubenv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.vars {
            writeln!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(body: &str) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(body.as_bytes());
        v.resize(DEFAULT_SIZE.max(v.len()), b'#');
        v
    }

    #[test]
    fn parses() {
        let warning = "# WARNING: Do not edit this file by tools other than grub-editenv!!!\n";
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            (warning, &[]),
            ("ORDER=A B\nA_OK=1\n", &[("ORDER", "A B"), ("A_OK", "1")]),
            ("X=a\\\\b\n", &[("X", "a\\b")]),
            ("X=one\\\ntwo\nY=\n", &[("X", "one\ntwo"), ("Y", "")]),
            ("X=1\nX=2\n", &[("X", "2")]),
            ("X=a=b\n", &[("X", "a=b")]),
        ];
        for (body, want) in cases {
            let env = Grubenv::parse(&block(body)).unwrap();
            let got: Vec<_> = env.vars().collect();
            assert_eq!(&got, want, "{body:?}");
        }
    }

    #[test]
    fn refuses() {
        let cases: &[(&[u8], GrubenvError)] = &[
            (b"", GrubenvError::NoSignature),
            (b"# GRUB Environment Blocx\n", GrubenvError::NoSignature),
            (
                &block("ORDER\n"),
                GrubenvError::BadLine {
                    line: 2,
                    found: "ORDER".into(),
                },
            ),
            (
                b"# GRUB Environment Block\nA=1\nB=2",
                GrubenvError::Unterminated { line: 3 },
            ),
            (&[b'#'; MAX_SIZE + 1], GrubenvError::TooLarge(MAX_SIZE + 1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(&Grubenv::parse(bytes).unwrap_err(), want);
        }
    }

    #[test]
    fn renders_and_round_trips() {
        let mut env = Grubenv::default();
        env.set("ORDER", "B A").unwrap();
        env.set("X", "back\\slash\nnew").unwrap();
        let bytes = env.render().unwrap();
        assert_eq!(bytes.len(), 1024);
        assert!(
            bytes.starts_with(b"# GRUB Environment Block\nORDER=B A\nX=back\\\\slash\\\nnew\n#")
        );
        assert_eq!(Grubenv::parse(&bytes).unwrap(), env);
        env.unset("X");
        assert_eq!(env.get("X"), None);
    }

    #[test]
    fn full_block_and_bad_names() {
        let mut env = Grubenv::default();
        env.set("BIG", &"x".repeat(1000)).unwrap();
        assert!(matches!(
            env.render(),
            Err(GrubenvError::Full { size: 1024, .. })
        ));
        for bad in ["", "A=B", "#X", "a\nb"] {
            assert!(env.set(bad, "1").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn larger_blocks_keep_their_size() {
        let mut bytes = block("A=1\n");
        bytes.resize(2048, b'#');
        let env = Grubenv::parse(&bytes).unwrap();
        assert_eq!(env.render().unwrap().len(), 2048);
    }
}
