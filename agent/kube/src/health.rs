//! Sync state and counters per watched resource, for the caller's health checks and
//! metrics (`node_agent_k8s_*`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use kube::runtime::watcher;

/// What the cache reads from the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Pods on this node: list + watch with `spec.nodeName`.
    Pods,
    /// All namespaces: list + watch.
    Namespaces,
    /// This node: a metadata GET, repeated.
    Node,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Pods, Resource::Namespaces, Resource::Node];

    /// A metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::Namespaces => "namespaces",
            Self::Node => "nodes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a request or watch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 401: the token is stale or wrong.
    Unauthorized,
    /// 403: RBAC.
    Forbidden,
    /// 404 (this node does not exist).
    NotFound,
    /// 410: the resourceVersion or continue token is too old; a re-list follows.
    Gone,
    /// 429: API priority and fairness pushed back.
    Throttled,
    /// 5xx.
    Server,
    /// Another HTTP status.
    Http,
    /// Connect, TLS, reset, timeout: the API server is unreachable.
    Transport,
    /// A body that is not the JSON the API promises.
    Decode,
    /// The server broke the protocol (e.g. a list without resourceVersion).
    Protocol,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Gone,
        ErrorKind::Throttled,
        ErrorKind::Server,
        ErrorKind::Http,
        ErrorKind::Transport,
        ErrorKind::Decode,
        ErrorKind::Protocol,
    ];

    /// A metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Gone => "gone",
            Self::Throttled => "throttled",
            Self::Server => "server",
            Self::Http => "http",
            Self::Transport => "transport",
            Self::Decode => "decode",
            Self::Protocol => "protocol",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_status(code: u16) -> Self {
        match code {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            410 => Self::Gone,
            429 => Self::Throttled,
            500..=599 => Self::Server,
            _ => Self::Http,
        }
    }

    pub(crate) fn from_client(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::from_status(status.code),
            kube::Error::SerdeError(_)
            | kube::Error::FromUtf8(_)
            | kube::Error::LinesCodecMaxLineLengthExceeded => Self::Decode,
            _ => Self::Transport,
        }
    }

    pub(crate) fn from_watcher(error: &watcher::Error) -> Self {
        match error {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => Self::from_client(e),
            watcher::Error::WatchError(status) => Self::from_status(status.code),
            watcher::Error::NoResourceVersion => Self::Protocol,
        }
    }
}

/// Freshness of (part of) the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// No complete list yet: lookups may miss pods that exist.
    NeverSynced,
    /// Listed and watching.
    Synced { since: SystemTime },
    /// Synced once, then errors: lookups answer from what was cached.
    Stale { since: SystemTime },
}

impl CacheState {
    /// A metric-friendly name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NeverSynced => "never_synced",
            Self::Synced { .. } => "synced",
            Self::Stale { .. } => "stale",
        }
    }

    pub fn is_synced(&self) -> bool {
        matches!(self, Self::Synced { .. })
    }
}

/// Counters and state of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceStats {
    pub state: CacheState,
    /// List requests (pages count one each).
    pub list_requests: u64,
    /// Watch requests: the first, each resume after the server's timeout or a hung or
    /// broken stream, and each after a re-list. `watch_requests - 1` are restarts.
    pub watch_requests: u64,
    /// GET requests (the node).
    pub get_requests: u64,
    /// Full re-lists after the first list (410 Gone, or a list that failed midway).
    pub relists: u64,
    /// Errors by kind, in [`ErrorKind::ALL`] order; see [`Self::errors_of`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// The last error's message.
    pub last_error: Option<String>,
}

impl ResourceStats {
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.get(kind.index()).copied().unwrap_or(0)
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

#[derive(Debug)]
struct Track {
    state: CacheState,
    synced_once: bool,
    in_relist: bool,
    last_error: Option<String>,
}

#[derive(Debug)]
struct ResourceHealth {
    track: Mutex<Track>,
    list_requests: AtomicU64,
    watch_requests: AtomicU64,
    get_requests: AtomicU64,
    inits: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
}

impl Default for ResourceHealth {
    fn default() -> Self {
        Self {
            track: Mutex::new(Track {
                state: CacheState::NeverSynced,
                synced_once: false,
                in_relist: false,
                last_error: None,
            }),
            list_requests: AtomicU64::new(0),
            watch_requests: AtomicU64::new(0),
            get_requests: AtomicU64::new(0),
            inits: AtomicU64::new(0),
            errors: Default::default(),
        }
    }
}

/// A request's verb, as the client sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    List,
    Watch,
    Get,
}

