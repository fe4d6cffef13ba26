//! The cost of `ApiKeyLayer::limit_failures` on the success path: N requests
//! with a valid key, from one client address, through the layer without
//! (`plain`) or with (`limited`) a failure limit, on a plain tower service.
//!
//! ```text
//! cargo build --release --example failure_limit_cost --features axum
//! target/release/examples/failure_limit_cost limited 20000
//! valgrind --tool=callgrind target/release/examples/failure_limit_cost limited 0
//! ```
//!
//! Prints the mean wall-clock time per request; under `callgrind`, the
//! instruction counts of N = 0 and N = 20 000 differ by the cost of 20 000
//! requests, which does not depend on the machine's load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Instant;

use http::{Request, Response};
use keygate::layer::ApiKeyLayer;
use keygate::{profiles, AccountId, ApiKeys, CreateKey, Quota};
use tower::{service_fn, Layer, Service};

async fn ok(_: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::new()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "limited".to_owned());
    let n: usize = args.next().as_deref().unwrap_or("20000").parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let api = ApiKeys::in_memory(profiles::mailjawn())?;
    let org = AccountId::new("org_cost")?;
    let key = rt.block_on(api.operator().create(
        &org,
        CreateKey::new("cost").bundle("sdk").rate_limit(
            "read",
            Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))?,
        ),
    ))?;
    let authorization = format!("Bearer {}", key.key.expose_secret());
    let keys = ApiKeyLayer::new(api).https_only(false);
    let keys = match mode.as_str() {
        "plain" => keys,
        "limited" => keys.limit_failures(Quota::per_minute(NonZeroU32::new(10).expect("non-zero"))),
        other => return Err(format!("mode is plain or limited, not {other}").into()),
    };
    let mut service = keys.layer(service_fn(ok));
    let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            let mut request = Request::get("/v1/subscribers")
                .header("authorization", authorization.as_str())
                .body(())
                .expect("request");
            request.extensions_mut().insert(peer);
            let response = service.call(request).await.expect("infallible");
            assert_eq!(response.status(), 200);
        }
    });
    let elapsed = started.elapsed();
    if n > 0 {
        println!(
            "{mode}: {n} requests, {:.0} ns each",
            elapsed.as_nanos() as f64 / n as f64
        );
    }
    Ok(())
}
