//! In-process throughput of the grid's hot path: `Grid::put` and `Grid::get`
//! through the partition actors, with 1 and with 2 arbiters, 256 operations
//! in flight. Run with `cargo bench --bench partition`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;
use pushgrid::config::Config;
use pushgrid::grid::{CacheConfig, Grid, JsonValue, Key, Precondition};
use pushgrid::metrics::Metrics;

const KEYS: usize = 10_000;
const IN_FLIGHT: usize = 256;

/// A node's grid as `pushgrid` starts it, with one cache, `bench`, and no
/// HTTP server.
async fn grid_on(arbiters: usize) -> Grid {
    let config = Config {
        arbiters,
        caches: [("bench".to_string(), CacheConfig::default())].into(),
        ..Config::default()
    };
    let grid = pushgrid::node::start_grid(&config, &Metrics::new(), "in-process")
        .await
        .expect("the grid starts")
        .grid;
    grid
}

/// Runs `iters` operations, `IN_FLIGHT` at a time, and returns the time taken.
async fn drive(grid: &Grid, keys: &[Key], value: &JsonValue, iters: u64, put: bool) -> Duration {
    let started = Instant::now();
    futures_util::stream::iter(0..iters)
        .map(|i| {
            let key = keys[i as usize % keys.len()].clone();
            async move {
                if put {
                    grid.put("bench", key, value.clone(), Precondition::None, None)
                        .await
                        .map(|_| ())
                } else {
                    grid.get("bench", key).await.map(|_| ())
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|result| async move { result.expect("operation succeeds") })
        .await;
    started.elapsed()
}

fn partition_throughput(c: &mut Criterion) {
    let keys: Vec<Key> = (0..KEYS).map(|i| Arc::from(format!("match/{i}"))).collect();
    let value = JsonValue::parse(r#"{"home":2,"away":1,"minute":67}"#).unwrap();
    let mut group = c.benchmark_group("partition");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for arbiters in [1, 2] {
        let system = actix_rt::System::new();
        let grid = system.block_on(grid_on(arbiters));
        system.block_on(drive(&grid, &keys, &value, KEYS as u64, true));
        group.bench_function(BenchmarkId::new("put", arbiters), |b| {
            b.iter_custom(|iters| system.block_on(drive(&grid, &keys, &value, iters, true)))
        });
        group.bench_function(BenchmarkId::new("get", arbiters), |b| {
            b.iter_custom(|iters| system.block_on(drive(&grid, &keys, &value, iters, false)))
        });
    }
    group.finish();
}

criterion_group!(benches, partition_throughput);
criterion_main!(benches);
