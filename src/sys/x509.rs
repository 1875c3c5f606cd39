//! What the `openssl` crate lacks for certificate stores: adding a CRL.

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::x509::X509CrlRef;
use openssl::x509::store::X509StoreBuilderRef;

unsafe extern "C" {
    // int X509_STORE_add_crl(X509_STORE *xs, X509_CRL *x), libcrypto since 0.9.
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> std::ffi::c_int;
}

/// Adds `crl` to the store being built, for `X509_V_FLAG_CRL_CHECK`.
pub fn store_add_crl(store: &mut X509StoreBuilderRef, crl: &X509CrlRef) -> Result<(), ErrorStack> {
    // SAFETY: both pointers come from live references for the duration of
    // the call. X509_STORE_add_crl takes its own reference to the CRL
    // (X509_CRL_up_ref) and neither keeps nor frees the caller's, so the
    // store stays valid after `crl` is dropped.
    let ok = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
    if ok > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}
