//! Reading certificates, keys and CA bundles from PEM files.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The PEM bytes of `path` if it holds at least one certificate.
pub(crate) fn certs_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(path)?;
    certs_from(path, &bytes)?;
    Ok(bytes)
}

/// The certificates in `path`, in order; at least one.
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from(path, &read(path)?)
}

fn certs_from(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The PEM bytes of `path` if it holds a private key.
pub(crate) fn key_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(path)?;
    key_from(path, &bytes)?;
    Ok(bytes)
}

/// The private key in `path`.
pub(crate) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_from(path, &read(path)?)
}

fn key_from(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| pem_error(path, e))
}

/// A root store of the CA certificates in `path`.
pub(crate) fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| pem_error(path, e))?;
    }
    Ok(roots)
}
