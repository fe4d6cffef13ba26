//! A test harness (`harness = false`, on `libtest-mimic`) for test binaries
//! whose tests need a service: a test that finds its service unreachable
//! calls [`skip`], and shows as `ignored` with the reason instead of
//! `ok`. With `KEYGATE_REQUIRE_SERVICES=1` the support code fails instead
//! of skipping, as before.

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::process::ExitCode;

use std::sync::atomic::{AtomicBool, Ordering};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// True inside a binary run by [`run`], where [`skip`] can mark a test ignored.
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// The panic payload that ends a test as skipped.
pub struct Skip(pub String);

/// Ends the running test as ignored, saying why.
pub fn skip(reason: impl Into<String>) -> ! {
    std::panic::panic_any(Skip(reason.into()))
}

/// How an async test's runtime is built, as `#[tokio::test]` arguments say.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rt {
    /// `Some(n)`: multi-thread with `n` workers; `None`: current thread.
    pub workers: Option<usize>,
}

impl Rt {
    /// `#[tokio::test]`.
    pub const CURRENT: Rt = Rt { workers: None };

    /// `#[tokio::test(flavor = "multi_thread", worker_threads = n)]`.
    pub const fn multi(n: usize) -> Rt {
        Rt { workers: Some(n) }
    }

    fn build(self) -> tokio::runtime::Runtime {
        let mut b = match self.workers {
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
            None => tokio::runtime::Builder::new_current_thread(),
        };
        b.enable_all().build().expect("test runtime")
    }
}

/// A test that runs `body` to completion on a runtime built as `rt` says.
pub fn async_test<F, Fut>(name: &str, rt: Rt, body: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    sync_test(name, move || rt.build().block_on(body()))
}

/// A test that runs `body`.
pub fn sync_test<F>(name: &str, body: F) -> Trial
where
    F: FnOnce() + Send + 'static,
{
    Trial::ignorable_test(name, move || match catch_unwind(AssertUnwindSafe(body)) {
        Ok(()) => Ok(Completion::Completed),
        Err(payload) => match payload.downcast::<Skip>() {
            Ok(skip) => Ok(Completion::ignored_with(skip.0)),
            Err(payload) => match panic_message(&payload) {
                Some(msg) => Err(Failed::from(msg)),
                None => resume_unwind(payload),
            },
        },
    })
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
}

/// Runs `trials` with the command line's options (filters, `--ignored`,
/// `--list`, ...), as the default harness would.
pub fn run(trials: Vec<Trial>) -> ExitCode {
    ACTIVE.store(true, Ordering::SeqCst);
    // A skip is not a failure: keep the panic hook quiet about it.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<Skip>().is_none() {
            default(info);
        }
    }));
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

/// Trials from a list of test functions, each with how it runs:
///
/// ```ignore
/// trials![
///     tokio(Rt::CURRENT) a_test,
///     tokio(Rt::multi(2)) module::another,
///     sync plain_test,
/// ]
/// ```
#[macro_export]
macro_rules! trials {
    ($($kind:ident $(($rt:expr))? $($seg:ident)::+),* $(,)?) => {
        vec![$($crate::trials!(@one $kind $(($rt))? $($seg)::+)),*]
    };
    (@one tokio($rt:expr) $($seg:ident)::+) => {
        $crate::support::harness::async_test(
            stringify!($($seg)::+).replace(' ', "").as_str(),
            $rt,
            $($seg)::+,
        )
    };
    (@one sync $($seg:ident)::+) => {
        $crate::support::harness::sync_test(
            stringify!($($seg)::+).replace(' ', "").as_str(),
            $($seg)::+,
        )
    };
}
