//! `cargo run --release -p node-agent-tests --example kube_metadata_bench`: the metadata
//! cache's memory and lookup cost with a full node's metadata (see
//! `node_agent_tests::kube_bench`). The fake API server runs in a child process (this
//! binary with `--serve`), so the figures are the cache's alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use node_agent_tests::kube_bench;

/// Counts live heap bytes, for an exact figure beside the RSS delta.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn take_peak() -> usize {
    PEAK.swap(LIVE.load(Ordering::Relaxed), Ordering::Relaxed)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        let dir = tempfile::tempdir()?;
        return runtime.block_on(kube_bench::serve_fixture(dir.path()));
    }
    if cfg!(debug_assertions) {
        eprintln!("kube_metadata_bench: a debug build; run with --release for real figures");
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the fake API server")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut line)?;
    let endpoint = kube_bench::Endpoint::parse(&line)?;
    let figures = runtime.block_on(kube_bench::measure(
        &endpoint,
        Some(kube_bench::HeapCounter { live, take_peak }),
    ));
    drop(child.stdin.take());
    let _ = child.wait();
    println!("{}", figures?);
    Ok(())
}
