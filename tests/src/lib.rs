//! Shared helpers of the integration tests: the mock runner, the model-based test driver.

pub mod mock;
pub mod model;
pub mod sdt_fuzz;
pub mod x86;
