//! Arbitrary text as SDT argument specs; parsed specs must render and re-parse unchanged.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe_tests::sdt_fuzz::sdt_args(data);
});
