//! The memory model (copy-on-write, fork, exec, munmap, slot areas) and the `Platform`
//! implementation, through the same traits the core uses.

use core::ops::ControlFlow;

use probe_core::platform::read_file_exact;
use probe_core::{
    Addr, AddressSpace, Arch, FileId, Mapping, MemError, MemErrorKind, Platform, SpaceId, TaskId,
};

use crate::isa::BRK_BYTES;
use crate::{
    Backing, FaultOp, FaultRule, FaultySpace, Machine, Prot, SpaceStats, TaskStatus, ToyArch,
    DATA_BASE, PAGE_SIZE, TEXT_BASE,
};

fn file_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 1) as u8).collect()
}

fn mappings(m: &Machine, file: FileId) -> Vec<Mapping> {
    let mut v = Vec::new();
    m.for_each_mapping(file, &mut |map| {
        v.push(map);
        ControlFlow::Continue(())
    });
    v
}

fn tasks(m: &Machine, space: SpaceId) -> Vec<TaskId> {
    let mut v = Vec::new();
    m.for_each_task(space, &mut |t| {
        v.push(t);
        ControlFlow::Continue(())
    });
    v
}

#[test]
fn patching_text_breaks_cow_in_that_space_only() {
    let m = Machine::new();
    let bytes = file_of(200);
    let f = m.add_file(&bytes);
    let (a, _) = m.spawn(f, 0).unwrap();
    let (b, _) = m.spawn(f, 0).unwrap();
    let at = Addr(TEXT_BASE + 0x44);
    let ha = m.space(a).unwrap();
    assert_eq!(m.page_shared_with_file(a, at), Some(true));
    ha.patch_code(at, &BRK_BYTES).unwrap();
    assert_eq!(m.peek(a, at, 4).unwrap(), BRK_BYTES);
    assert_eq!(m.peek(b, at, 4).unwrap(), bytes[0x44..0x48]);
    assert_eq!(m.file_bytes(f).unwrap(), bytes);
    assert_eq!(m.page_shared_with_file(a, at), Some(false));
    assert_eq!(m.page_shared_with_file(a, Addr(TEXT_BASE)), Some(true));
    assert_eq!(m.page_shared_with_file(b, at), Some(true));
    assert_eq!(m.page_shared_with_file(a, Addr(DATA_BASE)), None);
    // Data writes to text are refused and change nothing.
    assert_eq!(
        ha.write(Addr(TEXT_BASE), &[0]),
        Err(MemError::new(Addr(TEXT_BASE), MemErrorKind::Denied))
    );
    let sa = m.stats(a).unwrap();
    assert_eq!(
        sa,
        SpaceStats {
            text_patches: 1,
            ..SpaceStats::default()
        }
    );
    assert_eq!(m.stats(b).unwrap(), SpaceStats::default());
    // Original bytes come from the file, untouched.
    let mut orig = [0u8; 4];
    read_file_exact(&m, f, 0x44, &mut orig).unwrap();
    assert_eq!(orig, bytes[0x44..0x48]);
}

#[test]
fn a_forked_child_inherits_patched_text_then_diverges() {
    let m = Machine::new();
    let f = m.add_file(&file_of(200));
    let (parent, pt) = m.spawn(f, 0).unwrap();
    let at = Addr(TEXT_BASE + 0x3e); // crosses a page boundary
    m.space(parent).unwrap().patch_code(at, &BRK_BYTES).unwrap();
    let (child, ct) = m.fork(pt).unwrap();
    assert_ne!(child, parent);
    assert_eq!(m.regs(ct), m.regs(pt));
    assert_eq!(m.peek(child, at, 4).unwrap(), BRK_BYTES);
    assert_eq!(m.stats(child).unwrap(), SpaceStats::default());
    // Restoring in the child leaves the parent patched.
    let orig = m.file_bytes(f).unwrap()[0x3e..0x42].to_vec();
    m.space(child).unwrap().patch_code(at, &orig).unwrap();
    assert_eq!(m.peek(child, at, 4).unwrap(), orig);
    assert_eq!(m.peek(parent, at, 4).unwrap(), BRK_BYTES);
    // The rmap walk sees both.
    let maps = mappings(&m, f);
    assert_eq!(maps.len(), 2);
    assert_eq!(maps[0].space, parent);
    assert_eq!(maps[1].space, child);
    assert!(maps
        .iter()
        .all(|x| x.exec && !x.write && x.file_offset == 0));
    assert_eq!(maps[1].addr_of(0x3e), Some(at));
    // Stack contents are copied too.
    let sp = Addr(m.regs(pt).unwrap().r[15] - 8);
    m.poke(parent, sp, &7u64.to_le_bytes()).unwrap();
    let (child2, _) = m.fork(pt).unwrap();
    assert_eq!(m.peek_u64(child2, sp), Ok(7));
    m.poke(child2, sp, &8u64.to_le_bytes()).unwrap();
    assert_eq!(m.peek_u64(parent, sp), Ok(7));
}

