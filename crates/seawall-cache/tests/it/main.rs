//! Integration tests of seawall-cache: the conformance suite on every tier
//! combination, and what needs two instances, a failing Redis or a cut
//! connection.

mod bounds;
mod conformance;
mod failure;
mod hot;
mod instances;
mod locks;
mod metrics;
mod model;
mod promise;
mod support;
