//! x86-64 (placeholder; filled by the x86-64 issue).
