//! The shared oracle for every decoder fuzz target: no panic, bounded memory, and the same
//! outcome for one whole-input call as for an arbitrary chunk split of the same input.

use inflor::event::Event;
use inflor::format::{DecodeError, DecodeOptions, Format};

/// Decodes `input` feeding it in chunks of the given sizes (cycled); returns events and outcome.
fn decode_split(
    format: Format,
    options: &DecodeOptions,
    input: &[u8],
    sizes: &[usize],
) -> (Vec<Event>, Result<(), DecodeError>) {
    let mut decoder = format.decoder(options);
    let mut events = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        let n = sizes[k % sizes.len()].max(1).min(input.len() - pos);
        k += 1;
        if let Err(e) = decoder.feed(&input[pos..pos + n], &mut events) {
            return (events, Err(e));
        }
        pos += n;
    }
    let r = decoder.finish(&mut events);
    (events, r)
}

/// Runs the oracle. The first byte picks lenient mode and the chunk sizes; the rest is the input.
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
    let (whole_events, whole) = decode_split(format, &options, input, &[input.len().max(1)]);
    let sizes = [1 + (control as usize >> 1), 1, 7, 4096];
    let (split_events, split) = decode_split(format, &options, input, &sizes);
    assert_eq!(whole, split, "outcome differs between whole and split input");
    assert_eq!(whole_events, split_events, "events differ between whole and split input");
}
