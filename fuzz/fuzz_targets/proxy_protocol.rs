#![no_main]
// Harness logic and its invariants: src/proxy_protocol.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztgate_fuzz::proxy_protocol::run(data));
