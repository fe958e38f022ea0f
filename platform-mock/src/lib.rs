//! platform-mock (being built).
