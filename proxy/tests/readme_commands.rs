//! The command-support table in `docs/commands.md` ("Every command") is generated from the
//! command table: this test fails when they differ, and `REDSHARD_UPDATE_README=1 cargo test
//! -p redshard-proxy --test readme_commands` rewrites it.

use redshard_proxy::command::support::markdown_table;

const BEGIN: &str = "<!-- command-support:begin (generated from the command table; see proxy/tests/readme_commands.rs) -->\n";
const END: &str = "<!-- command-support:end -->";

#[test]
fn the_docs_command_table_matches_the_command_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/commands.md");
    let doc = std::fs::read_to_string(path).expect("docs/commands.md");
    let start = doc
        .find(BEGIN)
        .expect("docs/commands.md has the command-support markers")
        + BEGIN.len();
    let end = doc[start..]
        .find(END)
        .expect("docs/commands.md has the end marker")
        + start;
    let table = markdown_table();
    assert!(
        table.lines().count() > 300,
        "every command and subcommand has a row"
    );
    if doc[start..end] != table {
        if std::env::var_os("REDSHARD_UPDATE_README").is_some() {
            let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
            std::fs::write(path, updated).expect("write docs/commands.md");
            return;
        }
        panic!(
            "docs/commands.md's command-support table is stale: run \
             REDSHARD_UPDATE_README=1 cargo test -p redshard-proxy --test readme_commands"
        );
    }
}
