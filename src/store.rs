//! The device's content-addressed object store (being filled in).
