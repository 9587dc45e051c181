//! Throwaway TLS material for `redis-server --tls-port`: a CA and a server certificate
//! for `localhost` and `127.0.0.1`, generated in-process with `rcgen` (ECDSA P-256 keys,
//! `ring` crypto), so no `openssl` tool is needed.
//!
//! Generated once per test process and shared by every TLS server it starts: a key pair
//! is cheap, but not free, and nothing a test checks depends on servers having distinct
//! certificates. The CA's private key never leaves memory; only the CA certificate, the
//! server certificate and the server key are written to each server's dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result, io_err};

/// File names inside a server's dir.
const CA_CERT_FILE: &str = "ca.crt";
const SERVER_CERT_FILE: &str = "server.crt";
const SERVER_KEY_FILE: &str = "server.key";

/// A CA certificate and a server certificate and key it signed, all PEM.
#[derive(Debug)]
pub(crate) struct TlsMaterial {
    ca_cert_pem: String,
    ca_cert_der: Vec<u8>,
    server_cert_pem: String,
    server_key_pem: String,
}

/// Where a server's copy of the material lives.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) ca_cert: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

static SHARED: Mutex<Option<Arc<TlsMaterial>>> = Mutex::new(None);

impl TlsMaterial {
    /// The process-wide material, generated on first use. A failed generation is not
    /// cached, so the next caller tries again.
    pub(crate) fn shared() -> Result<Arc<Self>> {
        // Held while generating, so concurrent first starts generate only once.
        let mut guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(material) = guard.as_ref() {
            return Ok(Arc::clone(material));
        }
        let material = Arc::new(Self::generate()?);
        *guard = Some(Arc::clone(&material));
        Ok(material)
    }

    fn generate() -> Result<Self> {
        let fail = |what: &'static str| move |source| Error::Certificate { what, source };

        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "seawall-testkit throwaway CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(fail("CA key"))?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(fail("CA certificate"))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec![String::from("localhost"), String::from("127.0.0.1")])
                .map_err(fail("server certificate"))?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.is_ca = IsCa::ExplicitNoCa;
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate().map_err(fail("server key"))?;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(fail("server certificate"))?;

        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            ca_cert_der: ca_cert.der().to_vec(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    pub(crate) fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub(crate) fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// Writes the CA certificate, server certificate and server key into `dir`.
    pub(crate) fn write_to(&self, dir: &Path) -> Result<TlsFiles> {
        let files = TlsFiles {
            ca_cert: dir.join(CA_CERT_FILE),
            server_cert: dir.join(SERVER_CERT_FILE),
            server_key: dir.join(SERVER_KEY_FILE),
        };
        for (path, pem) in [
            (&files.ca_cert, &self.ca_cert_pem),
            (&files.server_cert, &self.server_cert_pem),
            (&files.server_key, &self.server_key_pem),
        ] {
            fs::write(path, pem).map_err(io_err(format!("writing {}", path.display())))?;
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_generated_once_and_is_pem() -> Result<()> {
        let first = TlsMaterial::shared()?;
        let second = TlsMaterial::shared()?;
        assert!(Arc::ptr_eq(&first, &second));

        for (pem, label) in [
            (&first.ca_cert_pem, "CERTIFICATE"),
            (&first.server_cert_pem, "CERTIFICATE"),
            (&first.server_key_pem, "PRIVATE KEY"),
        ] {
            assert!(
                pem.starts_with(&format!("-----BEGIN {label}-----")),
                "{pem}"
            );
            assert!(
                pem.trim_end().ends_with(&format!("-----END {label}-----")),
                "{pem}"
            );
        }
        assert_ne!(first.ca_cert_pem, first.server_cert_pem);
        // A DER certificate is one ASN.1 SEQUENCE.
        assert_eq!(first.ca_cert_der.first(), Some(&0x30));
        Ok(())
    }

    #[test]
    fn files_land_in_the_given_dir() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io_err("creating a temp dir"))?;
        let files = TlsMaterial::shared()?.write_to(dir.path())?;
        for path in [&files.ca_cert, &files.server_cert, &files.server_key] {
            assert!(path.starts_with(dir.path()) && path.is_file(), "{path:?}");
        }
        Ok(())
    }
}
