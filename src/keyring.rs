//! The trusted certificates a bundle signature is checked against, with
//! RAUC's `[keyring]` options.
//!
//! CONTRACT: `Keyring::load(&config::KeyringSection)` and
//! `Keyring::from_pem_file(path, options)`; used by `bundle` and `setup_root`.

/// A loaded keyring.
pub struct Keyring {
    _private: (),
}
