//! Container logs in kubelet's layout: `/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log`
//! with kubelet's rotations beside them, CRI or docker json-file lines (partial lines
//! joined per stream). The tailing itself is [`crate::sources::tail`].
//!
//! A message split into partial lines on both streams at once is checkpointed at the
//! earliest unfinished part, so after a crash the other stream's lines in between can be
//! shipped twice (never lost).

pub mod assemble;
pub mod cri;
pub mod discovery;
pub mod docker;

use std::path::{Path, PathBuf};

use node_agent_core::kubelet::PodLogPath;
use node_agent_core::record::SourceMeta;
use tokio_util::sync::CancellationToken;

use crate::source::{Exit, Source, SourceContext};
use crate::sources::tail::file_id::FileEntry;
use crate::sources::tail::{Candidate, Layout, TailSettings, TailSource};
use assemble::Assembler;
use discovery::NamespaceFilter;

/// The checkpoint file of pod logs (its name predates other sources).
pub const CHECKPOINT_FILE: &str = "logs-checkpoint.json";

/// kubelet's pod log tree.
pub struct PodsLayout {
    pub pods_dir: PathBuf,
    pub filter: NamespaceFilter,
    pub node: String,
    pub max_line_bytes: usize,
}

impl Layout for PodsLayout {
    type Info = PodLogPath;
    type Decoder = Assembler;

    fn root(&self) -> &Path {
        &self.pods_dir
    }

    fn scan(&self) -> Vec<Candidate<PodLogPath>> {
        discovery::scan(&self.pods_dir, &self.filter)
    }

    fn decoder(&self, _info: &PodLogPath) -> Assembler {
        Assembler::new(self.max_line_bytes)
    }

    fn source_meta(&self, info: &PodLogPath, path: &Path, file_id: u64) -> SourceMeta {
        SourceMeta {
            kind: node_agent_core::record::SourceKind::Pod,
            namespace: info.namespace.clone(),
            pod: info.pod.clone(),
            pod_uid: info.pod_uid.clone(),
            container: info.container.clone(),
            node: self.node.clone(),
            path: path.to_path_buf(),
            file_id,
            kubernetes: None,
        }
    }

    fn decorate(&self, _info: &PodLogPath, _record: &mut node_agent_core::record::LogRecord) {
        crate::sources::source_metrics()
            .read(node_agent_core::record::SourceKind::Pod)
            .inc();
    }

    fn lag_labels(&self, info: &PodLogPath) -> [String; 3] {
        [
            info.namespace.clone(),
            info.pod.clone(),
            info.container.clone(),
        ]
    }
}

/// The pod log source.
pub struct PodsSource(pub TailSource<PodsLayout>);

impl PodsSource {
    pub fn new(layout: PodsLayout, settings: TailSettings) -> Self {
        Self(TailSource::new(layout, settings))
    }
}

impl Source for PodsSource {
    type Position = FileEntry;

    fn name(&self) -> &'static str {
        "pods"
    }

    fn checkpoint_file(&self) -> &str {
        CHECKPOINT_FILE
    }

    fn run(self: Box<Self>, ctx: SourceContext<FileEntry>, stop: &CancellationToken) -> Exit {
        self.0.run(ctx, stop)
    }
}
