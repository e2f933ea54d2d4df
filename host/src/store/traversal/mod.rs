//! A traversal: one run of a stack action over the stack's resources. It starts under the
//! stack lock (`start`), moves on as jobs finish and ends once (`advance`), or is stopped early
//! (`stop`). The jobs themselves are the lease queue's (`lease_queue.rs`).

mod advance;
mod start;
mod stop;

pub use advance::Candidate;
