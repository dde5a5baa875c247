#![no_main]
// Harness logic and its invariants: src/client_hello.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztgate_fuzz::client_hello::run(data));
