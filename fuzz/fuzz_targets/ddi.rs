#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| didymos_fuzz::ddi(data));
