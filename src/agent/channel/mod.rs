//! Update channels: a signed TOML document listing releases, the upgrade
//! edges between them, barriers, dead-ends and phased rollouts, with an
//! expiry (docs/channels.md).
//!
//! - [`document`]: the format, parsing and its rules (pure);
//! - [`signed`]: the signed file (the document followed by a PEM CMS
//!   signature over its exact bytes), signing and verification, freshness;
//! - [`edit`]: the build host's verbs (`didymos channel new|add|…`).

pub mod document;
pub mod edit;
pub mod signed;

pub use document::{Channel, ChannelError, Edge, Release, Rollout};
pub use signed::{SignedChannelError, VerifiedChannel};
