//! The fake GitHub held to GitHub's own descriptions, and the fixtures with it.

mod fake;
mod fixtures_schema;
