//! An arbitrary argument list through `command::resolve` and `CommandSpec::key_indices`.
//! The invariants and the input layout are in `redshard_fuzz::checks::command_keys`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| redshard_fuzz::checks::command_keys(data));
