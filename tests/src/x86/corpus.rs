//! The hand-written corpus: every class of instruction the x86-64 arch handles, with
//! RIP-relative displacements filled in.

/// One hand-written instruction and how many register variants to run it with.
#[derive(Clone, Debug)]
pub struct HandCase {
    /// The instruction's bytes.
    pub bytes: Vec<u8>,
    /// Register variants (eflags and rcx come from the variant number for flag-sensitive
    /// and rcx-sensitive instructions).
    pub variants: usize,
}

/// RIP-relative displacements the templates are instantiated with.
const DISPS: [i32; 3] = [0x1230, -0x3458, 0x7_f000];

/// Templates in hex; `DDDDDDDD` stands for a RIP-relative disp32, `/N` after the name gives
/// the number of register variants (default 2).
const TEMPLATES: &[&str] = &[
    // ---- nops
    "90",
    "6690",
    "4890",
    "0f1f00",
    "0f1f4000",
    "0f1f440000",
    "660f1f440000",
    "0f1f8000000000",
    "0f1f840000000000",
    "660f1f840000000000",
    "662e0f1f840000000000",
    "f30f1efa",
    "f30f1efb",
    "f390",
    // ---- relative branches
    "eb10",
    "ebf0",
    "e900010000",
    "e900ffffff",
    "e800010000",
    "e8f0ffffff",
    "e800000000",
    // ---- push/pop/mov/ret
    "50",
    "51",
    "52",
    "53",
    "54",
    "55",
    "56",
    "57",
    "4150",
    "4151",
    "4152",
    "4153",
    "4154",
    "4155",
    "4156",
    "4157",
    "58",
    "59",
    "5a",
    "5b",
    "5c",
    "5d",
    "5e",
    "5f",
    "4158",
    "415c",
    "415d",
    "415f",
    "6a7f",
    "6a80",
    "6878563412",
    "6800000080",
    "4889e5",
    "4889c7",
    "4c89c0",
    "4989fc",
    "488bec",
    "4889e0",
    "4889c4",
    "4d89f8",
    "c3",
    "f2c3",
    "c20800",
    "c20000",
    "ffe0",
    "41ffe3",
    "ffd0",
    "41ffd3",
    "ffd4",
    "ffe4",
    // ---- indirect through memory
    "ff25DDDDDDDD",
    "ff15DDDDDDDD",
    "f2ff25DDDDDDDD",
    "3effe0",
    "ff6008",
    "ff5010",
    "41ff542408",
    "ff1424",
    "ff642408",
    "ff14c500000001",
    "ff24cd10000000",
    "42ff5400f8",
    "64ff242528000000",
    // ---- RIP-relative loads of every width
    "8a05DDDDDDDD",
    "668b05DDDDDDDD",
    "8b05DDDDDDDD",
    "488b05DDDDDDDD",
    "448b05DDDDDDDD",
    "4c8b3dDDDDDDDD",
    "0fb605DDDDDDDD",
    "480fbf05DDDDDDDD",
    "486305DDDDDDDD",
    "8a25DDDDDDDD",
    "408a35DDDDDDDD",
    // ---- stores
    "8805DDDDDDDD",
    "668905DDDDDDDD",
    "8905DDDDDDDD",
    "488905DDDDDDDD",
    "4c8925DDDDDDDD",
    "c605DDDDDDDD7f",
    "c705DDDDDDDD78563412",
    "48c705DDDDDDDDffffffff",
    "66c705DDDDDDDD3412",
    // ---- lea
    "488d05DDDDDDDD",
    "4c8d3dDDDDDDDD",
    "8d05DDDDDDDD",
    "488d3dDDDDDDDD",
    "488d0dDDDDDDDD",
    // ---- arithmetic with RIP-relative operands (flags)
    "480305DDDDDDDD/4",
    "480105DDDDDDDD/4",
    "483b05DDDDDDDD/4",
    "833dDDDDDDDD00/4",
    "803dDDDDDDDD00/4",
    "48833dDDDDDDDD05/4",
    "f605DDDDDDDD01/4",
    "488505DDDDDDDD/4",
    "ff05DDDDDDDD/4",
    "48ff0dDDDDDDDD/4",
    "f0480fc105DDDDDDDD",
    "f0ff05DDDDDDDD",
    "488705DDDDDDDD",
    "480fb10dDDDDDDDD/4",
    "480faf05DDDDDDDD/4",
    "48f725DDDDDDDD",
    "c125DDDDDDDD03/4",
    "480fa305DDDDDDDD/4",
    "482b05DDDDDDDD/4",
    "481305DDDDDDDD/4",
    "2305DDDDDDDD/4",
    "0b05DDDDDDDD/4",
    "3305DDDDDDDD/4",
    "f0480fb10dDDDDDDDD",
    "480f4405DDDDDDDD/4",
    "0f9405DDDDDDDD/4",
    // ---- SSE / AVX / x87 with RIP-relative operands
    "f30f1005DDDDDDDD",
    "f20f1005DDDDDDDD",
    "0f1005DDDDDDDD",
    "0f2805DDDDDDDD",
    "660f6f05DDDDDDDD",
    "f30f6f05DDDDDDDD",
    "660f7f05DDDDDDDD",
    "f30f7e05DDDDDDDD",
    "660fd605DDDDDDDD",
    "0f1105DDDDDDDD",
    "660fef05DDDDDDDD",
    "0f5805DDDDDDDD",
    "f20f5905DDDDDDDD",
    "660f2e05DDDDDDDD/4",
    "0f2f05DDDDDDDD/4",
    "f20f2c05DDDDDDDD",
    "660f3a0f05DDDDDDDD04",
    "660f7005DDDDDDDD1b",
    "66440f6f05DDDDDDDD",
    "c5fa1005DDDDDDDD",
    "c5fe6f05DDDDDDDD",
    "c5f9ef05DDDDDDDD",
    "c4e2791805DDDDDDDD",
    "c57a6f3dDDDDDDDD",
    "c4417a6f3dDDDDDDDD",
    "d905DDDDDDDD",
    "dd05DDDDDDDD",
    "d91dDDDDDDDD",
    "df2dDDDDDDDD",
    // ---- RIP-relative and RSP: single-stepped
    "ff35DDDDDDDD",
    "8f05DDDDDDDD",
    "488925DDDDDDDD",
    "488b25DDDDDDDD",
    "480325DDDDDDDD/4",
    // ---- plain boosts
    "4883ec18/4",
    "4881ec00010000/4",
    "4883c408/4",
    "31c0/4",
    "31ed/4",
    "4885ff/4",
    "85f6/4",
    "488b4708",
    "48897c2408",
    "488b442408",
    "897c24fc",
    "488d6424f8",
    "9c",
    "c9",
    "c8100000",
    "f348ab/4",
    "f3a4/4",
    "f348a5/4",
    "a4",
    "ac",
    "f2ae/4",
    "fc",
    "fd",
    "0fa2",
    "99",
    "4898",
    "48f7f1",
    "0faef0",
    "f0480fb10f/4",
    "480f44c1/4",
    "0f94c0/4",
    "480fbcc7/4",
    "f3480fb8c7/4",
    "48c1e003/4",
    "48d3e0/4",
    "c4e2f1f7c0",
    "488b0424",
    "64488b042528000000",
    "0f57c0",
    "660fefc0",
    "c5f877",
    "4c8b4c2408",
    "41ff542408",
    // ---- loop family: single-stepped
    "e210/8",
    "e2f0/8",
    "e110/8",
    "e010/8",
    "e310/8",
    "67e310/8",
    "67e210/8",
    // ---- 32-bit addressing indirect call: single-stepped
    "67ff10",
    "67ff5008",
    // ---- 32-bit addressing indirect jmp: boosted as is (leaves the slot by itself)
    "67ff20",
    "67ff6008",
    // ---- refused
    "cc",
    "cd80",
    "f1",
    "ce",
    "0f0b",
    "f4",
    "fa",
    "fb",
    "e460",
    "ee",
    "6c",
    "0f05",
    "0f34",
    "8ed0",
    "66e800000000",
    "cb",
    "48cf",
    "c7f800000000",
    "0f01f8",
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// The hand corpus, templates instantiated with each displacement. Jcc cases (rel8 and
/// rel32, every condition) are added with 64 variants so every flag combination is seen.
pub fn hand_corpus() -> Vec<HandCase> {
    let mut out = Vec::new();
    for t in TEMPLATES {
        let (body, variants) = match t.split_once('/') {
            Some((b, v)) => (b, v.parse().unwrap_or(2)),
            None => (*t, 2),
        };
        if body.contains("DDDDDDDD") {
            // One more displacement that makes the operand 16-byte aligned (movaps & co).
            let len = (body.len() / 2) as i64 - 4 + 4;
            let next = super::oracle::INSN as i64 + len;
            let aligned = ((next + 0x2000) & !15) - next;
            for d in DISPS.into_iter().chain([aligned as i32]) {
                let dh: String = d.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
                out.push(HandCase {
                    bytes: hex(&body.replace("DDDDDDDD", &dh)),
                    variants,
                });
            }
        } else {
            out.push(HandCase {
                bytes: hex(body),
                variants,
            });
        }
    }
    for cc in 0..16u8 {
        out.push(HandCase {
            bytes: vec![0x70 + cc, 0x10],
            variants: 64,
        });
        out.push(HandCase {
            bytes: vec![0x0f, 0x80 + cc, 0x00, 0xf0, 0xff, 0xff],
            variants: 64,
        });
    }
    out
}
