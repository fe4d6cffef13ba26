//! How the CLI prints results: text for people, or JSON with `--json`.
//! A new key's plaintext goes to standard output only, once.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{write_stdout, Failure};
use crate::service::{KeyInfo, NewKey, Page};
use crate::store::{AccountId, KeyId};

/// Where results go.
pub(super) struct Output {
    json: bool,
}

impl Output {
    pub(super) fn new(json: bool) -> Self {
        Self { json }
    }

    fn json(&self, value: &impl Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::new(super::exit::FAILURE, format!("cannot encode JSON: {e}")))?;
        write_stdout(&format!("{text}\n"))
    }

    pub(super) fn done(&mut self, what: &str) -> Result<(), Failure> {
        if self.json {
            self.json(&serde_json::json!({ "ok": true }))
        } else {
            write_stdout(&format!("{what}\n"))
        }
    }

    pub(super) fn new_key(&mut self, key: &NewKey) -> Result<(), Failure> {
        if self.json {
            return self.json(&key.response());
        }
        let mut text = describe(&key.info);
        let _ = writeln!(text, "key:        {}", key.key.expose_secret());
        write_stdout(&text)?;
        eprintln!("keygate: store the key now: it is shown only once");
        Ok(())
    }

    pub(super) fn info(&mut self, info: &KeyInfo) -> Result<(), Failure> {
        if self.json {
            return self.json(info);
        }
        write_stdout(&describe(info))
    }

    pub(super) fn page(&mut self, page: &Page) -> Result<(), Failure> {
        if self.json {
            return self.json(page);
        }
        let now = OffsetDateTime::now_utc();
        let mut text = String::new();
        for info in &page.data {
            let _ = writeln!(
                text,
                "{}  {}  {}  {}",
                info.id,
                info.redacted,
                state(info, now),
                info.name
            );
        }
        if let Some(next) = &page.next {
            let _ = writeln!(text, "(more: --after {next})");
        }
        write_stdout(&text)
    }

    pub(super) fn revoked(&mut self, id: &KeyId) -> Result<(), Failure> {
        if self.json {
            return self.json(&serde_json::json!({ "revoked": id.as_str() }));
        }
        write_stdout(&format!("revoked {id}\n"))
    }

    pub(super) fn account(&mut self, id: &AccountId) -> Result<(), Failure> {
        if self.json {
            return self.json(&serde_json::json!({ "account": id.as_str() }));
        }
        write_stdout(&format!("{id}\n"))
    }

    pub(super) fn pepper_status(
        &mut self,
        counts: &BTreeMap<u32, u64>,
        current: Option<u32>,
    ) -> Result<(), Failure> {
        if self.json {
            let versions: BTreeMap<String, u64> =
                counts.iter().map(|(v, n)| (v.to_string(), *n)).collect();
            return self.json(&serde_json::json!({ "current": current, "keys": versions }));
        }
        let mut text = String::new();
        if counts.is_empty() {
            text.push_str("no usable keys\n");
        }
        for (version, n) in counts {
            let what = match (*version, current) {
                (0, _) => " (sha-256 imports)",
                (v, Some(c)) if v == c => " (current)",
                _ => "",
            };
            let _ = writeln!(text, "version {version}: {n} keys{what}");
        }
        write_stdout(&text)
    }
}

fn state(info: &KeyInfo, now: OffsetDateTime) -> &'static str {
    if info.revoked_at.is_some() {
        "revoked"
    } else if info.disabled_at.is_some() {
        "disabled"
    } else if info.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

fn when(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

fn describe(info: &KeyInfo) -> String {
    let mut text = String::new();
    let now = OffsetDateTime::now_utc();
    let _ = writeln!(text, "id:         {}", info.id);
    let _ = writeln!(text, "account:    {}", info.account);
    let _ = writeln!(text, "name:       {}", info.name);
    let _ = writeln!(text, "redacted:   {}", info.redacted);
    if let Some(public) = &info.public_key {
        let _ = writeln!(text, "public key: {public}");
    }
    let _ = writeln!(text, "format:     {}", info.format);
    let grant = match &info.bundle {
        Some(bundle) => format!("bundle {bundle}"),
        None => info.scopes.join(" "),
    };
    let _ = writeln!(text, "grant:      {grant}");
    let _ = writeln!(text, "state:      {}", state(info, now));
    let _ = writeln!(text, "created:    {}", when(Some(info.created_at)));
    let _ = writeln!(text, "expires:    {}", when(info.expires_at));
    let _ = writeln!(text, "last used:  {}", when(info.last_used_at));
    if let Some(next) = &info.replaced_by {
        let _ = writeln!(text, "replaced by: {next}");
    }
    text
}
