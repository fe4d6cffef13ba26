//! `001_1096317fca88c73a.txt` (Mailjet): "The API Key and Secret Key are
//! required to configure SMTP parameters for sending emails directly from
//! your email client or program." A real SMTP client (lettre) sends through
//! `keygate::smtp::SmtpServer` over a real socket, and raw sessions check
//! the protocol's refusals.
#![cfg(feature = "smtp")]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use keygate::smtp::{Message, SmtpConfig, SmtpServer};
use keygate::{profiles, AccountId, ApiKeys, CreateKey, NewKey};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Smtp {
    api: ApiKeys,
    port: u16,
    delivered: Arc<Mutex<Vec<Message>>>,
}

async fn start(config: SmtpConfig) -> Smtp {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let server = SmtpServer::new(api.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&delivered);
    tokio::spawn(async move {
        server
            .serve(listener, move |m| sink.lock().unwrap().push(m))
            .await
    });
    Smtp {
        api,
        port,
        delivered,
    }
}

/// A key for the account `acme`, made on `api`.
async fn acme_key(api: &ApiKeys) -> (AccountId, NewKey) {
    let acme = AccountId::new("acme").unwrap();
    let key = api
        .as_account(&acme)
        .create(&acme, CreateKey::new("smtp"))
        .await
        .unwrap();
    (acme, key)
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The base64 initial response of `AUTH PLAIN` for `public` and `secret`.
fn plain_response(public: &str, secret: &str) -> String {
    b64(&format!("\0{public}\0{secret}"))
}

/// The reply code of one step of a session, if it replies.
fn step_code(step: keygate::smtp::Step) -> Option<u16> {
    step.reply.map(|r| r.code())
}

fn pair(key: &NewKey) -> (String, String) {
    let presented = key.key.to_presented().to_string();
    let (public, secret) = presented.split_once(':').unwrap();
    (public.to_owned(), secret.to_owned())
}

/// Sends one message with lettre, authenticating with `mechanism`.
async fn send(
    port: u16,
    (public, secret): &(String, String),
    mechanism: Mechanism,
) -> Result<(), lettre::transport::smtp::Error> {
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .credentials(Credentials::new(public.clone(), secret.clone()))
        .authentication(vec![mechanism])
        .build();
    let email = lettre::Message::builder()
        .from("Sender <sender@example.com>".parse().unwrap())
        .to("Recipient <recipient@example.net>".parse().unwrap())
        .subject("Hello over SMTP")
        .body(String::from("Hello! Sent with a Mailjet key pair."))
        .unwrap();
    mailer.send(email).await.map(drop)
}

fn code(e: &lettre::transport::smtp::Error) -> String {
    e.status().map(|c| c.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_sends_with_the_account_key_pair_and_not_with_a_reset_secret() {
    let smtp = start(SmtpConfig::default()).await;
    let (acme, key) = acme_key(&smtp.api).await;
    let old = pair(&key);
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        send(smtp.port, &old, mechanism).await.unwrap();
    }
    {
        let delivered = smtp.delivered.lock().unwrap();
        assert_eq!(delivered.len(), 2);
        assert_eq!(delivered[0].principal.account(), &acme);
        assert_eq!(delivered[0].principal.key_id(), &key.info.id);
        assert_eq!(delivered[0].sender, "sender@example.com");
        assert_eq!(delivered[0].recipients, ["recipient@example.net"]);
        let text = String::from_utf8_lossy(&delivered[0].data);
        assert!(text.contains("Subject: Hello over SMTP"), "{text}");
    }

    // "If you suspect your credentials have been compromised, reset your
    // Secret Key immediately": the old secret gets 535 at once.
    let reset = smtp
        .api
        .as_account(&acme)
        .reset_secret(&key.info.id)
        .await
        .unwrap();
    let refused = send(smtp.port, &old, Mechanism::Plain).await.unwrap_err();
    assert_eq!(code(&refused), "535", "{refused}");
    let new = pair(&reset);
    assert_eq!(new.0, old.0, "the public key stays");
    send(smtp.port, &new, Mechanism::Plain).await.unwrap();
    assert_eq!(smtp.delivered.lock().unwrap().len(), 3);
}

// "A subaccount is an account nested under your primary Mailjet account,
// identified by a different API key."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_sends_as_the_sub_account_with_its_pair() {
    let smtp = start(SmtpConfig::default()).await;
    let acme = AccountId::new("acme").unwrap();
    let eu = smtp
        .api
        .as_account(&acme)
        .create_sub_account(&acme, "eu")
        .await
        .unwrap();
    let key = smtp
        .api
        .as_account(&acme)
        .create(&eu, CreateKey::new("eu smtp"))
        .await
        .unwrap();
    send(smtp.port, &pair(&key), Mechanism::Login)
        .await
        .unwrap();
    let delivered = smtp.delivered.lock().unwrap();
    assert_eq!(delivered[0].principal.account(), &eu);
    assert_eq!(delivered[0].principal.account().as_str(), "acme/eu");
}

/// A raw SMTP client: sends lines, reads replies.
struct Raw {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (r, w) = stream.into_split();
        let mut raw = Self {
            reader: BufReader::new(r),
            writer: w,
        };
        assert!(raw.reply().await.starts_with("220 "));
        raw
    }

    /// The whole (possibly multi-line) reply; empty when the server closed.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, line: &[u8]) -> String {
        self.writer.write_all(line).await.unwrap();
        self.writer.write_all(b"\r\n").await.unwrap();
        self.reply().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_only_after_auth_and_malformed_auth_is_a_syntax_error() {
    let smtp = start(SmtpConfig::default()).await;
    let mut raw = Raw::connect(smtp.port).await;
    let ehlo = raw.send(b"EHLO client.example").await;
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(raw
        .send(b"MAIL FROM:<a@example.com>")
        .await
        .starts_with("530 5.7.0"));
    assert!(raw.send(b"AUTH PLAIN !!!").await.starts_with("501 5.5.2"));
    // base64("apikey\0secret"): one NUL only.
    assert!(raw
        .send(b"AUTH PLAIN YXBpa2V5AHNlY3JldA==")
        .await
        .starts_with("501 5.5.2"));
    assert!(raw
        .send(b"AUTH LOGIN")
        .await
        .starts_with("334 VXNlcm5hbWU6"));
    assert!(raw.send(b"*").await.starts_with("501 5.7.0"));
    assert!(raw.send(b"AUTH CRAM-MD5").await.starts_with("504 "));
    // A line over the limit is refused and the connection closed.
    let long = vec![b'A'; keygate::smtp::MAX_AUTH_LINE + 10];
    assert!(raw.send(&long).await.starts_with("500 5.5.6"));
    assert_eq!(raw.reply().await, "");
    assert!(smtp.delivered.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_auth_is_limited_per_connection_and_per_address() {
    let mut config = SmtpConfig::default();
    config.address_failures = keygate::Quota::per_minute(std::num::NonZeroU32::new(4).unwrap());
    let smtp = start(config).await;
    let (_, key) = acme_key(&smtp.api).await;
    let (public, _) = pair(&key);
    let wrong = format!("AUTH PLAIN {}", plain_response(&public, &"0".repeat(32)));
    let mut raw = Raw::connect(smtp.port).await;
    raw.send(b"EHLO client.example").await;
    assert!(raw.send(wrong.as_bytes()).await.starts_with("535 5.7.8"));
    assert!(raw.send(wrong.as_bytes()).await.starts_with("535 5.7.8"));
    // The third failure on one connection closes it.
    assert!(raw.send(wrong.as_bytes()).await.starts_with("421 4.7.0"));
    assert_eq!(raw.reply().await, "");

    // The address has spent 3 of its 4; the fourth blocks it, so even the
    // right pair is not checked from there for now.
    let mut raw = Raw::connect(smtp.port).await;
    raw.send(b"EHLO client.example").await;
    assert!(raw.send(wrong.as_bytes()).await.starts_with("535 5.7.8"));
    let right = {
        let (p, s) = pair(&key);
        format!("AUTH PLAIN {}", plain_response(&p, &s))
    };
    assert!(raw.send(right.as_bytes()).await.starts_with("454 4.7.0"));
}

#[tokio::test]
async fn auth_over_plaintext_is_refused_except_from_loopback() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let server = SmtpServer::new(api, SmtpConfig::default());
    let remote = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let mut session = server.session(remote, false);
    let ehlo = session.handle(b"EHLO client.example").await.reply.unwrap();
    assert!(!ehlo.to_wire().contains("AUTH"), "not advertised");
    let auth = session.handle(b"AUTH PLAIN AGEAYg==").await.reply.unwrap();
    assert_eq!(auth.code(), 538);
    // Behind TLS (secure = true) the same address may authenticate.
    let mut secure = server.session(remote, true);
    let ehlo = secure.handle(b"EHLO client.example").await.reply.unwrap();
    assert!(ehlo.to_wire().contains("250-AUTH PLAIN LOGIN"));
    let auth = secure.handle(b"AUTH PLAIN AGEAYg==").await.reply.unwrap();
    assert_eq!(auth.code(), 535, "a malformed pair is a bad credential");
    let quit = secure.handle(b"QUIT").await;
    assert!(quit.close);
    assert_eq!(quit.reply.unwrap().code(), 221);
}

#[tokio::test]
async fn the_state_machine_orders_mail_rcpt_data_and_rset() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let (_, key) = acme_key(&api).await;
    let server = SmtpServer::new(api, SmtpConfig::default());
    let mut s = server.session(IpAddr::V4(Ipv4Addr::LOCALHOST), false);
    assert_eq!(
        step_code(s.handle(b"AUTH LOGIN").await),
        Some(503),
        "EHLO first"
    );
    assert_eq!(step_code(s.handle(b"EHLO me").await), Some(250));
    let (public, secret) = pair(&key);
    let login = format!("AUTH LOGIN {}", b64(&public));
    assert_eq!(step_code(s.handle(login.as_bytes()).await), Some(334));
    assert_eq!(
        step_code(s.handle(b64(&secret).as_bytes()).await),
        Some(235)
    );
    assert_eq!(step_code(s.handle(b"AUTH LOGIN").await), Some(503));
    assert_eq!(step_code(s.handle(b"RCPT TO:<b@x>").await), Some(503));
    assert_eq!(step_code(s.handle(b"DATA").await), Some(503));
    assert_eq!(
        step_code(s.handle(b"MAIL FROM:<a@x> SIZE=10").await),
        Some(250)
    );
    assert_eq!(step_code(s.handle(b"RSET").await), Some(250));
    assert_eq!(step_code(s.handle(b"RCPT TO:<b@x>").await), Some(503));
    assert_eq!(step_code(s.handle(b"MAIL FROM:a@x").await), Some(501));
    assert_eq!(step_code(s.handle(b"mail from:<a@x>").await), Some(250));
    assert_eq!(step_code(s.handle(b"RCPT TO:<b@x>").await), Some(250));
    assert_eq!(step_code(s.handle(b"NOOP").await), Some(250));
    assert_eq!(step_code(s.handle(b"DATA").await), Some(354));
    assert_eq!(step_code(s.handle(b"Subject: hi").await), None);
    assert_eq!(step_code(s.handle(b"..leading dot").await), None);
    let end = s.handle(b".").await;
    let message = end.message.unwrap();
    assert_eq!(message.data, b"Subject: hi\r\n.leading dot\r\n");
    assert_eq!(message.recipients, ["b@x"]);
    assert_eq!(end.reply.unwrap().code(), 250);
    assert_eq!(step_code(s.handle(b"BOGUS").await), Some(500));
    assert_eq!(step_code(s.handle(&[0xff, 0xfe]).await), Some(500));
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_session_goes_on() {
    let api = ApiKeys::in_memory(profiles::mailjet()).unwrap();
    let (_, key) = acme_key(&api).await;
    let mut config = SmtpConfig::default();
    config.max_message_bytes = 16;
    let server = SmtpServer::new(api, config);
    let mut s = server.session(IpAddr::V4(Ipv4Addr::LOCALHOST), false);
    let _ = s.handle(b"EHLO me").await;
    let (public, secret) = pair(&key);
    let plain = plain_response(&public, &secret);
    assert_eq!(step_code(s.handle(b"AUTH PLAIN").await), Some(334));
    assert_eq!(step_code(s.handle(plain.as_bytes()).await), Some(235));
    for line in ["MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA"] {
        let _ = s.handle(line.as_bytes()).await;
    }
    assert_eq!(step_code(s.handle(b"0123456789abcdef0123").await), None);
    let end = s.handle(b".").await;
    assert!(end.message.is_none());
    assert_eq!(end.reply.unwrap().code(), 552);
    assert_eq!(step_code(s.handle(b"MAIL FROM:<a@x>").await), Some(250));
}
