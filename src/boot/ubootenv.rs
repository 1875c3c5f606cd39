//! The U-Boot environment and `fw_env.config`, parsed and rendered without I/O.
//!
//! An environment copy is `crc32 (LE) [flag byte] data`, where data is
//! `name=value\0…\0` padded with NULs to the copy's size and the CRC covers
//! all of data. With two copies (redundant environment) each carries a flag
//! byte; the valid copy with the higher flag (0 after 0xff wraps) is the
//! active one, and a write goes to the other copy with flag + 1 — the same
//! rules as U-Boot and libubootenv, so a write cut short leaves the old copy
//! active.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Largest environment copy accepted (bounded before allocating).
pub const MAX_ENV_SIZE: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UbootEnvError {
    #[error("line {line}: {message}")]
    Config { line: usize, message: String },
    #[error("no environment location: expected a line \"<device> <offset> <size>\"")]
    NoDevice,
    #[error("{0} environment locations; libubootenv uses one or two (redundant)")]
    TooManyDevices(usize),
    #[error("the two copies have different sizes ({0:#x} and {1:#x}); U-Boot needs equal sizes")]
    SizeMismatch(u64, u64),
    #[error("copy is {actual} bytes, expected {expected}")]
    Length { expected: usize, actual: usize },
    #[error("copy is {size} bytes, too small for its {header}-byte header")]
    TooSmall { size: usize, header: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("data is not terminated by an empty entry")]
    Unterminated,
    #[error(
        "the variables need {needed} bytes but the environment holds {available}; \
         remove unused variables"
    )]
    Full { needed: usize, available: usize },
    #[error(
        "invalid variable {0:?}: names must be non-empty without '=' or NUL, values without NUL"
    )]
    BadVariable(String),
}

/// One environment location from `fw_env.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLocation {
    pub device: PathBuf,
    pub offset: u64,
    pub size: u64,
}

/// `fw_env.config`: one location, or two for a redundant environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvConfig {
    pub copies: Vec<EnvLocation>,
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl FwEnvConfig {
    /// Parses the classic format: `<device> <offset> <size> [<erase size> [<sectors>]]`
    /// per line, `#` comments; numbers decimal or `0x` hex.
    pub fn parse(text: &str) -> Result<Self, UbootEnvError> {
        let mut copies = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| UbootEnvError::Config {
                line: line_no,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !(3..=5).contains(&fields.len()) {
                return Err(err(format!(
                    "expected \"<device> <offset> <size> [<erase size> [<sectors>]]\", found {line:?}"
                )));
            }
            let device = fields[0];
            if device.starts_with("/dev/mtd") || device.starts_with("/dev/ubi") {
                return Err(err(format!(
                    "{device}: MTD and UBI environments are not supported; use a file or block device"
                )));
            }
            let offset = parse_number(fields[1])
                .ok_or_else(|| err(format!("offset {:?} is not a number", fields[1])))?;
            let size = parse_number(fields[2])
                .ok_or_else(|| err(format!("size {:?} is not a number", fields[2])))?;
            if !(16..=MAX_ENV_SIZE).contains(&size) {
                return Err(err(format!(
                    "size {size:#x} is out of range (16 bytes to {MAX_ENV_SIZE:#x})"
                )));
            }
            for f in &fields[3..] {
                parse_number(f).ok_or_else(|| err(format!("{f:?} is not a number")))?;
            }
            copies.push(EnvLocation {
                device: PathBuf::from(device),
                offset,
                size,
            });
        }
        match copies.len() {
            0 => Err(UbootEnvError::NoDevice),
            1 => Ok(Self { copies }),
            2 if copies[0].size != copies[1].size => {
                Err(UbootEnvError::SizeMismatch(copies[0].size, copies[1].size))
            }
            2 => Ok(Self { copies }),
            n => Err(UbootEnvError::TooManyDevices(n)),
        }
    }

    pub fn redundant(&self) -> bool {
        self.copies.len() == 2
    }

    pub fn size(&self) -> usize {
        self.copies[0].size as usize
    }
}

/// The variables of one copy (sorted by name, as U-Boot and libubootenv store them).
pub type Vars = BTreeMap<String, String>;

/// A decoded, CRC-checked copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCopy {
    /// The flag byte (redundant environments only).
    pub flag: Option<u8>,
    pub vars: Vars,
}

fn header_len(redundant: bool) -> usize {
    if redundant { 5 } else { 4 }
}

