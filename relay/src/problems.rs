//! The problem collector of configuration validation: each problem names its field by dotted
//! path (`routes[0].upstream`) and says what to do. A leaf: it imports nothing from the crate,
//! so every subsystem's `config.rs` can record into it.

use std::fmt;
use std::path::PathBuf;

/// One validation problem: the field and what is wrong with it, including what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `routes[0].upstream`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are about.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the configuration:",
            self.file.display(),
            self.errors.len()
        )?;
        for e in &self.errors {
            writeln!(f, "  - {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

/// Collects [`FieldError`]s during validation.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}
