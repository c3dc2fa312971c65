//! Domain rules as pure functions over models and time: no actors, no storage, no HTTP.
//! Actors call these to decide; tests call them directly.

pub mod actual_lrps;
pub mod convergence;
pub mod desired_lrps;
pub mod domains;
pub mod downgrade;
pub mod evacuation;
pub mod lrp_events;
pub mod requests;
pub mod routes;
pub mod tasks;
pub mod validation;
