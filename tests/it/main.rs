//! Integration tests: one binary, calling the engine API (and the CLI binary) against the
//! simulators over real HTTP on 127.0.0.1.

mod backfill;
mod billing_objects;
mod bounded;
mod cli;
mod companies;
mod connect;
mod console;
mod contract_check;
mod crash;
mod crm_batch;
mod drill;
mod faults;
mod flow;
mod hostile;
mod ids;
mod localstripe;
mod migration;
mod ops;
mod paging;
mod pollers;
mod prism;
mod rates;
mod reconcile;
mod schema;
mod signatures;
mod support;
