//! x86-64 test support: a ptrace harness that uses the real CPU as the oracle for the
//! `X86_64` arch's emulation and out-of-line execution, ELF function-entry corpora, the
//! hand-written corpus, and the fuzz driver for the analysis.

pub mod corpus;
pub mod elf;
pub mod fuzz;
pub mod jump;
pub mod oracle;
pub mod procmem;
pub mod ptrace;
