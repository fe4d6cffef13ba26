//! SMTP AUTH for key pairs (feature `smtp`): Mailjet's API key and secret
//! key are also the SMTP username and password.
//!
//! - [`auth`] decodes `AUTH PLAIN` (RFC 4616) and `AUTH LOGIN` exchanges into
//!   [`SmtpCredentials`], which verify through
//!   [`ApiKeys::verify_pair`](crate::ApiKeys::verify_pair). Malformed input
//!   is an [`AuthDecodeError`] that names its SMTP reply (`501`), never a
//!   panic; a pair that does not verify is `535 5.7.8`.
//! - [`Session`] is the protocol state machine of one submission
//!   connection (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP,
//!   QUIT), without I/O: it accepts mail only after AUTH, refuses AUTH over
//!   plaintext except from loopback, and limits failed AUTH attempts per
//!   connection and per client address.
//! - [`SmtpServer`] runs sessions over TCP and hands each accepted message
//!   to your code.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use keygate::smtp::{SmtpConfig, SmtpServer};
//! use keygate::{profiles, ApiKeys};
//!
//! let api = ApiKeys::in_memory(profiles::mailjet())?;
//! let server = SmtpServer::new(api, SmtpConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//! server
//!     .serve(listener, |message| {
//!         println!("mail from {} for {:?}", message.principal.account(), message.recipients);
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

pub mod auth;
mod server;
mod session;

pub use auth::{AuthDecodeError, SmtpCredentials, MAX_AUTH_LINE};
pub use server::SmtpServer;
pub use session::{Message, Reply, Session, SmtpConfig, Step};
