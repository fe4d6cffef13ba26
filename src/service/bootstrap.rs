//! Start-up keys: the admin key a server needs on its first start and on
//! every start after, whether it is kept elsewhere or made here.

use std::fmt;

use super::{CreateKey, KeyInfo, Manager};
use crate::error::Error;
use crate::key::{IssuedKey, KeyFormat};
use crate::store::AccountId;

/// A key made sure of at start-up by [`Manager::bootstrap_key`].
#[non_exhaustive]
pub struct BootstrapKey {
    /// The key; [`to_presented`](IssuedKey::to_presented) is the text a
    /// client sends (the token, or `public:secret` for key pairs).
    pub key: IssuedKey,
    /// The stored key's info.
    pub info: KeyInfo,
    /// True when the key was made now: show it to the operator, this once.
    /// False when a kept key was imported or found already stored.
    pub created: bool,
}

impl fmt::Debug for BootstrapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapKey")
            .field("key", &self.key)
            .field("info", &self.info)
            .field("created", &self.created)
            .finish()
    }
}

impl Manager<'_> {
    /// The key a server starts with: with `kept` (a key kept elsewhere,
    /// e.g. in a secret manager or an environment variable the server
    /// reads), [`ensure_key`](Self::ensure_key) stores it when absent and
    /// accepts it when it is already stored with the same grant, so every
    /// restart succeeds; without, a new key is created. Operator only.
    ///
    /// ```
    /// use keygate::{profiles, AccountId, ApiKeys, CreateKey};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let api = ApiKeys::in_memory(profiles::mailjet())?;
    /// let admin = AccountId::new("acct_admin")?;
    /// let first = api.operator().bootstrap_key(&admin, None, CreateKey::new("admin").all_scopes()).await?;
    /// assert!(first.created);
    /// let presented = first.key.to_presented(); // `public:secret` for a key pair
    /// // The next start reads the kept key back: nothing new is made.
    /// let again = api
    ///     .operator()
    ///     .bootstrap_key(&admin, Some(&presented), CreateKey::new("admin").all_scopes())
    ///     .await?;
    /// assert!(!again.created);
    /// assert_eq!(again.info.id, first.info.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[cfg_attr(feature = "spans", tracing::instrument(name = "keygate.manage", skip_all,
        fields(op = "bootstrap_key", account = %account)))]
    pub async fn bootstrap_key(
        &self,
        account: &AccountId,
        kept: Option<&str>,
        request: CreateKey,
    ) -> Result<BootstrapKey, Error> {
        let Some(kept) = kept else {
            let new = self.create(account, request).await?;
            return Ok(BootstrapKey {
                key: new.key,
                info: new.info,
                created: true,
            });
        };
        let kept = kept.trim();
        let info = self.ensure_key(account, kept, request).await?;
        // `ensure_key` parsed it, so it parses.
        let credential = self.api.parse(kept)?;
        let key = match &self.api.inner.profile.formats[credential.format_index()] {
            KeyFormat::Pair(_) => IssuedKey::pair(
                credential.lookup().to_owned(),
                credential.expose_secret().to_owned(),
            ),
            KeyFormat::Token(_) => IssuedKey::token(
                credential.expose_secret().to_owned(),
                credential.lookup().len(),
            ),
        };
        Ok(BootstrapKey {
            key,
            info,
            created: false,
        })
    }
}
