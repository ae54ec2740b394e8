//! Pure statistics on summary numbers for verdict experiments.
