//! The JSON format of DESIGN.md §2: one object per Kafka message or replay line, decoded and
//! validated into an [`Event`], or a reason for the dead-letter sink.

use riskflow_dataflows::event::Event;
use riskflow_dataflows::model::{Account, Delta, Instrument, Kind, Limit, Tick};
use serde::de::DeserializeOwned;

/// Decodes and validates one record of `kind`; `Err` holds the dead-letter reason.
pub fn decode(kind: Kind, raw: &[u8]) -> Result<Event, String> {
    fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
        serde_json::from_slice(raw).map_err(|e| format!("invalid JSON record: {e}"))
    }
    match kind {
        Kind::Instrument => {
            let i: Instrument = parse(raw)?;
            i.validate()?;
            Ok(Event::Instrument(i))
        }
        Kind::Account => {
            let a: Account = parse(raw)?;
            a.validate()?;
            Ok(Event::Account(a))
        }
        Kind::Limit => {
            let l: Limit = parse(raw)?;
            validate_limit(&l)?;
            Ok(Event::Limit(l))
        }
        Kind::Tick => {
            let t: Tick = parse(raw)?;
            t.validate()?;
            Ok(Event::Tick(t))
        }
        Kind::Delta => {
            let d: Delta = parse(raw)?;
            d.validate()?;
            Ok(Event::Delta(d))
        }
    }
}

/// Checks a limit's fields; the error is a dead-letter reason.
pub fn validate_limit(l: &Limit) -> Result<(), String> {
    if l.id.is_empty() || l.scope_id.is_empty() {
        return Err("limit id and scope_id must not be empty".into());
    }
    if !(l.limit.is_finite() && l.limit > 0.0) {
        return Err(format!("limit {} is not a positive number", l.limit));
    }
    if let Some(w) = l.warn_at {
        if !(w > 0.0 && w <= 1.0) {
            return Err(format!("warn_at {w} is not in (0, 1]"));
        }
    }
    let known = ["gross", "net", "var", "es", "stress", "concentration"];
    let ok =
        known.contains(&l.metric.as_str()) || l.metric.strip_prefix("position_qty:").is_some_and(|i| !i.is_empty());
    if !ok {
        return Err(format!("unknown limit metric {:?}", l.metric));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_delta() {
        let e = decode(Kind::Delta, br#"{"id":"F-1","ts":5,"account":"A","instrument":"X","qty":-1.5}"#).unwrap();
        let Event::Delta(d) = e else { panic!("not a delta") };
        assert_eq!(d.qty.0, -150_000_000);
    }

    #[test]
    fn reasons_name_the_problem() {
        let r = |kind, raw: &str| decode(kind, raw.as_bytes()).unwrap_err();
        assert!(r(Kind::Delta, "{not json").starts_with("invalid JSON record"));
        assert!(r(Kind::Delta, r#"{"id":"F","ts":1,"account":"A","instrument":"X"}"#).contains("missing field `qty`"));
        assert_eq!(r(Kind::Tick, r#"{"ts":1,"instrument":"X","price":-3}"#), "price -3 is not positive");
        assert_eq!(r(Kind::Tick, r#"{"ts":1,"instrument":"X","price":0}"#), "price 0 is not positive");
        assert!(r(Kind::Tick, r#"{"ts":1,"instrument":"X","price":"abc"}"#).contains("invalid type"));
        assert!(r(Kind::Delta, r#"{"id":"F","ts":1,"account":"A","instrument":"X","qty":0.000000001}"#)
            .contains("more than 8 decimal places"));
        assert!(r(Kind::Limit, r#"{"id":"L","scope":"desk","scope_id":"D","metric":"vol","limit":1}"#)
            .contains("unknown limit metric"));
        assert!(
            r(Kind::Delta, r#"{"id":"F","ts":-1,"account":"A","instrument":"X","qty":1}"#).contains("invalid value")
        );
    }
}
