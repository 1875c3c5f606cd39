//! The agent's pure decisions: no I/O, no clock (time is an argument), so
//! every rule is a unit test.
//!
//! - [`graph`]: the next hop along a channel's upgrade graph;
//! - [`rollout`]: the phased-rollout formula and the default wariness;
//! - [`window`]: weekly maintenance windows in a time zone.

pub mod graph;
pub mod rollout;
pub mod window;

pub use graph::{DeviceView, Hop, Next, next_hop};