/// Decodes one copy of `size` bytes.
pub fn decode(bytes: &[u8], size: usize, redundant: bool) -> Result<EnvCopy, UbootEnvError> {
    if bytes.len() != size {
        return Err(UbootEnvError::Length {
            expected: size,
            actual: bytes.len(),
        });
    }
    let header = header_len(redundant);
    if size < header {
        return Err(UbootEnvError::TooSmall { size, header });
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[header..];
    let mut crc = flate2::Crc::new();
    crc.update(data);
    if crc.sum() != stored {
        return Err(UbootEnvError::Crc {
            stored,
            computed: crc.sum(),
        });
    }
    let mut vars = Vars::new();
    let mut rest = data;
    loop {
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or(UbootEnvError::Unterminated)?;
        if end == 0 {
            break;
        }
        let entry = String::from_utf8_lossy(&rest[..end]);
        // Entries without '=' are skipped, as libubootenv does.
        if let Some((name, value)) = entry.split_once('=') {
            vars.insert(name.to_owned(), value.to_owned());
        }
        rest = &rest[end + 1..];
    }
    Ok(EnvCopy {
        flag: redundant.then(|| bytes[4]),
        vars,
    })
}

/// Encodes one copy of `size` bytes.
pub fn encode(vars: &Vars, size: usize, flag: Option<u8>) -> Result<Vec<u8>, UbootEnvError> {
    let header = header_len(flag.is_some());
    let mut data = Vec::with_capacity(size);
    for (name, value) in vars {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(UbootEnvError::BadVariable(name.chars().take(60).collect()));
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    let available = size.saturating_sub(header);
    if data.len() > available {
        return Err(UbootEnvError::Full {
            needed: data.len(),
            available,
        });
    }
    data.resize(available, 0);
    let mut crc = flate2::Crc::new();
    crc.update(&data);
    let mut out = crc.sum().to_le_bytes().to_vec();
    out.extend(flag);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Which of two decoded copies is active: the valid one, or with both valid
/// the one with the higher flag (0 beats 0xff: the counter wrapped).
pub fn active_copy<E>(copies: [&Result<EnvCopy, E>; 2]) -> Option<usize> {
    match copies {
        [Ok(a), Ok(b)] => {
            let (fa, fb) = (a.flag.unwrap_or(0), b.flag.unwrap_or(0));
            Some(match (fa, fb) {
                (0xff, 0) => 1,
                (0, 0xff) => 0,
                _ if fb > fa => 1,
                _ => 0,
            })
        }
        [Ok(_), Err(_)] => Some(0),
        [Err(_), Ok(_)] => Some(1),
        [Err(_), Err(_)] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fw_env_config() {
        type Case<'a> = (&'a str, Vec<(&'a str, u64, u64)>);
        let ok: &[Case] = &[
            ("/env 0 0x4000\n", vec![("/env", 0, 0x4000)]),
            (
                "# comment\n/a.bin 0x0 0x2000 # copy 1\n\n/b.bin 8192 0x2000 0x1000 1\n",
                vec![("/a.bin", 0, 0x2000), ("/b.bin", 8192, 0x2000)],
            ),
            (
                "/dev/mmcblk0 0x3fe000 0x1000\n",
                vec![("/dev/mmcblk0", 0x3fe000, 0x1000)],
            ),
        ];
        for (text, want) in ok {
            let c = FwEnvConfig::parse(text).unwrap();
            let got: Vec<_> = c
                .copies
                .iter()
                .map(|l| (l.device.to_str().unwrap(), l.offset, l.size))
                .collect();
            assert_eq!(&got, want, "{text:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "no environment location"),
            ("/env 0\n", "line 1: expected"),
            ("\n/env x 0x4000\n", "line 2: offset \"x\""),
            ("/env 0 0x4000 zz\n", "\"zz\" is not a number"),
            ("/env 0 0x4\n", "out of range"),
            ("/dev/mtd0 0 0x4000\n", "MTD and UBI"),
            ("/a 0 0x2000\n/b 0 0x4000\n", "different sizes"),
            ("/a 0 32\n/b 0 32\n/c 0 32\n", "3 environment locations"),
        ];
        for (text, want) in bad {
            let err = FwEnvConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn copies_round_trip() {
        let v = vars(&[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "3"), ("empty", "")]);
        for flag in [None, Some(7)] {
            let bytes = encode(&v, 64, flag).unwrap();
            assert_eq!(bytes.len(), 64);
            let copy = decode(&bytes, 64, flag.is_some()).unwrap();
            assert_eq!((copy.flag, &copy.vars), (flag, &v));
        }
        let bytes = encode(&v, 64, None).unwrap();
        assert_eq!(&bytes[4..20], b"BOOT_A_LEFT=3\0BO");
    }

    #[test]
    fn decode_refuses() {
        let good = encode(&vars(&[("a", "1")]), 32, None).unwrap();
        let mut flipped = good.clone();
        flipped[10] ^= 1;
        let mut no_end = vec![b'x'; 32];
        let mut crc = flate2::Crc::new();
        crc.update(&no_end[4..]);
        no_end[..4].copy_from_slice(&crc.sum().to_le_bytes());
        let cases: Vec<(&[u8], &str)> = vec![
            (&good[..31], "copy is 31 bytes, expected 32"),
            (&flipped, "CRC mismatch"),
            (&no_end, "not terminated"),
        ];
        for (bytes, want) in cases {
            let err = decode(bytes, 32, false).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        // Found by fuzzing: a copy shorter than its header indexed past its end.
        for (bytes, redundant) in [(&b""[..], false), (b"\x01\x02\x03", false), (b"abcd", true)] {
            assert_eq!(
                decode(bytes, bytes.len(), redundant),
                Err(UbootEnvError::TooSmall {
                    size: bytes.len(),
                    header: header_len(redundant)
                })
            );
        }
        assert!(matches!(
            encode(&vars(&[("x", &"y".repeat(40))]), 32, None),
            Err(UbootEnvError::Full { .. })
        ));
        assert!(encode(&vars(&[("a=b", "1")]), 32, None).is_err());
    }

    #[test]
    fn active_copy_rules() {
        let copy = |flag| {
            Ok(EnvCopy {
                flag: Some(flag),
                vars: Vars::new(),
            })
        };
        let bad = || Err::<EnvCopy, _>(UbootEnvError::Unterminated);
        let cases = [
            (copy(1), copy(2), Some(1)),
            (copy(2), copy(1), Some(0)),
            (copy(3), copy(3), Some(0)),
            (copy(0xff), copy(0), Some(1)),
            (copy(0), copy(0xff), Some(0)),
            (copy(5), bad(), Some(0)),
            (bad(), copy(5), Some(1)),
            (bad(), bad(), None),
        ];
        for (a, b, want) in cases {
            assert_eq!(active_copy([&a, &b]), want, "{a:?} {b:?}");
        }
    }
}
