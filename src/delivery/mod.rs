//! Delivery: the durable outbox of Lark calls, Lark's rate limits as a schedule, the monthly
//! quota ledger with its degradation policy, retries with backoff, and the operation log.
//! Knows Lark's limits but not how calls are made: that is the [`Executor`] it is given.

pub mod engine;
pub mod job;
pub mod lark_executor;
pub mod limits;
pub mod metrics;
pub mod oplog;
pub mod quota;
pub mod tables;

pub use engine::{
    DeliveredHook, Delivery, DeliveryConfig, DeliveryError, Executor, FinishedHook, LimiterState,
};
pub use job::{CallClass, CallFailure, CallOutcome, FailureKind, Job, JobKind, NewJob, Priority};
pub use lark_executor::{LarkClients, LarkExecutor};
