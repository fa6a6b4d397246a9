//! The agent run in the test's own process (its real flag parsing and HTTP endpoint),
//! on a thread with its own runtime, for tests that only need to scrape it.

use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

/// An agent running on its own thread; stopped by [`InProcessAgent::stop`] or on drop.
pub struct InProcessAgent {
    stop: CancellationToken,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcessAgent {
    /// Parses `args` (argv, starting with the program name) and starts the agent.
    pub fn start(args: Vec<String>) -> Self {
        let config = node_agent::config::Config::from_args(args).expect("agent config");
        let stop = CancellationToken::new();
        let agent_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(node_agent::app::run_until(config, agent_stop))
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the agent and returns how its run ended; panics if its thread panicked.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.thread.take() {
            Some(t) => t.join().expect("agent thread"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
