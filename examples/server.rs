//! A demo API authenticated by keygate, for one of the four product profiles.
//!
//! ```sh
//! cargo run --example server --features axum -- --profile mailjawn --store memory --listen 127.0.0.1:8080
//! cargo run --example server --features axum,sqlite -- --store sqlite:keys.db
//! cargo run --example server --features axum,postgres -- --store postgres:postgres://postgres@127.0.0.1/test
//! cargo run --example server --features axum,smtp -- --profile mailjet --smtp 127.0.0.1:2525
//! cargo run --example server --features axum,sessions -- --profile mailkite
//! ```
//!
//! MailKite's sign-up, login and logout (`/api/auth/*`) need the `sessions`
//! feature; the session signing key is generated at each start.
//!
//! With a database store the pepper comes from `KEYGATE_PEPPER` (at least 32
//! bytes); without it a fixed demo pepper is used, which is never fit for
//! production.
//!
//! SIGINT or SIGTERM stops it gracefully: it stops accepting connections,
//! finishes the requests in flight, writes the last-used times still held in
//! memory, prints `stopped; flushed last-used times of N keys` and exits 0.
//!
//! It prints `admin key: <key>` (a Full Access key for a fresh account, or the
//! key given in `KEYGATE_ADMIN_KEY`, imported) and `listening on <addr>`. The
//! demo's own routes are in `examples/server_app/mod.rs`, the key-management
//! routes come from `keygate::routes`, and the README's "HTTP with axum"
//! section walks through a curl session.

#[path = "server_app/mod.rs"]
mod server_app;

use std::net::SocketAddr;
use std::sync::Arc;

use keygate::{ApiKeys, KeyStore, Pepper};
use server_app::{Options, Product};

const USAGE: &str = "usage: server [--profile mailjawn|mailjet|mailchannels|mailkite] \
[--store memory|sqlite:PATH|postgres:URL] [--listen ADDR] [--trust-forwarded-proto] [--smtp ADDR]

  --profile NAME            product profile (default mailjawn)
  --store STORE             memory (default), sqlite:PATH (feature sqlite) or
                            postgres:URL (feature postgres)
  --listen ADDR             address to listen on (default 127.0.0.1:8080)
  --trust-forwarded-proto   trust X-Forwarded-Proto for the HTTPS-only guard
  --smtp ADDR               also accept mail over SMTP, AUTH with the key pair
                            (--profile mailjet, feature smtp)
  KEYGATE_ADMIN_KEY         import this key as the admin key instead of creating one
  KEYGATE_PEPPER            the hashing pepper for a database store (32+ bytes)";

const DEMO_PEPPER: &[u8; 32] = b"demo-pepper-not-for-production!!";

struct Args {
    product: Product,
    store: String,
    listen: SocketAddr,
    smtp: Option<SocketAddr>,
    options: Options,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        product: Product::MailJawn,
        store: "memory".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        smtp: None,
        options: Options::default(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--profile" => {
                let name = value("--profile")?;
                parsed.product =
                    Product::parse(&name).ok_or_else(|| format!("unknown profile '{name}'"))?;
            }
            "--store" => parsed.store = value("--store")?,
            "--listen" => {
                let addr = value("--listen")?;
                parsed.listen = addr
                    .parse()
                    .map_err(|_| format!("--listen expects HOST:PORT, got '{addr}'"))?;
            }
            "--smtp" => {
                let addr = value("--smtp")?;
                parsed.smtp = Some(
                    addr.parse()
                        .map_err(|_| format!("--smtp expects HOST:PORT, got '{addr}'"))?,
                );
            }
            "--trust-forwarded-proto" => parsed.options.trust_forwarded_proto = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if message.is_empty() { 0 } else { 2 });
        }
    };
    let profile = args.product.profile();
    let mut builder = ApiKeys::builder(profile);
    let store = open_store(&args.store).await?;
    if let Some(store) = store.keys() {
        let pepper = match std::env::var("KEYGATE_PEPPER") {
            Ok(p) => Pepper::new(1, p.into_bytes())?,
            Err(_) => {
                eprintln!("KEYGATE_PEPPER not set: using the demo pepper");
                Pepper::new(1, DEMO_PEPPER.to_vec())?
            }
        };
        builder = builder.store(store).pepper(pepper);
    }
    // MailKite's dashboard signs in with session tokens, kept beside the keys.
    #[cfg(feature = "sessions")]
    if args.product == Product::MailKite {
        let sessions = keygate::session::Sessions::builder("keygate-demo", "mailkite-dashboard")
            .signing_key(keygate::session::SessionKey::generate_ed25519("demo-1")?)
            .store(store.sessions())
            .build()?;
        builder = builder.sessions(sessions);
    }
    let api = builder.build()?;
    // Last-used times are written behind, every 5 s and once more at shutdown.
    let flusher = api.spawn_last_used_flusher(std::time::Duration::from_secs(5));
    let import = std::env::var("KEYGATE_ADMIN_KEY").ok();
    let admin = server_app::admin_key(&api, import.as_deref()).await?;
    println!("admin key: {admin}");

    if let Some(addr) = args.smtp {
        start_smtp(args.product, &api, addr).await?;
    }
    let router = server_app::router(args.product, api, args.options)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    // On SIGINT or SIGTERM: stop accepting, let requests in flight finish,
    // then write the last-used times still in memory.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    let written = flusher.shutdown().await?;
    println!("stopped; flushed last-used times of {written} keys");
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                eprintln!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// The store `--store` names.
enum Store {
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite(Arc<keygate::SqliteStore>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<keygate::PostgresStore>),
}

