//! Request values refused at the door: what would poison a read model, a figure or a
//! downstream table once stored, since nothing stored is ever rewritten.

use super::*;
use verdict_core::experiment::limits::MAX_LABEL_BYTES;

/// The largest |amount| of a conversion: far beyond any basket, and small enough that sums
/// and sums of squares over billions of users stay finite and exact to the cent.
pub const MAX_AMOUNT: f64 = 1e12;

/// The conversion type that may carry a negative amount.
pub const REFUND: &str = "refund";

fn label(field: &str, value: &str) -> Result<(), AppError> {
    verdict_core::experiment::validate_label(field, value, MAX_LABEL_BYTES).map_err(domain_error)
}

/// A user id: no control characters (PostgreSQL's jsonb refuses NUL, a log line breaks on a
/// newline), at most 256 bytes.
pub fn user_id(value: &str) -> Result<(), AppError> {
    label("user_id", value)
}

/// An interaction's free-form fields.
pub fn interaction(req: &InteractionRequest) -> Result<(), AppError> {
    user_id(&req.user_id)?;
    if req.action.is_empty() {
        return Err(AppError::Invalid {
            field: "action".into(),
            message: "must not be empty".into(),
        });
    }
    label("action", &req.action)?;
    if let Some(item) = &req.item_id {
        label("item_id", item)?;
    }
    Ok(())
}

/// A conversion's fields: a finite amount within ±[`MAX_AMOUNT`], negative only for a
/// declared [`REFUND`].
pub fn conversion(req: &ConversionRequest) -> Result<(), AppError> {
    user_id(&req.user_id)?;
    label("conversion_type", &req.conversion_type)?;
    let invalid = |message: String| AppError::Invalid {
        field: "amount".into(),
        message,
    };
    if !req.amount.is_finite() {
        return Err(invalid("must be a finite number".into()));
    }
    if req.amount.abs() > MAX_AMOUNT {
        return Err(invalid(format!(
            "{} is beyond the accepted range of ±{MAX_AMOUNT:e}",
            req.amount
        )));
    }
    if req.amount < 0.0 && req.conversion_type != REFUND {
        return Err(invalid(format!(
            "must not be negative unless conversion_type is \"{REFUND}\""
        )));
    }
    Ok(())
}
