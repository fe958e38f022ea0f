//! Arbitrary bytes as a `.note.stapsdt` section (first byte: ELF class and byte order).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe_tests::sdt_fuzz::sdt_note(data);
});
