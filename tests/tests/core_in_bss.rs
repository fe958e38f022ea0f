//! A `ProbeCore` in a `static` is all zero bits, so it lands in `.bss` (no image data, no
//! start-up copy), as a kernel that links the core wants: checked in this very test binary's
//! ELF, for the x86-64 core (the Linux platform's) and the mock's.

use object::{Object, ObjectSection, ObjectSymbol};
use platform_linux::tracer::platform::LinuxPlatform;
use platform_linux::tracer::LinuxConsumer;
use platform_mock::Machine;
use probe_core::ProbeCore;
use probe_tests::mock::Counter;

/// A kernel-sized core: 4 096 probe buckets, 64 consumers, 8 192 sites, 4 spaces, 512 slots
/// per space, 8 CPUs.
#[no_mangle]
#[used]
static PROBE_CORE_X86_IN_BSS: ProbeCore<LinuxPlatform, LinuxConsumer, 4096, 64, 8192, 4, 512, 8> =
    ProbeCore::new();

#[no_mangle]
#[used]
static PROBE_CORE_MOCK_IN_BSS: ProbeCore<Machine, Counter, 1024, 64, 1024, 4, 64, 4> =
    ProbeCore::new();

#[test]
fn a_static_core_is_zero_initialised() {
    let exe = std::env::current_exe().unwrap();
    let data = std::fs::read(&exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    for (name, size) in [
        (
            "PROBE_CORE_X86_IN_BSS",
            core::mem::size_of_val(&PROBE_CORE_X86_IN_BSS),
        ),
        (
            "PROBE_CORE_MOCK_IN_BSS",
            core::mem::size_of_val(&PROBE_CORE_MOCK_IN_BSS),
        ),
    ] {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name} in {}", exe.display()));
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let sname = section.name().unwrap();
        println!("{name}: {size} bytes in {sname}");
        assert!(
            sname.starts_with(".bss") || sname.starts_with(".tbss"),
            "{name} ({size} bytes) is in {sname}: some blank field is not zero bits"
        );
    }
}
