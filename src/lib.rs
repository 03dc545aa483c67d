//! driftless: a two-way sync engine that keeps a CRM (HubSpot API) and a billing system
//! (Stripe API) in agreement, with an SQLite ledger that records every event, decision and
//! write.
//!
//! Start reading at [`engine::Engine`]: it owns the [`ledger::Ledger`] (all SQL), the checked
//! [`contract::Contract`], and the [`connectors`]. Events come in through [`ingest`] (webhook
//! verification and parsing) into the inbox; workers in `engine` take one record at a time,
//! load both records, ask the pure [`decide`] stage (over the pure [`plan`]) what becomes of the
//! events and what to write, and dispatch the writes under a [`budget`]. Every operator
//! operation is declared once in [`operations`]; [`http`] is the headless server; [`sim`] holds the simulated
//! systems used by the demo and the tests; [`drill`] runs both under faults and checks the
//! invariants from the simulators' own APIs.

pub mod api;
pub mod budget;
pub mod clock;
pub mod connect;
pub mod connectors;
pub mod contract;
pub mod csv;
pub mod decide;
pub mod drill;
pub mod engine;
pub mod http;
pub mod ingest;
pub mod ledger;
pub mod operations;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod secrets;
pub mod sim;
