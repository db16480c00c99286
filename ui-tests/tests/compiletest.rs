//! The one driver of the compile tests.
//!
//! - `ui`: trybuild; `pass/*.rs` must build and run, `fail/*.rs` must fail to
//!   build with exactly the diagnostics in the `.stderr` beside each. The
//!   `.stderr` files are tied to the toolchain of the repository (stable
//!   1.95): regenerate them with `TRYBUILD=overwrite cargo test -p ui-tests`
//!   and review the diff; every message must point at the user's token.
//! - `editions`: the expansion must be valid in editions 2015 to 2024, but
//!   trybuild builds every case in this crate's edition (2021). So the pass
//!   cases are also built, and run, as small crates of editions 2015, 2018
//!   and 2024.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("pass/*.rs");
    t.compile_fail("fail/*.rs");
}

#[test]
fn editions() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("ui-tests is in the workspace");
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("co_local-editions");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    for edition in ["2015", "2018", "2024"] {
        let dir = root.join(format!("edition{edition}"));
        let bins = dir.join("src/bin");
        fs::create_dir_all(&bins).unwrap();
        fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\n\
                 name = \"co-local-edition{edition}\"\n\
                 version = \"0.0.0\"\n\
                 edition = \"{edition}\"\n\
                 publish = false\n\n\
                 [dependencies]\n\
                 co_local = {{ path = {:?} }}\n\n\
                 [workspace]\n",
                workspace.join("co_local"),
            ),
        )
        .unwrap();
        // The workspace's lock file: the same dependency versions, and no
        // resolution against the registry.
        fs::copy(workspace.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

        let mut names = Vec::new();
        for case in ["grammar", "hygiene", "thousand", "forbid_unsafe", "inherit"] {
            let source = fs::read_to_string(manifest_dir.join(format!("pass/{case}.rs"))).unwrap();
            let source = if edition == "2015" {
                to_edition_2015(&source)
            } else {
                source
            };
            let name = format!("{case}{edition}");
            fs::write(bins.join(format!("{name}.rs")), source).unwrap();
            names.push(name);
        }

        let target_dir = root.join("target");
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "--bins", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the pass cases do not build in edition {edition}"
        );
        for name in names {
            let status = Command::new(target_dir.join("debug").join(&name))
                .status()
                .unwrap();
            assert!(
                status.success(),
                "pass case {name} failed in edition {edition}"
            );
        }
    }
}

/// In edition 2015, `use` paths start at the crate root, so the crate needs
/// `extern crate co_local;`; and `::std` and `::co_local` name items of the
/// crate root, so the hygiene case's stand-ins for them are left out (the
/// user's own paths would reach them; the expansion uses neither path).
fn to_edition_2015(source: &str) -> String {
    let lines: Vec<&str> = source
        .lines()
        .filter(|line| *line != "mod std {}" && *line != "mod co_local {}")
        .collect();
    let after_inner_attrs = lines
        .iter()
        .rposition(|line| line.starts_with("#!["))
        .map_or(0, |i| i + 1);
    let mut out = lines[..after_inner_attrs].join("\n");
    out.push_str("\n\nextern crate co_local;\n");
    out.push_str(&lines[after_inner_attrs..].join("\n"));
    out.push('\n');
    out
}
