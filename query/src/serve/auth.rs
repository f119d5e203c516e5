//! Who may connect: SCRAM-SHA-256 password authentication for one user, and the
//! TLS settings that carry it.
//!
//! The password itself is never kept: at start the server derives the SCRAM
//! salted password (PBKDF2, [`SCRAM_ITERATIONS`]) with a random salt, as
//! PostgreSQL stores `rolpassword`. An unknown user name gets a verifier that no
//! password matches, so a client cannot tell a wrong user from a wrong password.
//! Each failed attempt waits [`FAILED_LOGIN_DELAY`] before the error, which
//! makes guessing slow.
//!
//! With TLS configured, SCRAM-SHA-256-PLUS (channel binding to the server
//! certificate) is offered too, so a man in the middle cannot relay the login.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, gen_salted_password, random_nonce};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::PgWireResult;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// Pause before answering a failed login.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// The one user that may log in, with its SCRAM verifier.
pub struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Derives the verifier of `password` for `user` (takes a few milliseconds).
    pub fn new(user: &str, password: &str) -> Self {
        let salt = random_nonce().into_bytes();
        let salted_password = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Self {
            user: user.to_string(),
            salt,
            salted_password,
        }
    }

    /// The user name that may log in.
    pub fn user(&self) -> &str {
        &self.user
    }
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() == Some(self.user.as_str()) {
            return Ok(Password::new(
                Some(self.salt.clone()),
                self.salted_password.clone(),
            ));
        }
        tracing::info!(
            user = login.user().unwrap_or(""),
            host = login.host(),
            "login with an unknown user name"
        );
        // A verifier no password matches: the exchange fails at the proof, like
        // a wrong password.
        Ok(Password::new(
            Some(self.salt.clone()),
            random_nonce().into_bytes(),
        ))
    }
}

/// TLS for the endpoint: the acceptor and the certificate PEM (for channel
/// binding).
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub cert_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Loads a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Tls> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Serve {
            context: format!("reading {}", path.display()),
            source,
        })
    };
    let bad = |path: &Path, what: String| Error::Config(format!("{}: {what}", path.display()));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate found".to_string()));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| bad(cert, format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem,
    })
}
