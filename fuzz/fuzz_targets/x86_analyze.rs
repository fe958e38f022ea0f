//! Arbitrary bytes at an arbitrary address through x86-64 analysis and slot encoding.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe_tests::x86::fuzz::x86_analyze(data);
});
