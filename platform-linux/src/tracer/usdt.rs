//! USDT probes in a [`Session`]: every location of the selected markers is registered under
//! the marker's one name (so their counts add up), with the marker's semaphore when it has
//! one (`ConsumerOptions::with_semaphore`: the core increments the counter in each traced
//! process where the breakpoint is installed and decrements it on removal and detach), and a
//! consumer that decodes the marker's arguments at each hit with `--print`.

use std::sync::Arc;

use probe_core::{ConsumerOptions, ProbeKey, SpaceId, TaskId};

use super::consumer::{LinuxConsumer, Role};
use super::error::TraceError;
use super::session::{AddReport, ProbeEntry, Session};
use super::skips::Skipped;
use crate::resolve::{is_glob, Location, ProbeKind, ProbeSpec};
use crate::sys::Pid;
use crate::usdt::{probe_name, UsdtFile, UsdtMarker};
use std::path::Path;

impl Session {
    /// Registers every location of the markers a `usdt:` spec selects in the file at
    /// `path`; `strict` and `current` as for `register_points`.
    pub(crate) fn add_usdt_in(
        &mut self,
        spec: &ProbeSpec,
        path: &Path,
        strict: bool,
        current: Option<Pid>,
    ) -> Result<AddReport, TraceError> {
        let Location::Usdt { provider, name } = &spec.location else {
            return Ok(AddReport::default());
        };
        let file = UsdtFile::open(path).map_err(crate::resolve::ResolveError::from)?;
        let markers = file.select(provider.as_deref(), name)?;
        let glob = is_glob(name) || provider.as_deref().is_some_and(is_glob);
        self.add_usdt_markers(&spec.text, &file, &markers, glob, strict && !glob, current)
    }

    /// Registers one marker location of `file` (a marker of [`UsdtFile::markers`]), as a
    /// `usdt:` spec registers each of its locations. For tests and tools that pick
    /// locations themselves (e.g. one of two sites of a marker).
    pub fn add_usdt_marker(
        &mut self,
        file: &UsdtFile,
        marker: &UsdtMarker,
    ) -> Result<AddReport, TraceError> {
        let text = format!("usdt:{}:{}", file.path().display(), marker.full_name());
        let current = self.held_task_of(SpaceId(self.root.0 as u64));
        self.add_usdt_markers(&text, file, &[marker], false, true, current)
    }

    fn add_usdt_markers(
        &mut self,
        text: &str,
        file: &UsdtFile,
        markers: &[&UsdtMarker],
        glob: bool,
        strict: bool,
        current: Option<Pid>,
    ) -> Result<AddReport, TraceError> {
        let mut report = AddReport {
            matched: markers.len(),
            ..AddReport::default()
        };
        let path = file.path().to_path_buf();
        self.platform
            .set_current(current.map(|p| TaskId(p.0 as u64)));
        let file_id = self.platform.file_id(&path).map_err(|e| TraceError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        for &m in markers {
            if !self.points.insert((path.clone(), m.file_offset, false)) {
                report.duplicates += 1;
                continue;
            }
            let name = probe_name(&path, m);
            let mut opts = ConsumerOptions::new();
            match m.semaphore_offset {
                Some(off) => opts = opts.with_semaphore(off),
                None if m.semaphore_unusable() => report.notes.push(format!(
                    "{name}: its semaphore at {:#x} is not backed by the file, so it cannot \
                     be set; if the program checks it, the marker never fires",
                    m.semaphore
                )),
                None => {}
            }
            let key = ProbeKey::new(file_id, m.file_offset);
            let (idx, hits) = self.shared.add_counter();
            debug_assert_eq!(idx, self.probes.len());
            let decoder = Arc::new(file.decoder(m, self.string_args));
            let consumer =
                LinuxConsumer::new(Role::Probe(idx), hits, self.shared.clone()).with_usdt(decoder);
            let mut entry = ProbeEntry {
                name: name.clone(),
                spec: text.to_owned(),
                kind: ProbeKind::Usdt,
                file: path.clone(),
                offset: m.file_offset,
                from_glob: glob,
                error: None,
                handle: None,
                extra: Vec::new(),
                key,
            };
            match self.core.register(&self.platform, key, consumer, opts) {
                Ok(h) => {
                    entry.handle = Some(h);
                    report.added += 1;
                }
                Err((e, _)) => {
                    let reason = self.explain(e);
                    entry.error = Some(reason.clone());
                    if strict {
                        let at = format!("{name} at file offset {:#x}", m.file_offset);
                        self.probes.push(entry);
                        return Err(TraceError::Register { probe: at, reason });
                    }
                    let why = self.skip_reason(e, &path, m.file_offset);
                    report.skipped.push(Skipped {
                        name,
                        file_offset: m.file_offset,
                        reason: why,
                    });
                }
            }
            self.probes.push(entry);
        }
        let _ = self.core.maintain(&self.platform);
        Ok(report)
    }
}
