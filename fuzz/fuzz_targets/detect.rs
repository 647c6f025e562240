#![no_main]
//! Fuzzes detection plus whichever decoder it picks, so every format sees every input shape.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(format) = inflor::format::detect::detect(None, data.get(1..).unwrap_or(&[])) {
        inflor_fuzz::check(format, data);
    }
});
