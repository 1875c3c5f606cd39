//! The GRUB backend against the real `grub-editenv`, both ways, for both
//! counting schemes.

#[path = "common/boot.rs"]
mod common_boot;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common_boot::{Device, b, run};
use didymos::boot::grubenv::Grubenv;
use didymos::boot::{BootState, from_config};

fn device(scheme: &str) -> Device {
    Device::new(
        "grub",
        &format!("grubenv = \"boot/grubenv\"\ngrub-scheme = \"{scheme}\""),
        "boot-attempts = 5",
        2,
    )
}

fn editenv(dev: &Device, args: &[&str]) -> String {
    run(Command::new("grub-editenv")
        .arg(dev.path("boot/grubenv"))
        .args(args))
}

#[test]
fn what_didymos_writes_grub_editenv_lists() {
    for (scheme, want) in [
        ("rauc", "ORDER=B A\nB_OK=1\nB_TRY=0\nA_OK=1\nA_TRY=0\n"),
        (
            "attempts",
            "ORDER=B A\nA_OK=1\nA_LEFT=5\nB_OK=1\nB_LEFT=5\n",
        ),
    ] {
        let dev = device(scheme);
        std::fs::create_dir(dev.path("boot")).unwrap();
        let bl = from_config(&dev.config).unwrap();
        bl.set_primary(&b("B")).unwrap();
        bl.set_state(&b("A"), BootState::Good).unwrap();
        assert_eq!(editenv(&dev, &["list"]), want, "{scheme}");
        // Values grub-editenv must unescape.
        let bytes = std::fs::read(dev.path("boot/grubenv")).unwrap();
        let mut env = Grubenv::parse(&bytes).unwrap();
        env.set("odd", "back\\slash\nnew line=").unwrap();
        std::fs::write(dev.path("boot/grubenv"), env.render().unwrap()).unwrap();
        assert_eq!(
            editenv(&dev, &["list"]),
            format!("{want}odd=back\\slash\nnew line=\n")
        );
    }
}

#[test]
fn what_grub_editenv_writes_didymos_reads() {
    let dev = device("attempts");
    std::fs::create_dir(dev.path("boot")).unwrap();
    editenv(&dev, &["create"]);
    editenv(
        &dev,
        &[
            "set",
            "ORDER=B A",
            "A_OK=1",
            "A_LEFT=4",
            "B_OK=1",
            "B_LEFT=2",
            "x=a\\b\nc",
        ],
    );
    let bl = from_config(&dev.config).unwrap();
    assert_eq!(bl.get_primary().unwrap(), Some(b("B")));
    assert_eq!(bl.attempts_left(&b("A")).unwrap(), Some(4));
    assert_eq!(bl.attempts_left(&b("B")).unwrap(), Some(2));
    let env = Grubenv::parse(&std::fs::read(dev.path("boot/grubenv")).unwrap()).unwrap();
    assert_eq!(env.get("x"), Some("a\\b\nc"));
    // Our write keeps grub-editenv's variables and its block size.
    bl.set_state(&b("B"), BootState::Bad).unwrap();
    assert_eq!(
        editenv(&dev, &["list"]),
        "ORDER=B A\nA_OK=1\nA_LEFT=4\nB_OK=0\nB_LEFT=0\nx=a\\b\nc\n"
    );
    assert_eq!(
        std::fs::metadata(dev.path("boot/grubenv")).unwrap().len(),
        1024
    );
    // The RAUC scheme reads the same file.
    editenv(&dev, &["set", "A_TRY=0", "B_TRY=1", "B_OK=1"]);
    let rauc = device("rauc");
    std::fs::create_dir(rauc.path("boot")).unwrap();
    std::fs::copy(dev.path("boot/grubenv"), rauc.path("boot/grubenv")).unwrap();
    let bl = from_config(&rauc.config).unwrap();
    assert_eq!(
        bl.get_primary().unwrap(),
        Some(b("A")),
        "B_TRY=1: B was tried already"
    );
    assert_eq!(bl.get_state(&b("B")).unwrap(), BootState::Good);
}

