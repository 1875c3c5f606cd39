//! EFI variables as efivarfs shows them, and the boot-manager variables
//! inside them: `BootOrder`, `BootNext`, `BootCurrent` and `Boot####` load
//! options (UEFI specification, "Boot Manager").
//!
//! Pure parsing and encoding over byte slices; the files are read and written
//! by [`super::efivarfs`]. Every length read from a variable is checked
//! against the bytes that are actually there before it is used, and every
//! error names the variable.

use std::fmt;

/// The vendor GUID of the boot-manager variables (`EFI_GLOBAL_VARIABLE`).
pub const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Variables larger than this are refused before they are read. Firmware
/// stores allow a few KiB to 64 KiB per variable.
pub const MAX_VARIABLE_SIZE: u64 = 64 * 1024;

/// `EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS`: the
/// attributes the specification gives the boot-manager variables.
pub const DEFAULT_ATTRIBUTES: u32 = 0x7;

/// `EFI_VARIABLE_APPEND_WRITE`: a write flag, never part of a stored variable.
pub const APPEND_WRITE: u32 = 0x40;

/// `LOAD_OPTION_ACTIVE`: the boot manager considers the option.
pub const LOAD_OPTION_ACTIVE: u32 = 0x1;

/// A problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EFI variable {name}: {problem}")]
pub struct VarError {
    /// The variable's name, e.g. `BootOrder` or `Boot0001`.
    pub name: String,
    pub problem: String,
}

