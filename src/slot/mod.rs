//! Slots: names, records of what is installed in them, and which one is running.

pub mod booted;
pub mod check;
mod name;
pub mod record;

pub use booted::Booted;
pub use name::{Bootname, BootnameError, SlotName, SlotNameError};
pub use record::{RawRecord, SlotRecord};
