//! Partition assignors (placeholder: being written).