fn err(name: &str, problem: impl Into<String>) -> VarError {
    VarError {
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// Splits an efivarfs file into its attribute word and the variable's data.
pub fn split_attributes<'a>(name: &str, file: &'a [u8]) -> Result<(u32, &'a [u8]), VarError> {
    match file.split_first_chunk::<4>() {
        Some((attributes, data)) => Ok((u32::from_le_bytes(*attributes), data)),
        None => Err(err(
            name,
            format!(
                "{} bytes, expected at least the 4-byte attribute word efivarfs puts first",
                file.len()
            ),
        )),
    }
}

/// An efivarfs file's contents: the attribute word, then the data.
pub fn encode_file(attributes: u32, data: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(4 + data.len());
    file.extend_from_slice(&attributes.to_le_bytes());
    file.extend_from_slice(data);
    file
}

/// `BootOrder`: a list of boot option numbers, two bytes each.
pub fn parse_boot_order(name: &str, data: &[u8]) -> Result<Vec<u16>, VarError> {
    if !data.len().is_multiple_of(2) {
        return Err(err(
            name,
            format!(
                "{} bytes of data, expected a list of 2-byte option numbers (an even count); \
                 rewrite it with efibootmgr --bootorder",
                data.len()
            ),
        ));
    }
    Ok(data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

/// Encodes a `BootOrder` list.
pub fn encode_boot_order(order: &[u16]) -> Vec<u8> {
    order.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// `BootNext` and `BootCurrent`: one boot option number.
pub fn parse_option_number(name: &str, data: &[u8]) -> Result<u16, VarError> {
    match data {
        [lo, hi] => Ok(u16::from_le_bytes([*lo, *hi])),
        _ => Err(err(
            name,
            format!(
                "{} bytes of data, expected one 2-byte option number",
                data.len()
            ),
        )),
    }
}

/// The option number `####` of a `Boot####` efivarfs file name
/// (`Boot0001-8be4df61-…`); `None` for any other file. The specification
/// spells the number with four upper-case hex digits.
pub fn boot_option_number(file_name: &str) -> Option<u16> {
    let rest = file_name.strip_prefix("Boot")?;
    let (hex, guid) = rest.split_at_checked(4)?;
    if guid.strip_prefix('-')? != GLOBAL_GUID
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

/// The variable name of boot option `number`: `Boot0001`.
pub fn boot_option_name(number: u16) -> String {
    format!("Boot{number:04X}")
}

/// An `EFI_LOAD_OPTION` (the data of a `Boot####` variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    /// The label the boot menu shows (and didymos matches bootnames against).
    pub description: String,
    /// The file path list: what the firmware loads.
    pub file_path: DevicePath,
    /// Data passed to the loaded image (often a UCS-2 command line).
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// Parses a load option; `name` (e.g. `Boot0001`) is used in errors.
    pub fn parse(name: &str, data: &[u8]) -> Result<Self, VarError> {
        let Some((attributes, rest)) = data.split_first_chunk::<4>() else {
            return Err(err(
                name,
                format!(
                    "load option truncated: {} bytes, expected at least 6 (attributes and \
                     file path list length)",
                    data.len()
                ),
            ));
        };
        let Some((path_len, rest)) = rest.split_first_chunk::<2>() else {
            return Err(err(
                name,
                format!(
                    "load option truncated: {} bytes, expected at least 6 (attributes and \
                     file path list length)",
                    data.len()
                ),
            ));
        };
        let attributes = u32::from_le_bytes(*attributes);
        let path_len = usize::from(u16::from_le_bytes(*path_len));
        let (description, rest) = split_ucs2(rest).ok_or_else(|| {
            err(
                name,
                "load option description is not NUL-terminated within the variable",
            )
        })?;
        let description = decode_ucs2(description).map_err(|e| {
            err(
                name,
                format!("load option description is not valid UCS-2: {e}"),
            )
        })?;
        if path_len > rest.len() {
            return Err(err(
                name,
                format!(
                    "file path list length is {path_len} bytes but only {} bytes follow the \
                     description {description:?}",
                    rest.len()
                ),
            ));
        }
        let (path, optional) = rest.split_at(path_len);
        let file_path = DevicePath::parse(path).map_err(|problem| {
            err(
                name,
                format!("file path list of {description:?}: {problem}"),
            )
        })?;
        Ok(Self {
            attributes,
            description,
            file_path,
            optional_data: optional.to_vec(),
        })
    }

    /// Encodes the load option (the inverse of [`LoadOption::parse`]).
    pub fn encode(&self) -> Vec<u8> {
        let path = self.file_path.encode();
        let path_len = u16::try_from(path.len()).unwrap_or(u16::MAX);
        let mut out = Vec::new();
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&path_len.to_le_bytes());
        for unit in self.description.encode_utf16().chain([0]) {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out.extend_from_slice(&path);
        out.extend_from_slice(&self.optional_data);
        out
    }

    /// Whether `LOAD_OPTION_ACTIVE` is set.
    pub fn is_active(&self) -> bool {
        self.attributes & LOAD_OPTION_ACTIVE != 0
    }
}

/// Splits UCS-2 text ending in a NUL character off the front of `bytes`.
fn split_ucs2(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes
        .chunks_exact(2)
        .position(|c| c == [0, 0])
        .map(|i| i * 2)?;
    Some((&bytes[..end], &bytes[end + 2..]))
}

fn decode_ucs2(bytes: &[u8]) -> Result<String, String> {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|e| format!("unpaired surrogate {:#06x}", e.unpaired_surrogate()))
}

/// A device path: a list of nodes, each `type`, `subtype`, 2-byte length
/// (header included) and data, ended by the end-of-path node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicePath {
    /// The nodes before the end-of-path node; end-of-instance nodes
    /// (separating several paths) are kept.
    pub nodes: Vec<DevicePathNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePathNode {
    pub kind: u8,
    pub subtype: u8,
    pub data: Vec<u8>,
}

const END_TYPE: u8 = 0x7f;
const END_ENTIRE: u8 = 0xff;
const END_INSTANCE: u8 = 0x01;

impl DevicePath {
    /// Parses a file path list. Bytes after the end-of-path node are ignored,
    /// as the firmware does.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Err("empty (a load option needs at least one device path)".into());
        }
        let mut nodes = Vec::new();
        let mut offset = 0;
        loop {
            let rest = &bytes[offset..];
            let Some((&[kind, subtype, lo, hi], _)) = rest.split_first_chunk::<4>() else {
                return Err(format!(
                    "node at offset {offset} truncated: {} bytes left, a node header is 4; \
                     the end-of-path node is missing",
                    rest.len()
                ));
            };
            let len = usize::from(u16::from_le_bytes([lo, hi]));
            if len < 4 {
                return Err(format!(
                    "node at offset {offset} (type {kind:#04x}, subtype {subtype:#04x}) \
                     claims {len} bytes, less than its own 4-byte header"
                ));
            }
            if len > rest.len() {
                return Err(format!(
                    "node at offset {offset} (type {kind:#04x}, subtype {subtype:#04x}) \
                     claims {len} bytes but only {} are left in the list",
                    rest.len()
                ));
            }
            if kind == END_TYPE && subtype == END_ENTIRE {
                return Ok(Self { nodes });
            }
            nodes.push(DevicePathNode {
                kind,
                subtype,
                data: rest[4..len].to_vec(),
            });
            offset += len;
        }
    }

    /// Encodes the path, ending it with the end-of-path node.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let len = u16::try_from(node.data.len() + 4).unwrap_or(u16::MAX);
            out.extend_from_slice(&[node.kind, node.subtype]);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&node.data[..usize::from(len) - 4]);
        }
        out.extend_from_slice(&[END_TYPE, END_ENTIRE, 4, 0]);
        out
    }
}

