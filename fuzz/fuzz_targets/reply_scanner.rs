//! A backend's byte stream through the reply scanner, fed in input-chosen reads.
//! The invariants and the input layout are in `redshard_fuzz::checks::reply_scanner`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| redshard_fuzz::checks::reply_scanner(data));