impl Store {
    /// The key store; `None` for memory (the service's default).
    fn keys(&self) -> Option<Arc<dyn KeyStore>> {
        match self {
            Self::Memory => None,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => Some(Arc::clone(s) as Arc<dyn KeyStore>),
            #[cfg(feature = "postgres")]
            Self::Postgres(s) => Some(Arc::clone(s) as Arc<dyn KeyStore>),
        }
    }

    /// Where session epochs are kept: the same database as the keys.
    #[cfg(feature = "sessions")]
    fn sessions(&self) -> Arc<dyn keygate::session::SessionStore> {
        match self {
            Self::Memory => Arc::new(keygate::session::MemorySessionStore::new()),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => Arc::clone(s) as Arc<dyn keygate::session::SessionStore>,
            #[cfg(feature = "postgres")]
            Self::Postgres(s) => Arc::clone(s) as Arc<dyn keygate::session::SessionStore>,
        }
    }
}

/// The store named by `--store`, migrated.
async fn open_store(spec: &str) -> Result<Store, Box<dyn std::error::Error>> {
    if spec == "memory" {
        return Ok(Store::Memory);
    }
    if let Some(path) = spec.strip_prefix("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            let store = keygate::SqliteStore::open(path).await?;
            store.migrate().await?;
            return Ok(Store::Sqlite(Arc::new(store)));
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(format!("store sqlite:{path} needs --features sqlite").into());
    }
    if let Some(url) = spec.strip_prefix("postgres:") {
        #[cfg(feature = "postgres")]
        {
            let store = keygate::PostgresStore::connect(url).await?;
            store.migrate().await?;
            return Ok(Store::Postgres(Arc::new(store)));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(format!("store postgres:{url} needs --features postgres").into());
    }
    Err(format!("unknown store '{spec}': use memory, sqlite:PATH or postgres:URL").into())
}

/// Serves SMTP submission on `addr` for a key-pair product (Mailjet): the
/// API key and secret key are the AUTH username and password. Accepted
/// messages are printed, not sent.
#[cfg(feature = "smtp")]
async fn start_smtp(
    product: Product,
    api: &ApiKeys,
    addr: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    use keygate::smtp::{SmtpConfig, SmtpServer};
    if product != Product::Mailjet {
        return Err("--smtp needs --profile mailjet (key pairs are the SMTP credentials)".into());
    }
    let server = SmtpServer::new(api.clone(), SmtpConfig::default());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("smtp listening on {}", listener.local_addr()?);
    tokio::spawn(async move {
        let served = server
            .serve(listener, |message| {
                println!(
                    "smtp: message from {} ({} bytes) for {}",
                    message.principal.account(),
                    message.data.len(),
                    message.recipients.join(", ")
                );
            })
            .await;
        if let Err(e) = served {
            eprintln!("smtp listener stopped: {e}");
        }
    });
    Ok(())
}

#[cfg(not(feature = "smtp"))]
async fn start_smtp(
    _: Product,
    _: &ApiKeys,
    _: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    Err("--smtp needs --features smtp".into())
}
