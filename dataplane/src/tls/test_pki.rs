//! Certificates made by tests: a CA of the test's own and certificates it signs (rcgen).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use redshard_config::CertFiles;

/// A certificate authority made for one test.
pub(crate) struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: OpenSSL (redis-server) finds a certificate's issuer by name.
        params
            .distinguished_name
            .push(DnType::CommonName, "redshard test CA");
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes the CA's certificate to `dir/name`.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.0.pem()).unwrap();
        path
    }

    /// Writes a certificate for `names` signed by this CA, and its key, to `dir/name.crt`
    /// and `dir/name.key`.
    pub(crate) fn issue(&self, dir: &Path, name: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.0).unwrap();
        let files = CertFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        files
    }
}

/// A TLS server (certified for 127.0.0.1) and a backend-side client trusting it, with their
/// files in `dir`.
pub(crate) fn loopback_pair(dir: &Path, name: &str) -> (super::ServerTls, super::BackendTls) {
    let ca = Ca::new();
    let ca_file = ca.write(dir, "ca.crt");
    let files = ca.issue(dir, name, &["127.0.0.1"]);
    let server = super::ServerTls::load(&redshard_config::TlsConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        cert_file: files.cert_file,
        key_file: files.key_file,
        client_ca_file: None,
    })
    .expect("server certificate loads");
    let client = super::BackendTls::load(&redshard_config::BackendTlsConfig {
        ca_file,
        server_name: None,
        client_cert: None,
    })
    .expect("client trust loads");
    (server, client)
}
