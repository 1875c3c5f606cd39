//! The only place with `unsafe`, ioctls and mount syscalls.
