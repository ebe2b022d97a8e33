//! The actor shells of the pipeline stages, one file each. Each is thin: it moves batches,
//! barriers and credits, and calls the pure logic in [`crate::validate`],
//! [`crate::analytics`] and [`crate::generator`].
mod generator;
mod ingest;
mod process;
mod sink;
mod validate;

pub use generator::{produce_generated, produce_record, step_ms_for_rate, Generator, GeneratorState};
pub use ingest::{Ingest, IngestState};
pub use process::{Process, ProcessState};
pub use sink::{Sink, SinkState};
pub use validate::{Validate, ValidateState};

pub(crate) type R<T> = std::result::Result<T, ractor::ActorProcessingErr>;
