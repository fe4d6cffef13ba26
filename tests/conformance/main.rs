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

/// One `#[tokio::test]` per (backend, case), in a module per backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::suite::$case(crate::backend::memory()).await;
                }
            )*
        }

        mod cached_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::suite::$case(crate::backend::cached_memory()).await;
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _dir) = crate::backend::sqlite_file().await;
                    crate::suite::$case(store).await;
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::suite::$case(crate::backend::sqlite_memory().await).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(pg) = crate::support::postgres_store().await else {
                        return;
                    };
                    crate::suite::$case(pg.store()).await;
                    pg.cleanup().await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod cached_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(pg) = crate::support::postgres_store().await else {
                        return;
                    };
                    crate::suite::$case(crate::backend::cached(pg.store())).await;
                    pg.cleanup().await;
                }
            )*
        }
    };
}

mod store {
    conformance!(
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

mod service {
    conformance!(
        service_verifies_a_created_key,
        service_rejects_a_revoked_key,
        service_rotates_immediately_and_with_grace,
        service_enforces_the_key_limit,
        service_flush_writes_last_used,
        service_recommends_a_secret_reset_after_90_days,
    );
}

mod changes {
    conformance!(
        update_changes_only_the_named_fields,
        disable_is_reversible_and_keeps_the_first_time,
        concurrent_updates_of_different_fields_all_land,
        service_disable_and_enable_reach_verify,
        service_update_changes_a_key_without_reissuing,
        service_update_refuses_scope_changes_where_the_profile_fixes_them,
    );
}

mod usage {
    conformance!(
        credits_round_trip_and_change_through_update,
        concurrent_spends_admit_exactly_the_credits,
        refill_is_lazy_keeps_its_phase_and_applies_once_under_races,
        service_verify_for_spends_credits_and_answers_usage_exceeded,
        service_concurrent_requests_admit_exactly_the_credits,
        service_a_key_with_credits_grants_no_more_than_it_holds,
    );
}

mod identity {
    conformance!(
        identities_belong_to_one_account_and_keys_attach_only_within_it,
        identity_changes_reach_its_keys_and_delete_detaches_them,
        shared_spends_take_both_or_neither,
        concurrent_shared_spends_admit_exactly_the_identity_credits,
        service_identity_credits_and_limits_are_shared_by_its_keys,
        service_identities_never_cross_accounts,
        service_a_key_on_an_identity_cannot_escape_its_budget,
    );
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod flusher {
    conformance!(
        flusher_writes_last_used_within_the_interval,
        flusher_shutdown_flushes_once_more,
    );
}

mod pepper_rotation {
    conformance!(
        rehash_on_verify_lets_the_old_pepper_retire,
        racing_rehashes_change_a_key_once,
        rehash_changes_only_keys_that_still_have_the_old_hash,
    );
}
