//! The `keygate` operator CLI (feature `cli`): run the migrations, mint the
//! first admin key, list, inspect, revoke, rotate and import keys, create
//! sub-accounts, list keys due for a secret reset, and count the keys each
//! pepper version holds — on SQLite or Postgres, without writing code.
//!
//! The binary (`src/bin/keygate.rs`) only calls [`main`]. Every command acts
//! as the trusted operator. The pepper comes only from the environment
//! ([`KEYGATE_PEPPER`](config::PEPPER_VAR) and
//! [`KEYGATE_PREVIOUS_PEPPERS`](config::PREVIOUS_PEPPERS_VAR)), never from a
//! flag, so it stays out of shell history and process listings. A new key's
//! plaintext is printed once, to standard output only; errors are one line on
//! standard error, and the exit code says what kind of failure it was (see
//! [`exit`]).

pub mod config;
mod output;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::service::{ApiKeys, CreateKey, ListOptions, Rotation};
use crate::store::{AccountId, KeyId, StoreError};

/// Exit codes, the same for every command.
pub mod exit {
    /// The command succeeded.
    pub const OK: u8 = 0;
    /// Any failure not listed below (a corrupt record, an internal error).
    pub const FAILURE: u8 = 1;
    /// The arguments are invalid (unknown command or flag, bad value).
    pub const USAGE: u8 = 2;
    /// The configuration is missing or invalid: no database URL, no or a bad
    /// pepper, an unknown profile, or a database that is not migrated or
    /// refuses the credentials.
    pub const CONFIG: u8 = 3;
    /// The key or account does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// The request was refused: an invalid field, a conflict, a key limit, a
    /// revoked or already rotated key.
    pub const REFUSED: u8 = 5;
    /// The database cannot be reached now; retrying later may succeed.
    pub const UNAVAILABLE: u8 = 6;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure
  2  invalid arguments
  3  configuration: no database URL, missing or bad KEYGATE_PEPPER, unknown profile, database not migrated
  4  the key or account does not exist
  5  the request was refused (invalid field, conflict, key limit, revoked or already rotated key)
  6  the database is unavailable (retry later)

Environment:
  DATABASE_URL              postgres://… or sqlite://… (or --database-url)
  KEYGATE_PROFILE           the profile (or --profile)
  KEYGATE_PEPPER            the current pepper: VERSION:HEX or HEX (version 1), at least 32 bytes
  KEYGATE_PREVIOUS_PEPPERS  older peppers still accepted: VERSION:HEX,VERSION:HEX";

/// Manage keygate API keys in a SQLite or Postgres database.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// The database: postgres://… or sqlite://… (sqlite://keys.db?mode=rwc).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The product profile the keys follow: mailjawn, mailjet, mailchannels,
    /// mailkite or default. Use the one your service is built with.
    #[arg(long, global = true, env = "KEYGATE_PROFILE")]
    profile: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the tables (safe to run again).
    Migrate,
    /// Create, list, inspect, revoke, rotate and import keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Pepper rotation.
    #[command(subcommand)]
    Peppers(PeppersCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its plaintext once, to standard output.
    Create {
        #[command(flatten)]
        new: NewKeyArgs,
        /// Expire the key after this long: 90d, 24h, 30m, 2w.
        #[arg(long, value_parser = config::duration)]
        expires: Option<std::time::Duration>,
    },
    /// List an account's keys (redacted).
    List {
        /// The account.
        #[arg(long)]
        account: String,
        /// Include revoked keys.
        #[arg(long)]
        include_revoked: bool,
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after this key id (the previous page's last).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one key (redacted).
    Get {
        /// The key id.
        id: String,
    },
    /// Revoke a key now (it stays listed as revoked).
    Revoke {
        /// The key id.
        id: String,
    },
    /// Replace a key with a new one (same name, grant and limits) and print
    /// the new plaintext once.
    Rotate {
        /// The key id.
        id: String,
        /// Keep the old key working this long (24h, 7d); revoked at once
        /// without it.
        #[arg(long, value_parser = config::duration)]
        grace: Option<std::time::Duration>,
    },
    /// Import a key issued elsewhere; its plaintext is read from standard
    /// input (one line), never from a flag.
    Import {
        #[command(flatten)]
        new: NewKeyArgs,
    },
    /// List active keys whose secret is old enough that the profile
    /// recommends a reset (Mailjet: 90 days).
    DueForReset {
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after this key id (the previous page's last).
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Debug, Args)]
struct NewKeyArgs {
    /// The account the key belongs to.
    #[arg(long)]
    account: String,
    /// The key's name.
    #[arg(long)]
    name: String,
    /// Grant a named bundle of scopes (e.g. full_access).
    #[arg(long, conflicts_with = "scope")]
    bundle: Option<String>,
    /// Grant a scope; repeat for more.
    #[arg(long = "scope", value_name = "SCOPE")]
    scope: Vec<String>,
    /// The key format's label, for profiles with several (MailKite: live, test).
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create a sub-account `PARENT/HANDLE`.
    CreateSub {
        /// The parent account.
        #[arg(long)]
        parent: String,
        /// The sub-account's handle.
        #[arg(long)]
        handle: String,
    },
}

#[derive(Debug, Subcommand)]
enum PeppersCommand {
    /// How many usable keys each pepper version still holds. A version with
    /// none can be removed from KEYGATE_PREVIOUS_PEPPERS.
    Status,
}

/// A failed command: its exit code and a one-line message.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A configuration failure ([`exit::CONFIG`]).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(exit::CONFIG, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound => exit::NOT_FOUND,
            Error::Store(s) => return s.clone().into(),
            _ if e.status() < 500 => exit::REFUSED,
            _ => exit::FAILURE,
        };
        Self::new(code, e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Unavailable(_) => exit::UNAVAILABLE,
            StoreError::Misconfigured(_) => exit::CONFIG,
            StoreError::NotFound => exit::NOT_FOUND,
            StoreError::Corrupt(_) => exit::FAILURE,
            _ => exit::REFUSED,
        };
        Self::new(code, e.to_string())
    }
}

impl From<crate::store::InvalidAccountId> for Failure {
    fn from(e: crate::store::InvalidAccountId) -> Self {
        Self::new(exit::REFUSED, e.to_string())
    }
}

/// Runs the CLI with the process's arguments and environment and returns its
/// exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            let one_line = failure.message.replace(['\n', '\r'], " ");
            eprintln!("keygate: error: {one_line}");
            ExitCode::from(failure.code)
        }
    }
}

