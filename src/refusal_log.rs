//! Logging of refused handshakes, rate-limited. Anyone on the internet can open connections
//! to the TLS port, so one line per refusal would let a scanner fill the disk and bury the one
//! line that matters (Wise's certificate rotated and is now refused). The first
//! [`LINES_PER_WINDOW`] refusals of each window are logged in full; the rest are counted and
//! summarised once the window ends. The metric counts every one.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::HandshakeResult;
use crate::policy::PolicyRefusal;

pub const WINDOW: Duration = Duration::from_secs(10);
pub const LINES_PER_WINDOW: u32 = 20;

#[derive(Debug)]
pub struct RefusalLog {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: [u64; HandshakeResult::ALL.len()],
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: [0; HandshakeResult::ALL.len()],
            }),
        }
    }
}

impl RefusalLog {
    /// Records one refusal; logs it unless this window's quota is spent. Returns whether it
    /// was logged.
    pub fn refused(&self, peer: SocketAddr, result: HandshakeResult, detail: &str) -> bool {
        if !self.admit(result) {
            return false;
        }
        if result.is_certificate_problem() {
            tracing::warn!(%peer, reason = result.as_str(), detail, "TLS handshake refused");
        } else {
            tracing::info!(%peer, reason = result.as_str(), detail, "TLS handshake failed");
        }
        true
    }

    /// The verifier's side of a policy refusal: which certificate, and why. It knows the
    /// certificate but not the peer; the listener logs the peer with [`Self::refused`].
    pub fn policy_refused(&self, refusal: &PolicyRefusal) {
        let result = match refusal {
            PolicyRefusal::NotAllowed { .. } => HandshakeResult::NotAllowed,
            PolicyRefusal::ChainTooLong { .. } | PolicyRefusal::Unparsable(_) => {
                HandshakeResult::Other
            }
        };
        if self.admit(result) {
            tracing::warn!(reason = result.as_str(), detail = %refusal, "client certificate refused by policy");
        }
    }

    /// Takes one line from this window's quota, or counts the refusal as suppressed.
    fn admit(&self, result: HandshakeResult) -> bool {
        let Ok(mut w) = self.state.lock() else {
            return false;
        };
        w.roll(Instant::now());
        if w.logged >= LINES_PER_WINDOW {
            if let Some(i) = HandshakeResult::ALL.iter().position(|r| *r == result) {
                w.suppressed[i] += 1;
            }
            return false;
        }
        w.logged += 1;
        true
    }

    /// Ends the window if it is over and logs what it held back. The listener calls this
    /// every [`WINDOW`], so a flood that stops is still summarised.
    pub fn flush(&self) {
        if let Ok(mut w) = self.state.lock() {
            w.roll(Instant::now());
        }
    }
}

impl Window {
    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.started) < WINDOW {
            return;
        }
        let total: u64 = self.suppressed.iter().sum();
        if total > 0 {
            let by_reason: Vec<String> = HandshakeResult::ALL
                .iter()
                .zip(self.suppressed)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{}={n}", r.as_str()))
                .collect();
            tracing::warn!(
                suppressed = total,
                by_reason = %by_reason.join(","),
                window_secs = WINDOW.as_secs(),
                "more refused TLS handshakes than the log shows; see hookgate_tls_handshakes_total"
            );
        }
        self.started = now;
        self.logged = 0;
        self.suppressed = [0; HandshakeResult::ALL.len()];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_quota_and_counted() {
        let log = RefusalLog::default();
        let peer: SocketAddr = "192.0.2.1:5555".parse().unwrap();
        let logged = (0..100)
            .filter(|_| log.refused(peer, HandshakeResult::UnknownIssuer, "x"))
            .count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        let w = log.state.lock().unwrap();
        assert_eq!(
            w.suppressed.iter().sum::<u64>(),
            100 - u64::from(LINES_PER_WINDOW)
        );
    }

    #[test]
    fn a_new_window_logs_again() {
        let log = RefusalLog::default();
        let peer: SocketAddr = "192.0.2.1:5555".parse().unwrap();
        for _ in 0..LINES_PER_WINDOW + 5 {
            log.refused(peer, HandshakeResult::Timeout, "x");
        }
        log.state.lock().unwrap().started -= WINDOW;
        assert!(log.refused(peer, HandshakeResult::Timeout, "x"));
        assert_eq!(log.state.lock().unwrap().suppressed.iter().sum::<u64>(), 0);
    }
}