/// The text form `efibootmgr -v` uses for the common nodes, e.g.
/// `HD(1,GPT,…,0x800,0x100000)/File(\EFI\BOOT\BOOTX64.EFI)`; other nodes
/// as `Path(type,subtype,hex)`.
impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for node in &self.nodes {
            if node.kind == END_TYPE && node.subtype == END_INSTANCE {
                f.write_str(",")?;
                first = true;
                continue;
            }
            if !first {
                f.write_str("/")?;
            }
            first = false;
            write!(f, "{node}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DevicePathNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data;
        let u32_at = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&d[i..i + 8]);
            u64::from_le_bytes(b)
        };
        match (self.kind, self.subtype, d.len()) {
            // Hardware / PCI: function, device.
            (1, 1, 2) => write!(f, "Pci({:#x},{:#x})", d[1], d[0]),
            // ACPI: HID, UID; PNP0A03 and PNP0A08 are PCI root bridges.
            (2, 1, 8) => match u32_at(0) {
                0x0a03_41d0 | 0x0a08_41d0 => write!(f, "PciRoot({:#x})", u32_at(4)),
                hid => write!(f, "Acpi({hid:#x},{:#x})", u32_at(4)),
            },
            // Media / hard drive: partition number, start, size, signature,
            // format (1 MBR, 2 GPT), signature type (1 MBR, 2 GUID).
            (4, 1, 38) => {
                let part = u32_at(0);
                let (start, size) = (u64_at(4), u64_at(12));
                match (d[36], d[37]) {
                    (2, 2) => write!(
                        f,
                        "HD({part},GPT,{},{start:#x},{size:#x})",
                        Guid(&d[20..36])
                    ),
                    (1, 1) => write!(f, "HD({part},MBR,{:#x},{start:#x},{size:#x})", u32_at(20)),
                    _ => write!(f, "HD({part},{start:#x},{size:#x})"),
                }
            }
            // Media / file path: UCS-2, NUL-terminated.
            (4, 4, _) => {
                let text = split_ucs2(d).map_or(&d[..], |(t, _)| t);
                let units = text
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]));
                let path: String = char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect();
                write!(f, "File({path})")
            }
            _ => {
                write!(f, "Path({},{},", self.kind, self.subtype)?;
                for b in d {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A GUID in its mixed-endian text form.
struct Guid<'a>(&'a [u8]);

impl fmt::Display for Guid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]])
        )?;
        for b in &g[8..10] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in &g[10..16] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_numbers_from_file_names() {
        let cases: &[(&str, Option<u16>)] = &[
            ("Boot0001-8be4df61-93ca-11d2-aa0d-00e098032b8c", Some(1)),
            ("Boot00AF-8be4df61-93ca-11d2-aa0d-00e098032b8c", Some(0xaf)),
            (
                "BootFFFF-8be4df61-93ca-11d2-aa0d-00e098032b8c",
                Some(0xffff),
            ),
            ("Boot00af-8be4df61-93ca-11d2-aa0d-00e098032b8c", None),
            ("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c", None),
            ("BootNext-8be4df61-93ca-11d2-aa0d-00e098032b8c", None),
            ("Boot0001-605dab50-e046-4300-abb6-3dd810dd8b23", None),
            ("Boot001-8be4df61-93ca-11d2-aa0d-00e098032b8c", None),
            ("Boot0001", None),
            ("Boot", None),
            ("Bootü001-8be4df61-93ca-11d2-aa0d-00e098032b8c", None),
        ];
        for (name, want) in cases {
            assert_eq!(boot_option_number(name), *want, "{name}");
        }
        assert_eq!(boot_option_name(0xab), "Boot00AB");
    }

    #[test]
    fn boot_order_round_trip() {
        let order = [1, 0x2000, 0];
        let bytes = encode_boot_order(&order);
        assert_eq!(bytes, [1, 0, 0, 0x20, 0, 0]);
        assert_eq!(parse_boot_order("BootOrder", &bytes).unwrap(), order);
        assert!(parse_boot_order("BootOrder", &[]).unwrap().is_empty());
    }

    #[test]
    fn load_option_round_trip() {
        let option = LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: "A".into(),
            file_path: DevicePath {
                nodes: vec![DevicePathNode {
                    kind: 4,
                    subtype: 4,
                    data: vec![b'\\', 0, b'x', 0, 0, 0],
                }],
            },
            optional_data: b"opt".to_vec(),
        };
        let bytes = option.encode();
        assert_eq!(LoadOption::parse("Boot0001", &bytes).unwrap(), option);
        assert_eq!(option.file_path.to_string(), "File(\\x)");
    }
}
