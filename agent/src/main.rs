//! node-agent: node metrics, container logs and syscall monitoring in one process.

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let config = match node_agent::config::Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(err) => {
            // clap renders --help/--version and usage errors itself.
            if let Some(clap_err) = err.downcast_ref::<clap::Error>() {
                clap_err.exit();
            }
            eprintln!("node-agent: invalid configuration: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = node_agent::telemetry::init_logging(&config.log) {
        eprintln!("node-agent: cannot initialise logging: {err:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("node-agent")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("node-agent: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node_agent::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "node-agent stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena; for a small agent whose
/// threads mostly wait, one arena (threads keep their tcache) saves about 1 MiB of RSS.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
