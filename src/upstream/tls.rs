//! TLS to an `https://` upstream: HTTP/1.1 over TLS (RFC 9110 §4.2.2, §4.3.4), offered
//! with ALPN `http/1.1` only (RFC 7301).
//!
//! rustls with the aws-lc-rs provider, the one object_store's S3 client already builds,
//! so the binary carries one crypto library. Trusted roots: the system's
//! (rustls-native-certs, which reads `SSL_CERT_FILE` and `SSL_CERT_DIR` when set,
//! otherwise the platform store) plus the certificates of `upstream.ca_file`. The chain
//! and the host name are always verified (RFC 6125; an IP literal is checked against
//! the certificate's IP address SANs); nothing turns verification off. The name sent as
//! SNI is the upstream's host name; rustls sends none for an IP literal (RFC 6066 §3).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::error::Error;

/// What is needed to open TLS connections to one upstream; cloned cheaply (worker
/// threads share the configuration and its session cache).
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// `https://host[:port]`, for messages.
    url: Arc<str>,
}

/// A TLS handshake that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The upstream's certificate or protocol was refused: trying again will not help.
    #[error("TLS handshake with {url} failed: {reason}")]
    Refused { url: Arc<str>, reason: String },
    /// The connection broke during the handshake.
    #[error("TLS handshake with {url} failed: {source}")]
    Io {
        url: Arc<str>,
        source: std::io::Error,
    },
}

impl Tls {
    /// The client configuration for `url` (an `https://` origin). A missing or unusable
    /// `ca_file`, or no trusted root at all, is a configuration error naming the key.
    pub fn new(url: &Url, ca_file: Option<&Path>) -> Result<Tls, Error> {
        let text = url.as_str().trim_end_matches('/');
        let server_name = match url.host() {
            Some(url::Host::Domain(name)) => ServerName::try_from(name.to_owned()),
            Some(url::Host::Ipv4(ip)) => Ok(ServerName::from(std::net::IpAddr::from(ip))),
            Some(url::Host::Ipv6(ip)) => Ok(ServerName::from(std::net::IpAddr::from(ip))),
            None => {
                return Err(Error::Config(format!(
                    "upstream.url = {text:?}: missing host"
                )))
            }
        }
        .map_err(|e| {
            Error::Config(format!(
                "upstream.url = {text:?}: not a usable TLS server name: {e}"
            ))
        })?;

        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "reading the system's CA certificates");
        }
        let (system, _) = roots.add_parsable_certificates(native.certs);
        let mut own = 0;
        if let Some(path) = ca_file {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::Config(format!(
                        "upstream.ca_file = {:?}: cannot read PEM certificates: {e}",
                        shown.to_string()
                    ))
                })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "upstream.ca_file = {:?}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
                    shown.to_string()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    Error::Config(format!(
                        "upstream.ca_file = {:?}: not a usable CA certificate: {e}",
                        shown.to_string()
                    ))
                })?;
                own += 1;
            }
        }
        if roots.is_empty() {
            return Err(Error::Config(format!(
                "upstream.url = {text:?}: no trusted CA certificates: the system has none \
                 (install ca-certificates, or set SSL_CERT_FILE) and upstream.ca_file is not set"
            )));
        }
        tracing::debug!(system, ca_file = own, "trusted roots for the upstream");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            url: Arc::from(text),
        })
    }

    /// Runs the handshake over a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> HandshakeError {
        let url = self.url.clone();
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => HandshakeError::Refused {
                reason: self.reason(tls),
                url,
            },
            None => HandshakeError::Io { url, source: e },
        }
    }

    /// The cause in words an operator can act on.
    fn reason(&self, e: &rustls::Error) -> String {
        let host = match &self.server_name {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        };
        match e {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "certificate not trusted: it is not signed by a trusted CA \
                 (the system's roots, SSL_CERT_FILE, upstream.ca_file)"
                    .to_owned()
            }
            rustls::Error::InvalidCertificate(
                c @ (CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. }),
            ) => format!("certificate does not match the host name {host}: {c}"),
            rustls::Error::InvalidCertificate(c) => format!("certificate refused: {c}"),
            rustls::Error::InvalidMessage(_) => format!(
                "{e} (does the upstream speak TLS on this port? a plain HTTP server needs \
                 an http:// upstream.url)"
            ),
            other => other.to_string(),
        }
    }

    /// The negotiated protocol of an established connection, for `check-config`.
    pub fn describe(stream: &TlsStream<TcpStream>) -> String {
        let (_, conn) = stream.get_ref();
        let version = conn
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let suite = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("?");
        let alpn = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_else(|| "none".to_owned());
        format!("{version}, {suite}, ALPN {alpn}")
    }
}
