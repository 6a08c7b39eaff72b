//! Consumer groups (issue 4): assignors today; the coordinator follows.

pub mod assignor;
