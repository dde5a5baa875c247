#![no_main]
// Harness logic and its invariants: src/jwt.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztgate_fuzz::jwt::run(data));
