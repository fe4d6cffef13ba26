//! [`SmtpServer`]: sessions over TCP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::session::Shared;
use super::{Message, Reply, Session, SmtpConfig, MAX_AUTH_LINE};
use crate::ApiKeys;

/// How long a connection may stay silent before it is closed.
const IDLE: Duration = Duration::from_secs(300);

/// An SMTP submission listener whose AUTH verifies key pairs with an
/// [`ApiKeys`]. Cheap to clone. It speaks plaintext SMTP only (no
/// STARTTLS), so AUTH works from loopback clients; put a TLS-terminating
/// proxy in front for anything else and use [`session`](Self::session)
/// with `secure = true` behind it.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    shared: Shared,
}

impl SmtpServer {
    /// A server for `api` (a profile with a key-pair format, e.g.
    /// [`profiles::mailjet`](crate::profiles::mailjet)).
    pub fn new(api: ApiKeys, config: SmtpConfig) -> Self {
        Self {
            shared: Shared::new(api, config),
        }
    }

    /// A session for a client at `peer`; `secure` when the connection is
    /// encrypted (AUTH is then allowed from any address).
    pub fn session(&self, peer: IpAddr, secure: bool) -> Session {
        Session::new(self.shared.clone(), peer, secure)
    }

    /// Accepts connections on `listener` until it fails, serving each in
    /// its own task and handing every accepted message to `deliver`.
    pub async fn serve<F>(&self, listener: TcpListener, deliver: F) -> std::io::Result<()>
    where
        F: Fn(Message) + Send + Sync + 'static,
    {
        let deliver = Arc::new(deliver);
        loop {
            let (stream, peer) = listener.accept().await?;
            let (server, deliver) = (self.clone(), Arc::clone(&deliver));
            tokio::spawn(async move {
                let result = server
                    .serve_connection(stream, peer.ip(), false, |m| deliver(m))
                    .await;
                if let Err(e) = result {
                    tracing::debug!(target: "keygate", error = %e, "smtp connection ended");
                }
            });
        }
    }

    /// Serves one connection: greets, then reads lines (at most
    /// [`MAX_AUTH_LINE`] bytes each; a longer one is answered `500` and the
    /// connection closed) and answers them until QUIT, an error or five
    /// idle minutes.
    pub async fn serve_connection<S, F>(
        &self,
        stream: S,
        peer: IpAddr,
        secure: bool,
        deliver: F,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: Fn(Message),
    {
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = BufReader::new(reader);
        let mut session = self.session(peer, secure);
        writer
            .write_all(session.greeting().to_wire().as_bytes())
            .await?;
        let mut line = Vec::new();
        loop {
            line.clear();
            let limit = (MAX_AUTH_LINE + 2) as u64;
            let mut bounded = (&mut reader).take(limit);
            let read = bounded.read_until(b'\n', &mut line);
            let reply = match tokio::time::timeout(IDLE, read).await {
                Err(_) => Some(Reply::new(421, "4.4.2 Idle too long; closing")),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) if !line.ends_with(b"\n") && line.len() as u64 >= limit => {
                    Some(Reply::new(500, "5.5.6 Line too long"))
                }
                Ok(Ok(_)) if !line.ends_with(b"\n") => return Ok(()),
                Ok(Ok(_)) => None,
            };
            if let Some(reply) = reply {
                writer.write_all(reply.to_wire().as_bytes()).await?;
                return writer.shutdown().await;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let step = session.handle(text).await;
            if let Some(message) = step.message {
                deliver(message);
            }
            if let Some(reply) = step.reply {
                writer.write_all(reply.to_wire().as_bytes()).await?;
            }
            if step.close {
                return writer.shutdown().await;
            }
        }
    }
}
