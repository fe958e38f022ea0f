//! COM1 output (16550 UART at 0x3f8), and `println!` over it.
//!
//! Hand-written rather than the `uart_16550` crate: that crate's current release brings a
//! second x86 support crate (`x86`) besides `x86_64`, for the seven port writes below.

use core::fmt::{self, Write};

use spin::Mutex;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// The port, behind a lock so that lines from several CPUs do not interleave.
static SERIAL: Mutex<Serial> = Mutex::new(Serial);

/// The UART.
#[derive(Debug)]
pub struct Serial;

/// Program COM1 for 38400 8N1, FIFOs on.
pub fn init() {
    for (off, v) in [
        (1, 0x00),
        (3, 0x80),
        (0, 0x03),
        (1, 0x00),
        (3, 0x03),
        (2, 0xc7),
        (4, 0x0b),
    ] {
        // SAFETY: COM1's registers; writing them configures the UART and nothing else.
        unsafe { Port::<u8>::new(COM1 + off).write(v) };
    }
}

fn put(b: u8) {
    let mut lsr = Port::<u8>::new(COM1 + 5);
    // SAFETY: reading the line status register and writing the data register of COM1 have no
    // effect beyond the UART.
    unsafe {
        while lsr.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        Port::<u8>::new(COM1).write(b);
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn print(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _ = SERIAL.lock().write_fmt(args);
    });
}

/// Print without the lock: for the fatal paths (a fault while some CPU holds it).
pub fn print_unlocked(args: fmt::Arguments<'_>) {
    let _ = Serial.write_fmt(args);
}

/// Print a line to COM1.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::serial::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