#[test]
fn exec_starts_clean_and_munmap_forgets() {
    let m = Machine::new();
    let f = m.add_file(&file_of(300));
    let g = m.add_file(&file_of(100));
    let (s, t) = m.spawn(f, 0).unwrap();
    let t2 = m.new_task(s, m.regs(t).unwrap()).unwrap();
    let h = m.space(s).unwrap();
    h.patch_code(Addr(TEXT_BASE), &BRK_BYTES).unwrap();
    let xol = m.xol_area(s, Addr(TEXT_BASE), 4).unwrap();
    assert_eq!(tasks(&m, s), [t, t2]);
    m.exec(t, g, 8).unwrap();
    assert_eq!(m.status(t2), Some(TaskStatus::Killed));
    assert_eq!(tasks(&m, s), [t]);
    assert_eq!(m.regs(t).unwrap().pc, TEXT_BASE + 8);
    assert!(mappings(&m, f).is_empty());
    assert_eq!(mappings(&m, g).len(), 1);
    assert_eq!(m.page_shared_with_file(s, Addr(TEXT_BASE)), Some(true));
    assert!(m.mappings(s).iter().all(|x| !x.xol));
    let xol2 = m.xol_area(s, Addr(TEXT_BASE), 4).unwrap();
    assert_eq!(m.mappings(s).iter().filter(|x| x.xol).count(), 1);
    let _ = (xol, xol2);

    // A second mapping of a file, then unmap part of the first.
    let map = m
        .mmap_file(s, Addr(0x20_0000), 2 * PAGE_SIZE, f, PAGE_SIZE, Prot::RX)
        .unwrap();
    assert_eq!(map.file_offset, PAGE_SIZE);
    assert_eq!(mappings(&m, f), [map]);
    let lost = m.munmap(s, Addr(0x20_0000), PAGE_SIZE).unwrap();
    assert_eq!(lost.len(), 1);
    let now = mappings(&m, f);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].range.start, Addr(0x20_0000 + PAGE_SIZE));
    assert_eq!(now[0].file_offset, 2 * PAGE_SIZE);
    m.munmap(s, Addr(0x20_0000), 0x1000).unwrap();
    assert!(mappings(&m, f).is_empty());
    // Breaking out of the walk stops it.
    m.spawn(g, 0).unwrap();
    let mut n = 0;
    m.for_each_mapping(g, &mut |_| {
        n += 1;
        ControlFlow::Break(())
    });
    assert_eq!(n, 1);
    // Exited tasks are not listed; destroyed spaces are gone.
    m.exit(t, 3);
    assert!(tasks(&m, s).is_empty());
    assert!(m.destroy_space(s));
    assert!(m.space(s).is_none());
    assert_eq!(
        h.read(Addr(TEXT_BASE), &mut [0u8; 4]),
        Err(MemError::new(Addr(TEXT_BASE), MemErrorKind::Gone))
    );
}

#[test]
fn partial_reads_stop_at_page_boundaries() {
    let m = Machine::new();
    let bytes = file_of(300);
    let f = m.add_file(&bytes);
    let (s, _) = m.spawn(f, 0).unwrap();
    let h = m.space(s).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(h.read(Addr(TEXT_BASE + 60), &mut buf), Ok(4));
    assert_eq!(buf[..4], bytes[60..64]);
    h.read_exact(Addr(TEXT_BASE + 60), &mut buf).unwrap();
    assert_eq!(buf, bytes[60..68]);
    assert_eq!(m.read_file(f, 60, &mut buf), Ok(4));
    assert_eq!(m.read_file(f, 296, &mut buf), Ok(4));
    assert_eq!(
        m.read_file(f, 300, &mut buf),
        Err(MemError::new(Addr(300), MemErrorKind::Unmapped))
    );
    assert_eq!(m.file_size(f), Some(300));
    assert_eq!(m.file_size(FileId(99)), None);
    // Past the end of the file, the last text page reads zeros.
    let mut tail = [0xffu8; 4];
    h.read_exact(Addr(TEXT_BASE + 316), &mut tail).unwrap();
    assert_eq!(tail, [0; 4]);
    assert_eq!(
        h.read(Addr(TEXT_BASE + 320), &mut tail),
        Err(MemError::new(Addr(TEXT_BASE + 320), MemErrorKind::Unmapped))
    );
    assert_eq!(m.stats(s).unwrap().reads, 4);
}

