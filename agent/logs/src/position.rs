//! What a source checkpoints. Each source has its own position type (a file's offset
//! guarded by a fingerprint, a journal cursor); the acknowledgement tracker and the
//! checkpoint store are generic over it, so every source gets the same guarantee: a
//! position moves only once everything before it was confirmed.

use std::fmt::Debug;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A resumable position of one stream of a source (one file, one journal).
pub trait Position:
    Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// What the position is of: a file identity, a journal's seqnum id.
    type Key: Copy + Eq + Hash + Ord + Debug + Send + Sync + 'static;

    fn key(&self) -> Self::Key;

    /// How far the stream is confirmed, in the source's own unit (bytes for files): the lag
    /// gauges compare it with how far the stream goes.
    fn progress(&self) -> u64;

    /// What identifies the stream's content apart from its key (a file's first-line
    /// hash): kept for streams finished and forgotten, so a copy of one found later (a
    /// rotation compressed after we read it) is known as shipped.
    fn content_id(&self) -> Option<u64> {
        None
    }
}

/// A change to the committed positions, true once its batch (and all before it) is acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update<P: Position> {
    /// Everything of the stream before this position is delivered.
    Advance(P),
    /// The stream was read to its end and dropped; forget its position.
    Forget(P::Key),
}
