#![no_main]
// Harness logic and its invariants: src/config.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztgate_fuzz::config::run(data));
