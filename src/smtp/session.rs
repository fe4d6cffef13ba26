//! The SMTP submission state machine, one [`Session`] per connection,
//! without I/O: feed it lines, send back its replies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::auth::{decode_field, decode_login, decode_plain, AuthDecodeError};
use crate::ratelimit::{LocalRateLimiter, Quota};
use crate::{ApiKeys, AuthError, Principal};

/// An SMTP reply: a three-digit code and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply, e.g. `Reply::new(250, "2.0.0 OK")`.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    fn multiline(code: u16, lines: Vec<String>) -> Self {
        Self { code, lines }
    }

    /// The reply code, e.g. 235 or 535.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reply as sent: `250-first\r\n250 last\r\n`.
    ///
    /// ```
    /// use keygate::smtp::Reply;
    /// assert_eq!(Reply::new(235, "2.7.0 Authentication successful").to_wire(),
    ///            "235 2.7.0 Authentication successful\r\n");
    /// ```
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.push_str(&format!("{}{sep}{line}\r\n", self.code));
        }
        out
    }
}

/// How an SMTP listener behaves. Start from [`SmtpConfig::default`] and
/// change what you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SmtpConfig {
    /// The name the server greets with. Default `localhost`.
    pub hostname: String,
    /// Failed AUTH attempts one connection may make; the next failure closes
    /// it with `421`. Default 3.
    pub max_auth_failures: u32,
    /// Failed AUTH attempts one client address may make, over all its
    /// connections; past it, AUTH answers `454` without checking anything
    /// until the quota refills. Default 10 per minute.
    pub address_failures: Quota,
    /// The largest message accepted, in bytes (`552` past it). Default 10 MiB.
    pub max_message_bytes: usize,
    /// Most recipients per message (`452` past it). Default 100.
    pub max_recipients: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        const TEN: NonZeroU32 = NonZeroU32::new(10).unwrap();
        Self {
            hostname: "localhost".into(),
            max_auth_failures: 3,
            address_failures: Quota::per_minute(TEN),
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
        }
    }
}

/// A message accepted after `DATA`, from an authenticated key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message {
    /// The key pair that authenticated the session (its account is the
    /// sender's account; a sub-account's pair sends as the sub-account).
    pub principal: Principal,
    /// The `MAIL FROM` address.
    pub sender: String,
    /// The `RCPT TO` addresses.
    pub recipients: Vec<String>,
    /// The message, dot-unstuffed, lines ending in CRLF.
    pub data: Vec<u8>,
}

/// What a [`Session`] answers to one line.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub struct Step {
    /// The reply to send, if any (none while `DATA` lines are read).
    pub reply: Option<Reply>,
    /// A message accepted by this line (the end of `DATA`).
    pub message: Option<Message>,
    /// True when the connection must be closed after the reply.
    pub close: bool,
}

impl Step {
    fn reply(reply: Reply) -> Self {
        Self {
            reply: Some(reply),
            message: None,
            close: false,
        }
    }

    fn close(reply: Reply) -> Self {
        Self {
            close: true,
            ..Self::reply(reply)
        }
    }
}

/// State shared by the sessions of one listener: the key service, the
/// configuration and failed AUTH attempts by client address.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) api: ApiKeys,
    pub(super) config: Arc<SmtpConfig>,
    failures: Arc<LocalRateLimiter>,
    /// Addresses over their failure quota, until this monotonic time.
    blocked: Arc<Mutex<HashMap<IpAddr, u64>>>,
}

impl Shared {
    pub(super) fn new(api: ApiKeys, config: SmtpConfig) -> Self {
        let failures = LocalRateLimiter::new(Arc::clone(api.clock()));
        Self {
            api,
            config: Arc::new(config),
            failures: Arc::new(failures),
            blocked: Arc::default(),
        }
    }

    fn now(&self) -> u64 {
        self.api.clock().monotonic_nanos()
    }

    fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = self.now();
        let mut blocked = self.blocked.lock();
        blocked.retain(|_, until| *until > now);
        blocked.contains_key(&ip)
    }

    /// Counts a failure for `ip`; blocks it once its quota is spent.
    fn record_failure(&self, ip: IpAddr) {
        let decision = self.failures.check_keyed(
            &ip.to_string(),
            "auth_failures",
            &self.config.address_failures,
        );
        if let Ok(d) = decision {
            if !d.allowed || d.remaining == 0 {
                let wait = d
                    .retry_after
                    .unwrap_or(self.config.address_failures.emission_interval());
                let until = self
                    .now()
                    .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
                self.blocked.lock().insert(ip, until);
            }
        }
    }
}

#[derive(Debug)]
enum State {
    /// Before EHLO/HELO.
    Greeted,
    /// Ready for commands.
    Ready,
    /// `AUTH PLAIN` sent without an initial response.
    AuthPlain,
    /// `AUTH LOGIN`: waiting for the username.
    AuthLoginUser,
    /// `AUTH LOGIN`: waiting for the password.
    AuthLoginPassword(Zeroizing<Vec<u8>>),
    /// Reading message lines until `.`.
    Data,
}

