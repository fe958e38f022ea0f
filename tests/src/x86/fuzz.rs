//! The fuzz driver for the x86-64 analysis and slot encoder (wired into `fuzz/` and replayed
//! over the seed corpus by a plain test).

use iced_x86::{Decoder, DecoderOptions};
use probe_core::arch::x86_64::X86_64;
use probe_core::{Addr, Arch, PlanKind, Reject};

const CANARY: u8 = 0xa5;

/// Make a canonical user-space address out of 4 bytes (page-granular high part, any low part).
fn canonical(b: [u8; 4]) -> u64 {
    let v = u64::from(u32::from_le_bytes(b));
    // Spread over the 47-bit user half: the high bits pick a 64 KiB-aligned region.
    ((v & 0xffff_0000) << 15 | (v & 0xffff)) & 0x0000_7fff_ffff_ffff
}

/// Drive the analysis with arbitrary bytes: `data[0..4]` pick the instruction address,
/// `data[4..8]` the slot address, the rest are the instruction bytes. Panics (the fuzzer's
/// failure signal) when analysis or encoding misbehaves.
pub fn x86_analyze(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let insn = canonical([data[0], data[1], data[2], data[3]]);
    let slot = canonical([data[4], data[5], data[6], data[7]]);
    let code = &data[8..];
    let Ok(plan) = X86_64::analyze(code) else {
        return;
    };
    let len = X86_64::insn_len(&plan);
    assert!((1..=15).contains(&len) && len <= code.len(), "length {len}");
    let kind = X86_64::plan_kind(&plan);
    let size = <X86_64 as Arch>::SLOT_SIZE;
    let mut buf = vec![CANARY; size + 64];
    let res = X86_64::encode_slot(&plan, Addr(insn), Addr(slot), &mut buf[..size]);
    assert!(
        buf[size..].iter().all(|&b| b == CANARY),
        "wrote past the slot"
    );
    let n = match res {
        Ok(n) => n,
        Err(Reject::RipRelativeOutOfRange { .. }) => return,
        Err(e) => panic!("encode_slot refused an analysed instruction: {e:?}"),
    };
    assert!(n <= size);
    if kind == PlanKind::Emulate {
        return;
    }
    // The slot's first instruction must be the probed one, aimed at the same place.
    let mut orig = Decoder::with_ip(64, &code[..len], insn, DecoderOptions::NONE);
    let o = orig.decode();
    let mut dec = Decoder::with_ip(64, &buf[..n], slot, DecoderOptions::NONE);
    let mut s = dec.decode();
    let scratch_seq = s.mnemonic() == iced_x86::Mnemonic::Lea
        && s.op0_register() == iced_x86::Register::RSP
        && o.is_ip_rel_memory_operand()
        && buf[..5] == [0x48, 0x8d, 0x64, 0x24, 0x80];
    if scratch_seq {
        // Scratch-register sequence: lea rsp; push s; mov s, target; insn [s].
        let _push = dec.decode();
        let mov = dec.decode();
        let target = mov.immediate(1);
        s = dec.decode();
        assert_eq!(s.mnemonic(), o.mnemonic(), "{o} vs {s}");
        assert_eq!(target, o.ip_rel_memory_address(), "{o} vs {s}");
        let (_pop, _lea) = (dec.decode(), dec.decode());
        let j = dec.decode();
        let a = j.ip_rel_memory_address().wrapping_sub(slot) as usize;
        let back = buf
            .get(a..a + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        let direct = j.near_branch_target();
        assert!(
            back == Some(insn.wrapping_add(len as u64)) || direct == insn.wrapping_add(len as u64),
            "jump back after {o}: {j}"
        );
        return;
    }
    assert_eq!(s.mnemonic(), o.mnemonic(), "{o} vs {s}");
    if o.is_ip_rel_memory_operand() && s.is_ip_rel_memory_operand() {
        assert_eq!(
            s.ip_rel_memory_address(),
            o.ip_rel_memory_address(),
            "{o} vs {s}"
        );
    }
    if kind == PlanKind::Boost && s.flow_control() == iced_x86::FlowControl::Next {
        // Then the jump back.
        let j = dec.decode();
        let back = if j.is_ip_rel_memory_operand() {
            let a = j.ip_rel_memory_address().wrapping_sub(slot) as usize;
            u64::from_le_bytes(buf[a..a + 8].try_into().unwrap_or([0; 8]))
        } else {
            j.near_branch_target()
        };
        assert_eq!(
            back,
            insn.wrapping_add(len as u64),
            "jump back after {o}: {j} in {:02x?}",
            &buf[..n]
        );
    }
}
