//! Integration tests: the real server on port 0, driven over HTTP.
//! One test binary (faster to link); one module per resource.

mod campaigns;
mod console;
mod contract;
mod events;
mod experiments;
mod health;
mod helpers;
mod hostile;
mod members;
mod offers;
mod openapi;
mod security;
mod state;
