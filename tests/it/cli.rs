//! Integration tests: cli (filled by its owner).
