//! A demo API authenticated by keygate, for one of the four product profiles.
//!
//! ```sh
//! cargo run --example server --features axum -- --profile mailjawn --store memory --listen 127.0.0.1:8080
//! ```
//!
//! It prints `admin key: <key>` (a Full Access key for a fresh account, or the
//! key given in `KEYGATE_ADMIN_KEY`, imported) and `listening on <addr>`. The
//! routes of each profile are listed in `examples/server_app/mod.rs` and the
//! README's "HTTP with axum" section walks through a curl session.

#[path = "server_app/mod.rs"]
mod server_app;

use std::net::SocketAddr;

use keygate::ApiKeys;
use server_app::{Options, Product};

const USAGE: &str = "usage: server [--profile mailjawn|mailjet|mailchannels|mailkite] \
[--store memory] [--listen ADDR] [--trust-forwarded-proto]

  --profile NAME            product profile (default mailjawn)
  --store memory            key store (only memory in this demo)
  --listen ADDR             address to listen on (default 127.0.0.1:8080)
  --trust-forwarded-proto   trust X-Forwarded-Proto for the HTTPS-only guard
  KEYGATE_ADMIN_KEY         import this key as the admin key instead of creating one";

struct Args {
    product: Product,
    listen: SocketAddr,
    options: Options,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        product: Product::MailJawn,
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
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
            "--store" => {
                let store = value("--store")?;
                if store != "memory" {
                    return Err(format!(
                        "unsupported store '{store}': this demo uses memory"
                    ));
                }
            }
            "--listen" => {
                let addr = value("--listen")?;
                parsed.listen = addr
                    .parse()
                    .map_err(|_| format!("--listen expects HOST:PORT, got '{addr}'"))?;
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
    let api = ApiKeys::in_memory(args.product.profile())?;
    let import = std::env::var("KEYGATE_ADMIN_KEY").ok();
    let admin = server_app::admin_key(&api, import.as_deref()).await?;
    println!("admin key: {admin}");

    let router = server_app::router(args.product, api, args.options)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
