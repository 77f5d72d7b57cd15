//! Record builders shared by the integration tests.

use riskflow_dataflows::event::Event;
use riskflow_dataflows::model::{Delta, Fixed, Tick, Ts};

pub fn f(x: f64) -> Fixed {
    Fixed::from_f64(x).unwrap()
}

pub fn tick(ts: Ts, instrument: &str, price: f64) -> Event {
    Event::Tick(Tick { ts, instrument: instrument.into(), price: f(price), bid: None, ask: None, iv: None })
}

pub fn delta(id: &str, ts: Ts, account: &str, instrument: &str, qty: f64) -> Event {
    Event::Delta(Delta { id: id.into(), ts, account: account.into(), instrument: instrument.into(), qty: f(qty) })
}
