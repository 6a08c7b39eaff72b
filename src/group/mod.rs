//! Consumer groups (issue 4): the in-process coordinator, the partition assignors and the
//! admin view of groups.

pub mod admin;
pub mod assignor;
pub(crate) mod coordinator;
