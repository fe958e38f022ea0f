//! A test platform that wraps the mock [`Machine`](platform_mock::Machine) (in a field `m`)
//! and changes one or two of its answers.

/// `impl Platform for $t` over `self.m`, a `Machine`: the items given (at least `type Space`
/// and `fn space`, plus any method the wrapper answers differently) and, for the rest, the
/// machine's answers.
macro_rules! wrapped_machine {
    ($t:ty { $($item:item)* }) => {
        impl probe_core::Platform for $t {
            type Arch = platform_mock::ToyArch;
            $($item)*
            fn for_each_mapping(
                &self,
                file: probe_core::FileId,
                f: &mut dyn FnMut(probe_core::Mapping) -> core::ops::ControlFlow<()>,
            ) {
                self.m.for_each_mapping(file, f)
            }
            fn for_each_task(
                &self,
                space: probe_core::SpaceId,
                f: &mut dyn FnMut(probe_core::TaskId) -> core::ops::ControlFlow<()>,
            ) {
                self.m.for_each_task(space, f)
            }
            fn file_size(&self, file: probe_core::FileId) -> Option<u64> {
                self.m.file_size(file)
            }
            fn read_file(
                &self,
                file: probe_core::FileId,
                offset: u64,
                buf: &mut [u8],
            ) -> Result<usize, probe_core::MemError> {
                self.m.read_file(file, offset, buf)
            }
            fn xol_area(
                &self,
                space: probe_core::SpaceId,
                near: probe_core::Addr,
                count: usize,
            ) -> Option<probe_core::Addr> {
                self.m.xol_area(space, near, count)
            }
        }
    };
}
pub(crate) use wrapped_machine;
