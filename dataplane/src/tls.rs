//! TLS certificates: the client listener's (`tls_listen` with `[tls]`) and the backend
//! connections' (`[backend] tls`), loaded from PEM files into rustls configurations.
//!
//! Both are read at start, and again on every reload (SIGHUP, `POST /-/reload`): the new
//! files are read and checked completely first, and only then published, so connections
//! opened after a reload use the new certificates while open ones keep theirs. Files that
//! cannot be read or used refuse the whole reload and the running certificates stay. Turning
//! TLS on or off, or moving `tls_listen`, needs a restart.
//!
//! The cryptography is rustls's `ring` provider, named explicitly rather than taken from a
//! process-wide default, so no other crate's choice of provider can change it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use redshard_config::{BackendTlsConfig, Config, NodeAddr, TlsConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{client, TlsAcceptor, TlsConnector};

/// A TLS file that cannot be used; the proxy does not start, or the reload is refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{key} {}: cannot read: {source}", path.display())]
    Read {
        /// The configuration key naming the file (`tls.cert_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: io::Error,
    },
    /// The file holds nothing usable of what the key asks for.
    #[error("{key} {}: {reason}", path.display())]
    Invalid {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files are usable one by one but not together, or a setting is refused.
    #[error("{key}: {reason}")]
    Setting {
        /// The configuration key at fault.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The TLS of a running proxy: what is configured, loaded.
#[derive(Debug, Default)]
pub struct Tls {
    /// The client listener's certificate, when `tls_listen` is set.
    pub server: Option<Arc<ServerTls>>,
    /// The backend connections' trust and client certificate, when `[backend] tls` is on.
    pub backend: Option<Arc<BackendTls>>,
}

impl Tls {
    /// Loads the TLS that `config` asks for.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not match the
    /// certificate.
    pub fn load(config: &Config) -> Result<Self, TlsError> {
        Ok(Self {
            server: config
                .tls
                .as_ref()
                .map(|tls| ServerTls::load(tls).map(Arc::new))
                .transpose()?,
            backend: config
                .backend
                .tls
                .as_ref()
                .map(|tls| BackendTls::load(tls).map(Arc::new))
                .transpose()?,
        })
    }

    /// Reads the files that `file` names for the TLS that runs now (TLS that `file` turns on
    /// or off needs a restart and is not read). Nothing changes before
    /// [`TlsReload::apply`].
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn prepare_reload(&self, file: &Config) -> Result<TlsReload<'_>, TlsError> {
        let server = match (&self.server, &file.tls) {
            (Some(_), Some(tls)) => Some(server_config(tls)?),
            _ => None,
        };
        let backend = match (&self.backend, &file.backend.tls) {
            (Some(_), Some(tls)) => Some(client_side(tls)?),
            _ => None,
        };
        Ok(TlsReload {
            tls: self,
            server,
            backend,
        })
    }
}

/// TLS material read for a reload, not yet in use.
#[derive(Debug)]
pub struct TlsReload<'a> {
    /// Where it goes.
    tls: &'a Tls,
    /// The listener's new configuration and the fingerprint of its files.
    server: Option<(ServerConfig, u64)>,
    /// The backends' new settings and the fingerprint of their files.
    backend: Option<(ClientSide, u64)>,
}

impl TlsReload<'_> {
    /// Publishes what changed since the last load: new connections use it from now on.
    /// Returns the sections whose files (or settings) changed, as the reload report names
    /// them. Unchanged ones keep their configuration (and its TLS session cache).
    pub fn apply(self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if let (Some(tls), Some((config, fingerprint))) = (&self.tls.server, self.server) {
            if tls.fingerprint.swap(fingerprint, Ordering::AcqRel) != fingerprint {
                tls.config.store(Arc::new(config));
                changed.push("tls (certificate files re-read)");
            }
        }
        if let (Some(tls), Some((side, fingerprint))) = (&self.tls.backend, self.backend) {
            if tls.fingerprint.swap(fingerprint, Ordering::AcqRel) != fingerprint {
                tls.current.store(Arc::new(side));
                changed.push("backend.tls (certificate files re-read)");
            }
        }
        changed
    }
}

/// The client listener's TLS: certificate, key and, for mutual TLS, the clients' CA.
#[derive(Debug)]
pub struct ServerTls {
    /// What new handshakes use; replaced whole on reload.
    config: ArcSwap<ServerConfig>,
    /// Hash of the files `config` was built from, to report whether a reload changed them.
    fingerprint: AtomicU64,
}

impl ServerTls {
    /// Loads `[tls]`.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn load(tls: &TlsConfig) -> Result<Self, TlsError> {
        let (config, fingerprint) = server_config(tls)?;
        Ok(Self {
            config: ArcSwap::from_pointee(config),
            fingerprint: AtomicU64::new(fingerprint),
        })
    }

    /// The acceptor of the next handshake, with the certificates in effect now.
    #[must_use]
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }
}

