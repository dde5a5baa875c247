//! ztgate load tests: a gRPC load generator written straight on `h2`
//! (tonic's channel adds a buffer task and a tower stack per call, which
//! would make the generator the bottleneck on a 2-core box), a fast benchmark
//! backend, and the report/plot code the runner script (`run.sh`) calls.
//!
//! The generator speaks `orders.v1.Orders` from `ztgate-testkit`, over TLS
//! with a client certificate or over h2c, in closed loop (fixed
//! concurrency) or open loop (fixed rate, latency from the intended send
//! time so coordinated omission is corrected), and counted runs of exactly
//! N calls for the callgrind mode (instructions per call, see [`callgrind`]).

pub mod backend;
pub mod callgrind;
pub mod conn;
pub mod count;
pub mod dpop;
pub mod engine;
pub mod grpc;
pub mod hist;
pub mod plot;
pub mod procstat;
pub mod redisstat;
pub mod report;
pub mod scale;
pub mod schedule;
pub mod token;
