#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbus::fuzzing::segment_header(data));
