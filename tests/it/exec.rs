//! Integration tests: exec (filled by its owner).