fn database_url(global: &Global) -> Result<&str, Failure> {
    global
        .database_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Failure::config("no database: set DATABASE_URL or pass --database-url"))
}

async fn service(global: &Global) -> Result<ApiKeys, Failure> {
    let name = global
        .profile
        .as_deref()
        .ok_or_else(|| Failure::config("no profile: pass --profile or set KEYGATE_PROFILE"))?;
    let profile = config::profile(name)?;
    let hasher = config::hasher_from_env()?;
    let store = config::open_store(database_url(global)?).await?;
    ApiKeys::builder(profile)
        .store(store)
        .hasher(hasher)
        .build()
        .map_err(|e| Failure::config(e.to_string()))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let global = &cli.global;
    let mut out = output::Output::new(global.json);
    match cli.command {
        Command::Migrate => {
            config::migrate(database_url(global)?).await?;
            out.done("migrations applied")
        }
        Command::Peppers(PeppersCommand::Status) => {
            let store = config::open_store(database_url(global)?).await?;
            let counts = store
                .count_by_pepper(time::OffsetDateTime::now_utc())
                .await?;
            out.pepper_status(&counts, config::current_version_from_env())
        }
        Command::Accounts(AccountsCommand::CreateSub { parent, handle }) => {
            let api = service(global).await?;
            let parent = AccountId::new(parent)?;
            let sub = api.operator().create_sub_account(&parent, &handle).await?;
            out.account(&sub)
        }
        Command::Keys(command) => keys(global, command, &mut out).await,
    }
}

