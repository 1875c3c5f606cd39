//! Slots: names, records of what is installed in them, and their state.

mod name;
pub mod record;

pub use name::{Bootname, BootnameError, SlotName, SlotNameError};
pub use record::SlotRecord;
