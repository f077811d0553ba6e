//! lark-oncall: on-call incident response for Feishu/Lark in one binary.
//!
//! Domains: [`store`] (the redb state file), [`auth`] (admin accounts and tokens), [`lark`] (Lark's
//! wire protocol and Open API client), [`integration`] (connected Lark apps and their callback
//! pipeline), [`delivery`] (the outbox), [`incident`] (incidents, alerts, escalation, cards),
//! [`bot_webhook`] (custom group-bot webhooks as notification targets), [`homepage`] (the app homepage inside Lark: OAuth login, member linking, sessions),
//! [`schedule`] (on-call schedules and the one "who is on call" resolver),
//! [`scheduler`] (periodic jobs), [`sim`] (a fake Lark for tests and the demo), [`webhook`]
//! (outbound incident webhooks), [`web`] (HTTP routes), with [`app`] wiring them into a running service and
//! [`cli`] as the entry point; [`memory`] makes the allocator return what it no longer needs,
//! [`ids`] mints prefixed ids and digests, [`clock`] is the one clock (and the tests' manual one).

pub mod app;
pub mod auth;
pub mod bot_webhook;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod homepage;
pub mod ids;
pub mod incident;
pub mod integration;
pub mod lark;
pub mod listener;
pub mod memory;
pub mod schedule;
pub mod scheduler;
pub mod schema;
pub mod services;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod webhook;
