//! `calve check`: contract validation for people and CI pipelines.

use std::path::PathBuf;
use std::process::ExitCode;

use calve_contract::Contract;

pub fn run(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for p in paths {
        match Contract::from_file(p) {
            Ok(c) => println!("ok: {} (table {}, topic {})", p.display(), c.table.name, c.table.topic),
            Err(e) => {
                failed = true;
                println!("{e}");
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
