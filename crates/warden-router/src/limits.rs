//! Per-sandbox rate limits over a sliding minute: requests counted when admitted,
//! tokens when an answer reports its usage.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(crate) struct Limits {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    requests: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
    token_sum: u64,
}

impl Window {
    fn prune(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.requests.pop_front();
        }
        while let Some((t, n)) = self.tokens.front().copied() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.tokens.pop_front();
            self.token_sum -= n;
        }
    }
}

/// Why a request waits: which limit, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Requests { limit: u32, retry_after: Duration },
    Tokens { limit: u64, retry_after: Duration },
}

impl Limits {
    /// Admit one request now, or say which limit it exceeds and when to retry.
    pub(crate) fn admit(
        &self,
        now: Instant,
        rpm: Option<u32>,
        tpm: Option<u64>,
    ) -> Result<(), Exceeded> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.prune(now);
        if let Some(limit) = rpm
            && w.requests.len() >= limit as usize
        {
            // The oldest request within the window leaves it first.
            let idx = w.requests.len() - limit as usize;
            let retry_after = w
                .requests
                .get(idx)
                .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
                .unwrap_or(WINDOW);
            return Err(Exceeded::Requests { limit, retry_after });
        }
        if let Some(limit) = tpm
            && w.token_sum >= limit
        {
            // Wait until enough tokens have left the window to be under the limit.
            let mut sum = w.token_sum;
            let mut retry_after = WINDOW;
            for (t, n) in &w.tokens {
                sum -= n;
                if sum < limit {
                    retry_after = WINDOW.saturating_sub(now.duration_since(*t));
                    break;
                }
            }
            return Err(Exceeded::Tokens { limit, retry_after });
        }
        w.requests.push_back(now);
        Ok(())
    }

    pub(crate) fn add_tokens(&self, now: Instant, n: u64) {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.tokens.push_back((now, n));
        w.token_sum += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_slide_out_of_the_window() {
        let l = Limits::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.admit(t0 + Duration::from_secs(i), Some(3), None), Ok(()));
        }
        assert_eq!(
            l.admit(t0 + Duration::from_secs(10), Some(3), None),
            Err(Exceeded::Requests {
                limit: 3,
                retry_after: Duration::from_secs(50)
            })
        );
        assert_eq!(l.admit(t0 + Duration::from_secs(60), Some(3), None), Ok(()));
    }

    #[test]
    fn tokens_count_until_they_leave_the_window() {
        let l = Limits::default();
        let t0 = Instant::now();
        assert_eq!(l.admit(t0, None, Some(100)), Ok(()));
        l.add_tokens(t0, 60);
        l.add_tokens(t0 + Duration::from_secs(20), 50);
        assert_eq!(
            l.admit(t0 + Duration::from_secs(30), None, Some(100)),
            Err(Exceeded::Tokens {
                limit: 100,
                retry_after: Duration::from_secs(30)
            })
        );
        assert_eq!(
            l.admit(t0 + Duration::from_secs(60), None, Some(100)),
            Ok(())
        );
    }
}
