//! Integration tests: malformed (filled by its owner).
