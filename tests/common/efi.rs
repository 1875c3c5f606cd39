//! A directory laid out like efivarfs, with boot-manager variables built
//! byte by byte here (independently of the library's encoder), and a model
//! of what the firmware does at reset.
//!
//! Needs `#[path = "common/boot.rs"] mod common_boot;` in the test crate.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::common_boot::Device;

pub const GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
pub const NV_BS_RT: u32 = 0x7;
/// BOOTSERVICE_ACCESS | RUNTIME_ACCESS (BootCurrent is volatile).
pub const BS_RT: u32 = 0x6;

pub fn var_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{GUID}"))
}

/// Writes a variable file: attribute word, then data.
pub fn write_var(dir: &Path, name: &str, attributes: u32, data: &[u8]) {
    let mut bytes = attributes.to_le_bytes().to_vec();
    bytes.extend_from_slice(data);
    std::fs::write(var_path(dir, name), bytes).unwrap();
}

/// A variable's attributes and data, if it exists.
pub fn read_var(dir: &Path, name: &str) -> Option<(u32, Vec<u8>)> {
    let bytes = std::fs::read(var_path(dir, name)).ok()?;
    assert!(bytes.len() >= 4, "{name}: {bytes:?}");
    Some((
        u32::from_le_bytes(bytes[..4].try_into().unwrap()),
        bytes[4..].to_vec(),
    ))
}

pub fn u16_list(list: &[u16]) -> Vec<u8> {
    list.iter().flat_map(|n| n.to_le_bytes()).collect()
}

pub fn boot_order(dir: &Path) -> Option<Vec<u16>> {
    read_var(dir, "BootOrder").map(|(_, d)| {
        d.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    })
}

pub fn boot_next(dir: &Path) -> Option<u16> {
    read_var(dir, "BootNext").map(|(_, d)| u16::from_le_bytes(d.try_into().unwrap()))
}

/// UCS-2 text with its NUL terminator.
pub fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// A device path node: type, subtype, length (header included), data.
pub fn node(kind: u8, subtype: u8, data: &[u8]) -> Vec<u8> {
    let mut n = vec![kind, subtype];
    n.extend_from_slice(&((data.len() + 4) as u16).to_le_bytes());
    n.extend_from_slice(data);
    n
}

/// `HD(part,GPT,<guid>,start,size)`.
pub fn hd_gpt(part: u32, start: u64, size: u64, guid: [u8; 16]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&part.to_le_bytes());
    d.extend_from_slice(&start.to_le_bytes());
    d.extend_from_slice(&size.to_le_bytes());
    d.extend_from_slice(&guid);
    d.push(2); // GPT
    d.push(2); // GUID signature
    node(4, 1, &d)
}

/// `File(path)`.
pub fn file(path: &str) -> Vec<u8> {
    node(4, 4, &ucs2(path))
}

pub const END: [u8; 4] = [0x7f, 0xff, 4, 0];

/// An EFI_LOAD_OPTION: attributes, file path list length, description,
/// file path list, optional data.
pub fn load_option(attributes: u32, label: &str, path: &[u8], optional: &[u8]) -> Vec<u8> {
    let mut o = attributes.to_le_bytes().to_vec();
    o.extend_from_slice(&(path.len() as u16).to_le_bytes());
    o.extend_from_slice(&ucs2(label));
    o.extend_from_slice(path);
    o.extend_from_slice(optional);
    o
}

/// The ESP's partition GUID in the fixtures (mixed-endian bytes of
/// 5b3f0c2e-7d41-4a8e-9c1f-2d6e8a4b7c10).
pub const ESP_GUID: [u8; 16] = [
    0x2e, 0x0c, 0x3f, 0x5b, 0x41, 0x7d, 0x8e, 0x4a, 0x9c, 0x1f, 0x2d, 0x6e, 0x8a, 0x4b, 0x7c, 0x10,
];

/// The entry of slot `label`: a unified kernel image on the ESP, with the
/// kernel command line as optional data.
pub fn slot_option(label: &str) -> Vec<u8> {
    let mut path = hd_gpt(1, 0x800, 0x10_0000, ESP_GUID);
    path.extend(file(&format!("\\EFI\\Linux\\didymos-{label}.efi")));
    path.extend(END);
    load_option(
        1,
        label,
        &path,
        &ucs2(&format!("didymos.slot={label} console=ttyS0"))[..],
    )
}

/// Another OS's entry, first in the firmware's menu.
pub fn debian_option() -> Vec<u8> {
    let mut path = hd_gpt(1, 0x800, 0x10_0000, ESP_GUID);
    path.extend(file("\\EFI\\debian\\shimx64.efi"));
    path.extend(END);
    load_option(1, "debian", &path, &[])
}

/// The firmware's built-in shell: a firmware-volume file (not active).
pub fn shell_option() -> Vec<u8> {
    let mut path = node(4, 7, &[0x11; 16]); // firmware volume
    path.extend(node(4, 6, &[0x22; 16])); // firmware file
    path.extend(END);
    load_option(0, "EFI Internal Shell", &path, &[])
}

/// A device with `bootloader = "efi"` and an efivarfs-like directory
/// `efivars`: Boot0000 "debian", Boot0001… for the slots (A, B, …),
/// Boot0080 "EFI Internal Shell"; BootOrder = the slots then 0000;
/// BootCurrent = 0001.
pub fn efi_device(system_extra: &str, slots: usize) -> Device {
    let dev = Device::new("efi", "efivarfs = \"efivars\"", system_extra, slots);
    let dir = efivars(&dev);
    std::fs::create_dir(&dir).unwrap();
    write_var(&dir, "Boot0000", NV_BS_RT, &debian_option());
    let mut order = Vec::new();
    for i in 0..slots {
        let label = ((b'A' + i as u8) as char).to_string();
        let n = i as u16 + 1;
        write_var(
            &dir,
            &format!("Boot{n:04X}"),
            NV_BS_RT,
            &slot_option(&label),
        );
        order.push(n);
    }
    write_var(&dir, "Boot0080", NV_BS_RT, &shell_option());
    order.push(0);
    write_var(&dir, "BootOrder", NV_BS_RT, &u16_list(&order));
    write_var(&dir, "BootCurrent", BS_RT, &1u16.to_le_bytes());
    // Other variables live there too.
    write_var(&dir, "Timeout", NV_BS_RT, &5u16.to_le_bytes());
    std::fs::write(
        dir.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [6, 0, 0, 0, 0],
    )
    .unwrap();
    dev
}

pub fn efivars(dev: &Device) -> PathBuf {
    dev.path("efivars")
}

/// What the firmware does at reset: boot `BootNext` once (deleting it),
/// otherwise the first active entry of `BootOrder`; record it in
/// `BootCurrent`. Returns the booted entry's number.
pub fn firmware_reset(dir: &Path) -> Option<u16> {
    let chosen = match boot_next(dir) {
        Some(n) => {
            std::fs::remove_file(var_path(dir, "BootNext")).unwrap();
            Some(n)
        }
        None => boot_order(dir).unwrap_or_default().into_iter().find(|n| {
            read_var(dir, &format!("Boot{n:04X}"))
                .is_some_and(|(_, d)| d.len() >= 4 && d[0] & 1 == 1)
        }),
    };
    match chosen {
        Some(n) => write_var(dir, "BootCurrent", BS_RT, &n.to_le_bytes()),
        None => {
            let _ = std::fs::remove_file(var_path(dir, "BootCurrent"));
        }
    }
    chosen
}
