//! Tests across modules: real programs on the interpreter, the machine's memory model and
//! platform implementation, and the out-of-line execution oracle.

mod oracle;
mod platform;
mod programs;