#[test]
fn writes_rewrite_the_block_in_place() {
    // GRUB reads the boot partition without replaying a journal: the block
    // must stay in the data blocks GRUB finds, as GRUB's own save_env keeps it.
    let dev = device("attempts");
    std::fs::create_dir(dev.path("boot")).unwrap();
    editenv(&dev, &["create"]);
    let before = std::fs::metadata(dev.path("boot/grubenv")).unwrap();
    let bl = from_config(&dev.config).unwrap();
    bl.set_primary(&b("B")).unwrap();
    bl.set_state(&b("A"), BootState::Bad).unwrap();
    let after = std::fs::metadata(dev.path("boot/grubenv")).unwrap();
    assert_eq!(
        (before.ino(), before.len()),
        (after.ino(), after.len()),
        "the same file, the same size"
    );
    assert_eq!(
        editenv(&dev, &["list"]),
        "ORDER=B A\nA_OK=0\nA_LEFT=0\nB_OK=1\nB_LEFT=5\n"
    );
    assert_eq!(std::fs::read_dir(dev.path("boot")).unwrap().count(), 1);
}

#[test]
fn a_missing_block_is_created() {
    let dev = device("rauc");
    std::fs::create_dir(dev.path("boot")).unwrap();
    let bl = from_config(&dev.config).unwrap();
    bl.set_primary(&b("A")).unwrap();
    assert_eq!(
        std::fs::metadata(dev.path("boot/grubenv")).unwrap().len(),
        1024
    );
    assert_eq!(std::fs::read_dir(dev.path("boot")).unwrap().count(), 1);
    assert!(editenv(&dev, &["list"]).starts_with("ORDER=A B\n"));
}

#[test]
fn a_torn_write_reads_as_the_old_or_the_new_counters() {
    // A power cut during the in-place write can leave some 512-byte sectors
    // new and some old. A two-slot device's variables all sit in the first
    // sector, so every such mix is the old or the new block, each of them a
    // state the install had made durable before going on.
    for scheme in ["rauc", "attempts"] {
        let dev = device(scheme);
        std::fs::create_dir(dev.path("boot")).unwrap();
        editenv(&dev, &["create"]);
        let bl = from_config(&dev.config).unwrap();
        bl.set_primary(&b("A")).unwrap();
        bl.set_state(&b("B"), BootState::Good).unwrap();
        let old = std::fs::read(dev.path("boot/grubenv")).unwrap();
        bl.set_state(&b("B"), BootState::Bad).unwrap();
        bl.set_primary(&b("B")).unwrap();
        let new = std::fs::read(dev.path("boot/grubenv")).unwrap();
        assert_eq!(old.len(), new.len());
        let vars_end =
            |block: &[u8]| block.len() - block.iter().rev().take_while(|&&c| c == b'#').count();
        assert!(
            vars_end(&old) <= 512 && vars_end(&new) <= 512,
            "{scheme}: variables past sector 0"
        );
        for first_new in [false, true] {
            let mut torn = if first_new { new.clone() } else { old.clone() };
            torn[512..].copy_from_slice(if first_new { &old[512..] } else { &new[512..] });
            let env = Grubenv::parse(&torn).unwrap();
            let whole = if first_new { &new } else { &old };
            assert_eq!(env, Grubenv::parse(whole).unwrap(), "{scheme}");
        }
    }
}

#[test]
fn a_foreign_file_is_a_clear_error() {
    let dev = device("rauc");
    std::fs::create_dir(dev.path("boot")).unwrap();
    std::fs::write(dev.path("boot/grubenv"), "ORDER=A B\n").unwrap();
    let bl = from_config(&dev.config).unwrap();
    let err = bl.get_primary().unwrap_err().to_string();
    assert!(
        err.contains("boot/grubenv") && err.contains("grub-editenv FILE create"),
        "{err}"
    );
}
