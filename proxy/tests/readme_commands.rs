//! The README's command-support table is generated from the command table: this test fails
//! when they differ, and `REDSHARD_UPDATE_README=1 cargo test -p redshard-proxy --test
//! readme_commands` rewrites it.

use redshard_proxy::command::support::markdown_table;

const BEGIN: &str = "<!-- command-support:begin (generated from the command table; see proxy/tests/readme_commands.rs) -->\n";
const END: &str = "<!-- command-support:end -->";

#[test]
fn readme_command_table_matches_the_command_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find(BEGIN)
        .expect("README has the command-support markers")
        + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .expect("README has the end marker")
        + start;
    let table = markdown_table();
    assert!(
        table.lines().count() > 300,
        "every command and subcommand has a row"
    );
    if readme[start..end] != table {
        if std::env::var_os("REDSHARD_UPDATE_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], table, &readme[end..]);
            std::fs::write(path, updated).expect("write README.md");
            return;
        }
        panic!(
            "README.md's command-support table is stale: run \
             REDSHARD_UPDATE_README=1 cargo test -p redshard-proxy --test readme_commands"
        );
    }
}
