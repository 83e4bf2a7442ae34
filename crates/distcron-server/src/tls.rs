//! TLS from the shared flags: a gRPC server's settings, a gRPC client's settings, and the
//! warning for tokens sent in clear text.

use std::net::SocketAddr;

use distcron_config::{HttpsArgs, TlsArgs};
use distcron_tls::{ClientTls, Identity, ServerTls, TlsError, GRPC_ALPN, HTTP_ALPN};

/// The node identity (--tls-cert, --tls-key), if configured.
fn identity(args: &TlsArgs) -> Option<Identity> {
    args.tls_cert
        .clone()
        .zip(args.tls_key.clone())
        .map(|(cert, key)| Identity { cert, key })
}

/// The gRPC server's TLS settings: `None` without --tls-cert (plaintext).
pub fn server_tls(args: &TlsArgs) -> Result<Option<ServerTls>, TlsError> {
    identity(args)
        .map(|id| ServerTls::load(&id, args.tls_client_ca.clone(), GRPC_ALPN))
        .transpose()
}

/// The HTTPS listener's TLS settings (HTTP/1.1 and h2): `None` without --https-cert.
pub fn https_tls(args: &HttpsArgs) -> Result<Option<ServerTls>, TlsError> {
    args.https_cert
        .clone()
        .zip(args.https_key.clone())
        .map(|(cert, key)| ServerTls::load(&Identity { cert, key }, None, HTTP_ALPN))
        .transpose()
}

/// The gRPC clients' TLS settings: `None` without --tls-ca (plaintext). The node identity, when
/// configured, is presented to servers that require a client certificate.
/// A certificate without `--tls-ca` is refused: the clients would dial in clear and never
/// present it.
pub fn client_tls(args: &TlsArgs) -> Result<Option<ClientTls>, TlsError> {
    if args.tls_cert.is_some() && args.tls_ca.is_none() {
        return Err(TlsError::Incomplete(
            "--tls-cert is set but --tls-ca is not: this process's gRPC clients would dial in \
             clear text (give the CA that signed the servers' certificates)"
                .into(),
        ));
    }
    args.tls_ca
        .clone()
        .map(|ca| ClientTls::load(ca, identity(args)))
        .transpose()
}

/// Warns when a server that checks tokens listens beyond loopback without TLS: the tokens (and
/// everything else) cross the network in clear text.
pub fn warn_if_tokens_in_clear(what: &str, listen: SocketAddr, tokens: bool, tls: bool) {
    if tokens && !tls && !listen.ip().is_loopback() {
        tracing::warn!(
            server = what,
            %listen,
            "tokens are checked but this server has no TLS: tokens travel in clear text; \
             configure a certificate or listen on loopback behind a TLS proxy"
        );
    }
}
