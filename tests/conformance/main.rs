//! One store conformance suite (`suite.rs`), run against every backend:
//! `MemoryStore` and a `CachedStore` over it always, `SqliteStore` (a temp
//! file and in memory) with feature `sqlite`, `PostgresStore` (a schema of its
//! own per test) and a `CachedStore` over it with feature `postgres`. Postgres tests skip when no server answers at
//! `KEYGATE_TEST_POSTGRES_URL`, unless `KEYGATE_REQUIRE_SERVICES=1`.

mod backend;
mod credits;
mod identities;
mod lifecycle;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod outage;
mod peppers;
mod suite;
#[path = "../support/mod.rs"]
mod support;

use std::process::ExitCode;

use libtest_mimic::Trial;
use support::harness::{self, Rt};

/// One test per (backend, case), named `group::backend::case`.
macro_rules! conformance {
    ($trials:ident, $group:literal: $($case:ident),* $(,)?) => {
        $(
            let name = |backend: &str| format!("{}::{backend}::{}", $group, stringify!($case));
            $trials.push(harness::async_test(&name("memory"), Rt::multi(2), || async {
                crate::suite::$case(crate::backend::memory()).await;
            }));
            $trials.push(harness::async_test(&name("cached_memory"), Rt::multi(2), || async {
                crate::suite::$case(crate::backend::cached_memory()).await;
            }));
            #[cfg(feature = "sqlite")]
            $trials.push(harness::async_test(&name("sqlite_file"), Rt::multi(2), || async {
                let (store, _dir) = crate::backend::sqlite_file().await;
                crate::suite::$case(store).await;
            }));
            #[cfg(feature = "sqlite")]
            $trials.push(harness::async_test(&name("sqlite_memory"), Rt::multi(2), || async {
                crate::suite::$case(crate::backend::sqlite_memory().await).await;
            }));
            #[cfg(feature = "postgres")]
            $trials.push(harness::async_test(&name("postgres"), Rt::multi(2), || async {
                let Some(pg) = crate::support::postgres_store().await else {
                    return;
                };
                crate::suite::$case(pg.store()).await;
                pg.cleanup().await;
            }));
            #[cfg(feature = "postgres")]
            $trials.push(harness::async_test(&name("cached_postgres"), Rt::multi(2), || async {
                let Some(pg) = crate::support::postgres_store().await else {
                    return;
                };
                crate::suite::$case(crate::backend::cached(pg.store())).await;
                pg.cleanup().await;
            }));
        )*
    };
}

fn main() -> ExitCode {
    let mut trials: Vec<Trial> = Vec::new();
    {
        conformance!(
            trials, "store":
            accounts_round_trip_with_their_parent,
            sub_account_keys_count_toward_the_sub_account,
            inserted_keys_round_trip_every_field,
            duplicate_key_ids_conflict,
            find_by_lookup_returns_every_colliding_candidate,
            find_now_agrees_with_find_by_lookup,
            list_excludes_revoked_keys_unless_asked,
            list_is_per_account_in_id_order,
            revoke_is_soft_and_keeps_the_first_time,
            replace_secret_swaps_lookup_and_hash,
            limit_counts_active_keys_per_account_and_format,
            limit_ignores_expired_keys,
            concurrent_creates_never_exceed_the_limit,
            last_used_batches_keep_the_latest_time,
            unicode_names_and_accounts_round_trip,
            ten_thousand_keys_page_in_id_order,
            bulk_insert_is_all_or_nothing,
            rotate_immediately_revokes_the_old_key,
            rotate_with_grace_expires_the_old_key_later,
            rotate_is_atomic_when_the_new_id_exists,
            keys_need_their_account_and_active_keys_are_unique,
            stale_secrets_list_by_age_reach_and_activity,
        );
    }

    {
        conformance!(
            trials, "service":
            service_verifies_a_created_key,
            service_rejects_a_revoked_key,
            service_rotates_immediately_and_with_grace,
            service_enforces_the_key_limit,
            service_flush_writes_last_used,
            service_recommends_a_secret_reset_after_90_days,
        );
    }

    {
        conformance!(
            trials, "changes":
            update_changes_only_the_named_fields,
            disable_is_reversible_and_keeps_the_first_time,
            concurrent_updates_of_different_fields_all_land,
            service_disable_and_enable_reach_verify,
            service_update_changes_a_key_without_reissuing,
            service_update_refuses_scope_changes_where_the_profile_fixes_them,
        );
    }

    {
        conformance!(
            trials, "usage":
            credits_round_trip_and_change_through_update,
            concurrent_spends_admit_exactly_the_credits,
            refill_is_lazy_keeps_its_phase_and_applies_once_under_races,
            service_verify_for_spends_credits_and_answers_usage_exceeded,
            service_concurrent_requests_admit_exactly_the_credits,
            service_a_key_with_credits_grants_no_more_than_it_holds,
        );
    }

    {
        conformance!(
            trials, "identity":
            identities_belong_to_one_account_and_keys_attach_only_within_it,
            identity_changes_reach_its_keys_and_delete_detaches_them,
            shared_spends_take_both_or_neither,
            concurrent_shared_spends_admit_exactly_the_identity_credits,
            service_identity_credits_and_limits_are_shared_by_its_keys,
            service_identities_never_cross_accounts,
            service_a_key_on_an_identity_cannot_escape_its_budget,
        );
    }

    {
        conformance!(
            trials, "pepper_rotation":
            rehash_on_verify_lets_the_old_pepper_retire,
            racing_rehashes_change_a_key_once,
            rehash_changes_only_keys_that_still_have_the_old_hash,
        );
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    {
        conformance!(
            trials, "flusher":
            flusher_writes_last_used_within_the_interval,
            flusher_shutdown_flushes_once_more,
        );
    }
    #[cfg(feature = "sqlite")]
    trials.extend(trials![
        tokio(Rt::multi(2)) migrations::sqlite::concurrent_migrations_on_one_file_all_succeed,
        tokio(Rt::CURRENT) migrations::sqlite::secret_age_migration_backfills_from_created_at,
        tokio(Rt::CURRENT) migrations::sqlite::connect_accepts_urls_and_paths,
    ]);
    #[cfg(feature = "postgres")]
    trials.extend(trials![
        tokio(Rt::multi(2)) migrations::postgres::concurrent_migrations_in_one_schema_all_succeed,
        tokio(Rt::CURRENT) migrations::postgres::secret_age_migration_backfills_from_created_at,
        tokio(Rt::CURRENT) migrations::postgres::schemas_keep_their_keys_apart,
    ]);
    #[cfg(feature = "sqlite")]
    trials.extend(trials![
        tokio(Rt::CURRENT) outage::sqlite::closed_pool_makes_verify_unavailable,
        tokio(Rt::CURRENT) outage::sqlite::missing_tables_make_verify_unavailable_not_invalid,
        tokio(Rt::CURRENT) outage::sqlite::unopenable_file_is_unavailable,
    ]);
    #[cfg(feature = "postgres")]
    trials.extend(trials![
        tokio(Rt::CURRENT) outage::postgres::closed_pool_makes_verify_unavailable,
        tokio(Rt::CURRENT) outage::postgres::dead_port_makes_verify_unavailable,
        tokio(Rt::CURRENT) outage::postgres::invalid_schema_names_are_refused_before_connecting,
    ]);
    harness::run(trials)
}
