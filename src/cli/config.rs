//! What the CLI reads from its environment and arguments: the pepper (only
//! from the environment), durations such as `90d`, profiles by name, and the
//! store a database URL names.

use std::sync::Arc;
use std::time::Duration;

use crate::hash::{Hasher, Pepper};
use crate::profiles::{self, Profile};
use crate::store::{KeyStore, PostgresStore, SqliteStore};

use super::Failure;

/// The variable holding the current pepper: `VERSION:HEX` or `HEX`
/// (version 1), at least 32 bytes.
pub const PEPPER_VAR: &str = "KEYGATE_PEPPER";

/// The variable holding older peppers still accepted when verifying:
/// comma-separated `VERSION:HEX`, e.g. `2:ab12…,1:cd34…`.
pub const PREVIOUS_PEPPERS_VAR: &str = "KEYGATE_PREVIOUS_PEPPERS";

/// The profile named `name` (`mailjawn`, `mailjet`, `mailchannels`,
/// `mailkite` or `default`).
pub fn profile(name: &str) -> Result<Profile, Failure> {
    match name {
        "mailjawn" => Ok(profiles::mailjawn()),
        "mailjet" => Ok(profiles::mailjet()),
        "mailchannels" => Ok(profiles::mailchannels()),
        "mailkite" => Ok(profiles::mailkite()),
        "default" => Ok(profiles::default()),
        other => Err(Failure::config(format!(
            "unknown profile '{other}' (known: mailjawn, mailjet, mailchannels, mailkite, default)"
        ))),
    }
}

/// The hasher the environment describes: [`PEPPER_VAR`] (required) and
/// [`PREVIOUS_PEPPERS_VAR`] (optional). Error messages name the variable,
/// never its value.
pub fn hasher_from(current: Option<&str>, previous: Option<&str>) -> Result<Hasher, Failure> {
    let current = current
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| Failure::config(format!("{PEPPER_VAR} is not set")))?;
    let mut hasher = Hasher::new(pepper(current, true, PEPPER_VAR)?);
    for part in previous
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let old = pepper(part, false, PREVIOUS_PEPPERS_VAR)?;
        hasher = hasher
            .with_previous(old)
            .map_err(|e| Failure::config(format!("{PREVIOUS_PEPPERS_VAR}: {e}")))?;
    }
    Ok(hasher)
}

/// The hasher from the process environment.
pub fn hasher_from_env() -> Result<Hasher, Failure> {
    let current = std::env::var(PEPPER_VAR).ok();
    let previous = std::env::var(PREVIOUS_PEPPERS_VAR).ok();
    hasher_from(current.as_deref(), previous.as_deref())
}

/// The current pepper version from the environment, if a valid pepper is set.
pub fn current_version_from_env() -> Option<u32> {
    hasher_from_env().ok().map(|h| h.current_version())
}

/// Parses `VERSION:HEX` (or bare `HEX` for version 1 when `bare_ok`).
fn pepper(text: &str, bare_ok: bool, var: &str) -> Result<Pepper, Failure> {
    let text = text.trim();
    let (version, hex) = match text.split_once(':') {
        Some((v, h)) => {
            let version = v.trim().parse::<u32>().map_err(|_| {
                Failure::config(format!("{var}: a pepper version must be a number"))
            })?;
            (version, h.trim())
        }
        None if bare_ok => (1, text),
        None => {
            return Err(Failure::config(format!(
                "{var}: expected VERSION:HEX entries separated by commas"
            )))
        }
    };
    let bytes = decode_hex(hex)
        .ok_or_else(|| Failure::config(format!("{var}: the pepper is not hexadecimal")))?;
    Pepper::new(version, bytes).map_err(|e| Failure::config(format!("{var}: {e}")))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a duration such as `90d`, `24h`, `30m` or `45s` (one number and
/// one unit; `w` for weeks too).
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' needs a unit: s, m, h, d or w (e.g. 90d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' must start with a whole number (e.g. 90d)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("unknown unit '{unit}': use s, m, h, d or w")),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{text}' is too long"))
}

/// Opens the store a URL names: `postgres://…`/`postgresql://…` or
/// `sqlite://…` (a plain path is a SQLite file).
pub async fn open_store(url: &str) -> Result<Arc<dyn KeyStore>, Failure> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(Failure::config(
            "the database URL must start with postgres://, postgresql:// or sqlite://",
        ))
    }
}

/// Runs the migrations for the database a URL names.
pub async fn migrate(url: &str) -> Result<(), Failure> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PostgresStore::connect(url).await?.migrate().await?;
    } else if url.starts_with("sqlite:") {
        SqliteStore::connect(url).await?.migrate().await?;
    } else {
        return Err(Failure::config(
            "the database URL must start with postgres://, postgresql:// or sqlite://",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn durations_take_one_number_and_one_unit() {
        assert_eq!(duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert!(duration("90").unwrap_err().contains("needs a unit"));
        assert!(duration("d").unwrap_err().contains("whole number"));
        assert!(duration("5y").unwrap_err().contains("unknown unit"));
        assert!(duration("99999999999999999999d").is_err());
    }

    #[test]
    fn peppers_parse_with_and_without_a_version() {
        let bare = hasher_from(Some(HEX64), None).unwrap();
        assert_eq!(bare.current_version(), 1);
        let versioned = hasher_from(
            Some(&format!("3:{HEX64}")),
            Some(&format!("2:{HEX64}, 1:{HEX64}")),
        )
        .unwrap();
        assert_eq!(versioned.current_version(), 3);
        let stored = Hasher::new(Pepper::new(1, decode_hex(HEX64).unwrap()).unwrap()).hash("s");
        assert!(versioned.verify("s", &stored));
    }

    #[test]
    fn bad_peppers_name_the_variable_never_the_value() {
        let cases = [
            (None, None, "KEYGATE_PEPPER is not set"),
            (Some("abcd"), None, "at least 32 bytes"),
            (Some("zz"), None, "not hexadecimal"),
            (Some("x:abcd"), None, "must be a number"),
            (Some(HEX64), Some(HEX64), "expected VERSION:HEX"),
        ];
        for (current, previous, expected) in cases {
            let err = hasher_from(current, previous).unwrap_err();
            assert!(err.message.contains(expected), "{}", err.message);
            assert!(!err.message.contains(HEX64));
        }
        let dup = hasher_from(Some(HEX64), Some(&format!("1:{HEX64}"))).unwrap_err();
        assert!(dup.message.contains("defined twice"), "{}", dup.message);
    }

    #[test]
    fn profiles_are_found_by_name() {
        for name in ["mailjawn", "mailjet", "mailchannels", "mailkite", "default"] {
            assert!(profile(name).is_ok(), "{name}");
        }
        assert!(profile("nope")
            .unwrap_err()
            .message
            .contains("unknown profile"));
    }
}