/// Shared by the watch tasks (writers), the HTTP layer and the cache handle (readers).
#[derive(Debug)]
pub(crate) struct Health {
    resources: [ResourceHealth; 3],
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            resources: Default::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Health {
    fn of(&self, r: Resource) -> &ResourceHealth {
        // `Resource::index` is always in 0..3.
        &self.resources[r.index()]
    }

    fn update(&self, r: Resource, f: impl FnOnce(&mut Track)) {
        let before;
        let after;
        {
            let mut track = self.of(r).track.lock().unwrap_or_else(|p| p.into_inner());
            before = track.state;
            f(&mut track);
            after = track.state;
        }
        if before != after {
            self.changed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn request(&self, r: Resource, verb: Verb) {
        let h = self.of(r);
        match verb {
            Verb::List => &h.list_requests,
            Verb::Watch => &h.watch_requests,
            Verb::Get => &h.get_requests,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A watch request was answered 200: the stream is live again.
    pub fn watch_established(&self, r: Resource) {
        self.recovered(r);
    }

    /// An event arrived on a live watch.
    pub fn event(&self, r: Resource) {
        self.recovered(r);
    }

    fn recovered(&self, r: Resource) {
        self.update(r, |t| {
            if t.synced_once && !t.in_relist && !t.state.is_synced() {
                t.state = CacheState::Synced {
                    since: SystemTime::now(),
                };
            }
        });
    }

    /// A (re-)list begins.
    pub fn list_started(&self, r: Resource) {
        self.of(r).inits.fetch_add(1, Ordering::Relaxed);
        self.update(r, |t| t.in_relist = true);
    }

    /// A list completed: the resource is complete and current.
    pub fn synced(&self, r: Resource) {
        self.update(r, |t| {
            t.in_relist = false;
            t.synced_once = true;
            if !t.state.is_synced() {
                t.state = CacheState::Synced {
                    since: SystemTime::now(),
                };
            }
        });
    }

    pub fn error(&self, r: Resource, kind: ErrorKind, message: String) {
        if let Some(counter) = self.of(r).errors.get(kind.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.update(r, |t| {
            t.last_error = Some(message);
            if t.state.is_synced() {
                t.state = CacheState::Stale {
                    since: SystemTime::now(),
                };
            }
        });
    }

    pub fn state(&self, r: Resource) -> CacheState {
        self.of(r)
            .track
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state
    }

    /// Never synced if a part never was; else stale (since the earliest) if a part is;
    /// else synced (since the latest part).
    pub fn overall(&self) -> CacheState {
        let states = Resource::ALL.map(|r| self.state(r));
        let mut stale: Option<SystemTime> = None;
        let mut synced: Option<SystemTime> = None;
        for state in states {
            match state {
                CacheState::NeverSynced => return CacheState::NeverSynced,
                CacheState::Stale { since } => stale = Some(stale.map_or(since, |s| s.min(since))),
                CacheState::Synced { since } => {
                    synced = Some(synced.map_or(since, |s| s.max(since)))
                }
            }
        }
        match (stale, synced) {
            (Some(since), _) => CacheState::Stale { since },
            (None, Some(since)) => CacheState::Synced { since },
            (None, None) => CacheState::NeverSynced,
        }
    }

    pub fn stats(&self, r: Resource) -> ResourceStats {
        let h = self.of(r);
        let (state, last_error) = {
            let t = h.track.lock().unwrap_or_else(|p| p.into_inner());
            (t.state, t.last_error.clone())
        };
        ResourceStats {
            state,
            list_requests: h.list_requests.load(Ordering::Relaxed),
            watch_requests: h.watch_requests.load(Ordering::Relaxed),
            get_requests: h.get_requests.load(Ordering::Relaxed),
            relists: h.inits.load(Ordering::Relaxed).saturating_sub(1),
            errors: std::array::from_fn(|i| {
                h.errors.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
            }),
            last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_lists_errors_and_recoveries() {
        let h = Health::default();
        assert_eq!(h.state(Resource::Pods), CacheState::NeverSynced);
        h.error(Resource::Pods, ErrorKind::Transport, "refused".into());
        assert_eq!(
            h.state(Resource::Pods),
            CacheState::NeverSynced,
            "an error before the first sync"
        );
        h.list_started(Resource::Pods);
        h.watch_established(Resource::Pods);
        assert_eq!(
            h.state(Resource::Pods),
            CacheState::NeverSynced,
            "a watch mid-list proves nothing"
        );
        h.synced(Resource::Pods);
        assert!(h.state(Resource::Pods).is_synced());
        h.error(Resource::Pods, ErrorKind::Transport, "reset".into());
        assert!(matches!(h.state(Resource::Pods), CacheState::Stale { .. }));
        h.watch_established(Resource::Pods);
        assert!(h.state(Resource::Pods).is_synced());
        h.error(Resource::Pods, ErrorKind::Gone, "too old".into());
        h.list_started(Resource::Pods);
        h.event(Resource::Pods);
        assert!(
            matches!(h.state(Resource::Pods), CacheState::Stale { .. }),
            "re-listing"
        );
        h.synced(Resource::Pods);
        let s = h.stats(Resource::Pods);
        assert!(s.state.is_synced());
        assert_eq!(s.relists, 1);
        assert_eq!(s.errors_of(ErrorKind::Transport), 2);
        assert_eq!(s.errors_of(ErrorKind::Gone), 1);
        assert_eq!(s.last_error.as_deref(), Some("too old"));
    }

    #[test]
    fn overall_state_is_the_worst_part() {
        let h = Health::default();
        h.synced(Resource::Pods);
        assert_eq!(h.overall(), CacheState::NeverSynced);
        h.synced(Resource::Namespaces);
        h.synced(Resource::Node);
        assert!(h.overall().is_synced());
        h.error(Resource::Node, ErrorKind::Server, "503".into());
        assert!(matches!(h.overall(), CacheState::Stale { .. }));
    }

    #[test]
    fn http_statuses_map_to_kinds() {
        assert_eq!(ErrorKind::from_status(401), ErrorKind::Unauthorized);
        assert_eq!(ErrorKind::from_status(410), ErrorKind::Gone);
        assert_eq!(ErrorKind::from_status(503), ErrorKind::Server);
        assert_eq!(ErrorKind::from_status(418), ErrorKind::Http);
    }
}