/// The backend connections' TLS: whom to trust, the name to check and the proxy's own
/// certificate.
#[derive(Debug)]
pub struct BackendTls {
    /// What new connections use; replaced whole on reload.
    current: ArcSwap<ClientSide>,
    /// Hash of the files and settings `current` was built from.
    fingerprint: AtomicU64,
}

/// One generation of backend TLS settings.
#[derive(Debug)]
struct ClientSide {
    /// Trust anchors and client certificate.
    config: Arc<ClientConfig>,
    /// `tls_server_name`; `None` checks each node's own host.
    server_name: Option<ServerName<'static>>,
}

impl BackendTls {
    /// Loads `[backend] tls_*`.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn load(tls: &BackendTlsConfig) -> Result<Self, TlsError> {
        let (side, fingerprint) = client_side(tls)?;
        Ok(Self {
            current: ArcSwap::from_pointee(side),
            fingerprint: AtomicU64::new(fingerprint),
        })
    }

    /// Runs the TLS handshake with `node` over `tcp`, checking the node's certificate against
    /// `tls_server_name`, or else the node's own host.
    ///
    /// # Errors
    /// The node's host is not a name TLS can check (and no `tls_server_name` is set), or the
    /// handshake failed (untrusted or mismatched certificate, a node not speaking TLS); the
    /// message says it was the TLS handshake.
    pub async fn connect(
        &self,
        node: &NodeAddr,
        tcp: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let side = self.current.load_full();
        let name = match &side.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(node.host().to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{:?} is not a name a TLS certificate can carry; set [backend] tls_server_name",
                        node.host()
                    ),
                )
            })?,
        };
        TlsConnector::from(Arc::clone(&side.config))
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))
    }
}

/// The crypto of every TLS configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's configuration from `[tls]`, and the fingerprint of its files.
fn server_config(tls: &TlsConfig) -> Result<(ServerConfig, u64), TlsError> {
    let mut hash = DefaultHasher::new();
    let certs = certificates(&tls.cert_file, "tls.cert_file", &mut hash)?;
    let key = private_key(&tls.key_file, "tls.key_file", &mut hash)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setting("tls", &e))?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let roots = roots(ca, "tls.client_ca_file", &mut hash)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| setting("tls.client_ca_file", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            key: "tls.key_file",
            path: tls.key_file.clone(),
            reason: format!(
                "cannot be used with the certificate of {}: {e}",
                tls.cert_file.display()
            ),
        })?;
    Ok((config, hash.finish()))
}

/// The backends' settings from `[backend] tls_*`, and the fingerprint of their files.
fn client_side(tls: &BackendTlsConfig) -> Result<(ClientSide, u64), TlsError> {
    let mut hash = DefaultHasher::new();
    let roots = roots(&tls.ca_file, "backend.tls_ca_file", &mut hash)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setting("backend.tls", &e))?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        Some(files) => {
            let certs = certificates(&files.cert_file, "backend.tls_cert_file", &mut hash)?;
            let key = private_key(&files.key_file, "backend.tls_key_file", &mut hash)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Invalid {
                    key: "backend.tls_key_file",
                    path: files.key_file.clone(),
                    reason: format!(
                        "cannot be used with the certificate of {}: {e}",
                        files.cert_file.display()
                    ),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    let server_name = match &tls.server_name {
        Some(name) => {
            name.hash(&mut hash);
            Some(
                ServerName::try_from(name.clone()).map_err(|_| TlsError::Setting {
                    key: "backend.tls_server_name",
                    reason: format!("{name:?} is not a name a TLS certificate can carry"),
                })?,
            )
        }
        None => None,
    };
    let side = ClientSide {
        config: Arc::new(config),
        server_name,
    };
    Ok((side, hash.finish()))
}

/// A rustls refusal of a setting, under `key`.
fn setting(key: &'static str, error: &dyn std::fmt::Display) -> TlsError {
    TlsError::Setting {
        key,
        reason: error.to_string(),
    }
}

/// The bytes of `path` (named by `key` in errors), added to `hash`.
fn read(path: &Path, key: &'static str, hash: &mut DefaultHasher) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })?;
    path.hash(hash);
    bytes.hash(hash);
    Ok(bytes)
}

/// Every certificate of the PEM file `path`; at least one.
fn certificates(
    path: &Path,
    key: &'static str,
    hash: &mut DefaultHasher,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, key, hash)?;
    let invalid = |reason: String| TlsError::Invalid {
        key,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no PEM certificate (BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

/// The first private key of the PEM file `path`.
fn private_key(
    path: &Path,
    key: &'static str,
    hash: &mut DefaultHasher,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, key, hash)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        key,
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .into()
            }
            e => format!("not a valid PEM file: {e}"),
        },
    })
}

/// The certificate authorities of the PEM file `path`; at least one, each usable.
fn roots(
    path: &Path,
    key: &'static str,
    hash: &mut DefaultHasher,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, key, hash)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            key,
            path: path.to_owned(),
            reason: format!("holds a certificate that cannot be a trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;
