#![no_main]
// Harness logic and its invariants: src/routes.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztgate_fuzz::routes::run(data));
