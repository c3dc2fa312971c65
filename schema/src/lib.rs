pub mod models {}
