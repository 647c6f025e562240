#![no_main]
//! Fuzzes the Es decoder: see `inflor_fuzz::check`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| inflor_fuzz::check(inflor::format::Format::Es, data));
