//! Statically defined tracing (SDT, "USDT") markers: `.note.stapsdt` notes and their argument
//! specs, parsed zero-copy and without allocation.
//!
//! - [`SdtNotes`] walks the contents of a `.note.stapsdt` section and yields [`SdtNote`]s
//!   (provider, name, marker address, `.stapsdt.base`, semaphore, argument string);
//!   [`SdtNote::adjusted_pc`] applies the prelink adjustment and [`vaddr_to_offset`] turns an
//!   address into the file offset a probe is keyed by.
//! - [`SdtArgs`] walks an argument string and yields [`SdtArg`]s: size, signedness and an
//!   [`ArgLoc`] (register, immediate, memory, `%rip`-relative) over [`X86Reg`]s.
//! - With the `x86_64` feature, `SdtArg::value` reads an argument's value from
//!   `X86Regs` and memory at a hit.
//!
//! Malformed input yields an [`SdtError`]; nothing here panics or allocates.
//!
//! The semaphore protocol itself (counters kept in step with installed breakpoints) is in
//! `semaphore.rs`, as part of the engine.

mod args;
mod error;
#[cfg(feature = "x86_64")]
mod eval;
mod note;
mod reg;
mod semaphore;

pub use args::{ArgLoc, SdtArg, SdtArgs};
pub use error::SdtError;
#[cfg(feature = "x86_64")]
pub use eval::ArgValueError;
pub use note::{
    vaddr_to_offset, Class, Endian, SdtNote, SdtNotes, Segment, NT_STAPSDT, STAPSDT_NOTE_NAME,
};
pub use reg::{Gpr, RegPart, SegReg, X86Reg};

#[cfg(test)]
mod tests;
