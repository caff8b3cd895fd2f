//! The `compare` step: see [`logic`] (the match) and [`lifecycle`]
//! (leavers, returners, adoption); [`users`] holds the Procore users
//! compactly, [`output`] writes the output as it is decided.

mod input;
mod keys;
mod known;
pub mod lifecycle;
pub mod logic;
mod output;
mod users;

sluice_guest::step!(logic::compare_input);