#[test]
fn xol_area_is_per_space_executable_and_patch_only() {
    let m = Machine::new();
    let f = m.add_file(&file_of(200));
    let (s, t) = m.spawn(f, 0).unwrap();
    let base = m.xol_area(s, Addr(TEXT_BASE + 8), 4).unwrap();
    assert_eq!(base.0 % PAGE_SIZE, 0);
    assert!(
        base.0 > TEXT_BASE + 200 && base.0 < TEXT_BASE + 0x1000,
        "near the code"
    );
    assert_eq!(m.xol_area(s, Addr(TEXT_BASE + 8), 4), Some(base));
    assert_eq!(m.xol_area(s, Addr(TEXT_BASE + 8), 2), Some(base));
    assert_eq!(m.xol_area(s, Addr(TEXT_BASE + 8), 5), None);
    let info = m.mappings(s).into_iter().find(|x| x.xol).unwrap();
    assert_eq!(info.range.start, base);
    assert_eq!(info.range.len(), 4 * ToyArch::SLOT_SIZE as u64);
    assert_eq!(info.backing, Backing::Anon);
    assert!(info.prot.exec && !info.prot.write);
    let h = m.space(s).unwrap();
    assert_eq!(
        h.write(base, &[1]),
        Err(MemError::new(base, MemErrorKind::Denied))
    );
    h.patch_code(base, &BRK_BYTES).unwrap();
    assert_eq!(m.stats(s).unwrap().xol_patches, 1);
    assert_eq!(m.stats(s).unwrap().text_patches, 0);
    let (child, _) = m.fork(t).unwrap();
    assert_eq!(m.xol_area(child, Addr(TEXT_BASE), 4), Some(base));
    assert_eq!(m.peek(child, base, 4).unwrap(), BRK_BYTES);
    // Placement can be forced far away.
    m.set_xol_base(Some(Addr(0x1000_0000)));
    let (s2, _) = m.spawn(f, 0).unwrap();
    assert_eq!(m.xol_area(s2, Addr(TEXT_BASE), 1), Some(Addr(0x1000_0000)));
    m.set_xol_base(None);
    let (s3, _) = m.spawn(f, 0).unwrap();
    assert_eq!(m.xol_area(s3, Addr(TEXT_BASE), 0), None);
    assert_eq!(m.xol_area(SpaceId(999), Addr(TEXT_BASE), 1), None);
}

#[test]
fn injected_faults_fail_exactly_the_nth_operation() {
    let m = Machine::new();
    let f = m.add_file(&file_of(200));
    let (s, _) = m.spawn(f, 0).unwrap();
    let (other, _) = m.spawn(f, 0).unwrap();
    let h = m.space(s).unwrap();
    m.inject_fault(FaultRule::new(FaultOp::Patch, 2).in_space(s));
    h.patch_code(Addr(TEXT_BASE), &BRK_BYTES).unwrap();
    m.space(other)
        .unwrap()
        .patch_code(Addr(TEXT_BASE), &BRK_BYTES)
        .unwrap();
    let at = Addr(TEXT_BASE + 4);
    assert_eq!(
        h.patch_code(at, &BRK_BYTES),
        Err(MemError::new(at, MemErrorKind::Io))
    );
    assert_eq!(m.page_shared_with_file(s, Addr(TEXT_BASE)), Some(false));
    assert_ne!(
        m.peek(s, at, 4).unwrap(),
        BRK_BYTES,
        "a failed patch wrote nothing"
    );
    h.patch_code(at, &BRK_BYTES).unwrap();
    assert_eq!(m.stats(s).unwrap().text_patches, 2);
    assert_eq!(m.injected_faults(), 1);

    m.inject_fault(
        FaultRule::new(FaultOp::ReadFile, 1)
            .sticky()
            .with_kind(MemErrorKind::Gone),
    );
    let mut b = [0u8; 4];
    assert_eq!(
        m.read_file(f, 0, &mut b),
        Err(MemError::new(Addr(0), MemErrorKind::Gone))
    );
    assert!(m.read_file(f, 0, &mut b).is_err());
    m.clear_faults();
    assert_eq!(m.read_file(f, 0, &mut b), Ok(4));

    m.inject_fault(FaultRule::new(FaultOp::XolArea, 1));
    assert_eq!(m.xol_area(s, Addr(TEXT_BASE), 1), None);
    assert!(m.xol_area(s, Addr(TEXT_BASE), 1).is_some());

    m.inject_fault(FaultRule::new(FaultOp::Write, 1));
    m.inject_fault(FaultRule::new(FaultOp::Read, 1));
    assert!(h.write(Addr(DATA_BASE), &[1]).is_err());
    assert!(h.read(Addr(DATA_BASE), &mut b).is_err());
    assert_eq!(h.read(Addr(DATA_BASE), &mut b), Ok(4));
    assert_eq!(b, [0; 4]);

    // The generic wrapper around any space.
    let fs = FaultySpace::new(m.space(other).unwrap());
    fs.inject(FaultRule::new(FaultOp::Read, 1).with_kind(MemErrorKind::Denied));
    assert_eq!(fs.id(), other);
    assert_eq!(
        fs.read(Addr(TEXT_BASE), &mut b),
        Err(MemError::new(Addr(TEXT_BASE), MemErrorKind::Denied))
    );
    assert_eq!(fs.read(Addr(TEXT_BASE), &mut b), Ok(4));
    assert_eq!(b, BRK_BYTES);
    assert_eq!(fs.injected(), 1);
    assert_eq!(fs.inner().id(), other);
}

#[test]
fn machine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Machine>();
    check::<crate::SpaceHandle<'static>>();
}
