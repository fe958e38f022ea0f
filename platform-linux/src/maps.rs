//! `/proc/PID/maps`, parsed into typed mappings.
//!
//! A line looks like
//! `7f1c2a000000-7f1c2a028000 r--p 00000000 fd:01 1835   /usr/lib/x86_64-linux-gnu/libc.so.6`.
//! The path may hold spaces, may be a pseudo name (`[heap]`, `[stack]`, `[vdso]`) and may end
//! in ` (deleted)`.

use core::fmt;
use core::ops::Range;
use std::path::Path;

use crate::sys::Pid;

/// The permissions of a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Shared (`s`) rather than private copy-on-write (`p`).
    pub shared: bool,
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |b, ch| if b { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The virtual address range, `start..end`.
    pub range: Range<u64>,
    /// Access permissions.
    pub perms: Perms,
    /// Offset in the file of the first mapped byte.
    pub offset: u64,
    /// Device (major, minor) of the file.
    pub dev: (u32, u32),
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// The file, a pseudo name such as `[heap]`, or empty for anonymous memory.
    pub path: String,
    /// The path ended in ` (deleted)` (stripped from `path`).
    pub deleted: bool,
}

impl Mapping {
    /// True if this maps a file (not anonymous memory or a `[pseudo]` area).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// The last component of the path (`libc.so.6`).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The virtual address where file offset `off` is mapped, if this mapping covers it.
    pub fn addr_of_offset(&self, off: u64) -> Option<u64> {
        let len = self.range.end - self.range.start;
        let rel = off.checked_sub(self.offset)?;
        (rel < len).then(|| self.range.start + rel)
    }

    /// The file offset mapped at `addr`, if this mapping covers it.
    pub fn offset_of_addr(&self, addr: u64) -> Option<u64> {
        self.range
            .contains(&addr)
            .then(|| self.offset + (addr - self.range.start))
    }
}

/// Why a maps file could not be read or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapsError {
    /// The file could not be read.
    #[error("cannot read /proc/{pid}/maps: {reason} (has the process exited?)")]
    Read {
        /// The process.
        pid: Pid,
        /// The I/O error.
        reason: String,
    },
    /// A line is not in the kernel's format.
    #[error("line {line} of a maps file is malformed ({field}): {text:?}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The field that failed to parse.
        field: &'static str,
        /// The line.
        text: String,
    },
}

/// Reads and parses `/proc/PID/maps`.
pub fn read_maps(pid: Pid) -> Result<Vec<Mapping>, MapsError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| MapsError::Read {
            pid,
            reason: e.to_string(),
        })?;
    parse_maps(&text)
}

/// Parses the text of a maps file.
pub fn parse_maps(text: &str) -> Result<Vec<Mapping>, MapsError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l).map_err(|field| malformed(i + 1, field, l)))
        .collect()
}

fn malformed(line: usize, field: &'static str, text: &str) -> MapsError {
    MapsError::Malformed {
        line,
        field,
        text: text.to_owned(),
    }
}

fn next_field<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start_matches(' ');
    let end = s.find(' ').unwrap_or(s.len());
    let (field, tail) = s.split_at(end);
    *rest = tail;
    (!field.is_empty()).then_some(field)
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Parses one line; the error names the bad field.
pub fn parse_line(line: &str) -> Result<Mapping, &'static str> {
    let mut rest = line;
    let range = next_field(&mut rest).ok_or("range")?;
    let (lo, hi) = range.split_once('-').ok_or("range")?;
    let (start, end) = (hex(lo).ok_or("start")?, hex(hi).ok_or("end")?);
    if end < start {
        return Err("range");
    }
    let p = next_field(&mut rest).ok_or("perms")?.as_bytes();
    if p.len() != 4 {
        return Err("perms");
    }
    let perms = Perms {
        read: p[0] == b'r',
        write: p[1] == b'w',
        exec: p[2] == b'x',
        shared: p[3] == b's',
    };
    let offset = hex(next_field(&mut rest).ok_or("offset")?).ok_or("offset")?;
    let dev = next_field(&mut rest).ok_or("dev")?;
    let (maj, min) = dev.split_once(':').ok_or("dev")?;
    let dev = (
        u32::from_str_radix(maj, 16).map_err(|_| "dev")?,
        u32::from_str_radix(min, 16).map_err(|_| "dev")?,
    );
    let inode = next_field(&mut rest)
        .ok_or("inode")?
        .parse()
        .map_err(|_| "inode")?;
    let mut path = rest.trim_start_matches(' ');
    let deleted = path.ends_with(" (deleted)");
    if deleted {
        path = &path[..path.len() - " (deleted)".len()];
    }
    Ok(Mapping {
        range: start..end,
        perms,
        offset,
        dev,
        inode,
        path: path.to_owned(),
        deleted,
    })
}

