//! One integration-test binary for the whole workspace (short link times on a small machine):
//! every test that starts a redis-server lives here, one module per area, and uses the one
//! harness in `tests/support`. Tests run real redis-server processes on free 127.0.0.1 ports,
//! mostly behind the real proxy (`command_table_live` and `mirror_effects` check the proxy's
//! command table and mirrored writes against a server directly; `admin_cli` and `binary` run
//! the built binaries). Run one module with
//! `cargo test -p redshard-tests --test integration -- MODULE::`.

mod acl;
mod acl_review;
mod acl_users;
mod admin;
mod admin_cli;
mod admin_moves;
mod admin_security;
mod apps;
mod auth;
mod backend_failure;
mod binary;
mod clients;
mod command_table_live;
mod commands;
mod compat;
mod compat_client;
mod compat_operators;
mod databases;
mod deep_replies;
mod etcd_cluster;
mod failover;
mod fleet;
mod fleet_admin;
mod fleet_crash;
mod fleet_frozen;
mod fleet_tutorial;
mod harness;
mod limits;
mod metrics;
mod mirror;
mod mirror_effects;
mod monitor_scripts;
mod parking;
mod protocol;
mod proxy_restart;
mod pubsub;
mod replication_ack;
mod replication_redis;
mod resharding;
mod resp3;
mod routing;
mod rules;
mod split;
mod tls;
mod tools;
mod tracking;
mod transactions;
