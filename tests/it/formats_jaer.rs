//! Integration tests: formats_jaer (filled by its owner).
