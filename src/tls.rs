//! TLS as Connectware operators have it (SPEC §6), for the API client and the S3 repository
//! alike (a leaf: both use it, it uses neither).
//!
//! Trusted: the platform's roots plus every certificate in `ca_file`. A default install's
//! `cybus_server.crt` is signed by `cybus_ca.crt`: that is ordinary chain validation. Operators
//! also replace it with a certificate from `openssl req -x509`, which is self-signed and marked
//! CA:TRUE; curl --cacert accepts it, but webpki refuses a CA certificate as a server's own. So
//! when ordinary validation fails and the server's certificate is byte-identical to one in
//! `ca_file`, it is accepted after checking its validity period and host name ourselves.
//! Handshake signatures are always verified.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_name;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use x509_cert::der::Decode;

use crate::error::{Error, ErrorKind, Result};

/// The blocking HTTP client of the API and of an S3 repository: `tls` (from
/// [`client_config`]), no redirects (a redirect would send the credentials elsewhere), no
/// overall timeout (each request sets its own), cwbackup's user agent.
pub fn http_client(
    tls: rustls::ClientConfig,
    connect_timeout: std::time::Duration,
) -> reqwest::Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .timeout(None)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cwbackup/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The rustls configuration for an HTTPS client (the API's, the S3 repository's). Its
/// errors are `api_tls_error`; the S3 repository reports them as `repository_error`.
pub fn client_config(validate_certs: bool, ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pinned = match ca_file {
        Some(path) => read_pem(path)?,
        None => Vec::new(),
    };
    let chain = if validate_certs {
        let platform = rustls_platform_verifier::Verifier::new_with_extra_roots(
            pinned.clone(),
            provider.clone(),
        )
        .map_err(|e| tls_setup_error(ca_file, e))?;
        Some(Arc::new(platform))
    } else {
        None
    };
    let verifier = Arc::new(Verifier {
        chain,
        pinned,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup_error(ca_file, e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

fn tls_setup_error(ca_file: Option<&Path>, e: impl std::fmt::Display) -> Error {
    let which = ca_file.map_or_else(String::new, |p| format!(" with ca_file {}", p.display()));
    Error::new(
        ErrorKind::ApiTlsError,
        format!("cannot set up TLS{which}: {e}"),
    )
}

/// Largest `ca_file` read, in bytes (a bundle of a few hundred certificates).
pub const MAX_CA_FILE: u64 = 1024 * 1024;

/// Every certificate in a PEM file.
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = crate::secrets::read_small_file(path, MAX_CA_FILE).map_err(|e| {
        Error::new(
            ErrorKind::ApiTlsError,
            format!("cannot read ca_file {}: {e}", path.display()),
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::ApiTlsError,
                format!("ca_file {} is not a PEM bundle: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::ApiTlsError,
            format!(
                "ca_file {} holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

#[derive(Debug)]
struct Verifier {
    /// Chain validation against the platform's roots and `ca_file`; None for
    /// `validate_certs: false`, which accepts any certificate (handshake signatures are still
    /// checked below).
    chain: Option<Arc<rustls_platform_verifier::Verifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(ok) => Ok(ok),
            // The chain error is expected for a self-signed CA:TRUE certificate: accept it when
            // the operator pinned exactly this certificate.
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                check_validity_period(end_entity)?;
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Refuses a certificate outside its validity period.
fn check_validity_period(der: &CertificateDer<'_>) -> std::result::Result<(), rustls::Error> {
    let cert = x509_cert::Certificate::from_der(der.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = cert.tbs_certificate().validity();
    let now = SystemTime::now();
    if now < validity.not_before.to_system_time() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.to_system_time() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}
