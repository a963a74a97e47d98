//! HTTPS upstreams for the tests: a throw-away CA and server certificates made with
//! rcgen, and a TLS terminator (tokio-rustls) that accepts TLS on a free 127.0.0.1
//! port and forwards the decrypted bytes to a real upstream's plain HTTP port, the way
//! a TLS-terminating front end of a hosted CalDAV server does.
//!
//! The terminator runs on a thread of its own (its own runtime), so it outlives the
//! runtime of any one test; dropping it stops it. It records the server name (SNI) and
//! the ALPN protocol of every completed handshake, and the error of every failed one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority that exists only for one test.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("calattach test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// The CA certificate as PEM, written to `dir/<file>`; returns the path.
    pub fn write_pem(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).expect("write CA PEM");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses, as SANs) signed by
    /// this CA, and its key.
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server cert params");
        params
            .distinguished_name
            .push(DnType::CommonName, "calattach test upstream");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("server key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign server cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }
}

/// What the terminator saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// SNI of each completed handshake (`None`: the client sent none).
    pub server_names: Vec<Option<String>>,
    /// ALPN protocol of each completed handshake.
    pub alpn: Vec<Option<String>>,
    /// Each failed handshake's error.
    pub failures: Vec<String>,
}

/// TLS on `127.0.0.1:<port>` in front of `backend` (a plain HTTP port on 127.0.0.1).
pub struct Terminator {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Terminator {
    /// Serves the certificate `ca` issues for `names`.
    pub fn start(ca: &Ca, names: &[&str], backend: u16) -> Terminator {
        let (chain, key) = ca.issue(names);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind terminator");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let record = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("terminator runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    let acceptor = acceptor.clone();
                    let record = record.clone();
                    tokio::spawn(async move {
                        let mut tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(e) => {
                                record.lock().unwrap().failures.push(e.to_string());
                                return;
                            }
                        };
                        {
                            let (_, conn) = tls.get_ref();
                            let mut seen = record.lock().unwrap();
                            seen.server_names
                                .push(conn.server_name().map(str::to_owned));
                            seen.alpn.push(
                                conn.alpn_protocol()
                                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                            );
                        }
                        let Ok(mut plain) =
                            tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        Terminator {
            port,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://<host>:<port>` (no trailing slash).
    pub fn origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
