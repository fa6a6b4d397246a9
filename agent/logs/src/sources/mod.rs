//! Where records come from, one module per source. File-based sources share
//! [`tail`]; each implements [`crate::source::Source`].

pub mod files;
pub mod journal;
pub mod live;
pub mod pods;
pub mod tail;
