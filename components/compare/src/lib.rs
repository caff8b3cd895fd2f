//! The `compare` step: see [`logic`] (the match) and [`lifecycle`]
//! (leavers, returners, adoption).

mod input;
mod keys;
pub mod lifecycle;
pub mod logic;

sluice_guest::step!(logic::compare_input);
