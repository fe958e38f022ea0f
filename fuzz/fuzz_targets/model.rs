//! Random operation sequences against the reference model (see `probe_tests::model`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = probe_tests::model::run(data);
});
