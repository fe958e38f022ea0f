//! platform-linux (being built).