/// One SMTP submission connection's protocol state: EHLO, AUTH
/// PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
///
/// - Mail is accepted only after a successful AUTH (`530` before).
/// - AUTH is refused (`538`) on a plaintext connection except from a
///   loopback address, and not advertised there.
/// - A pair that does not verify is `535 5.7.8`; after
///   [`max_auth_failures`](SmtpConfig::max_auth_failures) the connection is
///   closed with `421`, and an address over its
///   [failure quota](SmtpConfig::address_failures) gets `454` without a check.
///
/// Make sessions with [`SmtpServer::session`](super::SmtpServer::session).
#[derive(Debug)]
pub struct Session {
    shared: Shared,
    peer: IpAddr,
    secure: bool,
    state: State,
    principal: Option<Principal>,
    failures: u32,
    sender: Option<String>,
    recipients: Vec<String>,
    data: Vec<u8>,
    oversized: bool,
}

impl Session {
    pub(super) fn new(shared: Shared, peer: IpAddr, secure: bool) -> Self {
        Self {
            shared,
            peer,
            secure,
            state: State::Greeted,
            principal: None,
            failures: 0,
            sender: None,
            recipients: Vec::new(),
            data: Vec::new(),
            oversized: false,
        }
    }

    /// The `220` greeting to send when the connection opens.
    pub fn greeting(&self) -> Reply {
        Reply::new(
            220,
            format!("{} ESMTP keygate", self.shared.config.hostname),
        )
    }