async fn keys(
    global: &Global,
    command: KeysCommand,
    out: &mut output::Output,
) -> Result<(), Failure> {
    let api = service(global).await?;
    let manager = api.operator();
    match command {
        KeysCommand::Create { new, expires } => {
            let (account, mut request) = new.request()?;
            if let Some(after) = expires {
                request = request.expires_at(time::OffsetDateTime::now_utc() + after);
            }
            let key = manager.create(&account, request).await?;
            out.new_key(&key)
        }
        KeysCommand::List {
            account,
            include_revoked,
            limit,
            after,
        } => {
            let account = AccountId::new(account)?;
            let options = ListOptions::default()
                .with_include_revoked(include_revoked)
                .with_after(after.map(KeyId::new))
                .with_limit(limit);
            let page = manager.list(&account, options).await?;
            out.page(&page)
        }
        KeysCommand::Get { id } => {
            let info = manager.get(&KeyId::new(id)).await?;
            out.info(&info)
        }
        KeysCommand::Revoke { id } => {
            let id = KeyId::new(id);
            manager.revoke(&id).await?;
            out.revoked(&id)
        }
        KeysCommand::Rotate { id, grace } => {
            let rotation = grace.map_or(Rotation::Immediate, Rotation::Grace);
            let key = manager.rotate(&KeyId::new(id), rotation).await?;
            out.new_key(&key)
        }
        KeysCommand::Import { new } => {
            let (account, request) = new.request()?;
            let plaintext = read_plaintext()?;
            let info = manager.import(&account, &plaintext, request).await?;
            out.info(&info)
        }
        KeysCommand::DueForReset { limit, after } => {
            let options = ListOptions::default()
                .with_after(after.map(KeyId::new))
                .with_limit(limit);
            let page = manager.due_for_reset(options).await?;
            out.page(&page)
        }
    }
}

impl NewKeyArgs {
    fn request(self) -> Result<(AccountId, CreateKey), Failure> {
        let account = AccountId::new(self.account)?;
        let mut request = CreateKey::new(self.name);
        if let Some(bundle) = self.bundle {
            request = request.bundle(bundle);
        }
        if !self.scope.is_empty() {
            request = request.scopes(self.scope);
        }
        if let Some(format) = self.format {
            request = request.format(format);
        }
        Ok((account, request))
    }
}

/// One line from standard input, kept in a zeroizing buffer.
fn read_plaintext() -> Result<zeroize::Zeroizing<String>, Failure> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot read standard input: {e}")))?;
    let trimmed = zeroize::Zeroizing::new(line.trim().to_owned());
    if trimmed.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            "keys import reads the key from standard input, which was empty",
        ));
    }
    Ok(trimmed)
}

/// Writes to standard output, turning a closed pipe into a failure rather
/// than a panic.
fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot write standard output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        assert_eq!(Failure::from(Error::NotFound).code, exit::NOT_FOUND);
        assert_eq!(Failure::from(Error::Revoked).code, exit::REFUSED);
        assert_eq!(
            Failure::from(Error::KeyLimitReached { limit: 1 }).code,
            exit::REFUSED
        );
        let down = StoreError::Unavailable("connection refused".into());
        assert_eq!(Failure::from(Error::Store(down)).code, exit::UNAVAILABLE);
        let unmigrated = StoreError::Misconfigured("no such table".into());
        assert_eq!(Failure::from(unmigrated).code, exit::CONFIG);
        let corrupt = StoreError::Corrupt("bad row".into());
        assert_eq!(Failure::from(corrupt).code, exit::FAILURE);
    }
}
