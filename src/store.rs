//! The device's content-addressed object store (being filled in).

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Pending(String),
}
