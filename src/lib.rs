//! didymos: A/B over-the-air updates for embedded Linux, built on composefs.
//!
//! The module tree follows the life of an update:
//!
//! - [`agent`]: the fleet update agent (a D-Bus client of the service);
//! - [`bundle`]: the signed container a build host makes and a device consumes;
//! - [`cms`]: CMS signatures over a document's bytes, checked against a keyring;
//! - [`image`]: the one adapter over the `composefs` crate (image writing, reading, digests);
//! - [`oci`]: container images as bundle input (layouts, archives, podman's store);
//! - [`store`]: the device's content-addressed object store;
//! - [`slot`]: slot configuration, slot records and slot state;
//! - [`install`]: the install engine that moves a verified bundle into the inactive slot;
//! - [`boot`]: bootloader backends behind one trait;
//! - [`service`]: the D-Bus daemon;
//! - [`setup_root`]: the initramfs side, mounting a slot as the root filesystem;
//! - [`sys`]: the only module with `unsafe`, ioctls and mount syscalls.

#![deny(unsafe_code)]

pub mod agent;
pub mod boot;
pub mod bundle;
pub mod cmdline;
pub mod cms;
pub mod config;
pub mod demo;
pub mod digest;
pub mod image;
pub mod install;
pub mod keyring;
pub mod net;
pub mod oci;
pub mod service;
pub mod setup_root;
pub mod slot;
pub mod status;
pub mod store;
pub mod sys;
pub mod util;

pub use digest::Digest;
