#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbus::fuzzing::index_entries(data));
