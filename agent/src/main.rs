//! node-agent: node metrics, container logs and syscall monitoring in one process.

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    raise_open_files_limit();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // check-config reads only the file: nothing else (logging, lock, sockets) is set up.
    match node_agent::check_config::requested(&args) {
        Some(Ok(path)) => return node_agent::check_config::run(&path),
        Some(Err(msg)) => {
            eprintln!("node-agent: {msg}");
            return ExitCode::from(2);
        }
        None => {}
    }
    let config = match node_agent::config::Config::from_args(args) {
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
    if let Err(err) = node_agent::logging::init(&config.log) {
        eprintln!("node-agent: cannot initialise logging: {err:#}");
        return ExitCode::from(2);
    }
    if config.dry_run {
        node_agent::app::log_config_warnings(&config);
        println!("node-agent: configuration is valid");
        return ExitCode::SUCCESS;
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
        Err(err)
            if err
                .downcast_ref::<node_agent::app::StartupError>()
                .is_some() =>
        {
            eprintln!("node-agent: invalid configuration: {err:#}");
            ExitCode::from(2)
        }
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

/// Raises the soft open-files limit to the hard one, as the Go runtime does for
/// node_exporter: containerd 2 leaves containers at a soft limit of 1024, and the agent
/// keeps procfs/sysfs files open across scrapes and tails a file per container.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        // Logging is not set up yet; the agent works with the lower limit.
        eprintln!("cannot raise the open-files limit from {soft} to {hard}: {e}");
    }
}
