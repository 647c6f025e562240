//! The shared oracle for every decoder fuzz target: no panic, bounded memory, no `feed` call
//! that returns more events than the bound (checked on every call by `inflor::testkit`), and
//! the same events, outcome and counts for one whole-input call as for an arbitrary chunk
//! split of the same input.

use inflor::format::{DecodeOptions, Format};
use inflor::testkit::decode_split;

/// Runs the oracle. The first byte picks lenient mode, the event bound and the chunk sizes;
/// the rest is the input.
pub fn check(format: Format, data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let options = DecodeOptions {
        // Small enough that a forged length can never make the fuzzer allocate much.
        max_record_bytes: 1 << 20,
        lenient: control & 1 == 1,
        ..DecodeOptions::default()
    };
    // A small bound makes inputs of a few kilobytes (a compressed packet, a vector-heavy EVT
    // 3.0 stream) cross it, so the resumption paths are fuzzed too.
    let bounded = DecodeOptions {
        max_events_per_feed: 12 + usize::from(control >> 4) * 61,
        ..options.clone()
    };
    let whole = decode_split(format, input, &options, &[usize::MAX]);
    let sizes = [1 + (usize::from(control) >> 1), 1, 7, 4096];
    let split = decode_split(format, input, &bounded, &sizes);
    assert_eq!(whole.result, split.result, "outcome differs between whole and split input");
    assert_eq!(whole.events, split.events, "events differ between whole and split input");
    assert_eq!(whole.stats, split.stats, "counts differ between whole and split input");
}
