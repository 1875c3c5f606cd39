//! Slots: names, records of what is installed in them, and their state.

mod name;

pub use name::{Bootname, BootnameError, SlotName, SlotNameError};