/// The mappings of one file (by device and inode, so `/lib` and `/usr/lib` paths of a
/// merged-/usr system agree), in address order.
pub fn mappings_of_file<'a>(maps: &'a [Mapping], file: &Path) -> Vec<&'a Mapping> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(file) else {
        return Vec::new();
    };
    let dev = meta.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    maps.iter()
        .filter(|m| m.inode == meta.ino() && m.dev == (maj, min) && m.is_file())
        .collect()
}

/// The address span `lowest start .. highest end` of all mappings of a module.
pub fn module_span(mappings: &[&Mapping]) -> Option<Range<u64>> {
    let start = mappings.iter().map(|m| m.range.start).min()?;
    let end = mappings.iter().map(|m| m.range.end).max()?;
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    static MAPS: &str = "\
555555554000-555555556000 r--p 00000000 fd:01 1310803                    /usr/bin/cat
555555556000-55555555a000 r-xp 00002000 fd:01 1310803                    /usr/bin/cat
55555555e000-55555557f000 rw-p 00000000 00:00 0                          [heap]
7ffff7d8a000-7ffff7db0000 r--p 00000000 fd:01 1316601                    /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7db0000-7ffff7f05000 r-xp 00026000 fd:01 1316601                    /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0                          [vdso]
7ffff7fd0000-7ffff7fd1000 rw-s 00000000 00:05 42                         /dev/shm/my file (deleted)
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
7ffff7fc3000-7ffff7fc5000 rw-p 00000000 00:00 0 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_every_kind_of_line() {
        let maps = parse_maps(MAPS).unwrap();
        assert_eq!(maps.len(), 10);
        let text = &maps[1];
        assert_eq!(text.range, 0x5555_5555_6000..0x5555_5555_a000);
        assert_eq!(text.perms.to_string(), "r-xp");
        assert!(text.perms.exec && !text.perms.write);
        assert_eq!(text.offset, 0x2000);
        assert_eq!(text.dev, (0xfd, 1));
        assert_eq!(text.inode, 1_310_803);
        assert_eq!(text.path, "/usr/bin/cat");
        assert!(text.is_file());
        assert_eq!(maps[2].path, "[heap]");
        assert!(!maps[2].is_file());
        assert_eq!(maps[4].file_name(), "libc.so.6");
        let shm = &maps[6];
        assert!(shm.deleted && shm.perms.shared);
        assert_eq!(shm.path, "/dev/shm/my file");
        assert_eq!(maps[8].path, "");
        assert_eq!(maps[9].range.start, 0xffff_ffff_ff60_0000);
    }

    #[test]
    fn offsets_and_addresses_convert_both_ways() {
        let maps = parse_maps(MAPS).unwrap();
        let text = &maps[4];
        assert_eq!(text.addr_of_offset(0x26010), Some(0x7fff_f7db_0010));
        assert_eq!(text.addr_of_offset(0x100), None);
        assert_eq!(text.offset_of_addr(0x7fff_f7db_0010), Some(0x26010));
        assert_eq!(text.offset_of_addr(0x1000), None);
        let libc: Vec<&Mapping> = maps.iter().filter(|m| m.inode == 1_316_601).collect();
        assert_eq!(module_span(&libc), Some(0x7fff_f7d8_a000..0x7fff_f7f0_5000));
    }

    #[test]
    fn malformed_lines_name_the_field() {
        assert_eq!(parse_line("zz-10 r-xp 0 0:0 0"), Err("start"));
        assert_eq!(parse_line("10-20 r-x 0 0:0 0"), Err("perms"));
        assert_eq!(parse_line("10-20 r-xp 0 00 0"), Err("dev"));
        assert_eq!(parse_line("20-10 r-xp 0 0:0 0"), Err("range"));
        let e = parse_maps("10-20 r-xp 0 0:0 x\n").unwrap_err();
        assert!(e.to_string().contains("inode"), "{e}");
    }

    #[test]
    fn reads_our_own_maps() {
        let maps = read_maps(crate::sys::Pid(std::process::id() as i32)).unwrap();
        assert!(maps.iter().any(|m| m.perms.exec && m.is_file()));
        assert!(maps.iter().any(|m| m.path == "[stack]"));
    }
}
