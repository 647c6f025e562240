//! Decoding throughput per format (filled in by the format work).
use criterion::{Criterion, criterion_group, criterion_main};

fn decode(_c: &mut Criterion) {}

criterion_group!(benches, decode);
criterion_main!(benches);
