//! The `forge` binary: parse, run, report. Exit status 0 on success, 1 when a check the user asked for
//! failed, 2 on errors; a closed stdout (`forge stats d | head`) is not an error.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    forge::keep_freed_memory();
    match cli::run(&cli::command().get_matches()) {
        Ok(code) => code,
        Err(err) => {
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            if let Some(hint) = err.chain().find_map(|c| c.downcast_ref::<forge::Error>()).and_then(forge::Error::hint)
            {
                eprintln!("\nhint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}
