//! Consumer groups (issue 4): the admin view of groups and the partition assignors; the
//! coordinator follows.

pub mod admin;
pub mod assignor;
