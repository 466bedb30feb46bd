//! Binding the TCP listener from a [`ListenAddr`].

use tokio::net::TcpListener;

use super::StartupError;
use crate::config::ListenAddr;

/// Binds `addr`. `":8080"` binds all interfaces, IPv6 and IPv4 where the system allows,
/// else IPv4 only.
pub async fn bind_tcp(addr: &ListenAddr) -> Result<TcpListener, StartupError> {
    let bind = |text: String| async move {
        TcpListener::bind(&text)
            .await
            .map_err(|source| StartupError::Bind { addr: text, source })
    };
    match addr {
        ListenAddr::AnyHost(port) => match bind(format!("[::]:{port}")).await {
            Ok(l) => Ok(l),
            Err(_) => bind(format!("0.0.0.0:{port}")).await,
        },
        ListenAddr::Socket(sa) => bind(sa.to_string()).await,
        ListenAddr::Host(host, port) => bind(format!("{host}:{port}")).await,
    }
}
