//! The scrape side of the metrics, at the top of the proxy: the `/metrics` page
//! ([`scrape`]), the HTTP endpoint that serves it with the health checks ([`http`]), and the
//! client of `redshard healthcheck` ([`healthcheck`]).
//!
//! The names and the recording API that the data path calls are the leaf crate
//! `redshard-metrics`; the page is here because it reads the whole proxy state.

pub mod healthcheck;
pub mod http;
pub mod scrape;