    /// The key that authenticated this session, once AUTH succeeded.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    fn auth_allowed(&self) -> bool {
        self.secure || self.peer.is_loopback()
    }

    /// Handles one line the client sent, without its CRLF.
    pub async fn handle(&mut self, line: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Data => self.data_line(line),
            State::AuthPlain => {
                let result = decode_plain(line);
                self.finish_auth(result).await
            }
            State::AuthLoginUser => {
                if line.trim_ascii() == b"*" {
                    return Step::reply(AuthDecodeError::Cancelled.reply());
                }
                self.state = State::AuthLoginPassword(Zeroizing::new(line.to_vec()));
                Step::reply(Reply::new(334, "UGFzc3dvcmQ6"))
            }
            State::AuthLoginPassword(user) => {
                let result = decode_login(&user, line);
                self.finish_auth(result).await
            }
            state @ (State::Greeted | State::Ready) => {
                self.state = state;
                self.command(line).await
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Step {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        let greeted = !matches!(self.state, State::Greeted);
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if rest.is_empty() => {
                Step::reply(Reply::new(501, "5.5.4 Syntax: EHLO domain"))
            }
            "EHLO" => {
                self.state = State::Ready;
                self.reset();
                let config = &self.shared.config;
                let mut lines = vec![config.hostname.clone()];
                if self.auth_allowed() {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                lines.push(format!("SIZE {}", config.max_message_bytes));
                lines.push("ENHANCEDSTATUSCODES".into());
                Step::reply(Reply::multiline(250, lines))
            }
            "HELO" => {
                self.state = State::Ready;
                self.reset();
                Step::reply(Reply::new(250, self.shared.config.hostname.clone()))
            }
            "AUTH" if !greeted => Step::reply(Reply::new(503, "5.5.1 Send EHLO first")),
            "AUTH" if self.principal.is_some() => {
                Step::reply(Reply::new(503, "5.5.1 Already authenticated"))
            }
            "AUTH" if !self.auth_allowed() => Step::reply(Reply::new(
                538,
                "5.7.11 Encryption required for requested authentication mechanism",
            )),
            "AUTH" => self.auth(rest).await,
            "MAIL" if self.principal.is_none() => {
                Step::reply(Reply::new(530, "5.7.0 Authentication required"))
            }
            "MAIL" if self.sender.is_some() => {
                Step::reply(Reply::new(503, "5.5.1 Sender already given"))
            }
            "MAIL" => match address(rest, "FROM:") {
                Some(sender) => {
                    self.sender = Some(sender);
                    Step::reply(Reply::new(250, "2.1.0 OK"))
                }
                None => Step::reply(Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>")),
            },
            "RCPT" if self.sender.is_none() => {
                Step::reply(Reply::new(503, "5.5.1 Need MAIL before RCPT"))
            }
            "RCPT" if self.recipients.len() >= self.shared.config.max_recipients => {
                Step::reply(Reply::new(452, "4.5.3 Too many recipients"))
            }
            "RCPT" => match address(rest, "TO:") {
                Some(to) if !to.is_empty() => {
                    self.recipients.push(to);
                    Step::reply(Reply::new(250, "2.1.5 OK"))
                }
                _ => Step::reply(Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>")),
            },
            "DATA" if self.recipients.is_empty() => {
                Step::reply(Reply::new(503, "5.5.1 Need RCPT before DATA"))
            }
            "DATA" => {
                self.state = State::Data;
                Step::reply(Reply::new(354, "End data with <CR><LF>.<CR><LF>"))
            }
            "RSET" => {
                self.reset();
                Step::reply(Reply::new(250, "2.0.0 OK"))
            }
            "NOOP" => Step::reply(Reply::new(250, "2.0.0 OK")),
            "QUIT" => Step::close(Reply::new(221, "2.0.0 Bye")),
            _ => Step::reply(Reply::new(500, "5.5.2 Command not recognized")),
        }
    }

    async fn auth(&mut self, args: &str) -> Step {
        if self.shared.is_blocked(self.peer) {
            return Step::reply(Reply::new(
                454,
                "4.7.0 Too many failed authentication attempts from your address; try later",
            ));
        }
        let (mechanism, initial) = args.split_once(' ').unwrap_or((args, ""));
        match (mechanism.to_ascii_uppercase().as_str(), initial.trim()) {
            ("PLAIN", "") => {
                self.state = State::AuthPlain;
                Step::reply(Reply::new(334, ""))
            }
            ("PLAIN", "=") => self.finish_auth(Err(AuthDecodeError::EmptyField)).await,
            ("PLAIN", initial) => {
                let result = decode_plain(initial.as_bytes());
                self.finish_auth(result).await
            }
            ("LOGIN", "") => {
                self.state = State::AuthLoginUser;
                Step::reply(Reply::new(334, "VXNlcm5hbWU6"))
            }
            ("LOGIN", initial) => match decode_field(initial.as_bytes()) {
                Ok(_) => {
                    self.state = State::AuthLoginPassword(Zeroizing::new(initial.into()));
                    Step::reply(Reply::new(334, "UGFzc3dvcmQ6"))
                }
                Err(e) => Step::reply(e.reply()),
            },
            _ => Step::reply(Reply::new(504, "5.5.4 Unrecognized authentication type")),
        }
    }

    async fn finish_auth(
        &mut self,
        decoded: Result<super::SmtpCredentials, AuthDecodeError>,
    ) -> Step {
        let verified = match decoded {
            Ok(credentials) => credentials.verify(&self.shared.api).await,
            Err(AuthDecodeError::AuthzidMismatch) => Err(AuthError::Invalid),
            Err(e) => return Step::reply(e.reply()),
        };
        match verified {
            Ok(principal) => {
                self.principal = Some(principal);
                Step::reply(Reply::new(235, "2.7.0 Authentication successful"))
            }
            Err(AuthError::Unavailable | AuthError::RateLimited { .. }) => {
                Step::reply(Reply::new(454, "4.7.0 Temporary authentication failure"))
            }
            Err(_) => {
                self.failures += 1;
                self.shared.record_failure(self.peer);
                if self.failures >= self.shared.config.max_auth_failures {
                    return Step::close(Reply::new(
                        421,
                        "4.7.0 Too many failed authentication attempts; closing",
                    ));
                }
                Step::reply(Reply::new(535, "5.7.8 Authentication credentials invalid"))
            }
        }
    }

    fn data_line(&mut self, line: &[u8]) -> Step {
        if line == b"." {
            let data = std::mem::take(&mut self.data);
            // DATA is reachable only after AUTH; without a principal the
            // message is refused rather than assumed.
            let message = match (&self.principal, self.oversized) {
                (Some(principal), false) => Some(Message {
                    principal: principal.clone(),
                    sender: self.sender.take().unwrap_or_default(),
                    recipients: std::mem::take(&mut self.recipients),
                    data,
                }),
                _ => None,
            };
            let too_big = self.oversized;
            self.reset();
            if too_big {
                return Step::reply(Reply::new(552, "5.3.4 Message too big"));
            }
            if message.is_none() {
                return Step::reply(Reply::new(530, "5.7.0 Authentication required"));
            }
            return Step {
                message,
                ..Step::reply(Reply::new(250, "2.0.0 Message accepted"))
            };
        }
        self.state = State::Data;
        let line = line.strip_prefix(b".").unwrap_or(line);
        if self.data.len() + line.len() + 2 > self.shared.config.max_message_bytes {
            self.oversized = true;
        } else if !self.oversized {
            self.data.extend_from_slice(line);
            self.data.extend_from_slice(b"\r\n");
        }
        Step {
            reply: None,
            message: None,
            close: false,
        }
    }

    /// Forgets the mail transaction (not the authentication).
    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
        self.data.clear();
        self.oversized = false;
    }
}

/// The address in `FROM:<a@b> PARAMS` (after the verb), or `None`.
fn address(rest: &str, keyword: &str) -> Option<String> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    let address = &inner[..end];
    if address.len() > 256 || address.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    Some(address.to_owned())
}
