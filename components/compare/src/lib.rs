//! The `compare` step: see [`logic`].

pub mod logic;

sluice_guest::step!(logic::compare_input);
