//! `bootloader = "noop"`: remembers nothing, logs what it would do.
//!
//! For devices whose slot switching happens elsewhere (or not at all). Every
//! known slot reads as good; there is no primary slot.

use super::{BootError, BootState, Bootloader};
use crate::slot::Bootname;

#[derive(Debug)]
pub struct NoopBootloader {
    bootnames: Vec<Bootname>,
}

impl NoopBootloader {
    pub fn new(bootnames: Vec<Bootname>) -> Self {
        Self { bootnames }
    }

    fn check_known(&self, slot: &Bootname) -> Result<(), BootError> {
        if self.bootnames.contains(slot) {
            Ok(())
        } else {
            Err(BootError::UnknownSlot(slot.clone()))
        }
    }
}

impl Bootloader for NoopBootloader {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn get_primary(&self) -> Result<Option<Bootname>, BootError> {
        Ok(None)
    }

    fn set_primary(&self, slot: &Bootname) -> Result<(), BootError> {
        self.check_known(slot)?;
        log::info!("noop bootloader: would make slot {slot} primary");
        Ok(())
    }

    fn get_state(&self, slot: &Bootname) -> Result<BootState, BootError> {
        self.check_known(slot)?;
        Ok(BootState::Good)
    }

    fn set_state(&self, slot: &Bootname, state: BootState) -> Result<(), BootError> {
        self.check_known(slot)?;
        log::info!("noop bootloader: would mark slot {slot} {}", state.as_str());
        Ok(())
    }
}
