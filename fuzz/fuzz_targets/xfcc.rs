#![no_main]
// Harness logic and its invariants: src/xfcc.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztgate_fuzz::xfcc::run(data));
