//! The multi-attempt boot-counting model, in one place.
//!
//! Several backends store the same three facts per device: an order of
//! slots, and per slot whether it is good and how many boot attempts it has
//! left. The shipped GRUB script (`boot/grub/didymos.cfg`, scheme
//! `attempts`), the U-Boot script (`boot/u-boot/boot.cmd`, where "good" is
//! "attempts left > 0") and the file-backed test bootloader all run the
//! selection in [`Counters::boot`]; the real-bootloader tests compare what
//! GRUB (`grub-emu`) and U-Boot (`qemu-system-aarch64`) chose and saved
//! against this function.

use std::collections::BTreeMap;

use super::BootState;
use crate::slot::Bootname;

/// One slot's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotCounter {
    /// The slot may be chosen at all (`<X>_OK=1`).
    pub good: bool,
    /// Boot attempts the bootloader still grants (`<X>_LEFT`).
    pub left: u32,
}

/// The whole boot-counting state of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Slots in the order the bootloader tries them.
    pub order: Vec<Bootname>,
    /// Per-slot counters; a slot missing here counts as bad with no attempts.
    pub slots: BTreeMap<Bootname, SlotCounter>,
}

impl Counters {
    /// A fresh device: the first slot good with a full budget, the others bad.
    /// This is also what the shipped scripts assume when no environment exists.
    pub fn fresh(bootnames: &[Bootname], attempts: u32) -> Self {
        let slots = bootnames
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let counter = if i == 0 {
                    SlotCounter {
                        good: true,
                        left: attempts,
                    }
                } else {
                    SlotCounter::default()
                };
                (b.clone(), counter)
            })
            .collect();
        Self {
            order: bootnames.to_vec(),
            slots,
        }
    }

    pub fn counter(&self, slot: &Bootname) -> SlotCounter {
        self.slots.get(slot).copied().unwrap_or_default()
    }

    /// The slot the bootloader will choose next: the first in order that is
    /// good with attempts left.
    pub fn primary(&self) -> Option<&Bootname> {
        self.order.iter().find(|b| {
            let c = self.counter(b);
            c.good && c.left > 0
        })
    }

    /// Good only while the bootloader would still boot it: a slot whose
    /// attempts ran out without a mark-good failed, whatever its flag says.
    pub fn state(&self, slot: &Bootname) -> BootState {
        let c = self.counter(slot);
        if c.good && c.left > 0 {
            BootState::Good
        } else {
            BootState::Bad
        }
    }

    /// mark-active: `slot` first in order, good, with a full budget.
    pub fn set_primary(&mut self, slot: &Bootname, attempts: u32) {
        self.order.retain(|b| b != slot);
        self.order.insert(0, slot.clone());
        self.slots.insert(
            slot.clone(),
            SlotCounter {
                good: true,
                left: attempts,
            },
        );
    }

    /// mark-good refills the budget; mark-bad empties it. The order is kept.
    pub fn set_state(&mut self, slot: &Bootname, state: BootState, attempts: u32) {
        if !self.order.contains(slot) {
            self.order.push(slot.clone());
        }
        let counter = match state {
            BootState::Good => SlotCounter {
                good: true,
                left: attempts,
            },
            BootState::Bad => SlotCounter::default(),
        };
        self.slots.insert(slot.clone(), counter);
    }

    /// What the bootloader does at power-on: choose the first slot in order
    /// that is good with attempts left and count one attempt down. Slots that
    /// are out of attempts are passed over, which is the fall back. `None`
    /// when no slot qualifies (nothing is changed then).
    pub fn boot(&mut self) -> Option<Bootname> {
        let chosen = self.primary()?.clone();
        if let Some(c) = self.slots.get_mut(&chosen) {
            c.left -= 1;
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bootname {
        Bootname::new(s).unwrap()
    }

    #[test]
    fn fresh_device_boots_the_first_slot() {
        let mut c = Counters::fresh(&[b("A"), b("B")], 3);
        assert_eq!(c.boot(), Some(b("A")));
        assert_eq!(c.counter(&b("A")).left, 2);
        assert_eq!(c.state(&b("B")), BootState::Bad);
    }

    #[test]
    fn failing_trial_falls_back() {
        let mut c = Counters::fresh(&[b("A"), b("B")], 3);
        c.set_primary(&b("B"), 3);
        // A was marked good on its last boot.
        c.set_state(&b("A"), BootState::Good, 3);
        assert_eq!(c.order, [b("B"), b("A")]);
        for _ in 0..3 {
            assert_eq!(c.boot(), Some(b("B")));
        }
        assert_eq!(
            c.counter(&b("B")),
            SlotCounter {
                good: true,
                left: 0
            }
        );
        assert_eq!(c.boot(), Some(b("A")));
        assert_eq!(c.counter(&b("A")).left, 2);
    }

    #[test]
    fn nothing_bootable_changes_nothing() {
        let mut c = Counters::fresh(&[b("A"), b("B")], 1);
        c.set_state(&b("A"), BootState::Bad, 1);
        let before = c.clone();
        assert_eq!(c.boot(), None);
        assert_eq!(c, before);
    }

    #[test]
    fn marks_keep_order_and_add_unknown_slots() {
        let mut c = Counters::fresh(&[b("A")], 2);
        c.set_state(&b("C"), BootState::Good, 2);
        assert_eq!(c.order, [b("A"), b("C")]);
        c.set_state(&b("A"), BootState::Bad, 2);
        assert_eq!(c.primary(), Some(&b("C")));
    }
}
