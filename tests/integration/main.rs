//! One integration-test binary for the whole workspace (short link times on a small machine).
//! Every test runs real redis-server processes on free 127.0.0.1 ports behind the real proxy.

mod acl;
mod admin;
mod admin_moves;
mod admin_security;
mod auth;
mod backend_failure;
mod binary;
mod clients;
mod commands;
mod failover;
mod limits;
mod metrics;
mod mirror;
mod parking;
mod protocol;
mod pubsub;
mod resharding;
mod resp3;
mod routing;
mod split;
mod tls;
mod tools;
mod transactions;
