//! The signed bundle: format, manifest, signature, creation and reading.
