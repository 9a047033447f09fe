//! The `hatchery` binary: parses the command line, sets up logging (and traces), runs the command.

use clap::Parser as _;

/// Ends the process quietly when stdout is a closed pipe (`hatchery runs list | head`), as
/// other command-line tools do; Rust ignores `SIGPIPE`, so `println!` panics there instead.
/// Every other panic is reported as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            // 128 + SIGPIPE, what a shell reports for a process a closed pipe stopped.
            std::process::exit(141);
        }
        report(info);
    }));
}

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    let cli = hatchery::cli::Cli::parse();
    // A node reports what it does; one-shot commands only warn.
    let default_filter = match cli.command {
        hatchery::cli::Command::Serve(_) | hatchery::cli::Command::Dev(_) => "info,sqlx=warn",
        _ => "warn",
    };
    let otlp = match &cli.command {
        hatchery::cli::Command::Serve(args) => args.node.otlp(),
        hatchery::cli::Command::Dev(args) => args.node.otlp(),
        _ => None,
    };
    // Held to the end: dropping it sends the traces not yet sent.
    let _telemetry = match hatchery::telemetry::init(default_filter, otlp.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: cannot set up logging and traces: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Every client command takes `--json`; its errors then keep the shape too.
    let json = std::env::args_os().skip(1).any(|arg| arg == "--json");
    match runtime.block_on(hatchery::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if json => {
            eprintln!("{}", hatchery::cli::error_json(&e));
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
