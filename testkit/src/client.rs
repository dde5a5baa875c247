//! Client helpers: a tonic channel over TLS with an optional client
//! certificate, and the generated `Orders` client.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use crate::proto::orders_client::OrdersClient;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// `https://127.0.0.1:8443` or `http://…` for h2c.
    pub url: String,
    /// CA that signed the server certificate.
    pub ca_pem: Option<String>,
    /// Client certificate and key, PEM.
    pub identity: Option<(String, String)>,
    /// TLS server name to verify (default `localhost`).
    pub server_name: String,
}

impl Target {
    pub fn tls(url: impl Into<String>, ca_pem: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_pem: Some(ca_pem.into()),
            identity: None,
            server_name: "localhost".into(),
        }
    }

    pub fn with_identity(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }
}

/// Connect a channel (the TLS handshake happens here).
pub async fn connect(t: &Target) -> Result<Channel, tonic::transport::Error> {
    let mut ep = Endpoint::from_shared(t.url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(ca) = &t.ca_pem {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(t.server_name.clone());
        if let Some((c, k)) = &t.identity {
            tls = tls.identity(Identity::from_pem(c, k));
        }
        ep = ep.tls_config(tls)?;
    }
    ep.connect().await
}

/// An `Orders` client that accepts messages up to 16 MiB.
pub fn orders(ch: Channel) -> OrdersClient<Channel> {
    OrdersClient::new(ch)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024)
}
